#include "kernels/gemv.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MAMBAVL_GEMV_AVX2 1
#endif

#include "common/error.h"
#include "common/shape.h"

namespace mambavl::kernels {

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#ifdef MAMBAVL_GEMV_AVX2
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

inline float to_f(float v) { return v; }
inline float to_f(uint16_t v) { return bf16_to_float(v); }

// Rows [r0, r1) of y = W x; 4 rows at a time so x is loaded once per 4 rows.
template <class T>
void rows(const T* W, const float* x, float* y, const float* bias, int64_t I, int64_t r0,
          int64_t r1) {
  int64_t o = r0;
#ifdef MAMBAVL_GEMV_AVX2
  const int64_t I8 = I / 8 * 8;
  for (; o + 4 <= r1; o += 4) {
    const T* w0 = W + o * I;
    const T* w1 = w0 + I;
    const T* w2 = w1 + I;
    const T* w3 = w2 + I;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < I8; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      a0 = _mm256_fmadd_ps(load8(w0 + i), xv, a0);
      a1 = _mm256_fmadd_ps(load8(w1 + i), xv, a1);
      a2 = _mm256_fmadd_ps(load8(w2 + i), xv, a2);
      a3 = _mm256_fmadd_ps(load8(w3 + i), xv, a3);
    }
    float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
    for (int64_t i = I8; i < I; ++i) {
      s[0] += to_f(w0[i]) * x[i];
      s[1] += to_f(w1[i]) * x[i];
      s[2] += to_f(w2[i]) * x[i];
      s[3] += to_f(w3[i]) * x[i];
    }
    for (int k = 0; k < 4; ++k) y[o + k] = s[k] + (bias ? bias[o + k] : 0.f);
  }
#endif
  for (; o < r1; ++o) {
    const T* w = W + o * I;
    float s = 0;
    for (int64_t i = 0; i < I; ++i) s += to_f(w[i]) * x[i];
    y[o] = s + (bias ? bias[o] : 0.f);
  }
}

}  // namespace

void gemv(const at::Tensor& W, const float* x, float* y, const float* bias) {
  const int64_t O = W.size(0), I = W.size(1);
  // Grain: enough rows that each task streams >= ~64 KiB, so small matrices stay on one thread.
  const int64_t row_bytes = I * static_cast<int64_t>(W.element_size());
  const int64_t grain = std::max<int64_t>(4, (64 * 1024) / std::max<int64_t>(row_bytes, 1) / 4 * 4);
  if (W.scalar_type() == at::kFloat) {
    const float* w = W.data_ptr<float>();
    at::parallel_for(0, O, grain, [&](int64_t b, int64_t e) { rows(w, x, y, bias, I, b, e); });
  } else {
    const auto* w = reinterpret_cast<const uint16_t*>(W.data_ptr<at::BFloat16>());
    at::parallel_for(0, O, grain, [&](int64_t b, int64_t e) { rows(w, x, y, bias, I, b, e); });
  }
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

}  // namespace mambavl::kernels
