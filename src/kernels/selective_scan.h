// Selective scan (Mamba-1 S6), the hot loop of every Mamba layer.
//
// Dimension letters (fixed across the project): B batch, D channels (d_inner), L sequence length,
// N state size (d_state), G groups of B/C (D % G == 0), W conv width.
//
//   delta'[b,d,t] = softplus?(delta[b,d,t] + delta_bias[d])
//   h_t[b,d,n]    = exp(delta'[b,d,t] * A[d,n]) * h_{t-1}[b,d,n] + delta'[b,d,t] * B[b,g(d),n,t] *
//   u[b,d,t] y[b,d,t]      = sum_n h_t[b,d,n] * C[b,g(d),n,t] + D[d] * u[b,d,t] y            *=
//   silu(z[b,d,t])                                   (when z is given)
// with h_{-1} = 0, g(d) = d / (D/G). The state is always fp32 whatever the input dtype; y has
// u's dtype. Inputs: fp32 or bf16 (u, delta, B, C, z); A, D, delta_bias fp32 (or u's dtype).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

#include "kernels/backend.h"

namespace mambavl::kernels {

struct SelectiveScanArgs {
  at::Tensor u;                          // [B, D, L]
  at::Tensor delta;                      // [B, D, L]
  at::Tensor A;                          // [D, N]
  at::Tensor B;                          // [B, N, L] or [B, G, N, L]
  at::Tensor C;                          // [B, N, L] or [B, G, N, L]
  std::optional<at::Tensor> D;           // [D]
  std::optional<at::Tensor> z;           // [B, D, L]
  std::optional<at::Tensor> delta_bias;  // [D]
  bool delta_softplus = false;
  bool return_last_state = false;
};

struct SelectiveScanResult {
  at::Tensor y;           // [B, D, L], dtype of u
  at::Tensor last_state;  // [B, D, N] fp32, defined iff return_last_state
};

// The one entry point: validates shapes/dtypes/devices (mambavl::Error naming the argument), then
// dispatches. Differentiable w.r.t. every tensor argument under both backends.
SelectiveScanResult selective_scan(const SelectiveScanArgs& args, Backend backend = Backend::Auto);

// One decoding step (no autograd). state [B, D, N] fp32 is updated in place.
//   x, dt: [B, D]; A: [D, N]; B, C: [B, N] or [B, G, N]; D: [D]; z: [B, D]; dt_bias: [D]
// Returns y [B, D] in x's dtype. Equals one time step of selective_scan.
at::Tensor selective_state_update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                  const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                  const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z,
                                  const std::optional<at::Tensor>& dt_bias, bool dt_softplus,
                                  Backend backend = Backend::Auto);

namespace detail {
// Validation shared by all backends (throws mambavl::Error).
void validate(const SelectiveScanArgs& a);
SelectiveScanResult selective_scan_reference(const SelectiveScanArgs& a);
at::Tensor selective_state_update_reference(
    at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
    const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
    const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& dt_bias, bool dt_softplus);
}  // namespace detail

}  // namespace mambavl::kernels
