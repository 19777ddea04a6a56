// Fused CPU causal depthwise conv1d + SiLU, forward / backward / decode update.
//
// Work is split over rows r = b * D + d (at::parallel_for). This file validates and dispatches; the
// row loops (forward and backward) are compiled once per instruction-set level
// (kernels/isa/causal_conv1d_impl.inc) and picked at run time (kernels/isa/dispatch.h). Backward
// recomputes z = bias + conv(x) from x, so nothing of size B*D*L is saved besides x itself. The
// decode update (one step, W taps per channel) is plain C++ here.
#include "kernels/causal_conv1d_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/shape.h"
#include "kernels/isa/causal_conv1d_kernels.h"
#include "kernels/isa/dispatch.h"

namespace mambavl::kernels::detail {

namespace {

template <class T>
inline float to_float(T v) {
  return static_cast<float>(v);
}

inline float silu(float z) { return z / (1.0f + std::exp(-z)); }

inline int64_t row_grain(int64_t L, int64_t W) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, L * W));
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

void check_fused_dtype(at::ScalarType st) {
  MVL_CHECK(st == at::kFloat || st == at::kBFloat16,
            "causal_conv1d (fused CPU kernel): unsupported dtype ", c10::toString(st));
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
  check_fused_dtype(x.scalar_type());
  const ConvForwardArgs args{x.const_data_ptr(),
                             out.mutable_data_ptr(),
                             wp,
                             bp,
                             D,
                             L,
                             W,
                             x.scalar_type() == at::kBFloat16,
                             silu};
  const auto rows = MVL_ISA_PICK(conv1d_forward_rows);
  at::parallel_for(0, Bn * D, row_grain(L, W),
                   [&](int64_t begin, int64_t end) { rows(args, begin, end); });
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
    check_fused_dtype(x.scalar_type());
    const ConvBackwardArgs args{dout.const_data_ptr(),
                                x.const_data_ptr(),
                                need_dx ? dx.mutable_data_ptr() : nullptr,
                                wp,
                                bp,
                                dwp,
                                dbp,
                                D,
                                L,
                                W,
                                x.scalar_type() == at::kBFloat16,
                                silu,
                                need_dx,
                                need_dwb};
    const auto rows = MVL_ISA_PICK(conv1d_backward_rows);
    at::parallel_for(0, Bn * D, row_grain(L, W + 2),
                     [&](int64_t begin, int64_t end) { rows(args, begin, end); });
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
