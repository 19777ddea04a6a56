// Reading files the user names, safely: only regular files (checked on the open descriptor, so a
// FIFO never blocks and a path swapped after a check cannot slip through), never more than a
// stated cap, and every failure one mambavl::Error naming the file.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>

namespace mambavl::io {

// Caps for text formats read whole into memory (the one place that states them).
inline constexpr uint64_t kMaxConfigBytes = 16ull << 20;     // config.json, run files, TOML
inline constexpr uint64_t kMaxTokenizerBytes = 256ull << 20;  // tokenizer.json (NeoX: 2.1 MB)
inline constexpr uint64_t kMaxTextBytes = 1ull << 30;          // prompt files, datasets

// What `st_mode` is, for messages: "a directory", "a FIFO (named pipe)", "a character device", ...
std::string file_kind(unsigned mode);

// Opens `path` read-only without blocking (O_NONBLOCK, then cleared) and checks on the descriptor
// that it is a regular file; else an Error "PATH: is a directory, expected a file" etc. `what`
// (e.g. "config", "image") is put into the messages when not empty. Returns the descriptor; the
// caller closes it. `size_out`, when given, receives the file's size.
int open_regular_file(const std::filesystem::path& path, const std::string& what = "",
                      uint64_t* size_out = nullptr);

// The whole file as bytes; refuses (before reading) a file over max_bytes, naming both sizes.
std::string read_file(const std::filesystem::path& path, uint64_t max_bytes,
                      const std::string& what = "");

// True when `path` names an existing regular file (following symlinks); false for a missing path;
// an Error naming the path when it exists but is something else (a folder, FIFO, device). For
// "is this optional file there" probes that must not mistake a directory for an absent file.
bool regular_file_exists(const std::filesystem::path& path, const std::string& what = "");

}  // namespace mambavl::io
