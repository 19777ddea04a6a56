// Test helpers shared by the CLI suites: run the built `mambavl` (path in MAMBAVL_CLI) and
// capture its exit code and output; a fresh per-test temporary folder.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace mambavl::testing_util {

struct CliRun {
  int code;
  std::string out;  // stdout + stderr
};

// Runs a shell command line; its output and exit status (128 + signal if killed).
inline CliRun run_shell(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

// Runs `mambavl <args>` through the shell; code is the exit status (128 + signal if killed).
inline CliRun run_cli(const std::string& args) {
  std::string cmd = std::string(MAMBAVL_CLI) + " " + args + " 2>&1";
  return run_shell(cmd);
}

// Like run_cli, for hostile-input tests: the CLI runs under `timeout` (killed after timeout_s: code
// 124 or 137) and an address-space limit of `max_vm_mib` MiB (ulimit -v), so a huge allocation
// fails inside the test instead of taking the machine. Under AddressSanitizer the limit is left
// off (ASan reserves terabytes of shadow address space) and ASan's own allocation cap
// (max_allocation_size_mb, set here) plays its part. `args` is passed through the shell. Only
// standard error is captured (what a user sees of a failure; stdout is discarded).
inline constexpr int64_t kCliVmLimitMiB = 6144;  // LibTorch + OpenMP map ~1.5 GiB before work
// AddressSanitizer: GCC defines __SANITIZE_ADDRESS__; clang 14 (the sanitizer build,
// scripts/sanitizer-common.sh) only answers __has_feature(address_sanitizer).
#if defined(__SANITIZE_ADDRESS__)
#define MAMBAVL_CLI_RUN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MAMBAVL_CLI_RUN_ASAN 1
#endif
#endif
inline CliRun run_cli_limited(const std::string& args, int timeout_s = 60,
                              int64_t max_vm_mib = kCliVmLimitMiB) {
#if defined(MAMBAVL_CLI_RUN_ASAN)
  const std::string limit = "ASAN_OPTIONS=\"$ASAN_OPTIONS:max_allocation_size_mb=" +
                            std::to_string(max_vm_mib) + ":allocator_may_return_null=0\" ";
#else
  const std::string limit = "ulimit -v " + std::to_string(max_vm_mib * 1024) + " && ";
#endif
  std::string cmd = "timeout -s KILL " + std::to_string(timeout_s) + " sh -c '" + limit + "exec " +
                    std::string(MAMBAVL_CLI) + " \"$@\"' mambavl " + args + " 2>&1 >/dev/null";
  return run_shell(cmd);
}

// The promise for bad input, on a run_cli_limited result (standard error): exit status 1; the
// last line starts "error: " and contains every string in `must_name` (the file, the option, the
// field); no other line is an error line (progress lines may come before it); every byte is
// printable ASCII or UTF-8 text (no raw control bytes).
inline void expect_one_error_line(const CliRun& r, const std::vector<std::string>& must_name) {
  EXPECT_EQ(r.code, 1) << r.out;
  std::string out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const size_t nl = out.rfind('\n');
  const std::string last = nl == std::string::npos ? out : out.substr(nl + 1);
  EXPECT_EQ(last.rfind("error: ", 0), 0u) << "last line is not an error line:\n" << r.out;
  EXPECT_EQ(out.find("error:"), out.size() - last.size()) << "more than one error:\n" << r.out;
  for (const auto& s : must_name)
    EXPECT_NE(last.find(s), std::string::npos) << "no '" << s << "' in: " << r.out;
  for (char c : out) {
    const auto u = static_cast<unsigned char>(c);
    EXPECT_TRUE(u == '\n' || u >= 0x20) << "control byte " << int(u) << " in: " << r.out;
  }
}

// A fixture with `dir`: an empty temporary folder per test (named after the test and the
// process), removed afterwards.
class TempDirTest : public testing::Test {
 protected:
  explicit TempDirTest(std::string prefix) : prefix_(std::move(prefix)) {}
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          (prefix_ + std::to_string(getpid()) + "_" +
           testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;

 private:
  std::string prefix_;
};

}  // namespace mambavl::testing_util
