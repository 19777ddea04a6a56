// Linear and Embedding modules whose parameters are allocated but NOT initialised on
// construction: loading a checkpoint would overwrite them anyway, and random initialisation of
// billions of parameters costs seconds (torch::nn::Linear always initialises). Models call
// reset_parameters() / their own init_weights() when they are built for training from scratch.
// Parameter names ("weight", "bias") and forward() match torch::nn::Linear / Embedding.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

namespace mambavl::models {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  at::Tensor forward(const at::Tensor& x) const;  // [..., in] -> [..., out]
  // PyTorch's default: weight, bias ~ U(+-1/sqrt(in_features)) (kaiming_uniform, a = sqrt(5)).
  void reset_parameters();
  int64_t in_features, out_features;
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim);
  at::Tensor forward(const at::Tensor& ids) const;  // [...] int64 -> [..., dim]
  at::Tensor weight;                                // [num_embeddings, dim]
};
TORCH_MODULE(Embedding);

}  // namespace mambavl::models
