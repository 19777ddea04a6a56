// Typed access to config.json fields with errors naming the file and the key.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "common/error.h"

namespace mambavl::cfg {

inline const char* type_name(const nlohmann::json& v) { return v.type_name(); }

inline int64_t get_int(const nlohmann::json& j, const std::string& key, const std::string& file,
                       int64_t def) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  MVL_CHECK(v.is_number_integer(), file, ": key '", key, "' must be an integer, got ", type_name(v),
            " (", v.dump(), ")");
  // JSON integers past int64 arrive as unsigned: refused, never wrapped to a negative size.
  MVL_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX), file, ": key '",
            key, "' = ", v.dump(), " is out of range (at most ", INT64_MAX, ")");
  return v.get<int64_t>();
}

// `value` of config field `field` within [lo, hi], else an Error such as
// "DIR/config.json: intermediate_size 274877906944 is over the limit of 1048576".
inline void check_limit(int64_t value, int64_t lo, int64_t hi, const std::string& file,
                        const std::string& field) {
  MVL_CHECK(value <= hi, file, ": ", field, " ", value, " is over the limit of ", hi);
  MVL_CHECK(value >= lo, file, ": ", field, " ", value, " must be at least ", lo);
}

// get_int with the range check (the field named by `key`).
inline int64_t get_int_in(const nlohmann::json& j, const std::string& key, const std::string& file,
                          int64_t def, int64_t lo, int64_t hi) {
  const int64_t v = get_int(j, key, file, def);
  check_limit(v, lo, hi, file, key);
  return v;
}

inline int64_t require_int(const nlohmann::json& j, const std::string& key,
                           const std::string& file) {
  MVL_CHECK(j.contains(key) && !j.at(key).is_null(), file, ": required key '", key, "' is missing");
  return get_int(j, key, file, 0);
}

inline double get_double(const nlohmann::json& j, const std::string& key, const std::string& file,
                         double def) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  MVL_CHECK(v.is_number(), file, ": key '", key, "' must be a number, got ", type_name(v), " (",
            v.dump(), ")");
  return v.get<double>();
}

inline bool get_bool(const nlohmann::json& j, const std::string& key, const std::string& file,
                     bool def) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  MVL_CHECK(v.is_boolean(), file, ": key '", key, "' must be true or false, got ", v.dump());
  return v.get<bool>();
}

inline std::string get_string(const nlohmann::json& j, const std::string& key,
                              const std::string& file, const std::string& def) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  MVL_CHECK(v.is_string(), file, ": key '", key, "' must be a string, got ", v.dump());
  return v.get<std::string>();
}

// Every key of object `j` must be in `known`; else an error listing the unknown ones.
inline void check_known_keys(const nlohmann::json& j, const std::set<std::string>& known,
                             const std::string& file, const std::string& where = "") {
  MVL_CHECK(j.is_object(), file, ": ", where.empty() ? "config" : where, " must be a JSON object");
  std::vector<std::string> unknown;
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) unknown.push_back("'" + it.key() + "'");
  MVL_CHECK(unknown.empty(), file, ": unknown key", unknown.size() > 1 ? "s " : " ", join(unknown),
            where.empty() ? "" : " in " + where,
            " (a typo, or a feature mambavl does not support; known keys: ",
            join(std::vector<std::string>(known.begin(), known.end())), ")");
}

}  // namespace mambavl::cfg
