// Linear and Embedding modules whose parameters are allocated but NOT initialised on
// construction: loading a checkpoint would overwrite them anyway, and random initialisation of
// billions of parameters costs seconds (torch::nn::Linear always initialises). Models call
// reset_parameters() / their own init_weights() when they are built for training from scratch.
// Parameter names ("weight", "bias") and forward() match torch::nn::Linear / Embedding.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "kernels/backend.h"
#include "kernels/gemv.h"

namespace mambavl::models {

// Rows above which bf16 activations on bf16 weights go to the native bf16 GEMM instead of the
// batch kernels on CPUs with AMX (LinearImpl::apply).
inline constexpr int64_t kAmxBatchRows = 8;

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  at::Tensor forward(const at::Tensor& x) const;  // [..., in] -> [..., out]
  // x W^T, without the bias when `with_bias` is false (a bias applied elsewhere, e.g. Mamba's
  // dt_proj bias inside the scan). Without autograd on the CPU, inputs of up to
  // kernels::kSmallBatchRows rows (batch decode, short prompts) go through the batch kernels
  // (kernels/gemv.h: each weight read once for all rows; int8 weights used as stored), else
  // at::linear (int8 dequantised first).
  at::Tensor apply(const at::Tensor& x, bool with_bias) const;
  // Whether apply(x) runs the batch kernels (kernels::linear_small: up to kSmallBatchRows rows at
  // inference, except bf16 batches above kAmxBatchRows on CPUs with AMX) rather than a GEMM.
  bool uses_batch_kernels(const at::Tensor& x) const;
  // Reference: always at::linear (the LibTorch-ops ground truth of the tests); Auto also follows
  // kernels::default_backend(). Models set it with their set_backend.
  kernels::Backend backend = kernels::Backend::Auto;
  // PyTorch's default: weight, bias ~ U(+-1/sqrt(in_features)) (kaiming_uniform, a = sqrt(5)).
  void reset_parameters();
  int64_t in_features, out_features;
  at::Tensor weight;  // [out, in]; int8 once quantised
  at::Tensor bias;    // [out] or undefined

  // int8 weights (inference only): weight int8 [out, in] and the buffer "weight_scale" fp32 [out],
  // weight ~= weight_scale[o] * q[o, :] (symmetric per output row, kernels::quantize_int8).
  bool is_int8() const { return weight_scale.defined(); }
  void quantize_int8();  // from the current floating-point weight
  void prepare_int8();   // an empty int8 weight and scale, for a checkpoint load to fill
  // The weight as a floating-point matrix in `dtype` (dequantised when int8).
  at::Tensor dense_weight(at::ScalarType dtype) const;
  at::Tensor weight_scale;  // [out] fp32, defined only when int8
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim);
  at::Tensor forward(const at::Tensor& ids) const;  // [...] int64 -> [..., dim]
  at::Tensor weight;                                // [num_embeddings, dim]; int8 once quantised
  // int8 table (inference only; see LinearImpl): rows are dequantised as they are looked up.
  bool is_int8() const { return weight_scale.defined(); }
  void quantize_int8();
  void prepare_int8();
  at::Tensor dense_weight(at::ScalarType dtype) const;
  at::Tensor weight_scale;  // [num_embeddings] fp32, defined only when int8
};

// The kernels' view of a weight matrix (fp32, bf16 or int8 with its scales); validated.
kernels::MatrixRef matrix_ref(const at::Tensor& weight, const at::Tensor& weight_scale);
inline kernels::MatrixRef matrix_ref(const LinearImpl& l) { return matrix_ref(l.weight, l.weight_scale); }
inline kernels::MatrixRef matrix_ref(const EmbeddingImpl& e) { return matrix_ref(e.weight, e.weight_scale); }
TORCH_MODULE(Embedding);

}  // namespace mambavl::models
