#include "models/mixer.h"

#include <ATen/ATen.h>

namespace mambavl::models {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x, at::ScalarType out_dtype) const {
  at::Tensor xf = x.to(at::kFloat);                               // [..., dim]
  at::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);          // [..., 1]
  at::Tensor normed = (xf * at::rsqrt(var + eps)).to(out_dtype);  // [..., dim]
  return weight.to(out_dtype) * normed;
}

}  // namespace mambavl::models
