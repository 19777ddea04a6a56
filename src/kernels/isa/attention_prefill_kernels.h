// Per-instruction-set levels of the fused CPU attention over many queries (prefill, encoders):
// kernels/attention_prefill.cpp validates, splits the work items over at::parallel_for and
// dispatches to these. Each namespace is one compilation of attention_prefill_impl.inc with that
// level's flags (see gemv_kernels.h); only C headers and intrinsics are included there.
#pragma once
#include <stdint.h>

namespace mambavl::kernels {

// fp32 q [B, Lq, H, hd], k and v [B, Lk, Hkv, hd], out [B, Lq, H, hd], each addressed by its
// strides in floats (batch, position, head; the features are contiguous). Query head h reads KV
// head h / (H / Hkv). Causal: query i sits at position q_offset + i and sees keys 0 ..
// q_offset + i (q_offset + Lq <= Lk); otherwise every query sees all Lk keys.
struct AttentionPrefillArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  int64_t batch = 0, q_len = 0, k_len = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int64_t q_offset = 0;
  bool causal = false;
  float scale = 1.0f;  // applied to q . k before the softmax
  int64_t q_sb = 0, q_sl = 0, q_sh = 0;
  int64_t k_sb = 0, k_sl = 0, k_sh = 0;
  int64_t v_sb = 0, v_sl = 0, v_sh = 0;
  int64_t o_sb = 0, o_sl = 0, o_sh = 0;
};

// A work item is one (batch row, query head, block of kAttnQueryBlock queries), numbered in that
// order (so consecutive items of one KV head share its packed keys); keys go in blocks of
// kAttnKeyBlock with an online softmax (running max and sum per query, flash-attention style).
constexpr int64_t kAttnQueryBlock = 64;
constexpr int64_t kAttnKeyBlock = 256;

constexpr int64_t kAttnKeyPad = 64;  // the packed keys' length is a multiple of every level's tile

inline int64_t attention_prefill_items(const AttentionPrefillArgs& a) {
  return a.batch * a.heads * ((a.q_len + kAttnQueryBlock - 1) / kAttnQueryBlock);
}
inline int64_t attention_prefill_padded_keys(const AttentionPrefillArgs& a) {
  return (a.k_len + kAttnKeyPad - 1) / kAttnKeyPad * kAttnKeyPad;
}
// Floats of scratch one attention_prefill_run call needs: the packed keys [hd, padded Lk], one
// block of scores [kAttnQueryBlock, kAttnKeyBlock] and of outputs [kAttnQueryBlock, hd].
inline int64_t attention_prefill_scratch_floats(const AttentionPrefillArgs& a) {
  return a.head_dim * attention_prefill_padded_keys(a) + kAttnQueryBlock * kAttnKeyBlock +
         kAttnQueryBlock * a.head_dim;
}

}  // namespace mambavl::kernels

#define MVL_ATTENTION_PREFILL_DECLARE(ns)                                                   \
  namespace mambavl::kernels::ns {                                                          \
  /* Work items [begin, end) (attention_prefill_items); scratch: attention_prefill_scratch_ \
     floats(a), 64-byte aligned. */                                                         \
  void attention_prefill_run(const AttentionPrefillArgs& a, int64_t begin, int64_t end,     \
                             float* scratch);                                               \
  }

MVL_ATTENTION_PREFILL_DECLARE(isa_scalar)
MVL_ATTENTION_PREFILL_DECLARE(isa_avx2)
MVL_ATTENTION_PREFILL_DECLARE(isa_avx512)
