// Causal depthwise conv1d: entry points (validation + dispatch) and the reference.
#include "kernels/causal_conv1d.h"

#include <ATen/ATen.h>

#include "common/shape.h"

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
  at::Tensor out = at::conv1d(x, w, b, /*stride=*/1, /*padding=*/W - 1, /*dilation=*/1,
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
  return detail::causal_conv1d_reference(x, weight, bias, silu);
}

at::Tensor causal_conv1d_update(const at::Tensor& x, at::Tensor& conv_state,
                                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                bool silu, Backend backend) {
  MVL_CHECK(x.dim() == 2, "causal_conv1d_update: x must be [B, D], got ", shape_str(x.sizes()));
  MVL_CHECK(weight.dim() == 2 && weight.size(0) == x.size(1),
            "causal_conv1d_update: weight must be [D, W], got ", shape_str(weight.sizes()));
  check_shape(conv_state, {x.size(0), x.size(1), weight.size(1)},
              "causal_conv1d_update: conv_state", "B, D, W");
  if (bias) check_shape(*bias, {x.size(1)}, "causal_conv1d_update: bias", "D");
  if (backend == Backend::Auto) backend = default_backend();
  return detail::causal_conv1d_update_reference(x, conv_state, weight, bias, silu);
}

at::Tensor conv_state_from_prefix(const at::Tensor& x, int64_t width) {
  const int64_t L = x.size(2);
  if (L >= width) return x.narrow(2, L - width, width).contiguous();
  return at::constant_pad_nd(x, {width - L, 0}, 0.0).contiguous();
}

}  // namespace mambavl::kernels
