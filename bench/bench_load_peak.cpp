#include "bench_load_peak.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"

namespace mambavl::bench {
namespace {

// Peak RSS (bytes) of this executable run with `args` (stdout and stderr discarded): the child's
// own VmHWM, which it writes at exit to the file MAMBAVL_PEAK_RSS_FILE names (apps/main.cpp). Not
// wait4's ru_maxrss: Linux counts there the high-water mark of the address space the child was
// forked with, i.e. this (large) process's.
int64_t child_peak_rss(std::vector<std::string> args, const std::filesystem::path& report) {
  std::vector<char*> argv;
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  argv.push_back(self.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The environment with the report file, built before fork (no allocation in the child).
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e)
    if (std::string(*e).rfind("MAMBAVL_PEAK_RSS_FILE=", 0) != 0) env_s.emplace_back(*e);
  env_s.push_back("MAMBAVL_PEAK_RSS_FILE=" + report.string());
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::filesystem::remove(report);
  std::fflush(stdout);
  const pid_t pid = ::fork();
  MVL_CHECK(pid >= 0, "bench: fork failed");
  if (pid == 0) {
    if (!std::freopen("/dev/null", "w", stdout) || !std::freopen("/dev/null", "w", stderr))
      _exit(126);
    ::execve(self.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  int status = 0;
  MVL_CHECK(::waitpid(pid, &status, 0) == pid, "bench: waitpid failed");
  MVL_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "bench: `", self, " ", args[0],
            "` failed (status ", status, ")");
  int64_t peak = -1;
  std::ifstream in(report);
  MVL_CHECK(in >> peak && peak > 0, "bench: `", self, " ", args[0],
            "` did not report its peak memory in ", report.string());
  return peak;
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
    const fs::path report = fs::path(dir.string() + ".peak");
    peak = child_peak_rss({"perplexity", "--model", dir.string(), "--ids", ids, "--dtype", dtype,
                           "--threads", std::to_string(threads)},
                          report);
    base = child_peak_rss({"--help"}, report);
    fs::remove(report);
  } catch (...) {
    fs::remove_all(dir);
    throw;
  }
  fs::remove_all(dir);
  // Weights memory-mapped from the folder are resident only where touched (an embedding table's
  // rows of the 16 tokens), so the rest can be below zero.
  std::printf(
      "%-12s load peak: perplexity (16 tokens) on a %s folder, --dtype %s: %.0f MB = weights "
      "%.0f MB + process baseline %.0f MB (mambavl --help) + %.0f MB (activations, caches; "
      "untouched mapped weights not resident)\n",
      name.c_str(), stored.c_str(), dtype.c_str(), peak / 1e6, weights / 1e6, base / 1e6,
      (peak - weights - base) / 1e6);
  std::fflush(stdout);
}

}  // namespace mambavl::bench
