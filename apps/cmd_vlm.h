// Vision-language subcommands: compose, train, eval, chat; and the VLM paths of init, info and
// generate.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>

#include "generate/generate.h"

namespace mambavl::cli {

// Registers compose, train, eval and chat on `app`.
void add_vlm_commands(CLI::App& app);

// `init --preset NAME` for VLM presets: a random VLM (tiny presets need the tokenizer; the word-
// level one `make-data scenes` writes fits them) saved to `out`. Returns a one-line summary.
std::string init_vlm_preset(const std::string& preset, const std::string& tokenizer,
                            uint64_t seed, const std::filesystem::path& out);

// `info` for a VLM folder: prints "key: value" lines and returns true; false (nothing printed)
// when `dir` is no VLM folder.
bool describe_vlm_folder(const std::filesystem::path& dir, std::ostream& out);

// `generate --image FILE` with a VLM folder: the prompt follows the image block (a one-turn chat
// "<image>\n" + prompt, in the model's prompt order), streamed to stdout.
void generate_with_image(const std::filesystem::path& model, const std::filesystem::path& image,
                         const std::string& prompt, const generate::GenerateOptions& opt,
                         const std::string& dtype, bool print_ids, bool stats);

}  // namespace mambavl::cli
