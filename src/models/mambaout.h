// MambaOut (SPEC §2.1; Yu & Wang, "MambaOut: Do We Really Need Mamba for Vision?"), channels-last
// `[B, H, W, C]`, and `mambaout_ssm`, the same network whose token mixer also runs a
// bidirectional selective SSM (the paper's "Mamba block = Gated CNN block + SSM" comparison).
//
// Module and parameter names equal the official repository's state-dict keys:
//   downsample_layers.0.{conv1, norm1, conv2, norm2}.{weight, bias}   (the stem)
//   downsample_layers.{1,2,3}.{conv, norm}.{weight, bias}              (before stages 2-4)
//   stages.{s}.{b}.{norm, fc1, conv, fc2}.{weight, bias}                (Gated CNN blocks)
//   norm.{weight, bias}                                                 (after global average)
//   head.{fc1, norm, fc2}.{weight, bias}
// timm's port (timm.models.mambaout) stores the same tensors as stem.*, stages.{s}.downsample.*,
// stages.{s}.blocks.{b}.*, head.norm (= our norm), head.pre_logits.{fc, norm}, head.fc; loading
// accepts either layout (timm_key() maps ours to timm's); saving writes the official one.
//
// mambaout_ssm (our design; no official checkpoint exists). In each Gated CNN block the `c`
// branch becomes
//   c [B, C, H, W] -> depthwise 7x7 conv (as MambaOut) -> SiLU -> u [B, C, L = H*W]
//   (the H*W positions flattened row-major: token t = y*W + x)
//   y = ssm(u) + flip(ssm_rev(flip(u)))     (ssm_rev only when bidirectional; else y = ssm(u))
// and y replaces c in `out = fc2(gelu(g) * concat(i, y))`. Each SSM core is Mamba's S6 without
// its in/out projections, causal conv and z gate (the Gated CNN block supplies those): with
// d_inner = C, N = d_state, R = dt_rank (default ceil(C / 16)),
//   x_dbl = x_proj(u) [B, R + 2N, L];  delta = dt_proj(x_dbl[:R]) (softplus(. + dt_proj.bias))
//   y = selective_scan(u, delta, A = -exp(A_log), B = x_dbl[R:R+N], C = x_dbl[R+N:], D)
// Extra keys: stages.{s}.{b}.ssm.{x_proj.weight, dt_proj.weight, dt_proj.bias, A_log, D}, and
// stages.{s}.{b}.ssm_rev.* (the reverse direction, separate parameters) when bidirectional.
// Config: "architecture": "mambaout_ssm", "ssm": {"d_state": 16, "dt_rank": "auto" | int,
// "bidirectional": true}. SSM cores are initialised as Mamba's (x_proj PyTorch-default uniform,
// dt_proj weight U(+-R^-0.5), dt_proj.bias = softplus^-1(dt), dt log-uniform in [1e-3, 0.1],
// A_log = log(1..N), D = 1); everything else as MambaOut.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/image.h"
#include "models/layers.h"
#include "models/vision.h"
#include "models/weights_check.h"

namespace mambavl::models {

struct MambaOutSsmConfig {
  int64_t d_state = 16;
  int64_t dt_rank = 0;  // 0 = "auto": ceil(C / 16) per stage
  bool bidirectional = true;
  int64_t rank_for(int64_t dim) const { return dt_rank > 0 ? dt_rank : (dim + 15) / 16; }
};

struct MambaOutConfig {
  std::string variant;  // "femto" | "kobe" | "tiny" | "small" | "base", or "" (explicit sizes)
  std::vector<int64_t> depths{3, 3, 9, 3};
  std::vector<int64_t> dims{48, 96, 192, 288};
  // 0: no classifier (timm's num_classes=0, head.fc = Identity): the network has no head.fc2 and
  // is usable as a VisionEncoder only (make_classifier / load_classifier reject it).
  int64_t num_classes = 1000;
  double drop_path_rate = 0.0;  // linear per block from 0 (first block) to this (last block)
  bool ssm = false;             // architecture "mambaout_ssm"
  MambaOutSsmConfig ssm_cfg;
  io::ImagePreprocess preprocess = io::ImagePreprocess::imagenet(224);

  // Fixed by the architecture (official defaults).
  static constexpr double kNormEps = 1e-6;
  static constexpr int64_t kKernel = 7;
  static constexpr int64_t kHeadRatio = 4;
  // Bounds checked by validate() before anything is allocated (far above the paper's sizes).
  static constexpr int64_t kMaxStages = 8;
  static constexpr int64_t kMaxDepth = 1024;  // blocks per stage
  static constexpr int64_t kMaxDim = 16384;
  static constexpr int64_t kMaxClasses = 1 << 20;
  static constexpr int64_t kMaxImageSize = io::ImagePreprocess::kMaxSize;  // as from_json
  static constexpr int64_t kMaxDState = 1024;
  static constexpr double kMaxParameters = 1e10;
  // hidden = int(8/3 * C), truncated as Python's int() does.
  static int64_t hidden_dim(int64_t dim) { return static_cast<int64_t>(8.0 / 3.0 * dim); }

  // The five sizes of the paper (num_classes 1000). Unknown name: Error listing the known ones.
  static MambaOutConfig preset(const std::string& variant);
  static std::vector<std::string> variants();
  // Our config.json ("architecture" "mambaout" / "mambaout_ssm") or a timm hub config.json
  // ("architecture" "mambaout_femto" ... "mambaout_base"). Unknown keys, wrong types, bad values:
  // Error naming `file`.
  static MambaOutConfig from_json(const nlohmann::json& j, const std::string& file);
  nlohmann::json to_json() const;  // our format; from_json(to_json()) == *this
  // Error naming `file` on a bad or absurd value (see the bounds above), before any allocation.
  void validate(const std::string& file) const;
  int64_t total_blocks() const;
  // The parameter count of the network this config builds (as MambaOutImpl::num_parameters()),
  // computed in floating point from the sizes alone, so that it cannot overflow.
  double num_parameters() const;
  // What the checkpoint must hold (weights_check.h), official or timm keys; `fields` prefixes the
  // field names in messages.
  ExpectedWeights expected_weights(const std::string& fields = "") const;
};

// Channels-first Conv2d parameters (uninitialised): weight [out, in / groups, k, k], bias [out].
class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
             int64_t groups = 1);
  at::Tensor forward(const at::Tensor& x) const;  // [B, in, H, W] -> [B, out, H', W']
  at::Tensor weight, bias;
  int64_t stride, padding, groups;
};

// LayerNorm over the last dimension (uninitialised): weight, bias [dim].
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x) const;  // [..., dim] -> same
  at::Tensor weight, bias;
  double eps;
};

// One direction of the mambaout_ssm token mixer's selective SSM (see the top of this file).
class MambaOutSsmImpl : public torch::nn::Module {
 public:
  MambaOutSsmImpl(int64_t dim, const MambaOutSsmConfig& c);
  at::Tensor forward(const at::Tensor& u) const;  // [B, C, L] -> [B, C, L]
  // Mamba's SSM init, drawing from `gen` (the process-wide generator when none is given).
  void init_weights(std::optional<at::Generator> gen = std::nullopt);
  int64_t dim, d_state, dt_rank;
  Linear x_proj{nullptr}, dt_proj{nullptr};
  at::Tensor A_log;  // [C, N]
  at::Tensor D;      // [C]
};

class GatedCnnBlockImpl : public torch::nn::Module {
 public:
  GatedCnnBlockImpl(int64_t dim, double drop_path, const MambaOutConfig& c);
  at::Tensor forward(const at::Tensor& x);  // [B, H, W, C] -> same
  int64_t dim, hidden;
  double drop_path;  // this block's stochastic-depth probability (training mode only)
  std::shared_ptr<LayerNormImpl> norm;
  Linear fc1{nullptr}, fc2{nullptr};
  std::shared_ptr<Conv2dImpl> conv;
  std::shared_ptr<MambaOutSsmImpl> ssm, ssm_rev;  // mambaout_ssm only (ssm_rev: bidirectional)
};

class MambaOutImpl : public torch::nn::Module {
 public:
  // Parameters are initialised (init_weights(0)) unless `initialize` is false (about to be
  // loaded).
  explicit MambaOutImpl(const MambaOutConfig& c, bool initialize = true);
  // Official init, deterministic in `seed`: Conv / Linear weights trunc_normal(std .02, [-2, 2]),
  // biases 0, LayerNorm 1 / 0; SSM cores as Mamba (see above). Draws from a private generator
  // seeded with `seed` (the same values as at::manual_seed(seed) and the global generator would
  // give), so the process-wide random stream is left untouched.
  void init_weights(uint64_t seed);
  // images [B, 3, H, W] -> last-stage feature map [B, H/32, W/32, C4] (sizes rounded up).
  at::Tensor forward_features(const at::Tensor& images);
  // features [B, h, w, C4] -> logits [B, num_classes] (num_classes 0: the pre-logits [B, 4 C4],
  // as timm's head with fc = Identity).
  at::Tensor forward_head(const at::Tensor& features);
  at::Tensor forward(const at::Tensor& images) { return forward_head(forward_features(images)); }
  int64_t num_parameters() const;
  // Our (official) parameter name -> timm's key.
  static std::string timm_key(const std::string& name);

  MambaOutConfig cfg;
  // downsample_layers.0 = stem {conv1, norm1, conv2, norm2}; .1-.3 = {conv, norm}.
  struct Stem : torch::nn::Module {
    std::shared_ptr<Conv2dImpl> conv1, conv2;
    std::shared_ptr<LayerNormImpl> norm1, norm2;
  };
  struct Downsample : torch::nn::Module {
    std::shared_ptr<Conv2dImpl> conv;
    std::shared_ptr<LayerNormImpl> norm;
  };
  struct Head : torch::nn::Module {
    Linear fc1{nullptr}, fc2{nullptr};  // fc2 null when num_classes is 0
    std::shared_ptr<LayerNormImpl> norm;
  };
  std::shared_ptr<Stem> stem;
  std::vector<std::shared_ptr<Downsample>> downsample;  // [0] unused (null): the stem
  std::vector<std::vector<std::shared_ptr<GatedCnnBlockImpl>>> blocks;
  std::shared_ptr<LayerNormImpl> norm;
  std::shared_ptr<Head> head;
};

// The ImageClassifier behind make_classifier / load_classifier ("mambaout", "mambaout_ssm").
// A config with num_classes 0 (no classifier) is an Error naming `file`.
class MambaOutClassifier : public ImageClassifier {
 public:
  explicit MambaOutClassifier(const MambaOutConfig& c, bool initialize = true, uint64_t seed = 0);
  explicit MambaOutClassifier(std::shared_ptr<MambaOutImpl> m);
  // A folder with our config.json or timm's hub config.json, and model.safetensors in the
  // official or timm's key layout.
  static std::unique_ptr<MambaOutClassifier> load(const std::filesystem::path& dir,
                                                  const nlohmann::json& cfg);
  std::string arch() const override { return cfg().ssm ? "mambaout_ssm" : "mambaout"; }
  int64_t num_classes() const override { return cfg().num_classes; }
  io::ImagePreprocess preprocess() const override { return cfg().preprocess; }
  at::Tensor forward(const at::Tensor& images) override;  // [B, 3, H, W] -> [B, classes] fp32
  torch::nn::Module& module() override { return *model; }
  nlohmann::json config_json() const override { return cfg().to_json(); }
  const MambaOutConfig& cfg() const { return model->cfg; }

  std::shared_ptr<MambaOutImpl> model;
};

// The VisionEncoder "mambaout": encode() returns the last-stage feature map (before the head's
// pooling) as the patch grid, tokens [B, gh * gw, C4] row-major, num_prefix 0, in the weights'
// dtype (to_dtype). Only layer -1 is available (there is no per-block hidden state list);
// "cls_patch" equals "patch" (no prefix). FeatureSelect::final_norm is an Error: MambaOut has no
// per-token final norm (its `norm`, timm's head.norm, normalises the globally pooled vector inside
// the classifier head; timm's forward_features, like encode(), returns the un-normalised map).
class MambaOutEncoder : public VisionEncoder {
 public:
  explicit MambaOutEncoder(std::shared_ptr<MambaOutImpl> m) : model(std::move(m)) {}
  // As MambaOutClassifier::load; the head (norm, head.*) may be absent from the checkpoint, and
  // num_classes may be 0 (timm's encoder-only export, no head.fc).
  static std::unique_ptr<MambaOutEncoder> load(const std::filesystem::path& dir,
                                               const nlohmann::json& cfg);
  std::string arch() const override { return "mambaout"; }
  int64_t feature_dim() const override { return model->cfg.dims.back(); }
  io::ImagePreprocess preprocess() const override { return model->cfg.preprocess; }
  VisionFeatures encode(const at::Tensor& images, const FeatureSelect& sel = {}) override;
  torch::nn::Module& module() override { return *model; }
  // kFloat or kBFloat16 (Error otherwise): every parameter but the SSM cores' A_log and D
  // (mambaout_ssm), which stay fp32 as in Mamba.
  void to_dtype(at::ScalarType dtype) override;
  void save(const std::filesystem::path& dir) const override;
  nlohmann::json config_json() const override { return model->cfg.to_json(); }
  // The stem's two convs and the three downsampling convs (3x3, stride 2, padding 1) each
  // halve, rounding up.
  std::array<int64_t, 2> grid_size(int64_t h, int64_t w) const override {
    for (int i = 0; i < 5; ++i) h = (h + 1) / 2, w = (w + 1) / 2;
    return {h, w};
  }

  std::shared_ptr<MambaOutImpl> model;
};

// A randomly initialised (deterministic in `seed`) encoder of a paper size, for benchmarks.
std::unique_ptr<VisionEncoder> make_mambaout_encoder_preset(const std::string& variant,
                                                            uint64_t seed);

}  // namespace mambavl::models
