// Vision subcommands: train-classifier, classify, eval-classifier (the MambaOut experiment).
#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::cli {

// Registers train-classifier, classify and eval-classifier on `app`.
void add_vision_commands(CLI::App& app);

}  // namespace mambavl::cli
