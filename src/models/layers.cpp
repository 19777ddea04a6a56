#include "models/layers.h"

#include <ATen/ATen.h>

#include <cmath>

#include "models/bf16_gemm.h"

namespace mambavl::models {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", at::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", at::empty({out}));
}

namespace {

// Replaces a floating-point weight by its int8 quantisation; returns the scales.
at::Tensor quantize_param(at::Tensor& weight) {
  at::NoGradGuard ng;
  kernels::Int8Matrix q = kernels::quantize_int8(weight);
  weight.requires_grad_(false);
  weight.set_data(q.q);
  return q.scale;
}

at::Tensor dequantize(const at::Tensor& q, const at::Tensor& scale, at::ScalarType dtype) {
  return (q.to(at::kFloat) * scale.unsqueeze(1)).to(dtype);
}

}  // namespace

kernels::MatrixRef matrix_ref(const at::Tensor& weight, const at::Tensor& weight_scale) {
  if (weight.scalar_type() == at::kChar)
    return kernels::MatrixRef::of(kernels::Int8Matrix{weight, weight_scale});
  return kernels::MatrixRef::of(weight);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const {
  if (is_int8()) return at::linear(x, dense_weight(x.scalar_type()), bias);
  return weight_linear(x, weight, bias);  // bf16 without AMX: through the fp32 GEMM
}

void LinearImpl::quantize_int8() {
  if (is_int8()) return;
  weight_scale = register_buffer("weight_scale", quantize_param(weight));
}

void LinearImpl::prepare_int8() {
  if (is_int8()) return;
  weight.requires_grad_(false);
  weight.set_data(at::empty({out_features, in_features}, at::kChar));
  weight_scale = register_buffer("weight_scale", at::empty({out_features}, at::kFloat));
}

at::Tensor LinearImpl::dense_weight(at::ScalarType dtype) const {
  return is_int8() ? dequantize(weight, weight_scale, dtype) : weight.to(dtype);
}

void EmbeddingImpl::quantize_int8() {
  if (is_int8()) return;
  weight_scale = register_buffer("weight_scale", quantize_param(weight));
}

void EmbeddingImpl::prepare_int8() {
  if (is_int8()) return;
  weight.requires_grad_(false);
  weight.set_data(at::empty(weight.sizes(), at::kChar));
  weight_scale = register_buffer("weight_scale", at::empty({weight.size(0)}, at::kFloat));
}

at::Tensor EmbeddingImpl::dense_weight(at::ScalarType dtype) const {
  return is_int8() ? dequantize(weight, weight_scale, dtype) : weight.to(dtype);
}

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
  if (is_int8())  // only the rows looked up are dequantised: [..., dim] fp32
    return at::embedding(weight, ids).to(at::kFloat) * at::embedding(weight_scale.unsqueeze(1), ids);
  return at::embedding(weight, ids);
}

}  // namespace mambavl::models
