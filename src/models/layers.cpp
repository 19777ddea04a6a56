#include "models/layers.h"

#include <ATen/ATen.h>

#include <cmath>

namespace mambavl::models {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", at::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", at::empty({out}));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const { return at::linear(x, weight, bias); }

void LinearImpl::reset_parameters() {
  at::NoGradGuard ng;
  const double bound = in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(in_features)) : 0.0;
  weight.uniform_(-bound, bound);
  if (bias.defined()) bias.uniform_(-bound, bound);
}

EmbeddingImpl::EmbeddingImpl(int64_t n, int64_t dim) {
  weight = register_parameter("weight", at::empty({n, dim}));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) const {
  return at::embedding(weight, ids);
}

}  // namespace mambavl::models
