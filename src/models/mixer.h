// Building blocks shared by the backbones: per-layer decoding caches, the sequence-mixer interface
// (a Mamba mixer or an attention layer inside a residual block), RMSNorm.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <memory>

namespace mambavl::models {

// One layer's decoding state (conv + SSM state for Mamba, K/V for attention).
struct LayerCache {
  virtual ~LayerCache() = default;
};

// A token mixer inside a residual block: [B, L, d_model] -> [B, L, d_model].
class SequenceMixer : public torch::nn::Module {
 public:
  // x: [B, L, d_model] in the model's compute dtype. `cache` is null for a plain (training /
  // scoring) forward; otherwise it holds the state after `pos` tokens and is advanced by L.
  // The result may be a strided view (Mamba's one-row prefill returns a transposed one): reshape,
  // not view, where a caller needs a layout.
  virtual at::Tensor mix(const at::Tensor& x, LayerCache* cache, int64_t pos) = 0;
  virtual std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len,
                                                 at::ScalarType dtype, at::Device device) const = 0;
};

// RMSNorm as in Mamba / HF MambaRMSNorm: computed in fp32, `weight * normed.to(out_dtype)`.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  // x: [..., dim] any float dtype -> same shape in `out_dtype`.
  at::Tensor forward(const at::Tensor& x, at::ScalarType out_dtype) const;
  at::Tensor weight;  // [dim]
  double eps;
};

}  // namespace mambavl::models
