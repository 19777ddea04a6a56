// The fused Mamba decode step (batch 1, CPU, no autograd): one token through one mixer with every
// weight read once and no allocation. Reference: MambaMixerImpl's generic step (in_proj ->
// causal_conv1d_update -> x_proj -> dt_proj -> selective_state_update -> out_proj), which the
// tests compare it against.
#pragma once
#include <ATen/core/Tensor.h>

namespace mambavl::kernels {

struct MambaStepParams {
  int64_t d_model = 0, d_inner = 0, d_state = 0, dt_rank = 0, d_conv = 0;
  // Matrices, row-major contiguous, fp32 or bf16:
  at::Tensor in_proj_w;   // [2*Di, d_model]
  at::Tensor x_proj_w;    // [R + 2N, Di]
  at::Tensor dt_proj_w;   // [Di, R]
  at::Tensor out_proj_w;  // [d_model, Di]
  // Small fp32 vectors (null when absent):
  const float* in_proj_b = nullptr;   // [2*Di]
  const float* conv_w = nullptr;      // [Di, W]
  const float* conv_b = nullptr;      // [Di]
  const float* dt_b = nullptr;        // [Di]
  const float* A = nullptr;           // [Di, N] = -exp(A_log)
  const float* D = nullptr;           // [Di]
  const float* out_proj_b = nullptr;  // [d_model]
};

// Floats of scratch space mamba_step needs.
int64_t mamba_step_workspace_size(const MambaStepParams& p);

// x: [d_model] fp32 -> out: [d_model] fp32. conv_state [Di, W] (oldest first) and ssm_state
// [Di, N] are fp32 and updated in place.
void mamba_step(const MambaStepParams& p, const float* x, float* conv_state, float* ssm_state,
                float* workspace, float* out);

}  // namespace mambavl::kernels
