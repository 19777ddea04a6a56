// Causal depthwise conv1d: entry points (validation + dispatch) and the reference.
#include "kernels/causal_conv1d.h"

#include <ATen/ATen.h>

#include <string>

#include "common/shape.h"
#include "kernels/causal_conv1d_cpu.h"

namespace mambavl::kernels {

namespace detail {

void validate_conv(const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias) {
  MVL_CHECK(x.defined() && x.dim() == 3, "causal_conv1d: x must be [B, D, L], got ",
            x.defined() ? shape_str(x.sizes()) : std::string("undefined"));
  MVL_CHECK(weight.defined() && weight.dim() == 2 && weight.size(0) == x.size(1),
            "causal_conv1d: weight must be [D, W] with D = ", x.size(1), ", got ",
            weight.defined() ? shape_str(weight.sizes()) : std::string("undefined"));
  MVL_CHECK(weight.size(1) >= 1, "causal_conv1d: width W must be >= 1");
  if (bias) check_shape(*bias, {x.size(1)}, "causal_conv1d: bias", "D");
  MVL_CHECK(weight.device() == x.device() && (!bias || bias->device() == x.device()),
            "causal_conv1d: x, weight and bias must be on one device");
}

at::Tensor causal_conv1d_reference(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, bool silu) {
  const int64_t L = x.size(2), W = weight.size(1);
  at::Tensor w = weight.to(x.scalar_type()).unsqueeze(1);  // [D, 1, W]
  at::Tensor b = bias ? bias->to(x.scalar_type()) : at::Tensor();
  // at::conv1d rejects L = 0; a zero column appended on the right keeps the graph (zero grads).
  const at::Tensor xin = L == 0 ? at::constant_pad_nd(x, {0, 1}, 0.0) : x;  // [B, D, max(L, 1)]
  at::Tensor out = at::conv1d(xin, w, b, /*stride=*/1, /*padding=*/W - 1, /*dilation=*/1,
                              /*groups=*/x.size(1));
  out = out.narrow(2, 0, L);  // [B, D, L]
  return silu ? at::silu(out) : out;
}

at::Tensor causal_conv1d_update_reference(const at::Tensor& x, at::Tensor& conv_state,
                                          const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, bool silu) {
  const int64_t W = weight.size(1);
  at::Tensor shifted = conv_state.narrow(2, 1, W - 1).clone();
  conv_state.narrow(2, 0, W - 1).copy_(shifted);
  conv_state.select(2, W - 1).copy_(x);
  at::Tensor out = (conv_state.to(at::kFloat) * weight.to(at::kFloat)).sum(-1);  // [B, D]
  if (bias) out = out + bias->to(at::kFloat);
  if (silu) out = at::silu(out);
  return out.to(x.scalar_type());
}

}  // namespace detail

at::Tensor causal_conv1d(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, bool silu, Backend backend) {
  detail::validate_conv(x, weight, bias);
  if (backend == Backend::Auto) backend = default_backend();
  if (backend == Backend::Reference) return detail::causal_conv1d_reference(x, weight, bias, silu);
  // Auto: fused where supported, else the reference. Fused: fused or an error saying why not.
  std::string why;
  const bool fused_ok = detail::conv_fused_supported(x, weight, bias, &why);
  MVL_CHECK(fused_ok || backend != Backend::Fused,
            "causal_conv1d: the fused kernel does not support ", why);
  return fused_ok ? detail::causal_conv1d_fused(x, weight, bias, silu)
                  : detail::causal_conv1d_reference(x, weight, bias, silu);
}

at::Tensor causal_conv1d_update(const at::Tensor& x, at::Tensor& conv_state,
                                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                bool silu, Backend backend) {
  MVL_CHECK(x.defined() && x.dim() == 2, "causal_conv1d_update: x must be [B, D], got ",
            x.defined() ? shape_str(x.sizes()) : std::string("undefined"));
  MVL_CHECK(weight.defined() && weight.dim() == 2 && weight.size(0) == x.size(1),
            "causal_conv1d_update: weight must be [D, W] with D = ", x.size(1), ", got ",
            weight.defined() ? shape_str(weight.sizes()) : std::string("undefined"));
  MVL_CHECK(weight.size(1) >= 1, "causal_conv1d_update: width W must be >= 1");
  check_shape(conv_state, {x.size(0), x.size(1), weight.size(1)},
              "causal_conv1d_update: conv_state", "B, D, W");
  if (bias) check_shape(*bias, {x.size(1)}, "causal_conv1d_update: bias", "D");
  MVL_CHECK(weight.device() == x.device() && conv_state.device() == x.device() &&
                (!bias || bias->device() == x.device()),
            "causal_conv1d_update: x, conv_state, weight and bias must be on one device");
  if (backend == Backend::Auto) backend = default_backend();
  if (backend == Backend::Reference)
    return detail::causal_conv1d_update_reference(x, conv_state, weight, bias, silu);
  std::string why;
  const bool fused_ok = detail::conv_update_fused_supported(x, conv_state, weight, bias, &why);
  MVL_CHECK(fused_ok || backend != Backend::Fused,
            "causal_conv1d_update: the fused kernel does not support ", why);
  return fused_ok ? detail::causal_conv1d_update_fused(x, conv_state, weight, bias, silu)
                  : detail::causal_conv1d_update_reference(x, conv_state, weight, bias, silu);
}

at::Tensor conv_state_from_prefix(const at::Tensor& x, int64_t width) {
  MVL_CHECK(x.defined() && x.dim() == 3, "conv_state_from_prefix: x must be [B, D, L], got ",
            x.defined() ? shape_str(x.sizes()) : std::string("undefined"));
  MVL_CHECK(width >= 1, "conv_state_from_prefix: width must be >= 1, got ", width);
  // L = 0 (empty prefix) gives an all-zero state.
  const int64_t L = x.size(2);
  if (L >= width) return x.narrow(2, L - width, width).contiguous();
  return at::constant_pad_nd(x, {width - L, 0}, 0.0).contiguous();
}

}  // namespace mambavl::kernels
