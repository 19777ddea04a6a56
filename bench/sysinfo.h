// Small process facts for benchmarks: peak resident memory (resettable), CPU description.
#pragma once
#include <cstdint>
#include <string>

namespace mambavl::bench {
void reset_peak_rss();        // writes 5 to /proc/self/clear_refs (Linux); no-op elsewhere
int64_t peak_rss_bytes();     // VmHWM
int64_t current_rss_bytes();  // VmRSS
std::string machine_summary();  // threads, CPU capability of ATen, compiler
}  // namespace mambavl::bench
