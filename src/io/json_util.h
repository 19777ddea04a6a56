// JSON parsing with a nesting limit: nlohmann's DOM builds and destroys deep values recursively,
// so a hostile file of a few hundred thousand '[' would overflow the stack.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"

namespace mambavl::io {

// Parses [first, last); nlohmann::json::parse_error on malformed input, mambavl::Error
// (`where` + "JSON nested deeper than N levels") when containers nest deeper than max_depth.
template <class It>
nlohmann::json parse_json_bounded(It first, It last, int max_depth, const std::string& where) {
  auto limit = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start ||
         event == nlohmann::json::parse_event_t::array_start) &&
        depth >= max_depth)
      MVL_FAIL(where, "JSON nested deeper than ", max_depth, " levels");
    return true;
  };
  return nlohmann::json::parse(first, last, limit);
}

}  // namespace mambavl::io
