// Per-instruction-set levels of the non-GEMV phases of the fused decode steps: the Mamba step's
// causal conv update + SiLU and selective state update + gate (kernels/mamba_step.cpp), and one
// attention head of the GPT-NeoX step (kernels/attention_step.cpp). Each namespace is one
// compilation of decode_step_impl.inc with that level's flags (see gemv_kernels.h); only C headers
// and intrinsics are included there. The GEMVs go through kernels/gemv.h.
#pragma once
#include <stdint.h>

namespace mambavl::kernels {

struct AttentionStepParams {
  int64_t heads = 0, head_dim = 0;
  int64_t kv_heads = 0;  // KV heads (0: heads); query head h reads KV head h / (heads / kv_heads)
  int64_t rot_dim = 0;   // rotated features at the start of each head (even, <= head_dim)
  int64_t pos = 0;       // position of the new token = positions already cached
  int64_t capacity = 0;  // positions per head in the cache storage (> pos)
  float scale = 1.f;     // softmax scale (1 / sqrt(head_dim))
  // bf16: the cache holds bfloat16 and values are rounded to bf16 where the op-by-op bf16 path
  // rounds (rotary products and sum, cached k / v, probabilities, the output); else all fp32.
  bool bf16 = false;
  const float* cos = nullptr;  // [rot_dim] at pos (already bf16-rounded for a bf16 model)
  const float* sin = nullptr;  // [rot_dim]
  void* k_cache = nullptr;     // [heads, capacity, head_dim] fp32 or bf16 (uint16 bits)
  void* v_cache = nullptr;     // [heads, capacity, head_dim]
};

// The Mamba step's selective state update + D skip + SiLU(z) gate, fp32 throughout:
//   delta = softplus(dt[d]);  h[d, n] = exp(delta A[d, n]) h[d, n] + delta xc[d] B[n]
//   y[d] = (sum_n h[d, n] C[n] + D[d] xc[d]) * silu(z[d])
struct MambaScanArgs {
  int64_t N;        // d_state
  const float* A;   // [Di, N] = -exp(A_log)
  const float* D;   // [Di] or null
  const float* dt;  // [Di] dt_proj output (bias included), before the softplus
  const float* xc;  // [Di] conv + SiLU output
  const float* z;   // [Di] gate
  const float* B;   // [N]
  const float* C;   // [N]
  float* state;     // [Di, N], updated
  float* y;         // [Di]
};

// The Mamba step's causal conv update + SiLU: conv_state [Di, W] (oldest first) shifts in x[d],
//   xc[d] = silu(bias[d] + sum_k w[d, k] state[d, k])
struct MambaConvArgs {
  int64_t W;          // d_conv
  const float* x;     // [Di] in_proj's x half
  const float* w;     // [Di, W]
  const float* bias;  // [Di] or null
  float* state;       // [Di, W], updated
  float* xc;          // [Di]
};

}  // namespace mambavl::kernels

#define MVL_DECODE_STEP_DECLARE(ns)                                                       \
  namespace mambavl::kernels::ns {                                                        \
  /* Channels [d0, d1). */                                                                \
  void mamba_conv_channels(const MambaConvArgs& a, int64_t d0, int64_t d1);               \
  void mamba_scan_channels(const MambaScanArgs& a, int64_t d0, int64_t d1);               \
  /* attention_step_head / _kv / _query (kernels/attention_step.h) at this level. */      \
  void attention_head(const AttentionStepParams& p, int64_t h, float* qkv, float* scores, \
                      float* ctx);                                                        \
  void attention_kv(const AttentionStepParams& p, int64_t g, float* k, const float* v);   \
  void attention_query(const AttentionStepParams& p, int64_t h, float* q, float* scores,  \
                       float* ctx);                                                       \
  }

MVL_DECODE_STEP_DECLARE(isa_scalar)
MVL_DECODE_STEP_DECLARE(isa_avx2)
MVL_DECODE_STEP_DECLARE(isa_avx512)
