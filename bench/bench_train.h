// `mambavl bench train`: training tokens/s (forward + backward + AdamW step, timed as the one
// trainer's own step, train::train) of LM shapes and tiny VLMs, with the achieved GFLOP/s of the
// standard 6PT estimate as a share of the fp32 GEMM rate measured in the same run.
#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::bench {

// Adds `bench train` (--models, --steps, --warmup, --batch, --seq, --threads, --precision, ...)
// to `bench`.
void add_train_bench(CLI::App& bench);

}  // namespace mambavl::bench
