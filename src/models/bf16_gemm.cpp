#include "models/bf16_gemm.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/cpu.h"
#include "common/error.h"
#include "kernels/gemv.h"

namespace mambavl::models {

namespace {

// A per-thread fp32 buffer that only grows (64-byte aligned); viewed as tensors by from_blob, so
// no tensor outlives a call and inference / normal tensor modes never mix.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }
  float* get(int64_t n) {
    if (n > cap_) {
      std::free(p_);
      p_ = nullptr;
      const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
      p_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      MVL_CHECK(p_, "GEMM via fp32: cannot allocate ", bytes, " bytes of scratch");
      cap_ = n;
    }
    return p_;
  }

 private:
  float* p_ = nullptr;
  int64_t cap_ = 0;
};

thread_local Scratch tl_x, tl_w, tl_y;  // activations, weight block, output block (fp32)

at::Tensor scratch(Scratch& s, at::IntArrayRef sizes) {
  int64_t n = 1;
  for (int64_t d : sizes) n *= d;
  return at::from_blob(s.get(std::max<int64_t>(n, 1)), sizes, at::kFloat);
}

// Rows of the weight per fp32 block: ~8 MiB, a multiple of 16, at least 16. Larger blocks mean
// fewer, larger GEMMs and fewer parallel regions; the conversion costs the same per weight either
// way. CLIP ViT-B/16 in bf16 on the AVX-512 Xeon (interleaved runs, ms per image at batch 1 /
// per 8 at batch 8): 1 MiB blocks 194-338 / 1306-1781, 8 MiB 176-283 / 1220-1561, faster in every
// pair; mamba-130m bf16 prefill alike within the noise.
std::atomic<int64_t>& block_bytes_slot() {
  static std::atomic<int64_t> b{kBf16BlockBytes};
  return b;
}

int64_t block_rows(int64_t K, int64_t N) {
  const int64_t rows = std::max<int64_t>(16, block_bytes_slot().load() / (K * 4) / 16 * 16);
  return std::min(rows, N);
}

Bf16Gemm mode_from_env() {
  const char* e = std::getenv("MAMBAVL_BF16_GEMM");
  if (!e || !*e) return Bf16Gemm::Auto;
  const std::string v = e;
  if (v == "auto") return Bf16Gemm::Auto;
  if (v == "f32") return Bf16Gemm::ViaF32;
  if (v == "native") return Bf16Gemm::Native;
  MVL_FAIL("MAMBAVL_BF16_GEMM='", v, "' is not one of auto, f32, native");
}

std::atomic<int>& mode_slot() {
  static std::atomic<int> m{static_cast<int>(mode_from_env())};
  return m;
}

}  // namespace

void set_bf16_block_bytes(int64_t bytes) {
  block_bytes_slot().store(bytes > 0 ? bytes : kBf16BlockBytes);
}

void set_bf16_gemm(Bf16Gemm mode) { mode_slot().store(static_cast<int>(mode)); }
Bf16Gemm bf16_gemm() { return static_cast<Bf16Gemm>(mode_slot().load()); }

bool bf16_via_f32(const at::Tensor& weight, const at::Tensor& x, int64_t rows) {
  if (!weight.defined() || !x.defined() || weight.scalar_type() != at::kBFloat16 ||
      x.scalar_type() != at::kBFloat16 || !weight.device().is_cpu() || !x.device().is_cpu() ||
      weight.dim() != 2 || rows < kBf16ViaF32MinRows)
    return false;
  if (at::GradMode::is_enabled() && (weight.requires_grad() || x.requires_grad())) return false;
  switch (bf16_gemm()) {
    case Bf16Gemm::ViaF32: return true;
    case Bf16Gemm::Native: return false;
    case Bf16Gemm::Auto: break;
  }
  return !cpu::features().amx;
}

namespace {
// Calls f(n0, n, wb) for blocks of block_rows(K, N) rows of the bf16 or int8 weight W [N, K], each
// converted to fp32 in the reused per-thread buffer: wb [n, K] = W[n0 : n0 + n], times the int8
// rows' scales when `scale` [N] is defined (the values of kernels::dequantize_int8).
template <class F>
void for_each_f32_block(const at::Tensor& W, const at::Tensor& scale, F&& f) {
  const int64_t N = W.size(0), K = W.size(1), nb = block_rows(K, N);
  float* wp = tl_w.get(nb * K);
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t n = std::min(nb, N - n0);
    at::Tensor wb = at::from_blob(wp, {n, K}, at::kFloat);  // [n, K] fp32
    wb.copy_(W.narrow(0, n0, n));
    if (scale.defined()) wb.mul_(scale.narrow(0, n0, n).unsqueeze(1));
    f(n0, n, wb);
  }
}

// x [..., K] bf16 or fp32 times the bf16 weight, or the int8 weight with its row scales, [N, K]:
// the fp32 GEMM per converted block -> [..., N] in x's dtype.
at::Tensor linear_via_f32(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                          const at::Tensor& bias) {
  MVL_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1),
            "linear: input ", x.sizes(), " does not match weight ", weight.sizes());
  MVL_CHECK(x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat,
            "linear via fp32: the input must be bf16 or fp32, not ", c10::toString(x.scalar_type()));
  const int64_t N = weight.size(0), K = weight.size(1);
  const int64_t M = K > 0 ? x.numel() / K : 0;
  std::vector<int64_t> out_shape = x.sizes().vec();
  out_shape.back() = N;
  at::Tensor y = at::empty(out_shape, x.options());  // [..., N] in x's dtype
  if (M == 0 || N == 0) return y;
  const bool f32_in = x.scalar_type() == at::kFloat;
  at::Tensor xf;  // [M, K] fp32
  if (f32_in) {
    xf = x.reshape({M, K});  // a view when x is contiguous
  } else {
    xf = scratch(tl_x, x.sizes());
    xf.copy_(x);  // [..., K] fp32, any input strides
    xf = xf.view({M, K});
  }
  at::Tensor y2 = y.view({M, N});                                       // [M, N]
  at::Tensor bf = bias.defined() ? bias.to(at::kFloat) : at::Tensor();  // [N] fp32
  // fp32 out: the GEMM writes its columns of y itself (a strided [M, n] view, row stride N, which
  // the BLAS takes as its ldc); bf16 out: an fp32 block, then rounded into y.
  float* yp = f32_in ? nullptr : tl_y.get(M * block_rows(K, N));
  for_each_f32_block(weight, scale, [&](int64_t n0, int64_t n, const at::Tensor& wb) {
    at::Tensor yb = yp ? at::from_blob(yp, {M, n}, at::kFloat) : y2.narrow(1, n0, n);  // [M, n]
    if (bf.defined())
      at::addmm_out(yb, bf.narrow(0, n0, n), xf, wb.t());
    else
      at::mm_out(yb, xf, wb.t());
    if (yp) y2.narrow(1, n0, n).copy_(yb);  // bf16: rounded
  });
  return y;
}

// W [N, K] (bf16, or int8 with `scale`) times x [K, M] -> [N, M] in x's dtype, per converted block.
at::Tensor mm_via_f32(const at::Tensor& W, const at::Tensor& scale, const at::Tensor& x) {
  const int64_t N = W.size(0), K = W.size(1), M = x.size(1);
  at::Tensor y = at::empty({N, M}, x.options());  // [N, M]
  if (N == 0 || K == 0 || M == 0) return y.zero_();
  if (x.scalar_type() == at::kFloat) {  // the blocks write their rows of y directly
    for_each_f32_block(W, scale, [&](int64_t n0, int64_t n, const at::Tensor& wb) {
      at::Tensor yb = y.narrow(0, n0, n);  // [n, M], contiguous
      at::mm_out(yb, wb, x);
    });
    return y;
  }
  at::Tensor xf;  // [K, M] fp32, in x's layout (a transposed x stays transposed: no copy in mm)
  if (x.stride(0) == 1 && x.stride(1) != 1) {
    at::Tensor t = scratch(tl_x, {M, K});
    t.copy_(x.t());
    xf = t.t();
  } else {
    xf = scratch(tl_x, {K, M});
    xf.copy_(x);
  }
  float* yp = tl_y.get(block_rows(K, N) * M);
  for_each_f32_block(W, scale, [&](int64_t n0, int64_t n, const at::Tensor& wb) {
    at::Tensor yb = at::from_blob(yp, {n, M}, at::kFloat);  // [n, M] fp32
    at::mm_out(yb, wb, xf);
    y.narrow(0, n0, n).copy_(yb);  // rounded to x's dtype
  });
  return y;
}

// An int8 weight times fp32 activations, no gradient recorded, on the CPU: per converted block.
bool int8_via_f32(const at::Tensor& W, const at::Tensor& scale, const at::Tensor& x) {
  return W.defined() && scale.defined() && W.scalar_type() == at::kChar && W.dim() == 2 &&
         scale.dim() == 1 && scale.size(0) == W.size(0) && scale.scalar_type() == at::kFloat &&
         x.defined() && x.scalar_type() == at::kFloat && W.device().is_cpu() &&
         x.device().is_cpu() && !(at::GradMode::is_enabled() && x.requires_grad());
}
}  // namespace

at::ScalarType inference_compute_dtype(const at::Tensor& weight) {
  if (!weight.defined() || weight.scalar_type() != at::kBFloat16 || !weight.device().is_cpu())
    return weight.defined() ? weight.scalar_type() : at::kFloat;
  if (at::GradMode::is_enabled() && weight.requires_grad()) return at::kBFloat16;
  switch (bf16_gemm()) {
    case Bf16Gemm::ViaF32: return at::kFloat;
    case Bf16Gemm::Native: return at::kBFloat16;
    case Bf16Gemm::Auto: break;
  }
  return cpu::features().amx ? at::kBFloat16 : at::kFloat;
}

at::Tensor linear_bf16_via_f32(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias) {
  return linear_via_f32(x, weight, at::Tensor(), bias);
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                       const at::Tensor& bias) {
  if (int8_via_f32(weight, scale, x) && x.dim() >= 1 && x.size(-1) == weight.size(1) &&
      !(bias.defined() && bias.requires_grad() && at::GradMode::is_enabled()))
    return linear_via_f32(x, weight, scale, bias);  // [..., N] fp32
  return at::linear(x, kernels::dequantize_int8({weight, scale}).to(x.scalar_type()), bias);
}

at::Tensor weight_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (x.dim() >= 1 && x.size(-1) > 0) {
    const bool bias_grad = bias.defined() && bias.requires_grad() && at::GradMode::is_enabled();
    const bool grad = at::GradMode::is_enabled() && (weight.requires_grad() || x.requires_grad());
    // fp32 activations on a bf16 weight (inference_compute_dtype): at::linear would refuse the mix.
    const bool mixed = x.scalar_type() == at::kFloat && weight.scalar_type() == at::kBFloat16 &&
                       weight.dim() == 2 && x.device().is_cpu() && weight.device().is_cpu() &&
                       !grad;
    if (!bias_grad && (mixed || bf16_via_f32(weight, x, x.numel() / x.size(-1))))
      return linear_bf16_via_f32(x, weight, bias);  // [..., N]
  }
  return at::linear(x, weight, bias);
}

at::Tensor weight_mm(const at::Tensor& W, const at::Tensor& x) {
  const int64_t M = x.dim() == 2 ? x.size(1) : 0;
  if (!bf16_via_f32(W, x, M) || x.size(0) != W.size(1)) return at::mm(W, x);
  return mm_via_f32(W, at::Tensor(), x);  // [N, M] bf16
}

at::Tensor int8_mm(const at::Tensor& W, const at::Tensor& scale, const at::Tensor& x) {
  if (int8_via_f32(W, scale, x) && x.dim() == 2 && x.size(0) == W.size(1))
    return mm_via_f32(W, scale, x);  // [N, M] fp32
  return at::mm(kernels::dequantize_int8({W, scale}).to(x.scalar_type()), x);
}

}  // namespace mambavl::models
