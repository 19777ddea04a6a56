// The vision-side interfaces (SPEC §2): a VisionEncoder turns normalised images into a patch
// grid of features (ViT: CLIP / SigLIP / EVA-02; MambaOut's last stage), and an ImageClassifier
// turns them into class logits (the MambaOut experiment). The VLM and the classification trainer
// are written against these only.
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "io/image.h"
#include "models/weights_check.h"

namespace torch::nn {
class Module;
}

namespace mambavl::models {

// Which features the encoder returns (LLaVA's mm_vision_select_layer / _feature).
struct FeatureSelect {
  // Hidden state index as in Hugging Face's hidden_states tuple: 0 = embeddings, i = after block
  // i; negative counts from the end (-1 = last block, -2 = the one before). ViTs only.
  int64_t layer = -1;
  // false: "patch" (prefix tokens such as CLS dropped); true: "cls_patch" (kept, first).
  bool keep_prefix = false;
  // Apply the encoder's final norm to the selected hidden state (CLIP / SigLIP post_layernorm,
  // EVA-02 timm `norm` as in timm's forward_features, which Shaking-Up uses). Only with the last
  // layer (-1); Error otherwise or when the encoder has no final norm.
  bool final_norm = false;
  static FeatureSelect parse(int64_t layer, const std::string& feature);  // "patch"|"cls_patch"
};

struct VisionFeatures {
  at::Tensor tokens;  // [B, P + gh*gw, C]: P prefix tokens (0 unless keep_prefix), then the
                      // patch grid row-major
  int64_t num_prefix = 0;
  int64_t grid_h = 0, grid_w = 0;
};

class VisionEncoder {
 public:
  virtual ~VisionEncoder() = default;
  virtual std::string arch() const = 0;  // "clip", "siglip", "eva02", "mambaout"
  virtual int64_t feature_dim() const = 0;
  // The input this encoder was trained for (size, resample, mean / std).
  virtual io::ImagePreprocess preprocess() const = 0;
  // images [B, 3, H, W] normalised, any H, W (ViTs interpolate their position embeddings to the
  // new grid and drop a remainder smaller than a patch, as the patch conv does) -> features.
  virtual VisionFeatures encode(const at::Tensor& images, const FeatureSelect& sel = {}) = 0;
  virtual torch::nn::Module& module() = 0;
  // Casts the weights to the compute dtype (kFloat, kBFloat16; SSM A_log / D and normalisation
  // statistics stay fp32); encode() then returns features in that dtype. Error for others.
  virtual void to_dtype(at::ScalarType dtype) = 0;
  // config.json + model.safetensors, in the layout it loads.
  virtual void save(const std::filesystem::path& dir) const = 0;
  // The config.json content save() writes (make_vision_encoder builds the same encoder from it).
  virtual nlohmann::json config_json() const = 0;
  // The patch grid (grid_h, grid_w) encode() returns for an h x w input.
  virtual std::array<int64_t, 2> grid_size(int64_t h, int64_t w) const = 0;
};

class ImageClassifier {
 public:
  virtual ~ImageClassifier() = default;
  virtual std::string arch() const = 0;  // "mambaout", "mambaout_ssm", "vit"
  virtual int64_t num_classes() const = 0;
  virtual io::ImagePreprocess preprocess() const = 0;
  // images [B, 3, H, W] normalised -> logits [B, num_classes] fp32. Training mode (drop path)
  // follows module().is_training().
  virtual at::Tensor forward(const at::Tensor& images) = 0;
  virtual torch::nn::Module& module() = 0;
  // The model's config.json content, including "architecture" and "preprocess" (the trainer
  // adds "classes").
  virtual nlohmann::json config_json() const = 0;
  // The checkpoint key of each module parameter (identity unless the layout differs).
  virtual std::string checkpoint_key(const std::string& param_name) const { return param_name; }
};

// Builds an untrained classifier (initialised, deterministic in `seed`) from a config.json-style
// object whose "architecture" selects the family:
//   "mambaout"     : MambaOut, {"variant": "femto"|"kobe"|"tiny"|"small"|"base"} or explicit
//                    {"depths", "dims"}, "num_classes", "drop_path_rate", "image_size", ...
//   "mambaout_ssm" : MambaOut whose token mixer adds a (bidirectional) selective SSM after the 7x7
//                    depthwise conv (the Mamba block = Gated CNN + SSM; see mambaout.h)
//   "vit"          : a ViT (CLIP layout) + classification head, {"causal": bool, "pool", ...}
// Unknown architecture or keys: Error naming `file`.
std::unique_ptr<ImageClassifier> make_classifier(const nlohmann::json& cfg, uint64_t seed,
                                                 const std::string& file = "config");
// Loads a classifier folder (config.json + model.safetensors) written by save_classifier, or an
// official MambaOut checkpoint folder.
std::unique_ptr<ImageClassifier> load_classifier(const std::filesystem::path& dir);
// config.json = clf.config_json() + {"classes": [...], "preprocess": {...}}, weights
// model.safetensors; atomic per file.
void save_classifier(ImageClassifier& clf, const std::vector<std::string>& classes,
                     const std::filesystem::path& dir);
// The class names stored in a classifier folder's config.json: "classes", else timm's
// "label_names", else "class_<i>" for each of num_classes.
std::vector<std::string> classifier_classes(const std::filesystem::path& dir);

// Loads a vision encoder folder: Hugging Face CLIPVisionModel / CLIPModel / SiglipVisionModel /
// SiglipModel config.json, a timm EVA-02 folder, or a MambaOut folder.
std::unique_ptr<VisionEncoder> load_vision_encoder(const std::filesystem::path& dir);
// Builds an encoder from a config.json-style object (as load_vision_encoder reads it, or as
// VisionEncoder::config_json writes it): random weights deterministic in `seed` when
// `initialize`, otherwise uninitialised (to be loaded). Errors name `file`.
std::unique_ptr<VisionEncoder> make_vision_encoder(const nlohmann::json& cfg, uint64_t seed,
                                                   bool initialize, const std::string& file);
// What an encoder config (as make_vision_encoder reads it) implies about its checkpoint
// (weights_check.h), without building it; `fields` prefixes the field names in messages.
ExpectedWeights expected_vision_weights(const nlohmann::json& cfg, const std::string& file,
                                        const std::string& fields = "");

}  // namespace mambavl::models
