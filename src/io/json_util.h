// JSON parsing with a nesting limit: nlohmann's DOM builds and destroys deep values recursively,
// so a hostile file of a few hundred thousand '[' would overflow the stack.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"

namespace mambavl::io {

// Parses [first, last); nlohmann::json::parse_error on malformed input, mambavl::Error
// (`where` + "JSON nested deeper than N levels") when containers nest deeper than max_depth, and
// (`where` + "number out of range") for a number beyond double's range.
template <class It>
nlohmann::json parse_json_bounded(It first, It last, int max_depth, const std::string& where) {
  auto limit = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start ||
         event == nlohmann::json::parse_event_t::array_start) &&
        depth >= max_depth)
      MVL_FAIL(where, "JSON nested deeper than ", max_depth, " levels");
    return true;
  };
  try {
    return nlohmann::json::parse(first, last, limit);
  } catch (const nlohmann::json::out_of_range& e) {
    // A number beyond double's range (1e400): nlohmann throws out_of_range.406, not parse_error.
    MVL_FAIL(where, "number out of range: ", e.what());
  }
}

}  // namespace mambavl::io
