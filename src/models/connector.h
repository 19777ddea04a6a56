// Vision-language connectors (SPEC §2.2): map a patch grid of vision features [B, gh*gw, d_vision]
// (row-major) to LM-width tokens [B, gh*gw, d_lm].
//
//   mlp     : linear_2(GELU(linear_1(V)))                      (LLaVA's mlp2x_gelu)
//   vss_mlp : linear_2(GELU(linear_1(norm(VSS(V) + V))))       (VSS at vision width)
//   vss_l2  : V' = linear_1(V); linear_2(norm(VSS(GELU(V')) + V'))  (VSS at LM width; VL-Mamba's
//             final choice with BSM)
// VSS (vision selective scan): gather the grid into the scan orders (kernels/scan2d.h: "bsm" =
// row, row_rev; "csm" = row, col, row_rev, col_rev), run every order through a Mamba mixer
// (MambaMixerImpl, channel-last), scatter each back to row-major and merge ("sum" or "mean").
// share_weights = true: one mixer for all orders (the K orders are stacked on the batch dimension
// and go through it in one call); false: one mixer per order.
// With a shared mixer the token-wise projections are hoisted out of the orders (exact up to
// rounding: a per-token linear map commutes with a permutation of the tokens, and a sum of K
// outputs of out_proj is out_proj of the sum): in_proj runs once on the row-major grid, its
// output is gathered into the K orders, conv / x_proj / dt_proj / selective scan run per order
// (stacked on the batch), the K outputs are scattered + merged, and out_proj runs once. That is
// the mixer's sequence forward (MambaMixerImpl) with in_proj and out_proj done 1 time instead of
// K times (~K x fewer FLOPs: they are ~95% of the mixer's matmuls). VssImpl::hoist_projections =
// false runs the plain mixer on the stacked orders instead (the tests compare the two).
//
// Parameter names (Hugging Face style; LlavaMultiModalProjector's linear_1 / linear_2):
//   linear_1.{weight,bias}, linear_2.{weight,bias}, norm.{weight,bias} (vss_* only),
//   vss.mixer.<Mamba mixer params>           (share_weights = true)
//   vss.mixers.{k}.<Mamba mixer params>      (share_weights = false; k = index in the scan mode)
// with the mixer params of SPEC §1.1 (in_proj.weight, conv1d.{weight,bias}, x_proj.weight,
// dt_proj.{weight,bias}, A_log, D, out_proj.weight).
//
// "Verify" items of the SPEC (VL-Mamba released no code, see kernels/scan2d.h): weight sharing
// across orders (default shared) and the merge (default sum) are config options. VMamba's SS2D,
// which VL-Mamba builds on, is in between: in_proj / conv / out_proj shared, x_proj, dt_proj,
// A_log and D per order; it also uses a 2-D depthwise conv and an output LayerNorm. That variant
// is not implemented here.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/scan2d.h"
#include "models/layers.h"
#include "models/mamba.h"

namespace mambavl::models {

struct ConnectorConfig {
  std::string type = "mlp";  // "mlp" | "vss_mlp" | "vss_l2"
  int64_t d_vision = 1024;
  int64_t d_lm = 2560;
  std::string scan = "bsm";   // "bsm" | "csm"
  std::string merge = "sum";  // "sum" | "mean"
  bool share_weights = true;  // one mixer for all orders (true) or one per order
  double layer_norm_eps = 1e-5;
  // The VSS mixer ("mamba": {"d_state", "d_conv", "expand"}); d_model is the VSS width.
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;

  // Bounds checked by validate() before anything is allocated.
  static constexpr int64_t kMaxWidth = 65536;  // d_vision, d_lm
  static constexpr int64_t kMaxDState = 1024;
  static constexpr int64_t kMaxDConv = 1024;
  static constexpr int64_t kMaxExpand = 64;
  static constexpr double kMaxParameters = 1e10;

  // Unknown keys (also inside "mamba"), wrong types and unsupported values are errors naming
  // `file` and the key. "type", "d_vision" and "d_lm" are required.
  static ConnectorConfig from_json(const nlohmann::json& j, const std::string& file = "connector");
  nlohmann::json to_json() const;
  // Error on a bad value, or absurd sizes (the bounds above; checked before any allocation).
  void validate(const std::string& file = "connector") const;
  // The connector's parameter count, from the sizes alone (floating point: cannot overflow).
  double num_parameters() const;
  // What the checkpoint must hold (weights_check.h); `fields` prefixes the field names.
  ExpectedWeights expected_weights(const std::string& fields = "") const;
  bool has_vss() const { return type != "mlp"; }
  int64_t vss_width() const { return type == "vss_mlp" ? d_vision : d_lm; }
  std::vector<kernels::ScanOrder> orders() const { return kernels::scan_orders(scan); }
  // The mixer config of the VSS module (d_model = vss_width(), derived d_inner / dt_rank).
  MambaConfig mixer_config() const;
};

// The VSS module: x [B, gh*gw, d] -> [B, gh*gw, d].
class VssImpl : public torch::nn::Module {
 public:
  VssImpl(const MambaConfig& mixer_cfg, std::vector<kernels::ScanOrder> orders,
          kernels::ScanMerge merge, bool share_weights, bool initialize = true);
  at::Tensor forward(const at::Tensor& x, int64_t gh, int64_t gw);
  // The shared-mixer path with in_proj / out_proj hoisted out of the orders (see above).
  at::Tensor forward_hoisted(const at::Tensor& x, int64_t gh, int64_t gw);
  // Each mixer as MambaMixerImpl::init_weights(), drawing from `gen` (see ConnectorImpl).
  void init_weights(const at::Generator& gen);
  std::vector<std::shared_ptr<MambaMixerImpl>> all_mixers() const;

  std::vector<kernels::ScanOrder> orders;
  kernels::ScanMerge merge;
  std::shared_ptr<MambaMixerImpl> mixer;                // share_weights
  std::vector<std::shared_ptr<MambaMixerImpl>> mixers;  // !share_weights, one per order
  kernels::Backend scan_backend = kernels::Backend::Auto;
  bool hoist_projections = true;  // shared mixer only
};

class ConnectorImpl : public torch::nn::Module {
 public:
  // Validates `c`. initialize: init_weights(seed); false leaves parameters unset (to be loaded).
  explicit ConnectorImpl(const ConnectorConfig& c, uint64_t seed = 0, bool initialize = true);
  // features [B, gh*gw, d_vision] (row-major patch grid) -> [B, gh*gw, d_lm]. Error naming the
  // problem on a shape mismatch.
  at::Tensor forward(const at::Tensor& features, int64_t gh, int64_t gw);
  // Deterministic in `seed`: linears as PyTorch's nn.Linear, LayerNorm 1 / 0, mixers as
  // MambaMixerImpl::init_weights(); drawn from a private generator seeded with `seed` (the values
  // at::manual_seed(seed) and the global generator would give), so the process-wide random stream
  // is left untouched.
  void init_weights(uint64_t seed);
  const ConnectorConfig& config() const { return cfg_; }

  Linear linear_1{nullptr}, linear_2{nullptr};
  torch::nn::LayerNorm norm{nullptr};  // vss_* only
  std::shared_ptr<VssImpl> vss;        // vss_* only

 private:
  ConnectorConfig cfg_;
};

// dir/config.json (ConnectorConfig::to_json) + dir/model.safetensors; and back.
void save_connector(const ConnectorImpl& c, const std::filesystem::path& dir);
std::shared_ptr<ConnectorImpl> load_connector(const std::filesystem::path& dir);

}  // namespace mambavl::models
