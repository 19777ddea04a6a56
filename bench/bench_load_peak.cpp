#include "bench_load_peak.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"

namespace mambavl::bench {
namespace {

// Peak RSS (bytes) of this executable run with `args` (stdout and stderr discarded).
int64_t child_peak_rss(std::vector<std::string> args) {
  std::vector<char*> argv;
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  argv.push_back(self.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  const pid_t pid = ::fork();
  MVL_CHECK(pid >= 0, "bench: fork failed");
  if (pid == 0) {
    if (!std::freopen("/dev/null", "w", stdout) || !std::freopen("/dev/null", "w", stderr))
      _exit(126);
    ::execv(self.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  MVL_CHECK(::wait4(pid, &status, 0, &ru) == pid, "bench: wait4 failed");
  MVL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bench: `", self, " ", args[0],
            "` failed (status ", status, ")");
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

}  // namespace

void print_load_peak(const std::string& name, models::CausalLM& model,
                     const std::string& dtype, int threads) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("mambavl_load_peak_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  int64_t weights = 0;
  for (const auto& p : model.module().parameters()) weights += p.nbytes();
  for (const auto& b : model.module().buffers()) weights += b.nbytes();
  bool bf16 = false, int8 = false;
  for (const auto& p : model.module().parameters()) {
    bf16 = bf16 || p.scalar_type() == at::kBFloat16;
    int8 = int8 || p.scalar_type() == at::kChar;
  }
  const std::string stored = int8 ? "int8" : bf16 ? "bf16" : "f32";
  int64_t peak = 0, base = 0;
  try {
    model.save(dir);
    std::string ids;
    for (int i = 1; i <= 16; ++i) ids += (i > 1 ? "," : "") + std::to_string(i);
    peak = child_peak_rss({"perplexity", "--model", dir.string(), "--ids", ids, "--dtype", dtype,
                           "--threads", std::to_string(threads)});
    base = child_peak_rss({"--help"});
  } catch (...) {
    fs::remove_all(dir);
    throw;
  }
  fs::remove_all(dir);
  std::printf(
      "%-12s load peak: perplexity (16 tokens) on a %s folder, --dtype %s: %.0f MB = weights "
      "%.0f MB + %.0f MB (the process baseline, mambavl --help, is %.0f MB)\n",
      name.c_str(), stored.c_str(), dtype.c_str(), peak / 1e6, weights / 1e6,
      (peak - weights) / 1e6, base / 1e6);
  std::fflush(stdout);
}

}  // namespace mambavl::bench
