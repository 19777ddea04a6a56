// safetensors: reader (memory-mapped, header fully validated) and writer (temp file + rename).
// Format: u64 little-endian header length n, n bytes of JSON {name: {dtype, shape, data_offsets:
// [begin, end]}, "__metadata__": {str: str}}, then the byte buffer; offsets relative to it.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mambavl::io {

struct TensorEntry {
  std::string dtype;           // as stored: "F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL"...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte span inside the data buffer
};

class SafetensorsFile {
 public:
  // Maps the file and validates everything: header length within the file and <= 100 MB, valid
  // JSON object, known dtypes, shape product * dtype size == span, spans inside the buffer and not
  // overlapping. Every failure is a mambavl::Error naming the file (and the tensor, if any).
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const TensorEntry& entry(const std::string& name) const;  // Error if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // An owned CPU tensor with the stored dtype and shape, read from the file (pread, so the
  // mapping's pages are not made resident).
  at::Tensor tensor(const std::string& name) const;

  // Reads tensor `name` into `dst` (a contiguous CPU tensor with as many elements, any floating /
  // integer dtype: converted chunk by chunk, so no stored-dtype copy of the whole tensor is made).
  void read_into(const std::string& name, at::Tensor& dst) const;

  // A CPU tensor with the stored dtype and shape that is a view of the file's mapping when the
  // span is aligned for the dtype (copy-on-write: writing to it never changes the file; the
  // mapping lives as long as any view does, also after this object is gone). An owned copy as
  // tensor() gives otherwise (misaligned span, empty tensor). When the last view of a tensor is
  // freed, its pages are given back (madvise), so a loaded-then-converted weight stops counting.
  at::Tensor view(const std::string& name) const;
  bool viewable(const std::string& name) const;  // view() would share the mapping
  // Whether `p` points into this file's mapping (tests; views keep it mapped).
  bool in_mapping(const void* p) const;

  struct Mapping;  // mmap'ed file + descriptor, shared with the views

 private:
  std::filesystem::path path_;
  std::map<std::string, TensorEntry> entries_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_offset_ = 0;  // file offset of the byte buffer
  std::shared_ptr<Mapping> map_;
};

// Writes tensors (any device / dtype among the supported ones; made contiguous on CPU) to `path`
// atomically: a temp file in the same folder, fsync, rename. Names must be unique.
void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// safetensors dtype string <-> ATen scalar type (Error for unsupported ones).
at::ScalarType scalar_type_from_safetensors(const std::string& dtype);
std::string safetensors_dtype(at::ScalarType t);

}  // namespace mambavl::io
