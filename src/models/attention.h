// Attention shared by GPT-NeoX and the attention layers of hybrid Mamba stacks: partial rotary
// position embedding ("rotate half"), a growing KV cache and causal scaled-dot-product
// attention (one implementation, used by both). make_hybrid_attention builds mamba_ssm's MHA layer
// (in_proj [q | k | v], out_proj, GQA, partial rotary, causal) for a hybrid Mamba stack.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/modules/linear.h>

#include <memory>
#include <utility>
#include <vector>

#include "kernels/attention_step.h"
#include "models/layers.h"
#include "models/lm.h"
#include "models/mamba.h"
#include "models/mixer.h"

namespace mambavl::models {

// Rotary embedding on the first `dim` features of each head, non-interleaved ("rotate half":
// pairs (i, i + dim/2)), inv_freq[i] = 1 / base^(2i/dim), as in HF GPTNeoX and flash_attn's
// RotaryEmbedding(interleaved=False). cos/sin are computed in fp32 and cast to the input dtype.
class Rotary {
 public:
  Rotary(int64_t dim, double base);
  int64_t dim() const { return dim_; }
  // cos, sin for positions pos .. pos+len-1: [len, dim] each, in `dtype` on `device`.
  std::pair<at::Tensor, at::Tensor> cos_sin(int64_t pos, int64_t len, at::ScalarType dtype,
                                            at::Device device) const;
  // cos, sin at arbitrary positions: positions [B, L] int64 (>= 0) -> [B, L, dim] each (the same
  // values cos_sin gives for those positions).
  std::pair<at::Tensor, at::Tensor> cos_sin_at(const at::Tensor& positions, at::ScalarType dtype,
                                               at::Device device) const;
  // x: [B, L, H, head_dim]; cos, sin: [L, dim] (shared by the batch) or [B, L, dim] (per row)
  // -> [B, L, H, head_dim].
  at::Tensor apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const;

 private:
  int64_t dim_;
  double base_;
  at::Tensor inv_freq_;  // [dim/2] fp32
  // Tables for positions 0 .. n-1 (grown on demand; same values as computing per position).
  mutable at::Tensor cos_table_, sin_table_;  // [n, dim] in the last requested dtype
};

// One attention layer's KV cache for up to max_len tokens. Storage grows as tokens are written
// (amortised: a write that does not fit reallocates to max(needed, 2 * capacity), at most
// max_len, and copies the tokens written once), so a large max_len costs nothing up front.
struct KVCache : LayerCache {
  // First allocation: min(max_len, kInitialCapacity) positions.
  static constexpr int64_t kInitialCapacity = 256;
  at::Tensor k, v;    // [B, heads_kv, capacity, head_dim], compute dtype; first len positions used
  int64_t len = 0;    // tokens written so far
  int64_t limit = 0;  // most tokens this cache may hold (make_cache max_len)
  int64_t max_len() const { return limit; }
  int64_t capacity() const { return k.size(2); }
  // Makes room for `need` tokens in total (need <= max_len, else an error naming the overflow):
  // no-op when they fit, else one reallocation + copy of the len tokens written (and key_valid).
  void reserve(int64_t need);
  // Left padding (LayerStackCache::left_pad); both undefined when there is none.
  at::Tensor left_pad;   // [B] int64: row b's leading pad positions
  at::Tensor key_valid;  // [B, capacity] bool: false at row b's pad positions
  // Sets the padding of a cache about to be prefilled (len == 0); empty = none.
  void set_left_pad(const std::vector<int64_t>& pad);
};

// Rotary + KV cache + SDPA for one layer, independent of how q, k, v are projected.
class AttentionCore {
 public:
  AttentionCore(int64_t num_heads, int64_t num_heads_kv, int64_t head_dim, int64_t rotary_dim,
                double rotary_base, bool causal);
  // q: [B, L, H, hd], k, v: [B, L, Hkv, hd] (before rotary); positions start at `pos` (the cache
  // length when a cache is given). With a cache, k and v are written at pos .. pos+L-1 and the
  // queries attend to the first pos+L cached entries (causally when `causal`). A cache with left
  // padding (KVCache::set_left_pad) masks row b's pad keys (a pad query sees only itself, so no
  // row is fully masked) and rotates row b at positions pos - left_pad[b] onwards.
  // Returns the context [B, L, H * hd].
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, KVCache* cache,
                     int64_t pos) const;
  std::unique_ptr<KVCache> make_cache(int64_t batch, int64_t max_len, at::ScalarType dtype,
                                      at::Device device) const;

  int64_t num_heads, num_heads_kv, head_dim;
  bool causal;
  Rotary rotary;
};

// mamba_ssm's MHA mixer in a hybrid Mamba stack: parameters in_proj.{weight,bias}
// [(H + 2*Hkv) * hd, d_model] with output blocks [q | k | v], out_proj.{weight,bias}
// [d_model, H * hd].
class HybridAttentionImpl : public SequenceMixer {
 public:
  explicit HybridAttentionImpl(const MambaConfig& c);
  at::Tensor mix(const at::Tensor& x, LayerCache* cache, int64_t pos) override;
  std::unique_ptr<LayerCache> make_cache(int64_t batch, int64_t max_len, at::ScalarType dtype,
                                         at::Device device) const override;

  AttnConfig cfg;
  Linear in_proj{nullptr}, out_proj{nullptr};
  AttentionCore core;
};

std::shared_ptr<SequenceMixer> make_hybrid_attention(const MambaConfig& cfg, int64_t layer_idx);

// The KV cache of a layer's LayerCache (error when it belongs to another layer type).
KVCache& as_kv_cache(LayerCache* cache);

// The fused batch-1 decode steps (GPT-NeoX, hybrid Mamba stacks) and one layer's KV cache:
// whether the per-head kernel (kernels/attention_step.h) can read it in place (a KV cache in
// `dtype`, allocated, contiguous, on the CPU, without left padding);
bool kv_cache_fusable(const LayerCache* cache, at::ScalarType dtype);
// the cache checked to be at `pos` with room for one more token (errors name the mismatch or the
// overflow; the caller reserves pos + 1 once every layer has passed, so nothing changes on error);
KVCache& kv_cache_for_step(LayerCache* cache, int64_t pos);
// the step's parameters for `core` over `kv` at `pos` (cos / sin: fp32 rows of rotary_dim);
kernels::AttentionStepParams attention_step_params(const AttentionCore& core, const KVCache& kv,
                                                   int64_t pos, bool bf16, const float* cos,
                                                   const float* sin);
// the rotary cos / sin at `pos` in `dtype` (the op-by-op path's own table) as fp32 [rotary dim].
void rotary_row(const Rotary& rotary, int64_t pos, at::ScalarType dtype, float* cos, float* sin);

// Called by the backbones' forward_hidden before a cached forward of L positions: when the cache
// is empty and has left padding, validates it (one entry per row, each in [0, L): every row keeps
// at least one real position) and hands it to every layer cache (KV caches: key mask and per-row
// rotary positions; Mamba caches: conv / SSM input masking). Error when padding is set on a cache
// that was already used. No-op otherwise.
void prepare_left_pad(LayerStackCache& cache, int64_t L);

}  // namespace mambavl::models
