// GPT-NeoX / Pythia language model, SPEC §1.2: Hugging Face GPTNeoXForCausalLM.
// Module and parameter names equal the checkpoint keys:
//   gpt_neox.embed_in.weight,
//   gpt_neox.layers.{i}.{input_layernorm, post_attention_layernorm, attention.query_key_value,
//   attention.dense, mlp.dense_h_to_4h, mlp.dense_4h_to_h}.{weight, bias},
//   gpt_neox.final_layer_norm.{weight, bias}, embed_out.weight.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/attention.h"
#include "models/lm.h"
#include "models/layers.h"
#include "models/mixer.h"
#include "models/weights_check.h"

namespace mambavl::models {

struct GPTNeoXConfig {
  int64_t vocab_size = 50304;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  double rotary_pct = 0.25;          // fraction of head_dim that is rotated
  double rotary_emb_base = 10000.0;  // rope theta
  int64_t max_position_embeddings = 2048;
  double layer_norm_eps = 1e-5;
  bool use_parallel_residual = true;
  bool attention_bias = true;  // bias on query_key_value and dense
  // Token ids written back on save (HF allows an int, a list or null for these).
  nlohmann::json bos_token_id = 0, eos_token_id = 0, pad_token_id = nullptr;
  // "" (floating-point weights) or "int8" (quantization_config.quant_method "mambavl_int8": see
  // GPTNeoXLM::quantize_int8 and docs/quantization.md).
  std::string quantization;

  // Reads HF config.json (transformers 4 keys rotary_pct / rotary_emb_base, or transformers 5
  // rope_parameters). Unknown keys, wrong types and unsupported values are errors naming `file`
  // and the key.
  static GPTNeoXConfig from_json(const nlohmann::json& j, const std::string& file);
  nlohmann::json to_json() const;
  // Validates (errors name the key), including the bounds of LMLimits (lm_limits.h) and the
  // parameter count, before anything is allocated.
  void finalize();
  // The parameter count of the model, from the sizes alone.
  double num_parameters() const;
  // What the checkpoint must hold (weights_check.h); `fields` prefixes the field names.
  ExpectedWeights expected_weights(const std::string& fields = "") const;
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t rotary_dim() const {
    return static_cast<int64_t>(static_cast<double>(head_dim()) * rotary_pct);
  }
};

// attention.{query_key_value, dense}: fused per-head QKV ([heads, 3 * head_dim] per token).
class GPTNeoXAttentionImpl : public SequenceMixer {
 public:
  explicit GPTNeoXAttentionImpl(const GPTNeoXConfig& c);
  // x: [B, L, hidden] -> [B, L, hidden]
  at::Tensor mix(const at::Tensor& x, LayerCache* cache, int64_t pos) override;
  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len, at::ScalarType dtype,
                                         at::Device device) const override;

  Linear query_key_value{nullptr}, dense{nullptr};
  AttentionCore core;
};

class GPTNeoXMLPImpl : public torch::nn::Module {
 public:
  explicit GPTNeoXMLPImpl(const GPTNeoXConfig& c);
  at::Tensor forward(const at::Tensor& x);  // [B, L, hidden] -> same; exact (erf) GELU
  Linear dense_h_to_4h{nullptr}, dense_4h_to_h{nullptr};
};

class GPTNeoXLayerImpl : public torch::nn::Module {
 public:
  explicit GPTNeoXLayerImpl(const GPTNeoXConfig& c);
  // Parallel: x + attn(LN1(x)) + mlp(LN2(x)); sequential: a = x + attn(LN1(x)); a + mlp(LN2(a)).
  at::Tensor forward(const at::Tensor& x, LayerCache* cache, int64_t pos);  // [B, L, hidden]
  bool parallel;
  torch::nn::LayerNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  std::shared_ptr<GPTNeoXAttentionImpl> attention;
  std::shared_ptr<GPTNeoXMLPImpl> mlp;
};

class GPTNeoXLM : public CausalLM {
 public:
  // initialize = false leaves the weights uninitialised (for load(), which overwrites them all).
  explicit GPTNeoXLM(GPTNeoXConfig cfg, bool initialize = true);
  // Reads config.json + safetensors (single file or shards) from a Hugging Face folder.
  // `dtype` (kFloat / kBFloat16; Undefined: float32): as MambaLM::load.
  static std::unique_ptr<GPTNeoXLM> load(const std::filesystem::path& dir,
                                         at::ScalarType dtype = at::ScalarType::Undefined);

  std::string arch() const override { return "gpt_neox"; }
  int64_t vocab_size() const override { return cfg_.vocab_size; }
  int64_t hidden_size() const override { return cfg_.hidden_size; }
  int64_t num_layers() const override { return cfg_.num_hidden_layers; }
  at::Tensor embed(const at::Tensor& ids) override;
  at::Tensor forward_hidden(const at::Tensor& embeds, LMCache* cache = nullptr) override;
  at::Tensor logits(const at::Tensor& hidden) override;
  // A batch-1 single-token step (CPU, no autograd, fp32 / bf16 / int8 weights, a cache without left
  // padding) runs whole in one fused pass: every layer, the final LayerNorm and embed_out in one
  // parallel region of the decode team (kernels/attention_step.h, kernels/gemv.h), appending to
  // the same KV caches. Anything else, or with the reference kernel backend, as CausalLM does.
  at::Tensor forward_embeds(const at::Tensor& embeds, LMCache* cache = nullptr,
                            bool last_only = false) override;
  std::unique_ptr<LMCache> make_cache(int64_t batch, int64_t max_len) override;
  int64_t max_context() const override { return cfg_.max_position_embeddings; }
  torch::nn::Module& module() override { return *root_; }
  void save(const std::filesystem::path& dir) const override;

  const GPTNeoXConfig& config() const { return cfg_; }
  // Casts all weights to `dtype` (f32 or bf16); activations then run in that dtype (as HF).
  void to_dtype(at::ScalarType dtype) override;
  at::ScalarType dtype() const override { return dtype_; }
  // Training from scratch: Linear / Embedding weights N(0, 0.02), biases 0, LayerNorm 1 / 0;
  // deterministic in `seed`.
  void init_weights(uint64_t seed);
  // int8 weights for inference: every layer's query_key_value, dense, dense_h_to_4h,
  // dense_4h_to_h and embed_out become int8 + per-row fp32 scales (LinearImpl::quantize_int8);
  // embed_in, LayerNorms and biases keep their dtype. Saved and loaded back (config.json's
  // quantization_config); parameters stop requiring grad.
  void quantize_int8() override;

  std::shared_ptr<torch::nn::Module> root_;  // "gpt_neox", "embed_out"
  std::shared_ptr<torch::nn::Module> gpt_neox_;
  Embedding embed_in{nullptr};
  std::vector<std::shared_ptr<GPTNeoXLayerImpl>> layers;
  torch::nn::LayerNorm final_layer_norm{nullptr};
  Linear embed_out{nullptr};

 protected:
  std::string own_context_source() const override {
    if (source_dir_.empty()) return "max_position_embeddings in the model's config";
    return "max_position_embeddings in " + (source_dir_ / "config.json").string();
  }

 private:
  bool can_decode_fused(const at::Tensor& embeds, LMCache* cache) const;
  at::Tensor decode_fused(const at::Tensor& embeds, LayerStackCache& cache);
  GPTNeoXConfig cfg_;
  at::ScalarType dtype_ = at::kFloat;
  std::filesystem::path source_dir_;
};

}  // namespace mambavl::models
