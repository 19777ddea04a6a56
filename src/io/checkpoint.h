// Hugging Face style model folders: config.json + model.safetensors, or shards listed in
// model.safetensors.index.json ({"weight_map": {tensor: shard file}}); and loading / saving a
// torch::nn::Module's parameters by name.
#pragma once
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "io/file.h"

namespace torch::nn {
class Module;
}

namespace mambavl::io {

class SafetensorsFile;

// Reads a JSON file; a parse error becomes a mambavl::Error naming the file, line and column.
// Files over max_bytes are refused before reading (config.json and run files are kilobytes).
nlohmann::json read_json_file(const std::filesystem::path& path,
                              uint64_t max_bytes = kMaxConfigBytes);
// Writes JSON (indent 2) atomically (temp file + rename).
void write_json_file(const std::filesystem::path& path, const nlohmann::json& j);
// Writes text atomically (temp file + rename).
void write_text_file_atomic(const std::filesystem::path& path, const std::string& text);

class CheckpointFolder {
 public:
  // Opens dir/model.safetensors, or every shard of dir/model.safetensors.index.json (checking
  // that each listed tensor is in its shard and that no tensor is in two shards). Error otherwise.
  explicit CheckpointFolder(const std::filesystem::path& dir);
  ~CheckpointFolder();

  const std::filesystem::path& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  // Owned CPU tensor with the stored dtype. Error naming the folder if absent.
  at::Tensor tensor(const std::string& name) const;
  // The stored tensor as a copy-on-write view of the memory-mapped file where its span is
  // aligned (else an owned copy): SafetensorsFile::view. Outlives this object.
  at::Tensor view(const std::string& name) const;
  // Reads (and converts to dst's dtype) into a contiguous CPU tensor: SafetensorsFile::read_into.
  void read_into(const std::string& name, at::Tensor& dst) const;
  std::vector<int64_t> shape(const std::string& name) const;
  std::string dtype(const std::string& name) const;
  // The file that holds `name`, for messages ("model-00001-of-00002.safetensors").
  std::filesystem::path file_of(const std::string& name) const;

 private:
  struct Impl;
  std::filesystem::path dir_;
  std::unique_ptr<Impl> impl_;
};

struct LoadOptions {
  // Maps a module parameter/buffer name to the checkpoint key(s) to try, in order. Default: same name.
  std::function<std::vector<std::string>(const std::string&)> keys_for;
  // Checkpoint keys that may be present without a matching parameter (e.g. rotary buffers).
  std::function<bool(const std::string&)> ignore_extra;
  // Parameters allowed to be absent (keep their current value), e.g. a tied lm_head.
  std::function<bool(const std::string&)> allow_missing;
  // The dtype a floating parameter (not a buffer) gets, given its name and current dtype;
  // default: its current dtype. Lets a model load straight into its run dtype (bf16) without an
  // f32 copy of every weight first.
  std::function<at::ScalarType(const std::string&, at::ScalarType)> dtype_for;
};

// Loads every named parameter (and buffer) of `module` from the checkpoint, in the parameter's
// dtype (or opt.dtype_for's). A CPU parameter whose stored dtype matches gets the memory-mapped
// file's bytes themselves (a copy-on-write view, set_data: no copy, and its placeholder storage
// is dropped); otherwise the file is read and converted into a new tensor of that dtype. Errors (mambavl::Error, naming file and tensor): missing tensor, extra
// tensor, shape mismatch, non-floating stored dtype for a floating parameter.
void load_module(torch::nn::Module& module, const CheckpointFolder& ckpt, const LoadOptions& opt = {});

// Saves `module`'s parameters and buffers to dir/model.safetensors (atomic; the folder is created;
// metadata {"format": "pt"}), with names mapped by `rename` (identity when empty; a name mapped to
// "" is not saved) and optional dtype conversion of floating tensors (at::ScalarType::Undefined
// keeps each; integer buffers always keep theirs).
void save_module(const torch::nn::Module& module, const std::filesystem::path& dir,
                 const std::function<std::string(const std::string&)>& rename = {},
                 at::ScalarType dtype = at::ScalarType::Undefined);

}  // namespace mambavl::io
