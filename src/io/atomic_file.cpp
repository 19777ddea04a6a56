#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <vector>

#include "common/error.h"

namespace mambavl::io {

std::filesystem::path atomic_temp_path(const std::filesystem::path& path) {
  std::filesystem::path tmp = path;
  tmp += ".tmp." + std::to_string(static_cast<long long>(::getpid()));
  return tmp;
}

long long temp_name_pid(const std::string& name) {
  for (const char* marker : {".tmp.", ".old."}) {
    const size_t at = name.rfind(marker);
    if (at == std::string::npos) continue;
    const std::string digits = name.substr(at + 5);
    // A non-empty base; ".old." only on hidden names (write_dir_atomically's).
    const bool hidden = name[0] == '.';
    if (at == 0 || (hidden && at == 1) || (marker[1] == 'o' && !hidden)) continue;
    if (digits.empty() || digits.size() > 10 || digits[0] == '0') continue;
    bool all_digits = true;
    for (char c : digits) all_digits = all_digits && c >= '0' && c <= '9';
    if (!all_digits) continue;
    const long long pid = std::stoll(digits);
    if (pid > 0 && pid <= 0x7fffffffLL) return pid;
  }
  return -1;
}

bool process_exists(long long pid) {
  if (pid <= 0 || pid > 0x7fffffffLL) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH;
}

int remove_stale_temps(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const long long pid = temp_name_pid(it->path().filename().string());
    if (pid > 0 && !process_exists(pid)) stale.push_back(it->path());
  }
  int removed = 0;
  for (const fs::path& p : stale) {
    std::error_code rec;
    fs::remove_all(p, rec);  // a symlink itself, never its target
    removed += rec ? 0 : 1;
  }
  return removed;
}

AtomicFileWriter::AtomicFileWriter(std::filesystem::path path)
    : path_(std::move(path)), tmp_(atomic_temp_path(path_)) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MVL_CHECK(fd_ >= 0, path_.string(), ": cannot create temporary file ", tmp_.string(), ": ",
            std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_) discard();
}

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  MVL_CHECK(fd_ >= 0, path_.string(), ": write after commit");
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; loop over partial writes and EINTR.
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = errno;
      discard();
      MVL_FAIL(path_.string(), ": write to ", tmp_.string(),
               " failed: ", w < 0 ? std::strerror(err) : "no progress");
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void AtomicFileWriter::commit() {
  MVL_CHECK(fd_ >= 0, path_.string(), ": commit called twice");
  if (::fsync(fd_) != 0) {
    int err = errno;
    discard();
    MVL_FAIL(path_.string(), ": fsync of ", tmp_.string(), " failed: ", std::strerror(err));
  }
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    int err = errno;
    discard();
    MVL_FAIL(path_.string(), ": close of ", tmp_.string(), " failed: ", std::strerror(err));
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    discard();
    MVL_FAIL(path_.string(), ": cannot rename ", tmp_.string(), " to it: ", std::strerror(err));
  }
  committed_ = true;
  // Make the rename itself durable; failure here is not fatal (the data is already in place).
  std::filesystem::path dir = path_.parent_path();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace mambavl::io
