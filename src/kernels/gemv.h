// Matrix-vector product for batch-1 decoding, where every weight byte is read once per token and
// the op is memory-bound: y[o] = sum_i W[o, i] * x[i] (+ bias[o]). W row-major [O, I] in fp32 or
// bf16 (bf16 halves the bytes; accumulation is fp32), x and y fp32. Parallel over rows.
#pragma once
#include <ATen/core/Tensor.h>

namespace mambavl::kernels {

// W: [O, I] contiguous fp32/bf16 on CPU; x: I floats; y: O floats; bias: O floats or null.
void gemv(const at::Tensor& W, const float* x, float* y, const float* bias = nullptr);

// Tensor form (validates): x [I] fp32 -> [O] fp32. Used by tests and the reference comparison.
at::Tensor gemv(const at::Tensor& W, const at::Tensor& x);

}  // namespace mambavl::kernels
