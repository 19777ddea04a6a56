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
#include "kernels/isa/decode_step_kernels.h"  // AttentionStepParams

namespace mambavl::kernels {

// AttentionStepParams: kernels/isa/decode_step_kernels.h.

// Head h: qkv [heads, 3, head_dim] fp32 (this head's q and k are rotated in place), scores: this
// head's scratch of >= pos + 1 floats, ctx [heads, head_dim] fp32 (this head's row written).
void attention_step_head(const AttentionStepParams& p, int64_t h, float* qkv, float* scores,
                         float* ctx);

// The same in two phases, for grouped KV heads (p.kv_heads < p.heads): first, for every KV head g,
// k [head_dim] rotated in place and k, v [head_dim] appended to g's cache at p.pos; then, once
// every KV head is written, for every query head h: q [head_dim] rotated in place and attended
// over KV head h / (heads / kv_heads), ctx [heads, head_dim] row h written.
void attention_step_kv(const AttentionStepParams& p, int64_t g, float* k, const float* v);
void attention_step_query(const AttentionStepParams& p, int64_t h, float* q, float* scores,
                          float* ctx);

}  // namespace mambavl::kernels
