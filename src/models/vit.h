// Vision Transformers (SPEC §2.1): one encoder for three checkpoint layouts, plus a from-scratch
// ViT classifier.
//
// Layouts (module / parameter names equal the checkpoint keys):
//   CLIP   Hugging Face CLIPVisionModel / CLIPModel: vision_model.embeddings.{class_embedding,
//          patch_embedding.weight, position_embedding.weight}, vision_model.pre_layrnorm,
//          vision_model.encoder.layers.{i}.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
//          mlp.fc1, mlp.fc2}, vision_model.post_layernorm. Pre-LN, class token, quick_gelu.
//   SigLIP Hugging Face SiglipVisionModel / SiglipModel: as CLIP without class token and
//          pre_layrnorm, patch_embedding has a bias, gelu_pytorch_tanh.
//   EVA02  timm.models.eva.Eva as eva02_{base,large}_patch14_{224,448} / *_clip_*:
//   patch_embed.proj,
//          cls_token, pos_embed, blocks.{i}.{norm1, attn.{q_proj (bias), k_proj (no bias),
//          v_proj (bias), norm (only with scale_attn_inner), proj}, norm2, mlp.{fc1_g, fc1_x,
//          norm (sub-LN), fc2}}, then fc_norm (global_pool "avg") or norm (otherwise). SwiGLU MLP,
//          2-D rotary embedding (timm RotaryEmbeddingCat, interleaved pairs, grid scaled to
//          ref_feat_shape) on the patch tokens only (the class token is not rotated), learned
//          absolute position embedding as well.
//
// Folders (load_vit_encoder):
//   * Hugging Face config.json with model_type "clip_vision_model" / "siglip_vision_model", or a
//     full "clip" / "siglip" model (vision_config is used; CLIP's legacy vision_config_dict
//     overrides it as transformers does; the text tower's tensors are ignored). Keys are read with
//     or without the "vision_model." prefix (transformers 5 saves CLIPVisionModel without it).
//     Unknown-key policy: the generic PretrainedConfig keys (generation defaults, id2label, dtype,
//     ...) and the model-specific keys that do not change inference (dropouts, initializer
//     ranges, projection_dim) are accepted and ignored; any other key is an error naming it.
//     SigLIP's attention-pooling head (head.*) is not used by features and is not loaded (its
//     tensors are ignored); save() writes vision_use_head = false.
//   * timm hub config.json: {"architecture": "eva02_large_patch14_224", "num_classes",
//     "num_features", "global_pool", "pretrained_cfg": {...}, "model_args": {...}} -- the
//     architecture selects a preset (the eva02 B/L models, table in vit.cpp), model_args
//     overrides it with timm's argument names (img_size, patch_size, embed_dim, depth, num_heads,
//     mlp_ratio, ref_feat_shape, scale_attn_inner, global_pool, ...; the tiny fixture is
//     eva02_base_patch14_224 shrunk this way). Unsupported timm options (fused qkv, packed
//     SwiGLU, layer scale, ...) and unknown keys are errors. head.* tensors are ignored.
//   * Extension: a boolean "causal" key (top level) switches self-attention to causal.
//
// Features (encode): hidden_states[layer] exactly as Hugging Face's output_hidden_states (0 =
// embeddings after CLIP's pre_layrnorm, i = output of block i, no final norm); blocks after the
// selected layer are not run. FeatureSelect::final_norm (layer -1 only) applies the final norm to
// every token, prefix included:
//   CLIP   post_layernorm on all tokens (LLaVA-style; Hugging Face applies it only to the pooled
//          class token -- its last_hidden_state has no final norm)
//   SigLIP post_layernorm = Hugging Face's last_hidden_state
//   EVA02  timm's `norm` = forward_features (what Shaking-Up's Eva subclass returns); only with
//          global_pool other than "avg" (with "avg" timm's norm is an Identity and fc_norm is
//          applied after pooling, so there is no final norm: Error), and only when the checkpoint
//          has norm.* (Error otherwise).
// Other input sizes: CLIP / SigLIP interpolate the patch position embeddings like HF
// interpolate_pos_encoding=True (bicubic, align_corners=False); EVA-02 does what timm does with
// dynamic_img_size=True (resample_abs_pos_embed: bicubic with antialias, and the rotary grid
// rebuilt for the new size, still scaled to ref_feat_shape).
//
// save(): the layout it was read in, vision tower only -- CLIP / SigLIP as CLIPVisionModel /
// SiglipVisionModel with "vision_model."-prefixed keys (what older transformers wrote; transformers
// 5 loads it too), EVA-02 as timm's state dict without head.* with a timm hub config.json.
//
// Preprocessing (preprocess()): CLIP -> ImagePreprocess::clip(image_size); SigLIP ->
// ImagePreprocess::siglip(image_size); EVA-02 -> bilinear squash to image_size (what Shaking-Up
// uses) with the checkpoint's pretrained_cfg mean / std (OpenAI CLIP mean / std for timm's eva02
// configs).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <array>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/image.h"
#include "models/layers.h"
#include "models/vision.h"
#include "models/weights_check.h"

namespace mambavl::models {

enum class ViTLayout { CLIP, SigLIP, EVA02 };
std::string to_string(ViTLayout l);  // "clip", "siglip", "eva02"

struct ViTConfig {
  ViTLayout layout = ViTLayout::CLIP;
  int64_t hidden_size = 768;
  int64_t num_layers = 12;
  int64_t num_heads = 12;
  int64_t intermediate_size = 3072;  // MLP hidden width (EVA-02: int(embed_dim * mlp_ratio))
  int64_t patch_size = 16;
  int64_t image_size = 224;  // trained (square) input size; the position table is for it
  double layer_norm_eps = 1e-5;
  // CLIP / SigLIP MLP activation: "quick_gelu", "gelu_pytorch_tanh" (or "gelu_new"), "gelu".
  // EVA-02 always uses SwiGLU (SiLU gate).
  std::string hidden_act = "quick_gelu";
  bool causal = false;  // causal self-attention (the MambaOut experiment)

  // EVA-02 only.
  std::string timm_arch;          // e.g. "eva02_large_patch14_224" (written back on save)
  bool scale_attn_inner = false;  // attn.norm before attn.proj (EVA-CLIP variants)
  std::array<int64_t, 2> ref_feat_shape{16, 16};  // rotary grid scale reference (h, w)
  double rope_temperature = 10000.0;
  double mlp_ratio = 4.0 * 2.0 / 3.0;  // intermediate_size = int(hidden_size * mlp_ratio)
  std::string global_pool = "avg";     // "avg" -> fc_norm tensors, otherwise norm tensors
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};  // pretrained_cfg
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};

  bool has_class_token() const { return layout != ViTLayout::SigLIP; }
  int64_t num_prefix() const { return has_class_token() ? 1 : 0; }
  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t grid() const { return image_size / patch_size; }
  // Errors name `file` and the key (`layers_key`: the name of num_layers in that file; default
  // by layout: "num_hidden_layers", timm's "model_args.depth"). Checks the bounds below before
  // anything is allocated.
  void validate(const std::string& file, const std::string& layers_key = "") const;
  // Far above every real encoder (CLIP ViT-bigG/14: hidden 1664, MLP 8192, 48 layers; EVA-02-L:
  // 1024, 2730, 24; ViT-22B: 6144, 24576, 48; inputs up to 896 px).
  static constexpr int64_t kMaxHidden = 65536;
  static constexpr int64_t kMaxIntermediate = 262144;
  static constexpr int64_t kMaxLayers = 1024;
  static constexpr int64_t kMaxImageSize = io::ImagePreprocess::kMaxSize;
  static constexpr double kMaxParameters = 1e10;
  // The encoder's parameter count, from the sizes alone (the ViTModel's parameters).
  double num_parameters() const;
  // What the checkpoint must hold (weights_check.h), in this layout's key names; `fields`
  // prefixes the field names in messages, `layers_key` as for validate.
  ExpectedWeights expected_weights(const std::string& fields = "",
                                   const std::string& layers_key = "") const;

  // Parses a folder's config.json (HF CLIP / SigLIP, full or vision-only; timm EVA-02).
  static ViTConfig from_json(const nlohmann::json& j, const std::string& file);
  // The config.json that save() writes (the same format the layout is read from).
  nlohmann::json to_json() const;
};

// Patch embedding: a conv with kernel = stride = patch (parameters "weight" [C, 3, p, p] and
// optionally "bias" [C], uninitialised until loaded or init).
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t channels, int64_t dim, int64_t patch, bool bias);
  at::Tensor forward(const at::Tensor& images) const;  // [B, 3, H, W] -> [B, H/p * W/p, C]
  int64_t patch;
  at::Tensor weight, bias;
};
TORCH_MODULE(PatchEmbed);

// 2-D rotary embedding of timm's RotaryEmbeddingCat (in_pixels = False, grid_indexing "ij",
// interleaved pairs): per head_dim / 4 bands, the first half of each head rotates by the row
// coordinate, the second half by the column coordinate; coordinates t = i / grid * ref.
struct Rope2D {
  // cos, sin: [gh * gw, head_dim] fp32 for a (gh, gw) patch grid (row-major).
  static std::pair<at::Tensor, at::Tensor> cos_sin(int64_t head_dim, int64_t gh, int64_t gw,
                                                   std::array<int64_t, 2> ref, double temperature,
                                                   at::Device device);
  // x: [B, H, N, hd] (N patch tokens); cos, sin: [N, hd] -> same as x (math in fp32).
  static at::Tensor apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
};

class ViTAttentionImpl : public torch::nn::Module {
 public:
  explicit ViTAttentionImpl(const ViTConfig& c);
  // x [B, T, C]; rope (EVA-02) cos/sin [T - num_prefix, hd] or undefined -> [B, T, C]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     int64_t num_prefix, bool causal);
  int64_t num_heads, head_dim;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};  // EVA-02 scale_attn_inner only
};

class ViTMLPImpl : public torch::nn::Module {
 public:
  explicit ViTMLPImpl(const ViTConfig& c);
  at::Tensor forward(const at::Tensor& x);  // [B, T, C] -> [B, T, C]
  bool swiglu;
  std::string act;
  Linear fc1{nullptr}, fc2{nullptr};      // CLIP / SigLIP; fc2 also EVA-02
  Linear fc1_g{nullptr}, fc1_x{nullptr};  // EVA-02
  torch::nn::LayerNorm norm{nullptr};     // EVA-02 sub-LN
};

class ViTBlockImpl : public torch::nn::Module {
 public:
  explicit ViTBlockImpl(const ViTConfig& c);
  // x + drop_path(attn(LN1(x))); then + drop_path(mlp(LN2(x))). [B, T, C] -> [B, T, C]
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     int64_t num_prefix, bool causal);
  double drop_path_rate = 0.0;  // stochastic depth rate (training mode only)
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  std::shared_ptr<ViTAttentionImpl> attn;
  std::shared_ptr<ViTMLPImpl> mlp;
};

// The transformer trunk shared by the encoder and the classifier.
class ViTModel {
 public:
  explicit ViTModel(ViTConfig cfg);
  const ViTConfig& config() const { return cfg_; }
  torch::nn::Module& module() { return *root_; }
  const torch::nn::Module& module() const { return *root_; }

  // images [B, 3, H, W] (a remainder smaller than a patch is dropped, as the patch conv does)
  // -> hidden_states[layer] [B, T, C]
  // (layer in 0..num_layers; T = num_prefix + gh * gw). Runs blocks 1..layer only.
  at::Tensor hidden_state(const at::Tensor& images, int64_t layer, int64_t* gh = nullptr,
                          int64_t* gw = nullptr);
  // Position embeddings for a (gh, gw) grid, prefix rows first: [1, P + gh*gw, C].
  at::Tensor position_embedding(int64_t gh, int64_t gw) const;
  // Random init (deterministic in seed): Linear weights trunc-normal(0.02), biases 0, LayerNorm
  // 1 / 0, position embedding trunc-normal(0.02), class token N(0, 1e-6) (timm ViT), patch conv
  // PyTorch's default U(+-1/sqrt(fan_in)).
  void init_weights(uint64_t seed);
  // Load from a folder written in this layout (CLIP / SigLIP with or without "vision_model.").
  void load(const std::filesystem::path& dir);
  void set_drop_path(double rate);  // linear rule over blocks as timm (0 .. rate)
  void set_causal(bool causal) { cfg_.causal = causal; }

  std::shared_ptr<torch::nn::Module> root_;
  PatchEmbed patch_embed{nullptr};
  at::Tensor class_embedding;              // CLIP [C]; EVA-02 cls_token [1, 1, C]
  at::Tensor pos_table;                    // CLIP / SigLIP position_embedding.weight [P + g*g, C];
                                           // EVA-02 pos_embed [1, P + g*g, C]
  torch::nn::LayerNorm pre_norm{nullptr};  // CLIP pre_layrnorm
  torch::nn::LayerNorm final_norm{nullptr};  // post_layernorm / fc_norm / norm
  // final_norm(h) in h's dtype (bf16 parameters converted for fp32 activations).
  at::Tensor apply_final_norm(const at::Tensor& h) const;
  std::vector<std::shared_ptr<ViTBlockImpl>> blocks;
  // "" when FeatureSelect::final_norm can apply final_norm to the tokens; otherwise why not (an
  // EVA-02 with global_pool "avg", or a checkpoint without the norm's tensors).
  std::string feature_norm_missing() const;
  bool final_norm_loaded = true;  // false: load() found no tensors for it (EVA-02 only)

 private:
  ViTConfig cfg_;
};

class ViTEncoder : public VisionEncoder {
 public:
  explicit ViTEncoder(ViTConfig cfg) : model_(std::move(cfg)) {}
  static std::unique_ptr<ViTEncoder> load(const std::filesystem::path& dir);

  std::string arch() const override { return to_string(model_.config().layout); }
  int64_t feature_dim() const override { return model_.config().hidden_size; }
  io::ImagePreprocess preprocess() const override;
  VisionFeatures encode(const at::Tensor& images, const FeatureSelect& sel = {}) override;
  torch::nn::Module& module() override { return model_.module(); }
  void save(const std::filesystem::path& dir) const override;
  nlohmann::json config_json() const override { return model_.config().to_json(); }
  std::array<int64_t, 2> grid_size(int64_t h, int64_t w) const override {
    return {h / model_.config().patch_size, w / model_.config().patch_size};
  }

  const ViTConfig& config() const { return model_.config(); }
  ViTModel& model() { return model_; }
  void set_causal(bool causal);
  // Casts every weight (float32 or bfloat16, Error otherwise); encode then runs in that dtype
  // (LayerNorm and the rotary math accumulate in fp32 internally).
  void to_dtype(at::ScalarType dtype) override;

 private:
  ViTModel model_;
};

// The encoders `mambavl bench vision` times, at their real sizes with random weights (N(0, 0.02)
// style init, deterministic in seed), for an image_size x image_size input:
//   "clip-vit-b16"      CLIP ViT-B/16 (768, 12 layers, 12 heads, MLP 3072)
//   "clip-vit-l14"      CLIP ViT-L/14 (1024, 24, 16, 4096)
//   "siglip-so400m-14"  SigLIP so400m/14 (1152, 27, 16, 4304)
//   "eva02-l14"         timm eva02_large_patch14 (1024, 24, 16, SwiGLU 2730, rope ref 16x16)
// Unknown name: Error listing the names.
std::unique_ptr<VisionEncoder> make_vit_encoder_preset(const std::string& name, int64_t image_size,
                                                       uint64_t seed);
std::vector<std::string> vit_encoder_preset_names();
// The config behind a preset (nothing allocated).
ViTConfig vit_encoder_preset_config(const std::string& name, int64_t image_size);

// The "vit" classifier: a CLIP-layout ViT trunk (module names vision_model.*) + head [K, C].
// config.json: {"architecture": "vit", "hidden_size", "num_layers", "num_heads",
// "intermediate_size", "patch_size", "image_size", "num_classes", "causal" (false), "pool"
// ("mean" default: average of the patch tokens; "cls": the class token, refused with causal
// attention since the first token then sees no patch; "last": the last token, the only one that
// sees every patch under causal attention), "hidden_act" ("gelu"), "layer_norm_eps" (1e-6),
// "drop_path_rate" (0), "preprocess" ({...}, default ImagePreprocess::imagenet(image_size))}.
// Logits = head(post_layernorm(pooled)).
class ViTClassifier : public ImageClassifier {
 public:
  struct Options {
    ViTConfig vit;
    int64_t num_classes = 1000;
    std::string pool = "mean";
    double drop_path_rate = 0.0;
    io::ImagePreprocess pp;
    static Options from_json(const nlohmann::json& j, const std::string& file);
    // The trunk's and the head's tensors (weights_check.h), in the classifier's key names.
    ExpectedWeights expected_weights() const;
  };
  explicit ViTClassifier(Options o);

  std::string arch() const override { return "vit"; }
  int64_t num_classes() const override { return opt_.num_classes; }
  io::ImagePreprocess preprocess() const override { return opt_.pp; }
  at::Tensor forward(const at::Tensor& images) override;  // [B, 3, H, W] -> [B, K] fp32
  torch::nn::Module& module() override { return trunk_.module(); }
  nlohmann::json config_json() const override;

  void init_weights(uint64_t seed);
  ViTModel& trunk() { return trunk_; }

 private:
  Options opt_;
  ViTModel trunk_;
  Linear head{nullptr};
};

}  // namespace mambavl::models
