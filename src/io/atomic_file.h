// Atomic file replacement: bytes go to `<path>.tmp.<pid>` in the target's folder, which is fsync'ed
// and renamed over `path`, so readers see either the old file or the complete new one.
#pragma once
#include <cstddef>
#include <filesystem>
#include <string>

namespace mambavl::io {

class AtomicFileWriter {
 public:
  // Creates (truncates) the temp file. Error naming `path` if it cannot.
  explicit AtomicFileWriter(std::filesystem::path path);
  // Removes the temp file unless commit() succeeded.
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);  // all of it, or Error
  // fsync, close, rename over the target, fsync the folder. Error (temp file removed) on failure.
  void commit();

  const std::filesystem::path& path() const { return path_; }
  const std::filesystem::path& temp_path() const { return tmp_; }

 private:
  void discard() noexcept;
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// The temp file name used for `path` by this process.
std::filesystem::path atomic_temp_path(const std::filesystem::path& path);

}  // namespace mambavl::io
