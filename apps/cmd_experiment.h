// `mambavl experiment NAME`, `mambavl report DIR...` and `mambavl demo` (the main job): the
// controlled experiments of SPEC §4 (src/experiments/), their HTML report, and all of it at a
// compact scale in one command with the papers' claims checked.
#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::cli {

void add_experiment_commands(CLI::App& app);
// Records the command line for the experiments' meta.json (call before parsing).
void set_experiment_command_line(int argc, char** argv);

}  // namespace mambavl::cli
