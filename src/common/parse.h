// Numbers from text the user gave (options, list items, names of files), with range checks whose
// errors name the field: never std::stoll's bare "stoll" or a silent wrap-around.
#pragma once
#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "common/error.h"

namespace mambavl {

// `text` as a whole decimal integer in [lo, hi]; else an Error such as
// "--ids: '99999999999999999999' is out of range (-9223372036854775808 to 9223372036854775807)".
inline int64_t parse_int64(std::string_view text, const std::string& field,
                           int64_t lo = std::numeric_limits<int64_t>::min(),
                           int64_t hi = std::numeric_limits<int64_t>::max()) {
  std::string_view t = text;
  if (!t.empty() && t.front() == '+') t.remove_prefix(1);
  int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  const std::string shown = printable(std::string(text.substr(0, 40))) + (text.size() > 40 ? "..." : "");
  MVL_CHECK(!t.empty() && ec != std::errc::invalid_argument && ptr == t.data() + t.size(), field,
            ": '", shown, "' is not an integer");
  MVL_CHECK(ec != std::errc::result_out_of_range && v >= lo && v <= hi, field, ": '", shown,
            "' is out of range (", lo, " to ", hi, ")");
  return v;
}

}  // namespace mambavl
