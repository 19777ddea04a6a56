// Error reporting: every user-facing failure is a mambavl::Error whose message names the file /
// tensor / field and the problem, so the CLI can print it and exit non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace mambavl {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

template <class T>
std::string join(const std::vector<T>& v, const char* sep = ", ") {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? sep : "") << v[i];
  return s.str();
}

}  // namespace mambavl

// MVL_CHECK(cond, parts...): throws mambavl::Error(concatenation of parts) when cond is false.
#define MVL_CHECK(cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) throw ::mambavl::Error(::mambavl::detail::cat(__VA_ARGS__)); \
  } while (0)
#define MVL_FAIL(...) throw ::mambavl::Error(::mambavl::detail::cat(__VA_ARGS__))
