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

// Temporaries left by a killed process. Our temporaries are named "<name>.tmp.<pid>"
// (AtomicFileWriter's files; the hidden ".<name>.tmp.<pid>" folders of
// train::write_dir_atomically and of the experiment runner's cache) or ".<name>.old.<pid>"
// (write_dir_atomically's fallback when the filesystem has no atomic exchange), where <pid> is the
// writing process (decimal, no sign or leading zero). temp_name_pid returns that pid, or -1 when
// `name` is not such a name.
long long temp_name_pid(const std::string& name);
// Whether a process with this id exists: kill(pid, 0) succeeds or fails with anything but ESRCH
// (a process of another user exists; so does a zombie until it is reaped).
bool process_exists(long long pid);
// Removes the entries directly in `dir` (not below) whose names are our temporaries
// (temp_name_pid) of processes that no longer exist. Those of live processes are kept: another
// run may be writing them (this process's own are live too). Best effort: a missing `dir` or an
// entry that cannot be removed is skipped. Returns the number of entries removed.
int remove_stale_temps(const std::filesystem::path& dir);

}  // namespace mambavl::io
