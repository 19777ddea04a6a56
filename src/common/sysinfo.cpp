#include "common/sysinfo.h"

#include "common/cpu.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>

namespace mambavl::sys {

namespace {
int64_t status_kb(const std::string& key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream s(line.substr(key.size() + 1));
      int64_t kb = 0;
      s >> kb;
      return kb;
    }
  }
  return 0;
}
}  // namespace

void reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (f) f << "5";
}
int64_t peak_rss_bytes() { return status_kb("VmHWM") * 1024; }
int64_t current_rss_bytes() { return status_kb("VmRSS") * 1024; }

double measure_read_bandwidth_gbs(int64_t bytes, int repeats) {
  const int64_t n = bytes / 4;
  at::Tensor buf = at::ones({n}, at::kFloat);  // touched once here, so no page faults below
  const float* p = buf.data_ptr<float>();
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    std::vector<float> partial(at::get_num_threads() * 16, 0.f);
    auto t0 = std::chrono::steady_clock::now();
    at::parallel_for(0, n, 1 << 20, [&](int64_t b, int64_t e) {
      float acc[16] = {};
      for (int64_t i = b; i + 16 <= e; i += 16)
        for (int k = 0; k < 16; ++k) acc[k] += p[i + k];
      float s = 0;
      for (float a : acc) s += a;
      partial[at::get_thread_num() * 16] += s;
    });
    auto t1 = std::chrono::steady_clock::now();
    best = std::max(
        best, static_cast<double>(bytes) / std::chrono::duration<double>(t1 - t0).count() / 1e9);
  }
  return best;
}

double measure_gemm_gflops(int64_t M, int64_t K, int64_t N, int repeats) {
  at::Tensor a = at::randn({M, K}), b = at::randn({N, K}), c = at::empty({M, N});
  double best = 0;
  for (int r = 0; r < repeats + 1; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    at::mm_out(c, a, b.t());
    auto t1 = std::chrono::steady_clock::now();
    if (r > 0)
      best = std::max(best, 2.0 * M * K * N / std::chrono::duration<double>(t1 - t0).count() / 1e9);
  }
  return best;
}

std::string machine_summary() {
  std::ostringstream s;
  s << "threads " << at::get_num_threads() << ", ATen CPU capability " << at::get_cpu_capability()
    << ", CPU " << cpu::features_string();
  return s.str();
}

std::string load_average() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  if (!(f >> a >> b >> c)) return "n/a";
  return a + " " + b + " " + c;
}

}  // namespace mambavl::sys
