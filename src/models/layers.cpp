#include "models/layers.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common/cpu.h"
#include "models/bf16_gemm.h"

namespace mambavl::models {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", at::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", at::empty({out}));
}

namespace {

// Replaces a floating-point weight by its int8 quantisation; returns the scales. Per-row, so done
// in blocks of rows of <= 8 MB: the float temporaries of quantize_int8 stay small (a whole
// 50k x 768 head made ~0.5 GB of them), and the float weight (often a view of the mapped file)
// is released once set_data drops it.
at::Tensor quantize_param(at::Tensor& weight) {
  at::NoGradGuard ng;
  const int64_t rows = weight.size(0), cols = std::max<int64_t>(weight.size(1), 1);
  const int64_t block = std::max<int64_t>(1, (8 << 20) / (4 * cols));
  at::Tensor q = at::empty({rows, weight.size(1)}, at::kChar);
  at::Tensor scale = at::empty({rows}, at::kFloat);
  for (int64_t r = 0; r < rows; r += block) {
    const int64_t n = std::min(block, rows - r);
    kernels::Int8Matrix b = kernels::quantize_int8(weight.narrow(0, r, n));
    q.narrow(0, r, n).copy_(b.q);
    scale.narrow(0, r, n).copy_(b.scale);
  }
  weight.requires_grad_(false);
  weight.set_data(q);
  return scale;
}

}  // namespace

kernels::MatrixRef matrix_ref(const at::Tensor& weight, const at::Tensor& weight_scale) {
  if (weight.scalar_type() == at::kChar)
    return kernels::MatrixRef::of(kernels::Int8Matrix{weight, weight_scale});
  return kernels::MatrixRef::of(weight);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const { return apply(x, /*with_bias=*/true); }

bool LinearImpl::uses_batch_kernels(const at::Tensor& x) const {
  const auto wdt = weight.scalar_type(), xdt = x.scalar_type();
  const int64_t rows = x.dim() >= 1 && in_features > 0 ? x.numel() / in_features : 0;
  // bf16 on both sides with AMX (the bf16 GEMM native, bf16_gemm.h): above kAmxBatchRows rows
  // oneDNN's AMX GEMM is faster than the batch kernels (`bench gemv --batches`, Xeon with AMX, 2
  // threads, the mamba-130m matrices: AMX 19.2-20.2 ms per pass at 2-16 rows; batch kernels 14.5
  // at 2, 17.4 at 8, 27.5 at 16).
  const bool amx_gemm = rows > kAmxBatchRows && wdt == at::kBFloat16 && xdt == at::kBFloat16 &&
                        cpu::features().amx && inference_compute_dtype(weight) == at::kBFloat16;
  return rows >= 1 && rows <= kernels::kSmallBatchRows && !amx_gemm &&
         !at::GradMode::is_enabled() && backend != kernels::Backend::Reference &&
         !(backend == kernels::Backend::Auto &&
           kernels::default_backend() == kernels::Backend::Reference) &&
         x.device().is_cpu() && weight.device().is_cpu() && weight.is_contiguous() &&
         x.size(-1) == in_features && (xdt == at::kFloat || xdt == at::kBFloat16) &&
         (wdt == at::kFloat || wdt == at::kBFloat16 || wdt == at::kChar);
}

at::Tensor LinearImpl::apply(const at::Tensor& x, bool with_bias) const {
  const at::Tensor& b = with_bias ? bias : at::Tensor();
  if (uses_batch_kernels(x)) return kernels::linear_small(matrix_ref(*this), x, b, x.scalar_type());
  if (is_int8()) return int8_linear(x, weight, weight_scale, b);  // per dequantised block
  return weight_linear(x, weight, b);  // bf16 without AMX: through the fp32 GEMM
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
  return is_int8() ? kernels::dequantize_int8({weight, weight_scale}).to(dtype) : weight.to(dtype);
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
  return is_int8() ? kernels::dequantize_int8({weight, weight_scale}).to(dtype) : weight.to(dtype);
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
