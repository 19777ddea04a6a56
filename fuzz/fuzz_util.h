// Shared by the libFuzzer harnesses (fuzz/README.md). The contract every harness checks: bad
// input may only throw mambavl::Error (caught here); any other exception (it escapes and aborts),
// a crash, a sanitizer report, a timeout or more memory than libFuzzer's limits is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "common/error.h"

namespace mambavl::fuzz {

// A private folder for the files a harness must hand to path-taking APIs: in /dev/shm (memory,
// fast) when it exists, else $TMPDIR or /tmp; one per process (libFuzzer's -jobs / -fork run
// several), removed when the process exits normally.
inline const std::filesystem::path& scratch_dir(const char* harness) {
  static const std::filesystem::path dir = [harness] {
    std::filesystem::path base = "/dev/shm";
    if (!std::filesystem::is_directory(base)) {
      const char* t = std::getenv("TMPDIR");
      base = t && *t ? t : "/tmp";
    }
    auto d = base / ("mambavl-" + std::string(harness) + "-" + std::to_string(getpid()));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    static const std::filesystem::path keep = d;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return d;
  }();
  return dir;
}

inline void write_bytes(const std::filesystem::path& p, const uint8_t* data, size_t size) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) std::abort();  // the harness's own failure (disk full?), not the code under test's
}

inline void write_text(const std::filesystem::path& p, std::string_view s) {
  write_bytes(p, reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Runs f; a mambavl::Error (the promised reaction to bad input) is swallowed, anything else
// propagates to libFuzzer. Returns whether f completed.
template <class F>
bool expect_ok_or_error(F&& f) {
  try {
    f();
    return true;
  } catch (const mambavl::Error&) {
    return false;
  }
}

}  // namespace mambavl::fuzz
