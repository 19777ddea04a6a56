// Mamba (S6) language model, SPEC §1.1: MambaForCausalLM / state-spaces mamba checkpoints.
// Module and parameter names equal the Hugging Face checkpoint keys:
//   backbone.embeddings.weight, backbone.layers.{i}.norm.weight,
//   backbone.layers.{i}.mixer.{in_proj, conv1d, x_proj, dt_proj, out_proj}.*,
//   backbone.layers.{i}.mixer.{A_log, D}, backbone.norm_f.weight, lm_head.weight (only when
//   untied).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/mamba_step.h"
#include "models/layers.h"
#include "models/lm.h"
#include "models/mixer.h"
#include "models/weights_check.h"

namespace mambavl::models {

// Attention layers inside a Mamba stack (hybrid; `attn_cfg` of mamba_ssm).
struct AttnConfig {
  int64_t num_heads = 0;
  int64_t num_heads_kv = 0;    // 0 = num_heads
  int64_t head_dim = 0;        // 0 = d_model / num_heads
  int64_t rotary_emb_dim = 0;  // 0 = no rotary
  double rotary_emb_base = 10000.0;
  bool causal = true;
  bool qkv_proj_bias = true;
  bool out_proj_bias = true;
};

struct MambaConfig {
  int64_t d_model = 768;
  int64_t n_layer = 24;
  int64_t vocab_size = 50280;  // embedding rows (already padded)
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t d_inner = 1536;  // expand * d_model unless given
  int64_t dt_rank = 48;    // ceil(d_model / 16) unless given
  bool conv_bias = true;
  bool bias = false;
  double norm_eps = 1e-5;
  bool tie_embeddings = true;
  // Hybrid: indices of layers whose mixer is attention instead of Mamba.
  std::vector<int64_t> attn_layer_idx;
  AttnConfig attn;
  // Which checkpoint layout the model was read from / is written as:
  // "hf" (MambaForCausalLM: backbone.embeddings) or "original" (state-spaces: backbone.embedding).
  std::string layout = "hf";
  // "" (floating-point weights) or "int8" (quantization_config.quant_method "mambavl_int8": see
  // MambaLM::quantize_int8 and docs/quantization.md).
  std::string quantization;
  int64_t pad_vocab_size_multiple = 8;  // original layout only
  int64_t unpadded_vocab_size = 0;      // original layout: vocab_size before padding

  // Reads either layout's config.json (`file` is used in error messages). Unknown keys, wrong
  // types and unsupported values are errors naming the file and the key.
  static MambaConfig from_json(const nlohmann::json& j, const std::string& file);
  nlohmann::json to_json() const;  // in `layout`'s format
  // Derives d_inner / dt_rank when 0; validates, including the bounds of LMLimits (lm_limits.h)
  // and the parameter count, before anything is allocated (errors name the field in `layout`'s
  // key names).
  void finalize();
  bool is_attention_layer(int64_t i) const;
  // The parameter count of the model (after finalize), from the sizes alone.
  double num_parameters() const;
  // What the checkpoint must hold (weights_check.h); `fields` prefixes the field names in
  // messages (e.g. "text_config.").
  ExpectedWeights expected_weights(const std::string& fields = "") const;
};

// Per-layer decoding state of a Mamba mixer.
struct MambaLayerCache : LayerCache {
  at::Tensor conv_state;  // [B, d_inner, d_conv] fp32: the last d_conv pre-conv inputs
  at::Tensor ssm_state;   // [B, d_inner, d_state] fp32
  // Per row, leading pad positions of the prefill (LayerStackCache::left_pad; empty = none).
  std::vector<int64_t> left_pad;
  // Fused batch-1 decode step: fp32 copies of the small parameters + scratch, made on first use.
  at::Tensor fast_small, fast_ws, fast_out;
  bool fast_ready = false;
};

class MambaMixerImpl : public SequenceMixer {
 public:
  // Parameters are initialised (init_weights) unless `initialize` is false (about to be loaded).
  explicit MambaMixerImpl(const MambaConfig& c, bool initialize = true);
  // Default init: projections as PyTorch's Linear (biases zero), conv as Conv1d, then
  // reset_ssm_parameters().
  void init_weights();
  at::Tensor mix(const at::Tensor& x, LayerCache* cache, int64_t pos) override;
  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len, at::ScalarType dtype,
                                         at::Device device) const override;
  // Mamba init from scratch (SPEC §1.1): dt / dt_proj, A_log = log(1..N), D = 1.
  void reset_ssm_parameters(double dt_min = 1e-3, double dt_max = 0.1, double dt_floor = 1e-4);

  MambaConfig cfg;
  kernels::Backend backend = kernels::Backend::Auto;
  Linear in_proj{nullptr}, x_proj{nullptr}, dt_proj{nullptr}, out_proj{nullptr};
  std::shared_ptr<torch::nn::Module>
      conv1d;                         // parameters "weight" [d_inner, 1, d_conv], "bias" [d_inner]
  at::Tensor conv_weight, conv_bias;  // the same tensors as conv1d's parameters
  at::Tensor A_log;                   // [d_inner, d_state] fp32
  at::Tensor D;                       // [d_inner] fp32

 private:
  at::Tensor forward_sequence(const at::Tensor& x, MambaLayerCache* cache);
  at::Tensor forward_step(const at::Tensor& x, MambaLayerCache& cache);
  at::Tensor forward_step_fused(const at::Tensor& x, MambaLayerCache& cache);

 public:
  // Batch-1 CPU inference with fp32 / bf16 weights and the fused kernels allowed (no autograd,
  // backend not Reference): the fused decode step applies.
  bool can_use_fused_step(const at::Tensor& x) const;
  // The fused step's parameters; fp32 copies of the small parameters are made in `cache` on first
  // use (so a generation sees the weights as they were when it started).
  kernels::MambaStepParams step_params(MambaLayerCache& cache);
};

// Residual block: h = h + mixer(norm(h)), residual stream fp32.
class MambaBlockImpl : public torch::nn::Module {
 public:
  MambaBlockImpl(const MambaConfig& c, int64_t layer_idx, bool initialize = true);
  // residual: [B, L, d_model] fp32 -> same.
  at::Tensor forward(const at::Tensor& residual, LayerCache* cache, int64_t pos,
                     at::ScalarType compute_dtype);
  std::shared_ptr<RMSNormImpl> norm;
  std::shared_ptr<SequenceMixer> mixer;
};

class MambaLM : public CausalLM {
 public:
  // initialize = false leaves the weights uninitialised (for load(), which overwrites them all).
  explicit MambaLM(MambaConfig cfg, bool initialize = true);
  // Reads config.json + safetensors from a Hugging Face or state-spaces folder. Weights stored in
  // the dtype they run in are the memory-mapped file (copy-on-write views, io::load_module);
  // `dtype` (kFloat / kBFloat16; Undefined: float32) loads straight into that dtype, as
  // to_dtype(dtype) after loading would, without a float32 copy first.
  static std::unique_ptr<MambaLM> load(const std::filesystem::path& dir,
                                       at::ScalarType dtype = at::ScalarType::Undefined);

  std::string arch() const override { return cfg_.attn_layer_idx.empty() ? "mamba" : "hybrid"; }
  int64_t vocab_size() const override { return cfg_.vocab_size; }
  int64_t hidden_size() const override { return cfg_.d_model; }
  int64_t num_layers() const override { return cfg_.n_layer; }
  at::Tensor embed(const at::Tensor& ids) override;
  at::Tensor forward_hidden(const at::Tensor& embeds, LMCache* cache = nullptr) override;
  at::Tensor logits(const at::Tensor& hidden) override;
  // A batch-1 decode step runs whole in one fused pass (every layer and the head in one parallel
  // region: kernels/mamba_step.h for Mamba layers, kernels/attention_step.h for a hybrid's MHA
  // layers); anything else as CausalLM does.
  at::Tensor forward_embeds(const at::Tensor& embeds, LMCache* cache = nullptr,
                            bool last_only = false) override;
  std::unique_ptr<LMCache> make_cache(int64_t batch, int64_t max_len) override;
  torch::nn::Module& module() override { return *root_; }
  void save(const std::filesystem::path& dir) const override;

  const MambaConfig& config() const { return cfg_; }
  // Casts weights to `dtype` (f32 or bf16); A_log and D stay fp32.
  void to_dtype(at::ScalarType dtype) override;
  // int8 weights for inference: every Mamba mixer's in_proj / x_proj / dt_proj / out_proj and the
  // head (lm_head, or the embedding table when tied) become int8 + per-row fp32 scales
  // (LinearImpl::quantize_int8); norms, conv, A_log, D, biases keep their dtype. Saved and loaded
  // as such (config quantization_config). Attention layers of a hybrid keep theirs.
  void quantize_int8() override;
  at::ScalarType dtype() const override { return dtype_; }
  void set_backend(kernels::Backend b);
  // Initialisation for training from scratch (SPEC §1.1), deterministic in `seed`.
  void init_weights(uint64_t seed);
  // Checkpoint key of a module parameter name, in this model's layout / in `layout`.
  std::string checkpoint_key(const std::string& param_name) const;
  static std::string checkpoint_key(const std::string& param_name, const std::string& layout);
  // The config `save` writes: this one, except that hybrids are always written in mamba_ssm's
  // ("original") layout.
  MambaConfig save_config() const;

  std::shared_ptr<torch::nn::Module> root_;  // "backbone", "lm_head"
  std::shared_ptr<torch::nn::Module> backbone_;
  Embedding embeddings{nullptr};
  std::vector<std::shared_ptr<MambaBlockImpl>> layers;
  std::shared_ptr<RMSNormImpl> norm_f;
  Linear lm_head{nullptr};  // only when untied

 private:
  bool can_decode_fused(const at::Tensor& embeds, LMCache* cache) const;
  at::Tensor decode_fused(const at::Tensor& embeds, LayerStackCache& cache);
  MambaConfig cfg_;
  at::ScalarType dtype_ = at::kFloat;
  std::filesystem::path source_dir_;
};

}  // namespace mambavl::models
