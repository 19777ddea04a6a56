#include "train/toml_config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "io/file.h"

namespace mambavl::train {

namespace fs = std::filesystem;

namespace {

std::string dotted(const std::string& section, const std::string& key) {
  return section.empty() ? key : section + "." + key;
}

nlohmann::json to_json(const toml::node& node, const std::string& where, const std::string& key) {
  switch (node.type()) {
    case toml::node_type::table: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [k, v] : *node.as_table()) {
        const std::string name(k.str());
        out[name] = to_json(v, where, dotted(key, name));
      }
      return out;
    }
    case toml::node_type::array: {
      nlohmann::json out = nlohmann::json::array();
      const toml::array& a = *node.as_array();
      for (size_t i = 0; i < a.size(); ++i)
        out.push_back(to_json(a[i], where, key + "." + std::to_string(i)));
      return out;
    }
    case toml::node_type::string:
      return std::string(node.as_string()->get());
    case toml::node_type::integer:
      return node.as_integer()->get();
    case toml::node_type::floating_point:
      return node.as_floating_point()->get();
    case toml::node_type::boolean:
      return node.as_boolean()->get();
    default:
      break;
  }
  const auto& src = node.source().begin;
  MVL_FAIL(where, ":", src.line, ":", src.column, ": key '", key,
           "': dates and times are not supported in training configs; use a string or a number");
}

toml::table parse_or_throw(const std::string& text, const std::string& name) {
  try {
    return toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    MVL_FAIL(name, ":", b.line, ":", b.column, ": TOML syntax error: ", e.description());
  }
}

std::string quoted(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('\'');
  out.append(s);
  out.push_back('\'');
  return out;
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 10 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

nlohmann::json parse_toml(const std::string& text, const std::string& name) {
  const toml::table t = parse_or_throw(text, name);
  return to_json(t, name, "");
}

nlohmann::json load_toml(const fs::path& path) {
  return parse_toml(io::read_file(path, io::kMaxConfigBytes, "config"), path.string());
}

void apply_overrides(nlohmann::json& cfg, const std::vector<std::string>& sets) {
  if (cfg.is_null()) cfg = nlohmann::json::object();
  for (const std::string& set : sets) {
    MVL_CHECK(valid_utf8(set), "--set '", printable(set), "': not valid UTF-8");
    const std::string where = "--set '" + set + "'";
    const size_t eq = set.find('=');
    MVL_CHECK(eq != std::string::npos, where, ": expected key=value (e.g. stages.0.lr=1e-3)");
    std::string key = set.substr(0, eq);
    const std::string text = set.substr(eq + 1);
    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
    std::vector<std::string> parts;
    {
      std::string cur;
      for (char c : key) {
        if (c == '.') {
          parts.push_back(cur);
          cur.clear();
        } else {
          cur += c;
        }
      }
      parts.push_back(cur);
    }
    for (const auto& p : parts)
      MVL_CHECK(!p.empty(), where, ": empty component in the key '", key, "'");
    MVL_CHECK(text.find('\n') == std::string::npos, where, ": the value must be on one line");

    // The value: a TOML value, else a bare word taken as a string.
    nlohmann::json value;
    try {
      const toml::table t =
          toml::parse(std::string_view("v = " + text), std::string_view("override"));
      value = to_json(*t.get("v"), where, key);
    } catch (const toml::parse_error& e) {
      size_t first = text.find_first_not_of(" \t");
      const char c0 = first == std::string::npos ? '\0' : text[first];
      MVL_CHECK(c0 != '"' && c0 != '\'' && c0 != '[' && c0 != '{', where,
                ": the value is not valid TOML: ", e.description());
      const size_t last = text.find_last_not_of(" \t");
      value = first == std::string::npos ? std::string() : text.substr(first, last - first + 1);
    }

    nlohmann::json* node = &cfg;
    std::string path;
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string& p = parts[i];
      const bool last = i + 1 == parts.size();
      const std::string parent = path.empty() ? std::string("(top level)") : path;
      path = path.empty() ? p : path + "." + p;
      if (node->is_array()) {
        MVL_CHECK(is_index(p), where, ": '", path, "' indexes a list: use a number");
        const size_t idx = std::stoul(p);
        MVL_CHECK(idx < node->size(), where, ": index ", idx, " is out of range ('", parent,
                  "' has ", node->size(), " entries)");
        node = &(*node)[idx];
      } else {
        if (node->is_null()) *node = nlohmann::json::object();
        MVL_CHECK(node->is_object(), where, ": '", parent, "' is a value, not a table");
        node = &(*node)[p];
      }
      if (last) *node = value;
    }
  }
}

void check_keys(const nlohmann::json& obj, const std::vector<std::string>& allowed,
                const std::string& file, const std::string& section) {
  MVL_CHECK(obj.is_object(), file, ": '", section.empty() ? std::string("(top level)") : section,
            "' must be a table");
  std::vector<std::string> unknown;
  for (const auto& item : obj.items())
    if (std::find(allowed.begin(), allowed.end(), item.key()) == allowed.end())
      unknown.push_back(quoted(dotted(section, item.key())));
  if (unknown.empty()) return;
  MVL_FAIL(file, ": unknown key", unknown.size() > 1 ? "s " : " ", join(unknown), " (allowed in ",
           section.empty() ? std::string("the top level") : quoted(section), ": ", join(allowed),
           ")");
}

namespace {

template <class T>
const char* type_name();
template <>
const char* type_name<double>() {
  return "a number";
}
template <>
const char* type_name<int64_t>() {
  return "an integer";
}
template <>
const char* type_name<uint64_t>() {
  return "a non-negative integer";
}
template <>
const char* type_name<bool>() {
  return "true or false";
}
template <>
const char* type_name<std::string>() {
  return "a string";
}
template <>
const char* type_name<std::vector<std::string>>() {
  return "a list of strings";
}
template <>
const char* type_name<std::vector<int64_t>>() {
  return "a list of integers";
}

template <class T>
bool type_ok(const nlohmann::json& v) {
  if constexpr (std::is_same_v<T, double>) return v.is_number();
  if constexpr (std::is_same_v<T, int64_t>) return v.is_number_integer();
  if constexpr (std::is_same_v<T, uint64_t>)
    return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  if constexpr (std::is_same_v<T, bool>) return v.is_boolean();
  if constexpr (std::is_same_v<T, std::string>) return v.is_string();
  if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if (!v.is_array()) return false;
    for (const auto& e : v)
      if (!e.is_string()) return false;
    return true;
  }
  if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (!v.is_array()) return false;
    for (const auto& e : v)
      if (!e.is_number_integer()) return false;
    return true;
  }
  return false;
}

}  // namespace

template <class T>
T get_or(const nlohmann::json& obj, const std::string& key, const T& fallback,
         const std::string& file, const std::string& section) {
  if (!obj.is_object() || !obj.contains(key) || obj.at(key).is_null()) return fallback;
  const nlohmann::json& v = obj.at(key);
  MVL_CHECK(type_ok<T>(v), file, ": '", dotted(section, key), "' must be ", type_name<T>(),
            ", got ", v.dump());
  return v.get<T>();
}

template double get_or<double>(const nlohmann::json&, const std::string&, const double&,
                               const std::string&, const std::string&);
template int64_t get_or<int64_t>(const nlohmann::json&, const std::string&, const int64_t&,
                                 const std::string&, const std::string&);
template uint64_t get_or<uint64_t>(const nlohmann::json&, const std::string&, const uint64_t&,
                                   const std::string&, const std::string&);
template bool get_or<bool>(const nlohmann::json&, const std::string&, const bool&,
                           const std::string&, const std::string&);
template std::string get_or<std::string>(const nlohmann::json&, const std::string&,
                                         const std::string&, const std::string&,
                                         const std::string&);
template std::vector<std::string> get_or<std::vector<std::string>>(const nlohmann::json&,
                                                                   const std::string&,
                                                                   const std::vector<std::string>&,
                                                                   const std::string&,
                                                                   const std::string&);

template std::vector<int64_t> get_or<std::vector<int64_t>>(const nlohmann::json&,
                                                           const std::string&,
                                                           const std::vector<int64_t>&,
                                                           const std::string&, const std::string&);

}  // namespace mambavl::train
