// What a config.json implies about its weights, compared with the checkpoint's safetensors header
// before the model is built: a config whose sizes disagree with the weights beside it (a corrupt
// or hostile config.json next to a tiny model.safetensors) fails with an error naming config.json,
// the field and the tensor, instead of allocating what the config asks for.
//
// Each config family lists (without allocating anything) the tensors whose shapes carry its size
// fields (embeddings, the first layer's projections, heads), the layer counts, and its parameter
// count. The check, in order:
//   1. every listed tensor that the checkpoint has must have exactly the implied shape (listed
//      tensors the checkpoint lacks are left to io::load_module, which names every missing one);
//   2. every layer count must be covered: a config asking for more layers than the checkpoint has
//      is an error naming the field;
//   3. the parameter count may not exceed twice the values the checkpoint holds (plus 2^20): the
//      backstop that bounds the allocation by the size of the weights file whatever was missing.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mambavl::io {
class CheckpointFolder;
}

namespace mambavl::models {

// One dimension of an expected tensor and the config field that sets it.
struct ExpectedDim {
  int64_t size = 0;
  std::string field;  // the config key, e.g. "intermediate_size" (empty: a fixed dimension)
  std::string expr;   // how the dimension follows from it, e.g. "2 × intermediate_size"
};

struct ExpectedTensor {
  std::vector<std::string> keys;  // checkpoint names that may hold it (layouts differ); first found
  std::vector<ExpectedDim> dims;
};

// Layers numbered under a prefix ("backbone.layers." then the index then ".").
struct ExpectedLayers {
  std::vector<std::string> prefixes;  // alternatives (layouts differ)
  int64_t count = 0;
  std::string field;  // e.g. "num_hidden_layers"
};

struct ExpectedWeights {
  std::vector<ExpectedTensor> tensors;
  std::vector<ExpectedLayers> layers;
  double num_parameters = 0;  // the model the config describes (floating point: cannot overflow)

  void tensor(std::vector<std::string> keys, std::vector<ExpectedDim> dims) {
    tensors.push_back({std::move(keys), std::move(dims)});
  }
  void layer_count(std::vector<std::string> prefixes, int64_t count, std::string field) {
    layers.push_back({std::move(prefixes), count, std::move(field)});
  }
  // Adds `part` (a sub-model stored under `key_prefix`, e.g. "language_model.") to this one.
  void append(const ExpectedWeights& part, const std::string& key_prefix);
};

// A dimension set by `field` (expr defaults to the field's name) / a fixed one.
inline ExpectedDim dim(int64_t size, std::string field, std::string expr = "") {
  return {size, std::move(field), std::move(expr)};
}
inline ExpectedDim fixed(int64_t size) { return {size, "", ""}; }

// The checks above; every error names `config_file`, the field and (for shapes) the tensor and
// the weights file. Reads only the checkpoint's header (names and shapes).
void check_weights_match_config(const ExpectedWeights& w, const io::CheckpointFolder& ckpt,
                                const std::string& config_file);

}  // namespace mambavl::models
