// Fused CPU causal depthwise conv1d (+ optional SiLU): internal interface used by the entry points
// in causal_conv1d.cpp and by the tests. The public API is kernels/causal_conv1d.h.
//
// Supported: CPU tensors; x (and conv_state) float32 or bfloat16; weight and bias float32 or x's
// dtype. Accumulation is always fp32; outputs have x's dtype, gradients their input's dtype.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <tuple>

namespace mambavl::kernels::detail {

// True when the fused kernel handles these tensors; otherwise false and *why (if given) says
// which argument is unsupported and why. Shapes must already be valid.
bool conv_fused_supported(const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, std::string* why);
bool conv_update_fused_supported(const at::Tensor& x, const at::Tensor& conv_state,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 std::string* why);

// Differentiable (torch::autograd::Function): x [B, D, L], weight [D, W], bias [D] -> [B, D, L].
// Saves only x, weight and bias; backward recomputes the pre-activation. Not twice differentiable.
at::Tensor causal_conv1d_fused(const at::Tensor& x, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, bool silu);

// The raw kernels behind causal_conv1d_fused (no autograd).
at::Tensor causal_conv1d_cpu_forward(const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias,  // [D] or undefined
                                     bool silu);
// Returns (dx [B, D, L], dweight [D, W], dbias [D]); dx / dweight+dbias are undefined when not
// requested (and dbias when bias is undefined).
std::tuple<at::Tensor, at::Tensor, at::Tensor> causal_conv1d_cpu_backward(
    const at::Tensor& dout, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    bool silu, bool need_dx, bool need_dweight_dbias);

// Decode step: shifts conv_state [B, D, W] (any strides) left in place, appends x [B, D],
// returns act(bias + sum_k state[k] * weight[k]) as [B, D] in x's dtype.
at::Tensor causal_conv1d_update_fused(const at::Tensor& x, at::Tensor& conv_state,
                                      const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias, bool silu);

}  // namespace mambavl::kernels::detail
