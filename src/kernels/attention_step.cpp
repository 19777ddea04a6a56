#include "kernels/attention_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/simd_math.h"

// Vector arguments of the force-inlined helpers below: the ABI note GCC emits for them is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace mambavl::kernels {

namespace {

using namespace simd;

inline float rb(float x) { return round_bf16(x); }

inline uint16_t bf16_bits(float x) {  // x rounded to the nearest bf16 (its top 16 bits)
  x = rb(x);
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>(u >> 16);
}

using vu16 = uint16_t __attribute__((vector_size(kW * sizeof(uint16_t))));
using vu32 = uint32_t __attribute__((vector_size(kW * sizeof(uint32_t))));

inline __attribute__((always_inline)) vf load_row(const float* p) { return load(p); }
inline __attribute__((always_inline)) vf load_row(const uint16_t* p) {
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  const vu32 w = __builtin_convertvector(h, vu32) << 16;
  vf f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}
inline float scalar(float x) { return x; }
inline float scalar(uint16_t x) {
  const uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// In-place "rotate half" on x[0, rot): pairs (i, i + rot/2), x * cos + rotate_half(x) * sin.
void rotary(float* x, const float* cos, const float* sin, int64_t rot, bool bf16) {
  const int64_t half = rot / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    if (bf16) {
      x[i] = rb(rb(a * cos[i]) - rb(b * sin[i]));
      x[i + half] = rb(rb(b * cos[i + half]) + rb(a * sin[i + half]));
    } else {
      x[i] = a * cos[i] - b * sin[i];
      x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
  }
}

// scores[t] = scale * q . K[t] for t in [0, n); K: [n, hd].
template <class T>
void scores_of(const float* q, const T* K, int64_t n, int64_t hd, float scale, float* scores) {
  for (int64_t t = 0; t < n; ++t) {
    const T* k = K + t * hd;
    int64_t d = 0;
    vf acc = splat(0.f);
    for (; d + kW <= hd; d += kW) acc += load(q + d) * load_row(k + d);
    float s = hsum(acc);
    for (; d < hd; ++d) s += q[d] * scalar(k[d]);
    scores[t] = s * scale;
  }
}

// out[0, hd) = sum_t w[t] * V[t] for t in [0, n); V: [n, hd].
template <class T>
void weighted_sum(const float* w, const T* V, int64_t n, int64_t hd, float* out) {
  std::fill(out, out + hd, 0.f);
  int64_t d = 0;
  for (; d + 2 * kW <= hd; d += 2 * kW) {  // two registers of output per pass over the positions
    vf a0 = splat(0.f), a1 = splat(0.f);
    for (int64_t t = 0; t < n; ++t) {
      const vf wt = splat(w[t]);
      a0 += wt * load_row(V + t * hd + d);
      a1 += wt * load_row(V + t * hd + d + kW);
    }
    store(out + d, a0);
    store(out + d + kW, a1);
  }
  for (; d + kW <= hd; d += kW) {
    vf a0 = splat(0.f);
    for (int64_t t = 0; t < n; ++t) a0 += splat(w[t]) * load_row(V + t * hd + d);
    store(out + d, a0);
  }
  for (; d < hd; ++d) {
    float a = 0.f;
    for (int64_t t = 0; t < n; ++t) a += w[t] * scalar(V[t * hd + d]);
    out[d] = a;
  }
}

template <class T>
void head_step(const AttentionStepParams& p, int64_t h, float* qkv, float* scores, float* ctx) {
  const int64_t hd = p.head_dim, n = p.pos + 1;
  float* q = qkv + h * 3 * hd;  // [hd] each
  float* k = q + hd;
  const float* v = k + hd;
  if (p.rot_dim > 0) {
    rotary(q, p.cos, p.sin, p.rot_dim, p.bf16);
    rotary(k, p.cos, p.sin, p.rot_dim, p.bf16);
  }
  T* K = static_cast<T*>(p.k_cache) + h * p.capacity * hd;  // [capacity, hd]
  T* V = static_cast<T*>(p.v_cache) + h * p.capacity * hd;  // [capacity, hd]
  for (int64_t d = 0; d < hd; ++d) {
    if constexpr (sizeof(T) == 2) {
      K[p.pos * hd + d] = bf16_bits(k[d]);
      V[p.pos * hd + d] = bf16_bits(v[d]);
    } else {
      K[p.pos * hd + d] = k[d];
      V[p.pos * hd + d] = v[d];
    }
  }
  // Softmax in fp32 over the n positions.
  scores_of(q, K, n, hd, p.scale, scores);
  float mx = scores[0];
  for (int64_t t = 1; t < n; ++t) mx = std::max(mx, scores[t]);
  int64_t t = 0;
  vf sumv = splat(0.f);
  for (; t + kW <= n; t += kW) {
    const vf e = exp(load(scores + t) - splat(mx));
    store(scores + t, e);
    sumv += e;
  }
  float sum = hsum(sumv);
  for (; t < n; ++t) {
    scores[t] = std::exp(scores[t] - mx);
    sum += scores[t];
  }
  // bf16 (SDPA's CPU kernel): the probabilities meet V in bf16, the output is normalised in fp32.
  if (p.bf16)
    for (int64_t i = 0; i < n; ++i) scores[i] = rb(scores[i]);
  float* out = ctx + h * hd;
  weighted_sum(scores, V, n, hd, out);
  const float inv = 1.f / sum;
  for (int64_t d = 0; d < hd; ++d) out[d] = p.bf16 ? rb(out[d] * inv) : out[d] * inv;
}

}  // namespace


void attention_step_head(const AttentionStepParams& p, int64_t h, float* qkv, float* scores,
                         float* ctx) {
  if (p.bf16)
    head_step<uint16_t>(p, h, qkv, scores, ctx);
  else
    head_step<float>(p, h, qkv, scores, ctx);
}

}  // namespace mambavl::kernels
