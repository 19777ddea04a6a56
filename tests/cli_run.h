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

namespace mambavl::testing_util {

struct CliRun {
  int code;
  std::string out;  // stdout + stderr
};

// Runs `mambavl <args>` through the shell; code is the exit status (128 + signal if killed).
inline CliRun run_cli(const std::string& args) {
  std::string cmd = std::string(MAMBAVL_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
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
