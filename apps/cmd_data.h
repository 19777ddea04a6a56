// make-data: writes the built-in data sets (synthetic scenes, synthetic retrieval) in the standard
// formats (PNG + LLaVA JSON / grounding JSONL; retrieval JSONL) plus a matching tokenizer.json.
#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::cli {

// Registers `make-data scenes` and `make-data retrieval` on `app`.
void add_data_commands(CLI::App& app);

}  // namespace mambavl::cli
