#include "sysinfo.h"

#include <ATen/Parallel.h>
#include <ATen/Context.h>

#include <fstream>
#include <sstream>

namespace mambavl::bench {

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

std::string machine_summary() {
  std::ostringstream s;
  s << "threads " << at::get_num_threads() << ", ATen CPU capability " << at::get_cpu_capability();
  return s.str();
}

}  // namespace mambavl::bench
