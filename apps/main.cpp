// mambavl command-line tool: one binary, subcommands.
#include <CLI/CLI.hpp>
#include <iostream>

#include "common/error.h"

int main(int argc, char** argv) {
  CLI::App app{"mambavl: state-space (Mamba) and Transformer vision-language models"};
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mambavl::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
