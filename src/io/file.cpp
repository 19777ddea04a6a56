#include "io/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace mambavl::io {

std::string file_kind(unsigned mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

namespace {
std::string prefix(const std::filesystem::path& path, const std::string& what) {
  return path.string() + ": " + (what.empty() ? "" : what + " ");
}
}  // namespace

int open_regular_file(const std::filesystem::path& path, const std::string& what,
                      uint64_t* size_out) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT)
      MVL_FAIL(path.string(), ": ", what.empty() ? "file" : what + " file", " not found");
    MVL_FAIL(prefix(path, what), "cannot open: ", std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    MVL_FAIL(prefix(path, what), "cannot stat: ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    MVL_FAIL(path.string(), ": is ", file_kind(st.st_mode), ", expected ",
             what.empty() ? "a regular file" : "a " + what + " file");
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (size_out) *size_out = static_cast<uint64_t>(st.st_size);
  return fd;
}

std::string read_file(const std::filesystem::path& path, uint64_t max_bytes,
                      const std::string& what) {
  uint64_t size = 0;
  int fd = open_regular_file(path, what, &size);
  if (size > max_bytes) {
    ::close(fd);
    MVL_FAIL(prefix(path, what), "file is ", size, " bytes, over the limit of ", max_bytes,
             " bytes for this kind of file");
  }
  std::string out(size, '\0');
  uint64_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, out.data() + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      MVL_FAIL(prefix(path, what), "read failed: ", std::strerror(err));
    }
    if (n == 0) break;  // shrank while reading
    got += static_cast<uint64_t>(n);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

bool regular_file_exists(const std::filesystem::path& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    MVL_FAIL(prefix(path, what), "cannot stat: ", std::strerror(errno));
  }
  if (S_ISREG(st.st_mode)) return true;
  MVL_FAIL(path.string(), ": is ", file_kind(st.st_mode), ", expected ",
           what.empty() ? "a regular file" : "a " + what + " file");
}

}  // namespace mambavl::io
