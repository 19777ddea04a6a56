// The fused Mamba decode step (batch 1, CPU, no autograd): one token through one mixer with every
// weight read once and no allocation, shared by a thread team in one parallel region (phases:
// in_proj + conv per channel chunk | x_proj | dt_proj + selective state update + gate per channel
// chunk | out_proj). Reference: MambaMixerImpl's generic step (in_proj -> causal_conv1d_update ->
// x_proj -> dt_proj -> selective_state_update -> out_proj), which the tests compare it against.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "kernels/gemv.h"
#include "kernels/thread_team.h"

namespace mambavl::kernels {

struct MambaStepParams {
  int64_t d_model = 0, d_inner = 0, d_state = 0, dt_rank = 0, d_conv = 0;
  // Matrices (fp32, bf16 or int8):
  MatrixRef in_proj_w;   // [2*Di, d_model]
  MatrixRef x_proj_w;    // [R + 2N, Di]
  MatrixRef dt_proj_w;   // [Di, R]
  MatrixRef out_proj_w;  // [d_model, Di]
  // Small fp32 vectors (null when absent):
  const float* in_proj_b = nullptr;   // [2*Di]
  const float* conv_w = nullptr;      // [Di, W]
  const float* conv_b = nullptr;      // [Di]
  const float* dt_b = nullptr;        // [Di]
  const float* A = nullptr;           // [Di, N] = -exp(A_log)
  const float* D = nullptr;           // [Di]
  const float* out_proj_b = nullptr;  // [d_model]
};

// Floats of shared scratch space a step needs.
int64_t mamba_step_workspace_size(const MambaStepParams& p);

// Run by every member of a team (inside ThreadTeam::run), all with the same arguments except
// `xq`, each member's own quantisation buffer (used by int8 matrices). x: [d_model] fp32, read
// only; conv_state [Di, W] (oldest first) and ssm_state [Di, N] fp32, updated in place; out:
// [d_model] fp32, written (accumulate = false) or added to (true: out is the residual stream).
// Ends with a barrier: out is complete on return in every member.
void mamba_step_team(ThreadTeam::Member& m, const MambaStepParams& p, const float* x,
                     float* conv_state, float* ssm_state, float* workspace, float* out,
                     bool accumulate, QuantizedVector& xq);

// The same for one call, on the process's decode team: x -> out (written).
void mamba_step(const MambaStepParams& p, const float* x, float* conv_state, float* ssm_state,
                float* workspace, float* out);

}  // namespace mambavl::kernels
