// Private header of the per-level kernels (kernels/isa/*_impl.inc): a SIMD float vector (GCC/Clang
// vector extension; one register of the level: AVX-512, AVX2, or SSE2 at the scalar level) and the
// transcendental functions the fused CPU kernels need (exp, log1p, softplus, sigmoid), written
// branch-free so they stay in vector registers. Accuracy: a few ulp (Cephes polynomials), enough
// for 1e-5 relative agreement with LibTorch's own functions. Everything lives in the including
// level's namespace (MVL_ISA_NS) and uses only C headers, so no copy compiled for one level can
// stand in for another level's at link time.
#pragma once
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#ifndef MVL_ISA_NS
#error "simd_math.h belongs to the per-level kernels: define MVL_ISA_NS (kernels/isa/*_<level>.cpp)"
#endif

// Every function here is force-inlined, so the ABI note GCC emits for vector arguments is moot.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define MVL_SIMD inline __attribute__((always_inline))

namespace mambavl::kernels::MVL_ISA_NS::simd {

// Lanes per vector: one native register (GCC lowers wider generic vectors' compares and selects to
// scalar code).
#if defined(__AVX512F__)
constexpr int kW = 16;
#elif defined(__AVX2__)
constexpr int kW = 8;
#else
constexpr int kW = 4;  // SSE2, the x86-64 baseline
#endif
using vf = float __attribute__((vector_size(kW * sizeof(float))));
using vi = int32_t __attribute__((vector_size(kW * sizeof(int32_t))));

MVL_SIMD vf splat(float x) { return vf{} + x; }
MVL_SIMD vf load(const float* p) {
  vf v;
  memcpy(&v, p, sizeof v);
  return v;
}
MVL_SIMD void store(float* p, vf v) { memcpy(p, &v, sizeof v); }
// a < b ? a : b and a > b ? a : b (b when either is NaN): exactly vminps / vmaxps, which GCC does
// not pick for the selects by itself (it emits a compare and a blend).
#if defined(__AVX512F__)
MVL_SIMD vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
MVL_SIMD vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
#elif defined(__AVX2__)
MVL_SIMD vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
MVL_SIMD vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
#else
MVL_SIMD vf vmin(vf a, vf b) { return a < b ? a : b; }
MVL_SIMD vf vmax(vf a, vf b) { return a > b ? a : b; }
#endif

// a * b + c in one rounding where the level has FMA (ISO C++ mode does not contract a * b + c).
#if defined(__AVX512F__)
MVL_SIMD vf fmadd(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(__AVX2__)
MVL_SIMD vf fmadd(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
#else
MVL_SIMD vf fmadd(vf a, vf b, vf c) { return a * b + c; }
#endif

MVL_SIMD float hsum(vf v) {
  // Tree reduction: kW -> kW/2 -> ... -> 1.
#if defined(__AVX512F__)
  v = v + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  v = v + __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
  v = v + __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
  v = v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#elif defined(__AVX2__)
  v = v + __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v = v + __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  v = v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#else
  v = v + __builtin_shufflevector(v, v, 2, 3, 0, 1);
  v = v + __builtin_shufflevector(v, v, 1, 0, 3, 2);
#endif
  return v[0];
}

// exp(x): Cephes expf. Below -87.3 returns 0; above 88.7 saturates at ~3.4e38 (no inf, so that
// 1 / (1 + exp(-x)) stays finite for very negative x).
// exp(x) / 2^k for x in [-87.3, 88.7] and k = round(x / ln 2): Cody-Waite reduction, then the
// Cephes polynomial of exp(r), |r| <= ln(2) / 2.
MVL_SIMD vf exp_reduced(vf x, vf k) {
  vf r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  vf p = splat(1.9875691500E-4f);
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  return p * (r * r) + r + 1.0f;
}
#if defined(__AVX512F__)
// AVX-512: the rounding of k (vrndscaleps) and the scaling by 2^k (vscalefps) take one
// instruction each, and the underflow select is a mask: fewer instructions than the generic
// version below, the same values (the same k and polynomial; p * 2^k is exact).
MVL_SIMD vf exp(vf x) {
  const __mmask16 under = _mm512_cmp_ps_mask(x, splat(-87.3365f), _CMP_LT_OQ);
  x = vmin(vmax(x, splat(-87.3365f)), splat(88.7f));
  const vf k = _mm512_roundscale_ps(x * 1.44269504088896341f,
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under),
                             _mm512_scalef_ps(exp_reduced(x, k), k));
}
#else
MVL_SIMD vf exp(vf x) {
  const vf lo = splat(-87.3365f);
  const vi under = x < lo;
  x = vmin(vmax(x, lo), splat(88.7f));
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to the nearest integer
  const vf k = (x * 1.44269504088896341f + magic) - magic;
  const vi ki = __builtin_convertvector(k, vi);
  const vf scale = __builtin_bit_cast(vf, (ki + 127) << 23);
  const vf res = exp_reduced(x, k) * scale;
  return under ? vf{} : res;
}
#endif

// 2^t (Cephes exp2f: t = k + f, k = round(t), |f| <= 1/2, 2^f = 1 + f P(f) with P of degree 5,
// relative error ~2e-7): the scan's decay exp(dt A) as 2^(dt * A log2(e)) with A log2(e) computed
// once per block, which takes no Cody-Waite reduction and fewer instructions than exp. Below -126
// returns 0 (no subnormal result, as exp below -87.3); t is clamped at 127.49 (finite, ~2.4e38).
MVL_SIMD vf exp2_poly(vf f) {
  vf p = splat(1.535336188319500E-4f);
  p = p * f + 1.339887440266574E-3f;
  p = p * f + 9.618437357674640E-3f;
  p = p * f + 5.550332471162809E-2f;
  p = p * f + 2.402264791363012E-1f;
  p = p * f + 6.931472028550421E-1f;
  return p * f + 1.0f;
}
#if defined(__AVX512F__)
MVL_SIMD vf exp2(vf t) {
  const __mmask16 under = _mm512_cmp_ps_mask(t, splat(-126.0f), _CMP_LT_OQ);
  t = vmin(t, splat(127.49f));
  const vf k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(~under), exp2_poly(t - k), k);
}
#else
MVL_SIMD vf exp2(vf t) {
  const vi under = t < -126.0f;
  t = vmin(vmax(t, splat(-126.0f)), splat(127.49f));
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to the nearest integer
  const vf k = (t + magic) - magic;
  const vi ki = __builtin_convertvector(k, vi);
  const vf res = exp2_poly(t - k) * __builtin_bit_cast(vf, (ki + 127) << 23);
  return under ? vf{} : res;
}
#endif

// log(x) for x > 0 normal (Cephes logf).
MVL_SIMD vf log(vf x) {
  const vi bits = __builtin_bit_cast(vi, x);
  vf e = __builtin_convertvector(((bits >> 23) & 0xff) - 127, vf);
  vf m = __builtin_bit_cast(vf, (bits & 0x007fffff) | 0x3f800000);  // [1, 2)
  const vi big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1.0f : e;
  const vf f = m - 1.0f;
  const vf z = f * f;
  vf y = splat(7.0376836292E-2f);
  y = y * f - 1.1514610310E-1f;
  y = y * f + 1.1676998740E-1f;
  y = y * f - 1.2420140846E-1f;
  y = y * f + 1.4249322787E-1f;
  y = y * f - 1.6668057665E-1f;
  y = y * f + 2.0000714765E-1f;
  y = y * f - 2.4999993993E-1f;
  y = y * f + 3.3333331174E-1f;
  y = y * f * z;
  y = y + e * -2.12194440e-4f;
  y = y - z * 0.5f;
  return f + y + e * 0.693359375f;
}

// log1p(y) for y >= 0 (Goldberg's trick keeps full relative accuracy for tiny y).
MVL_SIMD vf log1p(vf y) {
  const vf w = y + 1.0f;
  const vf d = w - 1.0f;
  const vi exact = d == 0.0f;
  const vf r = log(w) * (y / (exact ? splat(1.0f) : d));
  return exact ? y : r;
}

// softplus with threshold 20, as at::softplus(x, 1, 20): x > 20 ? x : log1p(exp(x)).
MVL_SIMD vf softplus(vf x) {
  const vf ax = vmax(x, -x);
  const vf sp = vmax(x, vf{}) + log1p(exp(-ax));
  return x > 20.0f ? x : sp;
}

MVL_SIMD vf sigmoid(vf x) { return 1.0f / (1.0f + exp(-x)); }

}  // namespace mambavl::kernels::MVL_ISA_NS::simd

#undef MVL_SIMD
#pragma GCC diagnostic pop
