// Causal depthwise 1-D convolution (Mamba's short conv), optionally fused with SiLU.
//   out[b,d,t] = act( bias[d] + sum_{k<W} weight[d,k] * x[b,d,t-(W-1)+k] ),  x[.,.,<0] = 0
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

#include "kernels/backend.h"

namespace mambavl::kernels {

// x: [B, D, L]; weight: [D, W]; bias: [D]. Returns [B, D, L] in x's dtype. Differentiable.
at::Tensor causal_conv1d(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, bool silu,
                         Backend backend = Backend::Auto);

// One decoding step (no autograd): conv_state [B, D, W] holds the last W inputs (oldest first);
// it is shifted left by one and x [B, D] appended, in place. Returns [B, D].
at::Tensor causal_conv1d_update(const at::Tensor& x, at::Tensor& conv_state,
                                const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                bool silu, Backend backend = Backend::Auto);

// The conv state a prefill of x [B, D, L] hands to decoding: the last W inputs, zero-padded on
// the left when L < W. Returns a new contiguous [B, D, W] tensor.
at::Tensor conv_state_from_prefix(const at::Tensor& x, int64_t width);

namespace detail {
void validate_conv(const at::Tensor& x, const at::Tensor& weight,
                   const std::optional<at::Tensor>& bias);
at::Tensor causal_conv1d_reference(const at::Tensor& x, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, bool silu);
at::Tensor causal_conv1d_update_reference(const at::Tensor& x, at::Tensor& conv_state,
                                          const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, bool silu);
}  // namespace detail

}  // namespace mambavl::kernels
