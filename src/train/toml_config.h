// Training configuration files: TOML (read with toml++) turned into JSON, command-line overrides
// ("--set stages.1.lr=2e-5") and the unknown-key check every config section's from_json uses.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mambavl::train {

// Reads a TOML file into JSON: tables -> objects, arrays (and arrays of tables) -> arrays,
// integers -> JSON integers, floats -> JSON floats, booleans, strings. Dates and times are an
// error naming the file and the dotted key. A syntax error is a mambavl::Error naming the file,
// line and column ("cfg.toml:3:7: ..."); a missing file is an error naming it.
nlohmann::json load_toml(const std::filesystem::path& path);

// Parses TOML text (as load_toml; `name` is used in messages instead of a file name).
nlohmann::json parse_toml(const std::string& text, const std::string& name);

// Applies "--set a.b.c=value" overrides to `cfg`, in order. The key is a dotted path; missing
// intermediate tables are created; a numeric component indexes an existing array ("stages.1.lr"
// sets `lr` of the second [[stages]] table; the index must exist). The value is parsed as a TOML
// value (3, 1e-3, true, "x", [1, 2], {a = 1}); anything that is not valid TOML and does not start
// with a quote or bracket is taken as a bare string (name=stage1). Errors (mambavl::Error) name
// the override: no '=', an empty key component, an index out of range, a path through a
// non-table value, an unparsable quoted / bracketed value.
void apply_overrides(nlohmann::json& cfg, const std::vector<std::string>& sets);

// Throws a mambavl::Error naming `file` and the dotted key ("section.key", or "key" when `section`
// is empty) of every key of `obj` that is not in `allowed`, and listing the allowed keys. Also an
// error when `obj` is not an object (a table). Use it in every from_json.
void check_keys(const nlohmann::json& obj, const std::vector<std::string>& allowed,
                const std::string& file, const std::string& section);

// Typed access for from_json: obj[key] as T, or `fallback` when absent (or null). A value of the
// wrong type is an error naming file and "section.key" and the expected type. Integers are
// accepted where a float is expected; a float is not accepted for an integer.
template <class T>
T get_or(const nlohmann::json& obj, const std::string& key, const T& fallback,
         const std::string& file, const std::string& section);

}  // namespace mambavl::train
