// Error reporting: every user-facing failure is a mambavl::Error whose message names the file /
// tensor / field and the problem, so the CLI can print it and exit non-zero.
#pragma once
#include <algorithm>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
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

// Length of the valid UTF-8 character starting at s[i] (1 for ASCII, 2-4), or 0 when the bytes
// there are not valid UTF-8 (bad lead byte, truncated, overlong, surrogate, past U+10FFFF).
inline size_t utf8_char_length(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return 1;
  const size_t n = (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3
                   : (c >= 0xf0 && c <= 0xf4) ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  uint32_t cp = c & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (d & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

// Whether `s` is valid UTF-8 throughout (what JSON strings must be).
inline bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_char_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

// `s` as one printable line: control bytes (newline, CR, ESC, C1 controls, ...) and bytes that
// are not valid UTF-8 become \n, \r, \t or \xNN, so a message quoting a file name or file content
// can never split a line, move the cursor or print garbage. Valid UTF-8 text (accents, CJK) is
// kept.
inline std::string printable(const std::string& s) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  auto escape = [&](unsigned char c) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else out += {'\\', 'x', hex[c >> 4], hex[c & 15]};
  };
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_char_length(s, i);
    // C1 controls (U+0080-U+009F) are 0xC2 0x80-0x9F.
    const bool control = c < 0x20 || c == 0x7f ||
                         (n == 2 && c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0);
    if (n == 0 || control) {
      const size_t bytes = std::max<size_t>(n, 1);
      for (size_t k = 0; k < bytes; ++k) escape(static_cast<unsigned char>(s[i + k]));
      i += bytes;
      continue;
    }
    out.append(s, i, n);
    i += n;
  }
  return out;
}

}  // namespace mambavl

// MVL_CHECK(cond, parts...): throws mambavl::Error(concatenation of parts) when cond is false.
#define MVL_CHECK(cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) throw ::mambavl::Error(::mambavl::detail::cat(__VA_ARGS__)); \
  } while (0)
#define MVL_FAIL(...) throw ::mambavl::Error(::mambavl::detail::cat(__VA_ARGS__))
