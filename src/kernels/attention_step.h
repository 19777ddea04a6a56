// One decode step of causal multi-head attention for one new token (batch 1, CPU, no allocation):
// for one head, rotary ("rotate half") on q and k, k and v appended to the KV cache at `pos`, then
// softmax(q . K^T * scale) V over the pos + 1 cached positions. Pure computation on raw pointers,
// for the fused GPT-NeoX decode step (models/gpt_neox.cpp), which shares the heads among a thread
// team. Reference: AttentionCore::forward (Rotary::apply, the KV cache write and SDPA), which the
// tests compare against.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/bf16.h"

namespace mambavl::kernels {

struct AttentionStepParams {
  int64_t heads = 0, head_dim = 0;
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


// Head h: qkv [heads, 3, head_dim] fp32 (this head's q and k are rotated in place), scores: this
// head's scratch of >= pos + 1 floats, ctx [heads, head_dim] fp32 (this head's row written).
void attention_step_head(const AttentionStepParams& p, int64_t h, float* qkv, float* scores,
                         float* ctx);

}  // namespace mambavl::kernels
