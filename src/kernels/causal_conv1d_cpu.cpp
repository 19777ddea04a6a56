// Fused CPU causal depthwise conv1d + SiLU, forward / backward / decode update.
//
// Work is split over rows r = b * D + d (at::parallel_for); within a row everything runs along L
// with `#pragma omp simd` loops over fp32 row buffers that stay in L1/L2 (L = 4096 -> 16 KiB per
// buffer). Widths 1..4 are compile-time specialised so the tap loop unrolls; other widths use a
// runtime loop. Backward recomputes z = bias + conv(x) from x, so nothing of size B*D*L is saved
// besides x itself.
#include "kernels/causal_conv1d_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/autograd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/shape.h"

namespace mambavl::kernels::detail {

namespace {

// ---- element conversion (vectorisable: plain integer ops, no branches on the fast path) ----

inline float bf16_bits_to_float(uint16_t h) { return std::bit_cast<float>(uint32_t{h} << 16); }

inline uint16_t float_to_bf16_bits(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t qnan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? qnan : rounded);
}

// dst[i] = float(src[i]), i < n
inline void load_row(const float* src, float* dst, int64_t n) {
  if (n > 0) std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
}
inline void load_row(const c10::BFloat16* src, float* dst, int64_t n) {
  const auto* s = reinterpret_cast<const uint16_t*>(src);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(s[i]);
}
// dst[i] = T(src[i]), i < n
inline void store_row(const float* src, float* dst, int64_t n) {
  if (n > 0 && src != dst) std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(n));
}
inline void store_row(const float* src, c10::BFloat16* dst, int64_t n) {
  auto* o = reinterpret_cast<uint16_t*>(dst);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = float_to_bf16_bits(src[i]);
}

// exp(x) within ~2 ulp for x in [-87, 88], clamped outside (so NaN gives a finite value: callers
// keep NaN through their own use of x). Cephes' expf polynomial in plain arithmetic so that
// `#pragma omp simd` loops vectorise it: GCC maps std::exp to libmvec only under -ffast-math, and
// it will not if-convert float compares under the default -ftrapping-math, hence the clamp on the
// bit pattern (integer compares). exp(-87) ~ 1.6e-38 and exp(88) ~ 1.7e38 already saturate the
// sigmoid at fp32 precision.
[[gnu::always_inline]] inline float exp_approx(float x) {
  const int32_t u = std::bit_cast<int32_t>(x);
  const int32_t mag = u & 0x7fffffff;                   // |x| bits (inf / NaN: largest)
  const int32_t lim = u < 0 ? 0x42ae0000 : 0x42b00000;  // 87.0f : 88.0f
  const int32_t cm = mag < lim ? mag : lim;
  const float xc = std::bit_cast<float>(cm | (u & INT32_MIN));  // clamp(x, -87, 88)
  // round(x / ln 2) by the 1.5 * 2^23 trick (std::floor is a libm call unless -ffast-math).
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693359375f;  // x - n ln2, Cody-Waite
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n, n in [-126, 127], straight into the exponent field.
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return p * scale;
}

[[gnu::always_inline]] inline float silu(float z) { return z / (1.0f + exp_approx(-z)); }
[[gnu::always_inline]] inline float sigmoid(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

// sum_k w[k] * s[k * stride] for k < kW, as one expression (no loop left inside the caller's
// `omp simd` loop, which GCC would otherwise keep and fail to vectorise around).
template <int kW, int kStride = 1>
[[gnu::always_inline]] inline float taps(const float* w, const float* s) {
  return [&]<int... K>(std::integer_sequence<int, K...>) [[gnu::always_inline]] {
    return ((w[K] * s[K * kStride]) + ...);
  }
  (std::make_integer_sequence<int, kW>{});
}

template <class T>
inline float to_float(T v) {
  return static_cast<float>(v);
}

inline int64_t row_grain(int64_t L, int64_t W) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, L * W));
}

// ---- forward ----

// dst[i] = bias + sum_k w[k] * src[i + k], i < n; then SiLU if kSilu.
// kW > 0: compile-time width; kW == 0: runtime width W.
template <int kW, bool kSilu>
inline void conv_row(const float* __restrict src, float* __restrict dst, const float* w, float bias,
                     int64_t n, int64_t Wrt) {
  const int64_t W = kW > 0 ? kW : Wrt;
  float wl[kW > 0 ? kW : 1];
  if constexpr (kW > 0) {
    for (int k = 0; k < kW; ++k) wl[k] = w[k];
  }
  if constexpr (kW > 0) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      float acc = bias;
      acc += taps<kW>(wl, src + i);
      if constexpr (kSilu) acc = silu(acc);
      dst[i] = acc;
    }
  } else {  // runtime width: one pass per tap (no inner loop in the vector loop)
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dst[i] = bias;
    for (int64_t k = 0; k < W; ++k) {
      const float wk = w[k];
      const float* sk = src + k;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] += wk * sk[i];
    }
    if constexpr (kSilu) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = silu(dst[i]);
    }
  }
}

// Rows [begin, end) of out = act(bias + conv(x)); x, out: [B*D, L]; w: [D, W] fp32; bias: [D] fp32
// or null.
template <int kW, bool kSilu, class T>
void forward_rows(const T* x, T* out, const float* w, const float* bias, int64_t D, int64_t L,
                  int64_t W, int64_t begin, int64_t end) {
  const int64_t P = W - 1;                                  // left padding
  std::vector<float> xp(static_cast<size_t>(L + P), 0.0f);  // [P zeros | x row]
  std::vector<float> y(std::is_same_v<T, float> ? 0 : static_cast<size_t>(L));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t d = r % D;
    const float* wd = w + d * W;  // [W]
    const float b = bias ? bias[d] : 0.0f;
    const T* xr = x + r * L;  // [L]
    T* outr = out + r * L;    // [L]
    if constexpr (std::is_same_v<T, float>) {
      // Head (t < P) from the padded copy of the first P inputs, body straight from x.
      const int64_t head = std::min(P, L);
      std::fill(xp.begin(), xp.begin() + P, 0.0f);
      load_row(xr, xp.data() + P, head);
      conv_row<kW, kSilu>(xp.data(), outr, wd, b, head, W);
      if (L > P) conv_row<kW, kSilu>(xr, outr + P, wd, b, L - P, W);
    } else {
      load_row(xr, xp.data() + P, L);
      conv_row<kW, kSilu>(xp.data(), y.data(), wd, b, L, W);
      store_row(y.data(), outr, L);
    }
  }
}

// ---- backward ----

// One row: given x row (padded, xp[P + t] = x[t]) and upstream grad g (in gz, [L + P], the last
// P entries zero), turns gz into dz = dL/dz in place, accumulates dw[k] and db, writes dx.
template <int kW, bool kSilu>
inline void backward_row(const float* __restrict xp, float* __restrict gz, float* __restrict dx,
                         const float* w, float bias, int64_t L, int64_t Wrt, float* dw, float* db,
                         bool need_dx, bool need_dw) {
  const int64_t W = kW > 0 ? kW : Wrt;
  const int64_t P = W - 1;
  float wl[kW > 0 ? kW : 1];
  if constexpr (kW > 0) {
    for (int k = 0; k < kW; ++k) wl[k] = w[k];
  }
  float dbias = 0.0f;
  if constexpr (kSilu) {
    // silu'(z) = s * (1 + z * (1 - s)), s = sigmoid(z); z recomputed from x.
#pragma omp simd reduction(+ : dbias)
    for (int64_t t = 0; t < L; ++t) {
      float z = bias;
      if constexpr (kW > 0) {
        z += taps<kW>(wl, xp + t);
      } else {
        for (int64_t k = 0; k < W; ++k) z += w[k] * xp[t + k];
      }
      const float s = sigmoid(z);
      const float dz = gz[t] * (s * (1.0f + z * (1.0f - s)));
      gz[t] = dz;
      dbias += dz;
    }
  } else if (need_dw) {
#pragma omp simd reduction(+ : dbias)
    for (int64_t t = 0; t < L; ++t) dbias += gz[t];
  }
  if (need_dw) {
    *db += dbias;
    for (int64_t k = 0; k < W; ++k) {
      float acc = 0.0f;
      const float* xk = xp + k;
#pragma omp simd reduction(+ : acc)
      for (int64_t t = 0; t < L; ++t) acc += gz[t] * xk[t];
      dw[k] += acc;
    }
  }
  if (need_dx) {
    // dx[s] = sum_k w[k] * dz[s + P - k]   (dz[t >= L] = 0)
#pragma omp simd
    for (int64_t s = 0; s < L; ++s) {
      float acc = 0.0f;
      if constexpr (kW > 0) {
        acc += taps<kW, -1>(wl, gz + s + (kW - 1));
      } else {
        for (int64_t k = 0; k < W; ++k) acc += w[k] * gz[s + P - k];
      }
      dx[s] = acc;
    }
  }
}

template <int kW, bool kSilu, class T>
void backward_rows(const T* dout, const T* x, T* dx, const float* w, const float* bias,
                   float* dw_part /*[B*D, W]*/, float* db_part /*[B*D]*/, int64_t D, int64_t L,
                   int64_t W, bool need_dx, bool need_dw, int64_t begin, int64_t end) {
  const int64_t P = W - 1;
  std::vector<float> xp(static_cast<size_t>(L + P), 0.0f);  // [P zeros | x row]
  std::vector<float> gz(static_cast<size_t>(L + P), 0.0f);  // [grad row | P zeros]
  std::vector<float> dxb(std::is_same_v<T, float> ? 0 : static_cast<size_t>(L));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t d = r % D;
    load_row(x + r * L, xp.data() + P, L);
    load_row(dout + r * L, gz.data(), L);
    float* dxr = nullptr;
    if (need_dx) {
      if constexpr (std::is_same_v<T, float>) {
        dxr = dx + r * L;
      } else {
        dxr = dxb.data();
      }
    }
    float* dwr = need_dw ? dw_part + r * W : nullptr;
    float* dbr = need_dw ? db_part + r : nullptr;
    if (need_dw) {
      std::fill(dwr, dwr + W, 0.0f);
      *dbr = 0.0f;
    }
    backward_row<kW, kSilu>(xp.data(), gz.data(), dxr, w + d * W, bias ? bias[d] : 0.0f, L, W, dwr,
                            dbr, need_dx, need_dw);
    if constexpr (!std::is_same_v<T, float>) {
      if (need_dx) store_row(dxb.data(), dx + r * L, L);
    }
  }
}

// Calls f.template operator()<kW, kSilu>() with kW in {1, 2, 3, 4} or 0 (runtime width).
template <class F>
void dispatch_width_silu(int64_t W, bool silu, F&& f) {
  auto with_w = [&]<bool kS>() {
    switch (W) {
      case 1:
        f.template operator()<1, kS>();
        break;
      case 2:
        f.template operator()<2, kS>();
        break;
      case 3:
        f.template operator()<3, kS>();
        break;
      case 4:
        f.template operator()<4, kS>();
        break;
      default:
        f.template operator()<0, kS>();
        break;
    }
  };
  if (silu) {
    with_w.template operator()<true>();
  } else {
    with_w.template operator()<false>();
  }
}

// Calls f(T{}) with T = float or c10::BFloat16 per x's dtype.
template <class F>
void dispatch_dtype(at::ScalarType st, F&& f) {
  if (st == at::kFloat) {
    f(float{});
  } else if (st == at::kBFloat16) {
    f(c10::BFloat16{});
  } else {
    MVL_FAIL("causal_conv1d (fused CPU kernel): unsupported dtype ", c10::toString(st));
  }
}

bool float_or(const at::Tensor& t, at::ScalarType x_dtype) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == x_dtype;
}

std::string dtype_str(const at::Tensor& t) { return c10::toString(t.scalar_type()); }

at::Tensor fp32_contig(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

// ---- autograd wrapper ----

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct CausalConv1dFunction : public torch::autograd::Function<CausalConv1dFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, bool silu) {
    // An absent bias is no autograd input at all (undefined tensors cannot be inputs), so the
    // input edges are x = 0, weight = 1 and, when present, bias = 2.
    ctx->saved_data["silu"] = silu;
    ctx->saved_data["has_bias"] = bias.has_value();
    if (bias) {
      ctx->save_for_backward({x, weight, *bias});
    } else {
      ctx->save_for_backward({x, weight});
    }
    return causal_conv1d_cpu_forward(x, weight, bias ? *bias : at::Tensor(), silu);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const bool silu = ctx->saved_data["silu"].toBool();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const at::Tensor& x = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor bias = has_bias ? saved[2] : at::Tensor();
    const bool need_dx = ctx->needs_input_grad(0);
    const bool need_dwb = ctx->needs_input_grad(1) || (has_bias && ctx->needs_input_grad(2));
    auto [dx, dw, db] =
        causal_conv1d_cpu_backward(grads[0], x, weight, bias, silu, need_dx, need_dwb);
    return {dx, dw, db, at::Tensor()};
  }
};

}  // namespace

bool conv_fused_supported(const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, std::string* why) {
  auto fail = [&](std::string m) {
    if (why) *why = std::move(m);
    return false;
  };
  if (!x.device().is_cpu()) return fail("x on device " + x.device().str() + " (CPU only)");
  const auto xt = x.scalar_type();
  if (xt != at::kFloat && xt != at::kBFloat16)
    return fail("x of dtype " + dtype_str(x) + " (expected float32 or bfloat16)");
  if (!float_or(weight, xt))
    return fail("weight of dtype " + dtype_str(weight) + " (expected float32 or x's dtype)");
  if (bias && !float_or(*bias, xt))
    return fail("bias of dtype " + dtype_str(*bias) + " (expected float32 or x's dtype)");
  return true;
}

bool conv_update_fused_supported(const at::Tensor& x, const at::Tensor& conv_state,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 std::string* why) {
  if (!conv_fused_supported(x, weight, bias, why)) return false;
  const auto st = conv_state.scalar_type();
  if (!conv_state.device().is_cpu() || (st != at::kFloat && st != at::kBFloat16)) {
    if (why)
      *why = "conv_state of dtype " + dtype_str(conv_state) + " on " + conv_state.device().str() +
             " (expected float32 or bfloat16 on CPU)";
    return false;
  }
  return true;
}

at::Tensor causal_conv1d_cpu_forward(const at::Tensor& x_in, const at::Tensor& weight,
                                     const at::Tensor& bias, bool silu) {
  const at::Tensor x = x_in.contiguous();  // [B, D, L]
  const int64_t Bn = x.size(0), D = x.size(1), L = x.size(2), W = weight.size(1);
  const at::Tensor w = fp32_contig(weight);                                // [D, W]
  const at::Tensor b = bias.defined() ? fp32_contig(bias) : at::Tensor();  // [D]
  at::Tensor out = at::empty({Bn, D, L}, x.options());                     // [B, D, L]
  if (out.numel() == 0) return out;
  const float* wp = w.const_data_ptr<float>();
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  dispatch_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = x.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    dispatch_width_silu(W, silu, [&]<int kW, bool kS>() {
      at::parallel_for(0, Bn * D, row_grain(L, W), [&](int64_t begin, int64_t end) {
        forward_rows<kW, kS, T>(xp, op, wp, bp, D, L, W, begin, end);
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_conv1d_cpu_backward(
    const at::Tensor& dout_in, const at::Tensor& x_in, const at::Tensor& weight,
    const at::Tensor& bias, bool silu, bool need_dx, bool need_dwb) {
  const at::Tensor x = x_in.contiguous();                            // [B, D, L]
  const at::Tensor dout = dout_in.to(x.scalar_type()).contiguous();  // [B, D, L]
  const int64_t Bn = x.size(0), D = x.size(1), L = x.size(2), W = weight.size(1);
  MVL_CHECK(dout.sizes() == x.sizes(), "causal_conv1d backward: grad has shape ",
            shape_str(dout.sizes()), " but the output is ", shape_str(x.sizes()));
  const at::Tensor w = fp32_contig(weight);                                     // [D, W]
  const at::Tensor b = bias.defined() ? fp32_contig(bias) : at::Tensor();       // [D]
  at::Tensor dx = need_dx ? at::empty({Bn, D, L}, x.options()) : at::Tensor();  // [B, D, L]
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor dw_part = need_dwb ? at::empty({Bn, D, W}, f32) : at::Tensor();  // [B, D, W]
  at::Tensor db_part = need_dwb ? at::empty({Bn, D}, f32) : at::Tensor();     // [B, D]
  if (Bn * D > 0 && (need_dx || need_dwb)) {
    const float* wp = w.const_data_ptr<float>();
    const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
    float* dwp = need_dwb ? dw_part.mutable_data_ptr<float>() : nullptr;
    float* dbp = need_dwb ? db_part.mutable_data_ptr<float>() : nullptr;
    dispatch_dtype(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      const T* xp = x.const_data_ptr<T>();
      const T* gp = dout.const_data_ptr<T>();
      T* dxp = need_dx ? dx.mutable_data_ptr<T>() : nullptr;
      dispatch_width_silu(W, silu, [&]<int kW, bool kS>() {
        at::parallel_for(0, Bn * D, row_grain(L, W + 2), [&](int64_t begin, int64_t end) {
          backward_rows<kW, kS, T>(gp, xp, dxp, wp, bp, dwp, dbp, D, L, W, need_dx, need_dwb, begin,
                                   end);
        });
      });
    });
  }
  at::Tensor dw, db;
  if (need_dwb) {
    dw = dw_part.sum(0).to(weight.scalar_type());                    // [D, W]
    if (bias.defined()) db = db_part.sum(0).to(bias.scalar_type());  // [D]
  }
  return {dx, dw, db};
}

at::Tensor causal_conv1d_fused(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, bool silu) {
  std::optional<at::Tensor> b;
  if (bias && bias->defined()) b = *bias;
  return CausalConv1dFunction::apply(x, weight, b, silu);
}

at::Tensor causal_conv1d_update_fused(const at::Tensor& x_in, at::Tensor& conv_state,
                                      const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias, bool silu_act) {
  const at::Tensor x = x_in.contiguous();  // [B, D]
  const int64_t Bn = x.size(0), D = x.size(1), W = weight.size(1);
  const at::Tensor w = fp32_contig(weight);                       // [D, W]
  const at::Tensor b = bias ? fp32_contig(*bias) : at::Tensor();  // [D]
  at::Tensor out = at::empty({Bn, D}, x.options());               // [B, D]
  if (Bn * D == 0) return out;
  // conv_state [B, D, W] may have any strides: it is updated where it lives.
  const int64_t sb = conv_state.stride(0), sd = conv_state.stride(1), sw = conv_state.stride(2);
  const float* wp = w.const_data_ptr<float>();
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  dispatch_dtype(x.scalar_type(), [&](auto xtag) {
    using TX = decltype(xtag);
    dispatch_dtype(conv_state.scalar_type(), [&](auto stag) {
      using TS = decltype(stag);
      const TX* xp = x.const_data_ptr<TX>();
      TX* op = out.mutable_data_ptr<TX>();
      TS* sp = conv_state.mutable_data_ptr<TS>();
      at::parallel_for(0, Bn * D, at::internal::GRAIN_SIZE / 8, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t bi = r / D, d = r % D;
          TS* s = sp + bi * sb + d * sd;  // [W] with stride sw
          const float* wd = wp + d * W;   // [W]
          float acc = bp ? bp[d] : 0.0f;
          for (int64_t k = 0; k + 1 < W; ++k) {
            const TS v = s[(k + 1) * sw];
            s[k * sw] = v;
            acc += wd[k] * to_float(v);
          }
          const TS v = static_cast<TS>(to_float(xp[r]));
          s[(W - 1) * sw] = v;
          acc += wd[W - 1] * to_float(v);
          if (silu_act) acc = silu(acc);
          op[r] = static_cast<TX>(acc);
        }
      });
    });
  });
  conv_state.unsafeGetTensorImpl()->bump_version();
  return out;
}

}  // namespace mambavl::kernels::detail
