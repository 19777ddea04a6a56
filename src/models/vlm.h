// Vision-language models (SPEC §2.3): a VisionEncoder, a Connector and a CausalLM, assembled as
// LLaVA does: connector outputs overwrite the input embeddings at the image placeholder
// positions of the token sequence (prefill only), and the language model runs on the result.
//
// Families (the papers' names; any encoder x connector x backbone builds, the family only sets
// defaults and is recorded in the folder):
//   "mamba-vl"  : Mamba backbone, MLP connector, separator image block (Shaking-Up)
//   "pythia-vl" : GPT-NeoX backbone, MLP connector, separator image block (Shaking-Up)
//   "vl-mamba"  : Mamba backbone, VSS-L2 + BSM connector, plain image block (VL-Mamba)
//   "hybrid-vl" : hybrid Mamba + attention backbone, MLP connector, separator image block
//
// Folder format (Hugging Face LLaVA style):
//   config.json        {"model_type": "mambavl", "architectures":
//   ["MambaVLForConditionalGeneration"],
//                       "family", "vision_config", "connector_config", "text_config",
//                       "vision_feature_layer", "vision_feature_select_strategy" ("patch" |
//                       "cls_patch"), "vision_final_norm", "image_size", "image_block"
//                       ("separator" | "plain"), "image_start_token", "image_row_end_token",
//                       "prompt_order" ("default" | "instruction_first" | "query_first")}
//   model.safetensors  one file, keys prefixed "vision_tower.", "multi_modal_projector.",
//                       "language_model." followed by each component's own parameter names
//   tokenizer.json (+ tokenizer_config.json)
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <array>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/image.h"
#include "io/tokenizer.h"
#include "models/connector.h"
#include "models/lm.h"
#include "models/lm_loss.h"
#include "models/vision.h"

namespace mambavl::models {

struct VLMConfig {
  std::string family = "mamba-vl";
  nlohmann::json vision_config;  // the encoder's config.json
  nlohmann::json text_config;    // the language model's config.json
  ConnectorConfig connector;
  int64_t vision_feature_layer = -1;
  std::string vision_feature_select = "patch";  // "patch" | "cls_patch"
  bool vision_final_norm = false;
  int64_t image_size = 0;                 // > 0: input size (overrides the encoder's preprocess)
  std::string image_block = "separator";  // "separator" (### rows && ###) | "plain" (patches only)
  std::string image_start_token = "###";
  std::string image_row_end_token = "&&";
  std::string prompt_order = "default";  // "default" | "instruction_first" | "query_first"

  static const std::vector<std::string>& families();
  // Unknown keys, wrong types and unsupported values are errors naming `file` and the key.
  static VLMConfig from_json(const nlohmann::json& j, const std::string& file);
  nlohmann::json to_json() const;
  void validate(const std::string& file) const;
};

// One training / scoring batch, made by data::make_vlm_batch (data/vl_sequence.h).
struct VLMBatch {
  at::Tensor ids;     // [B, L] int64; image placeholder positions hold any valid id
  at::Tensor labels;  // [B, L] int64: the target id of position t (-100: no loss); the loss of
                      // position t is predicted from position t - 1 (Hugging Face convention)
  at::Tensor images;  // [n, 3, S, S] normalised, every image of the batch in order (or undefined)
  at::Tensor image_pos;  // [n, T] int64: flat positions b * L + t that image i's T tokens fill
};

class VLM {
 public:
  // Builds the three parts from the config; `initialize`: random weights deterministic in `seed`
  // (false leaves them to be loaded).
  VLM(VLMConfig cfg, uint64_t seed, bool initialize = true);
  // From existing parts (compose): the config's sub-configs are taken from the parts.
  VLM(VLMConfig cfg, std::unique_ptr<VisionEncoder> vision, std::shared_ptr<ConnectorImpl> conn,
      std::unique_ptr<CausalLM> lm);
  static std::unique_ptr<VLM> load(const std::filesystem::path& dir);
  // config.json + model.safetensors (+ the tokenizer files when a tokenizer is set: copied from
  // the folder it came from); each file atomic.
  void save(const std::filesystem::path& dir) const;

  const VLMConfig& config() const { return cfg_; }
  VisionEncoder& vision() { return *vision_; }
  ConnectorImpl& connector() { return *connector_; }
  CausalLM& lm() { return *lm_; }
  torch::nn::Module& module() {
    return *root_;
  }  // children: vision_tower, multi_modal_projector,
     // language_model
  // The tokenizer of the folder (set by load / set_tokenizer); Error when there is none.
  const io::Tokenizer& tokenizer() const;
  bool has_tokenizer() const { return tokenizer_.has_value(); }
  // Sets the tokenizer from a tokenizer.json; its files are copied by save().
  void set_tokenizer(const std::filesystem::path& tokenizer_json);

  io::ImagePreprocess preprocess() const;  // the encoder's, with image_size applied
  FeatureSelect feature_select() const;
  // The patch grid of one image of the configured size, and the tokens per image in the sequence
  // (grid_h * grid_w, plus the prefix token with cls_patch, which then leads the block).
  std::array<int64_t, 2> grid() const;
  int64_t image_tokens() const;
  // Image-block token ids (looked up in the tokenizer: Error if a string is not one token).
  int64_t image_start_id() const;
  int64_t image_row_end_id() const;
  std::optional<int64_t> eos_id() const;

  // images [n, 3, S, S] -> connector outputs [n, T, hidden] in the LM's compute dtype. The encoder
  // runs without gradients when all its parameters are frozen.
  at::Tensor encode_images(const at::Tensor& images);
  // ids [B, L] -> input embeddings with the image tokens written at image_pos ([B, L, hidden]).
  at::Tensor embed(const VLMBatch& batch);
  // Logits [B, L, V] fp32 of a batch (no cache).
  at::Tensor logits(const VLMBatch& batch);
  LMLoss loss(const VLMBatch& batch);  // models/lm_loss.h

  // Casts every part to the compute dtype (kFloat / kBFloat16).
  void to_dtype(at::ScalarType dtype);
  int64_t num_parameters() const;
  // Human-readable summary (family, parts, sizes, parameters).
  nlohmann::json describe() const;

 private:
  void register_parts();
  VLMConfig cfg_;
  std::unique_ptr<VisionEncoder> vision_;
  std::shared_ptr<ConnectorImpl> connector_;
  std::unique_ptr<CausalLM> lm_;
  std::shared_ptr<torch::nn::Module> root_;
  std::optional<io::Tokenizer> tokenizer_;
  std::filesystem::path tokenizer_dir_;
};

// True when `dir/config.json` is a VLM folder (model_type "mambavl" / llava-style sub-configs).
bool is_vlm_folder(const std::filesystem::path& dir);

// Named random VLMs (mambavl init --preset): tiny ones for training from scratch on 2 CPU cores
// and the papers' real shapes. `vocab` > 0 sets the LM vocabulary (from a tokenizer).
std::vector<std::string> vlm_preset_names();
bool is_vlm_preset(const std::string& name);
VLMConfig vlm_preset(const std::string& name, int64_t vocab);

}  // namespace mambavl::models
