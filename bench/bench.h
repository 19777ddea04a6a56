// Micro-benchmarks, reachable as `mambavl bench <name>` (wired in apps/main.cpp).
#pragma once
#include <CLI/CLI.hpp>

namespace mambavl::bench {

// `bench scan`: fused CPU selective scan vs the LibTorch reference, forward and forward+backward.
void add_scan_bench(CLI::App& bench);
// `bench attention`: the fused prefill / encoder attention vs LibTorch's SDPA, and the GEMM rate.
void add_attention_bench(CLI::App& bench);
// `bench gemv`: the decode step's matrix-vector products alone, GB/s vs the measured bandwidth.
void add_gemv_bench(CLI::App& bench);

}  // namespace mambavl::bench
