// `mambavl bench tokenizer`: encoding speed of a tokenizer.json on a text file.
#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::bench {

// Registers the `tokenizer` subcommand on `bench`: --tokenizer PATH (default: the shared
// GPT-NeoX-20B tokenizer.json), --text-file F (default: ~5 MB of generated English-like text);
// prints MB/s and tokens/s of encode on one thread.
void add_tokenizer_bench(CLI::App& bench);

}  // namespace mambavl::bench
