#include "kernels/gemv.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/cpu.h"
#include "common/error.h"
#include "common/shape.h"
#include "kernels/isa/gemv_kernels.h"

namespace mambavl::kernels {

namespace {

using F32Rows = void (*)(const float*, const float*, float*, const float*, int64_t, int64_t, int64_t);
using Bf16Rows = void (*)(const uint16_t*, const float*, float*, const float*, int64_t, int64_t,
                          int64_t);
using Q8Rows = void (*)(const int8_t*, const float*, const int8_t*, const float*, float*,
                        const float*, int64_t, int64_t, int64_t);

using F32Gemm = void (*)(const float*, const float*, int64_t, int64_t, float*, int64_t,
                        const float*, int64_t, int64_t, int64_t);
using Bf16Gemm = void (*)(const uint16_t*, const float*, int64_t, int64_t, float*, int64_t,
                         const float*, int64_t, int64_t, int64_t);
using Q8Gemm = void (*)(const int8_t*, const float*, const int8_t*, int64_t, const float*, int64_t,
                       int64_t, float*, int64_t, const float*, int64_t, int64_t, int64_t);

struct RowKernels {
  F32Rows f32;
  Bf16Rows bf16;
  Q8Rows q8;
  F32Gemm gemm_f32;
  Bf16Gemm gemm_bf16;
  Q8Gemm gemm_q8;
};

#define MVL_ROW_KERNELS(ns)                                                                    \
  RowKernels {                                                                                 \
    ns::gemv_f32_rows, ns::gemv_bf16_rows, ns::gemv_q8_rows, ns::gemm_f32_rows,                \
        ns::gemm_bf16_rows, ns::gemm_q8_rows                                                   \
  }

RowKernels row_kernels() {
  switch (cpu::active_isa()) {
    case cpu::Isa::Avx512:
      return MVL_ROW_KERNELS(isa_avx512);
    case cpu::Isa::Avx2:
      return MVL_ROW_KERNELS(isa_avx2);
    case cpu::Isa::Scalar:
      break;
  }
  return MVL_ROW_KERNELS(isa_scalar);
}
#undef MVL_ROW_KERNELS

// Grain: enough rows that each task streams >= ~64 KiB, so small matrices stay on one thread.
int64_t grain_rows(int64_t row_bytes) {
  return std::max<int64_t>(4, (64 * 1024) / std::max<int64_t>(row_bytes, 1) / 4 * 4);
}

// x quantised per 64-block: xs[b] = max|x_b| / 127, xq = round(x / xs) (zero padded to whole
// blocks). Returns the number of blocks.
int64_t quantize_x(const float* x, int64_t I, std::vector<int8_t>& xq, std::vector<float>& xs) {
  const int64_t nb = (I + kQ8Block - 1) / kQ8Block;
  xq.assign(static_cast<size_t>(nb * kQ8Block), 0);
  xs.resize(static_cast<size_t>(nb));
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t i0 = b * kQ8Block, i1 = std::min(I, i0 + kQ8Block);
    float amax = 0.f;
    for (int64_t i = i0; i < i1; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float s = amax > 0.f ? amax / 127.f : 1.f;
    const float inv = 1.f / s;
    // Rounded to nearest even as nearbyint does (|x * inv| <= 127 here, far below 2^22), by adding
    // and removing 1.5 * 2^23: a loop the compiler vectorises, without a libm call per element.
    constexpr float kMagic = 12582912.0f;
    for (int64_t i = i0; i < i1; ++i) {
      const float r = (std::clamp(x[i] * inv, -127.f, 127.f) + kMagic) - kMagic;
      xq[static_cast<size_t>(i)] = static_cast<int8_t>(r);
    }
    xs[static_cast<size_t>(b)] = s;
  }
  return nb;
}

void check_int8(const Int8Matrix& W, const char* what) {
  MVL_CHECK(W.q.defined() && W.q.dim() == 2 && W.q.scalar_type() == at::kChar && W.q.is_contiguous() &&
                W.q.device().is_cpu(),
            what, ": int8 weights must be a contiguous CPU [O, I] int8 matrix");
  MVL_CHECK(W.scale.defined() && W.scale.scalar_type() == at::kFloat && W.scale.is_contiguous() &&
                W.scale.dim() == 1 && W.scale.size(0) == W.q.size(0),
            what, ": int8 weight scales must be [", W.q.size(0), "] float32, got ",
            W.scale.defined() ? shape_str(W.scale.sizes()) : std::string("none"));
}

}  // namespace

MatrixRef MatrixRef::of(const at::Tensor& W) {
  MVL_CHECK(W.dim() == 2 && W.is_contiguous() && W.device().is_cpu() &&
                (W.scalar_type() == at::kFloat || W.scalar_type() == at::kBFloat16),
            "gemv: W must be a contiguous CPU [O, I] float32/bfloat16 matrix, got ",
            shape_str(W.sizes()));
  MatrixRef r;
  r.kind = W.scalar_type() == at::kFloat ? F32 : BF16;
  r.data = W.data_ptr();
  r.rows = W.size(0);
  r.cols = W.size(1);
  return r;
}

MatrixRef MatrixRef::of(const Int8Matrix& W) {
  check_int8(W, "gemv");
  MatrixRef r;
  r.kind = Int8;
  r.data = W.q.data_ptr();
  r.scale = W.scale.data_ptr<float>();
  r.rows = W.rows();
  r.cols = W.cols();
  return r;
}

void QuantizedVector::set(const float* x, int64_t n) { quantize_x(x, n, q, scale); }

void gemv_rows(const MatrixRef& W, const float* x, const QuantizedVector* xq, float* y,
               const float* bias, int64_t r0, int64_t r1) {
  const RowKernels k = row_kernels();
  switch (W.kind) {
    case MatrixRef::F32:
      k.f32(static_cast<const float*>(W.data), x, y, bias, W.cols, r0, r1);
      break;
    case MatrixRef::BF16:
      k.bf16(static_cast<const uint16_t*>(W.data), x, y, bias, W.cols, r0, r1);
      break;
    case MatrixRef::Int8:
      k.q8(static_cast<const int8_t*>(W.data), W.scale, xq->q.data(), xq->scale.data(), y, bias,
           W.cols, r0, r1);
      break;
  }
}

void QuantizedRows::set(const float* X, int64_t M, int64_t n, int64_t ldx) {
  const int64_t nb = (n + kQ8Block - 1) / kQ8Block;
  ldq = nb * kQ8Block;
  lds = nb;
  q.resize(static_cast<size_t>(M * ldq));
  scale.resize(static_cast<size_t>(M * lds));
  // Rows on the intra-op threads (each quantised into per-thread buffers, then copied).
  at::parallel_for(0, M, 1, [&](int64_t m0, int64_t m1) {
    thread_local std::vector<int8_t> rq;
    thread_local std::vector<float> rs;
    for (int64_t m = m0; m < m1; ++m) {
      quantize_x(X + m * ldx, n, rq, rs);
      std::copy(rq.begin(), rq.end(), q.begin() + m * ldq);
      std::copy(rs.begin(), rs.end(), scale.begin() + m * lds);
    }
  });
}

void gemm_rows(const MatrixRef& W, const float* X, int64_t ldx, int64_t M, const QuantizedRows* xq,
               float* Y, int64_t ldy, const float* bias, int64_t r0, int64_t r1) {
  const RowKernels k = row_kernels();
  switch (W.kind) {
    case MatrixRef::F32:
      k.gemm_f32(static_cast<const float*>(W.data), X, ldx, M, Y, ldy, bias, W.cols, r0, r1);
      break;
    case MatrixRef::BF16:
      k.gemm_bf16(static_cast<const uint16_t*>(W.data), X, ldx, M, Y, ldy, bias, W.cols, r0, r1);
      break;
    case MatrixRef::Int8:
      k.gemm_q8(static_cast<const int8_t*>(W.data), W.scale, xq->q.data(), xq->ldq,
                xq->scale.data(), xq->lds, M, Y, ldy, bias, W.cols, r0, r1);
      break;
  }
}

void gemm_small(const MatrixRef& W, const float* X, int64_t M, float* Y, const float* bias) {
  const int64_t bytes = W.kind == MatrixRef::F32 ? 4 : W.kind == MatrixRef::BF16 ? 2 : 1;
  thread_local QuantizedRows xq;  // int8: X quantised once, reused
  if (W.kind == MatrixRef::Int8) xq.set(X, M, W.cols, W.cols);
  const QuantizedRows* xqp = &xq;
  // Row chunks of ~32 KiB of weights: they stay in L1/L2 while every group of vectors uses them.
  at::parallel_for(0, W.rows, std::max(grain_rows(W.cols * bytes) / std::max<int64_t>(M, 1), int64_t{4}),
                   [&](int64_t b, int64_t e) {
                     // Several vector groups: ~256 KiB of rows per call (the x column blocks stay
                     // in L1 across them; kernels/isa/gemv_impl.inc); one group: as the GEMV.
                     const int64_t step =
                         M > 4 ? std::max<int64_t>(4, (256 * 1024) / std::max<int64_t>(W.cols * bytes, 1) / 4 * 4)
                               : gemv_chunk_rows(W);
                     for (int64_t r = b; r < e; r += step)
                       gemm_rows(W, X, W.cols, M, xqp, Y, W.rows, bias, r, std::min(e, r + step));
                   });
}

at::Tensor linear_small(const MatrixRef& W, const at::Tensor& x, const at::Tensor& bias,
                        at::ScalarType out_dtype) {
  MVL_CHECK(x.dim() >= 1 && x.size(-1) == W.cols && x.device().is_cpu(),
            "linear_small: x must be a CPU [..., ", W.cols, "] tensor, got ", shape_str(x.sizes()));
  MVL_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == W.rows),
            "linear_small: bias must be [", W.rows, "], got ", shape_str(bias.sizes()));
  at::Tensor xf = x.to(at::kFloat).contiguous();
  const int64_t M = W.cols > 0 ? xf.numel() / W.cols : 0;
  std::vector<int64_t> out_sizes(x.sizes().begin(), x.sizes().end());
  out_sizes.back() = W.rows;
  at::Tensor y = at::empty(out_sizes, at::kFloat);
  at::Tensor bf = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  if (M > 0) gemm_small(W, xf.data_ptr<float>(), M, y.data_ptr<float>(), bf.defined() ? bf.data_ptr<float>() : nullptr);
  return out_dtype == at::kFloat ? y : y.to(out_dtype);
}

int64_t gemv_chunk_rows(const MatrixRef& W) {
  const int64_t bytes = W.kind == MatrixRef::F32 ? 4 : W.kind == MatrixRef::BF16 ? 2 : 1;
  return std::max<int64_t>(4, (32 * 1024) / std::max<int64_t>(W.cols * bytes, 1) / 4 * 4);
}

Int8Matrix quantize_int8(const at::Tensor& W) {
  MVL_CHECK(W.dim() == 2 && at::isFloatingType(W.scalar_type()),
            "quantize_int8: expected a floating-point [O, I] matrix, got ", shape_str(W.sizes()));
  at::Tensor w = W.to(at::kFloat).contiguous();
  at::Tensor amax = w.abs().amax(1);  // [O]
  at::Tensor scale = at::where(amax > 0, amax / 127.f, at::ones_like(amax)).contiguous();
  at::Tensor q = (w / scale.unsqueeze(1)).round().clamp(-127, 127).to(at::kChar).contiguous();
  return {q, scale};
}

at::Tensor dequantize_int8(const Int8Matrix& W) {
  check_int8(W, "dequantize_int8");
  return W.q.to(at::kFloat) * W.scale.unsqueeze(1);
}

void gemv(const MatrixRef& W, const float* x, float* y, const float* bias) {
  const int64_t bytes = W.kind == MatrixRef::F32 ? 4 : W.kind == MatrixRef::BF16 ? 2 : 1;
  thread_local QuantizedVector xq;  // int8: x quantised once, reused (no allocation once warm)
  if (W.kind == MatrixRef::Int8) xq.set(x, W.cols);
  // The caller's buffer, by pointer: inside the lambda `xq` would name each worker's own.
  const QuantizedVector* xqp = &xq;
  at::parallel_for(0, W.rows, grain_rows(W.cols * bytes), [&](int64_t b, int64_t e) {
    gemv_rows(W, x, xqp, y, bias, b, e);
  });
}

void gemv(const at::Tensor& W, const float* x, float* y, const float* bias) {
  gemv(MatrixRef::of(W), x, y, bias);
}

void gemv(const Int8Matrix& W, const float* x, float* y, const float* bias) {
  gemv(MatrixRef::of(W), x, y, bias);
}

at::Tensor gemv(const at::Tensor& W, const at::Tensor& x) {
  MVL_CHECK(W.dim() == 2 && W.is_contiguous() && W.device().is_cpu() &&
                (W.scalar_type() == at::kFloat || W.scalar_type() == at::kBFloat16),
            "gemv: W must be a contiguous CPU [O, I] float32/bfloat16 matrix, got ",
            shape_str(W.sizes()));
  check_shape(x, {W.size(1)}, "gemv: x", "I");
  MVL_CHECK(x.scalar_type() == at::kFloat, "gemv: x must be float32");
  at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({W.size(0)}, at::kFloat);
  gemv(W, xc.data_ptr<float>(), y.data_ptr<float>());
  return y;
}

at::Tensor gemv(const Int8Matrix& W, const at::Tensor& x) {
  check_int8(W, "gemv");
  check_shape(x, {W.cols()}, "gemv: x", "I");
  MVL_CHECK(x.scalar_type() == at::kFloat, "gemv: x must be float32");
  at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty({W.rows()}, at::kFloat);
  gemv(W, xc.data_ptr<float>(), y.data_ptr<float>());
  return y;
}

at::Tensor gemv_int8_reference(const Int8Matrix& W, const at::Tensor& x) {
  check_int8(W, "gemv_int8_reference");
  const int64_t O = W.rows(), I = W.cols(), nb = (I + kQ8Block - 1) / kQ8Block;
  at::Tensor xp = at::zeros({nb * kQ8Block}, at::kFloat);
  xp.narrow(0, 0, I).copy_(x);
  at::Tensor xb = xp.view({nb, kQ8Block});
  at::Tensor amax = xb.abs().amax(1);                                      // [nb]
  at::Tensor xs = at::where(amax > 0, amax / 127.f, at::ones_like(amax));  // [nb]
  at::Tensor xq = (xb * (1.f / xs).unsqueeze(1)).round().clamp(-127, 127);  // [nb, 64]
  at::Tensor wp = at::zeros({O, nb * kQ8Block}, at::kDouble);
  wp.narrow(1, 0, I).copy_(W.q.to(at::kDouble));
  at::Tensor dots = (wp.view({O, nb, kQ8Block}) * xq.to(at::kDouble).unsqueeze(0)).sum(2);  // [O, nb]
  return ((dots * xs.to(at::kDouble).unsqueeze(0)).sum(1) * W.scale.to(at::kDouble)).to(at::kFloat);
}

}  // namespace mambavl::kernels
