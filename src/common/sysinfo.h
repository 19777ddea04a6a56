// Small process facts for benchmarks and experiment records: peak resident memory (resettable), CPU description.
#pragma once
#include <cstdint>
#include <string>

namespace mambavl::sys {
void reset_peak_rss();          // writes 5 to /proc/self/clear_refs (Linux); no-op elsewhere
int64_t peak_rss_bytes();       // VmHWM
int64_t current_rss_bytes();    // VmRSS
std::string machine_summary();  // threads, CPU capability of ATen, compiler
std::string load_average();     // "1.00 0.80 0.50" from /proc/loadavg ("n/a" elsewhere)
// Measured now, with the current intra-op threads: streaming read bandwidth over `bytes` (GB/s,
// best of `repeats`) and fp32 GEMM throughput on an [M, K] x [K, N] product (GFLOP/s, best of).
double measure_read_bandwidth_gbs(int64_t bytes = 512ll << 20, int repeats = 3);
double measure_gemm_gflops(int64_t M = 1024, int64_t K = 768, int64_t N = 3072, int repeats = 3);
}  // namespace mambavl::sys
