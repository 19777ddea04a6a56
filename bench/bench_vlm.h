// `mambavl bench vlm`: image-to-first-token latency (encoder, connector, prefill of the image
// block + a VQA prompt) and batch-1 decode tokens/s of VLM pairs of the papers' shapes (random
// weights), with decode as a share of the memory-bandwidth bound measured in the same run.
#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::bench {

// Adds `bench vlm` (--pairs, --small, --image-size, --decode-tokens, --threads, --dtype, ...) to
// `bench`.
void add_vlm_bench(CLI::App& bench);

}  // namespace mambavl::bench
