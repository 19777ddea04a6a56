#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::bench {
// `bench lm`: prefill and decode tokens/s and peak memory of randomly initialised models of named
// shapes at several context lengths, side by side in one run.
void add_lm_bench(CLI::App& bench);
}  // namespace mambavl::bench
