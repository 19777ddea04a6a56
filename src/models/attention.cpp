// Rotary, KV cache and SDPA shared by GPT-NeoX and the hybrid MHA mixer; the hybrid MHA mixer.
#include "models/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include "common/error.h"
#include "kernels/attention_prefill.h"

namespace mambavl::models {

// ---------------------------------------------------------------------------------------------
// Rotary

Rotary::Rotary(int64_t dim, double base) : dim_(dim), base_(base) {
  MVL_CHECK(dim >= 0 && dim % 2 == 0, "rotary dimension must be even and >= 0, got ", dim);
  if (dim > 0) {
    // 1 / base^(arange(0, dim, 2) / dim), in fp32 as HF / flash_attn compute it.
    at::Tensor expo = at::arange(0, dim, 2, at::kFloat) / static_cast<double>(dim);  // [dim/2]
    inv_freq_ = at::reciprocal(at::pow(base, expo));                                 // [dim/2]
  }
}

std::pair<at::Tensor, at::Tensor> Rotary::cos_sin(int64_t pos, int64_t len, at::ScalarType dtype,
                                                  at::Device device) const {
  const int64_t need = pos + len;
  if (!cos_table_.defined() || cos_table_.size(0) < need || cos_table_.scalar_type() != dtype ||
      cos_table_.device() != device) {
    int64_t n = std::max<int64_t>(need, 256);
    if (cos_table_.defined()) n = std::max(n, 2 * cos_table_.size(0));
    at::Tensor t = at::arange(n, at::kFloat);                            // [n]
    at::Tensor freqs = at::outer(t, inv_freq_);                          // [n, dim/2]
    at::Tensor emb = at::cat({freqs, freqs}, -1);                        // [n, dim]
    cos_table_ = emb.cos().to(at::TensorOptions(dtype).device(device));  // [n, dim]
    sin_table_ = emb.sin().to(at::TensorOptions(dtype).device(device));  // [n, dim]
  }
  return {cos_table_.narrow(0, pos, len), sin_table_.narrow(0, pos, len)};
}

std::pair<at::Tensor, at::Tensor> Rotary::cos_sin_at(const at::Tensor& positions,
                                                     at::ScalarType dtype,
                                                     at::Device device) const {
  const int64_t need = positions.numel() > 0 ? positions.max().item<int64_t>() + 1 : 1;
  cos_sin(0, need, dtype, device);  // grows the tables
  at::Tensor idx = positions.reshape({-1}).to(device);
  std::vector<int64_t> shape(positions.sizes().begin(), positions.sizes().end());
  shape.push_back(dim_);
  return {cos_table_.index_select(0, idx).view(shape),
          sin_table_.index_select(0, idx).view(shape)};  // [B, L, dim] each
}

at::Tensor Rotary::apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) const {
  if (dim_ == 0) return x;
  const int64_t L = x.size(1), hd = x.size(3), half = dim_ / 2;
  const int64_t rows = cos.dim() == 3 ? cos.size(0) : 1;
  at::Tensor c = cos.view({rows, L, 1, dim_});  // [1 or B, L, 1, rot]
  at::Tensor s = sin.view({rows, L, 1, dim_});  // [1 or B, L, 1, rot]
  at::Tensor xr = x.narrow(-1, 0, dim_);        // [B, L, H, rot]
  at::Tensor rotated = at::cat({-xr.narrow(-1, half, half), xr.narrow(-1, 0, half)}, -1);
  at::Tensor out = xr * c + rotated * s;  // [B, L, H, rot]
  if (dim_ == hd) return out;
  return at::cat({out, x.narrow(-1, dim_, hd - dim_)}, -1);  // [B, L, H, hd]
}

// ---------------------------------------------------------------------------------------------
// Attention core

AttentionCore::AttentionCore(int64_t num_heads_, int64_t num_heads_kv_, int64_t head_dim_,
                             int64_t rotary_dim, double rotary_base, bool causal_)
    : num_heads(num_heads_),
      num_heads_kv(num_heads_kv_),
      head_dim(head_dim_),
      causal(causal_),
      rotary(rotary_dim, rotary_base) {
  MVL_CHECK(num_heads > 0 && num_heads_kv > 0 && num_heads % num_heads_kv == 0,
            "attention: num_heads (", num_heads, ") must be a positive multiple of num_heads_kv (",
            num_heads_kv, ")");
  MVL_CHECK(head_dim > 0 && rotary_dim <= head_dim, "attention: rotary dimension ", rotary_dim,
            " exceeds head_dim ", head_dim);
}

std::unique_ptr<KVCache> AttentionCore::make_cache(int64_t batch, int64_t max_len,
                                                   at::ScalarType dtype, at::Device device) const {
  MVL_CHECK(batch > 0 && max_len > 0, "KV cache: batch and max_len must be > 0 (got ", batch, ", ",
            max_len, ")");
  auto c = std::make_unique<KVCache>();
  c->limit = max_len;
  const int64_t cap = std::min(max_len, KVCache::kInitialCapacity);  // grows on demand
  const auto opt = at::TensorOptions(dtype).device(device);
  c->k = at::zeros({batch, num_heads_kv, cap, head_dim}, opt);  // [B, Hkv, cap, hd]
  c->v = at::zeros({batch, num_heads_kv, cap, head_dim}, opt);  // [B, Hkv, cap, hd]
  return c;
}

void KVCache::reserve(int64_t need) {
  MVL_CHECK(need >= 0 && need <= limit, "KV cache overflow: the cache holds at most ", limit,
            " tokens (make_cache max_len) but ", need, " tokens were requested");
  const int64_t cap = capacity();
  if (need <= cap) return;
  // Geometric growth (amortised O(1) copies per token), never past the limit.
  const int64_t grown = cap > limit / 2 ? limit : 2 * cap;
  const int64_t n = std::max(need, grown);
  std::vector<int64_t> shape = k.sizes().vec();
  shape[2] = n;
  at::Tensor k2 = at::zeros(shape, k.options()), v2 = at::zeros(shape, v.options());
  if (len > 0) {
    k2.narrow(2, 0, len).copy_(k.narrow(2, 0, len));
    v2.narrow(2, 0, len).copy_(v.narrow(2, 0, len));
  }
  k = std::move(k2);
  v = std::move(v2);
  if (left_pad.defined())  // [B, n]
    key_valid = (at::arange(n, at::kLong).unsqueeze(0) >= left_pad.unsqueeze(1)).to(k.device());
}

at::Tensor AttentionCore::forward(const at::Tensor& q_in, const at::Tensor& k_in,
                                  const at::Tensor& v_in, KVCache* cache, int64_t pos) const {
  const int64_t B = q_in.size(0), L = q_in.size(1);
  const bool padded = cache && cache->left_pad.defined();
  at::Tensor q = q_in, k = k_in;  // [B, L, H, hd], [B, L, Hkv, hd]
  if (rotary.dim() > 0) {
    at::Tensor cos, sin;  // [L, rot], or per row [B, L, rot] with padding
    if (padded) {
      // Row b's position t is pos + t - left_pad[b] (pad positions, masked anyway, clamp to 0).
      at::Tensor p = at::arange(pos, pos + L, at::kLong).unsqueeze(0) -
                     cache->left_pad.unsqueeze(1);  // [B, L]
      std::tie(cos, sin) = rotary.cos_sin_at(p.clamp_min(0), q.scalar_type(), q.device());
    } else {
      std::tie(cos, sin) = rotary.cos_sin(pos, L, q.scalar_type(), q.device());
    }
    q = rotary.apply(q, cos, sin);
    k = rotary.apply(k, cos, sin);
  }
  at::Tensor qt = q.transpose(1, 2);     // [B, H, L, hd]
  at::Tensor kt = k.transpose(1, 2);     // [B, Hkv, L, hd]
  at::Tensor vt = v_in.transpose(1, 2);  // [B, Hkv, L, hd]
  const bool gqa = num_heads != num_heads_kv;
  // Several fp32 queries in inference, no padding: the fused CPU kernel reads q, k, v (or the
  // cache) in place and writes [B, L, H, hd] directly (kernels/attention_prefill.h). Single queries
  // (decode steps outside the fused decode paths) and the reference backend take SDPA.
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const bool fused = L >= 2 && !padded && kernels::use_attention_prefill(q, k, v_in);
  at::Tensor ctx;  // [B, H, L, hd]
  if (!cache) {
    if (fused) return kernels::attention_prefill(q, k, v_in, causal, 0, scale).view({B, L, -1});
    ctx = at::scaled_dot_product_attention(qt, kt, vt, {}, 0.0, causal, std::nullopt, gqa);
  } else {
    MVL_CHECK(cache->len == pos, "KV cache holds ", cache->len,
              " tokens but the model is at position ", pos,
              " (a cache must be used by one sequence from its start)");
    MVL_CHECK(cache->k.size(0) == B, "KV cache is for batch ", cache->k.size(0),
              " but the input has batch ", B);
    MVL_CHECK(L <= cache->max_len() - pos, "KV cache overflow: the cache holds at most ",
              cache->max_len(), " tokens (make_cache max_len) but ", pos, " + ", L, " = ", pos + L,
              " tokens were requested");
    cache->reserve(pos + L);
    cache->k.narrow(2, pos, L).copy_(kt);
    cache->v.narrow(2, pos, L).copy_(vt);
    cache->len = pos + L;
    at::Tensor keys = cache->k.narrow(2, 0, pos + L);    // [B, Hkv, pos+L, hd]
    at::Tensor values = cache->v.narrow(2, 0, pos + L);  // [B, Hkv, pos+L, hd]
    if (fused)  // queries at pos .. pos+L-1 over the cached keys 0 .. pos+L-1
      return kernels::attention_prefill(q, keys.transpose(1, 2), values.transpose(1, 2), causal,
                                        pos, scale)
          .view({B, L, -1});  // [B, L, H*hd]
    if (padded) {
      // Query i (position pos+i) sees key j when j is a real position of its row (and j <= pos+i
      // when causal); a pad query also sees itself, so that no softmax row is empty.
      const auto lopt = at::TensorOptions(at::kLong).device(q.device());
      at::Tensor qpos = at::arange(pos, pos + L, lopt).unsqueeze(1);             // [L, 1]
      at::Tensor kpos = at::arange(pos + L, lopt).unsqueeze(0);                  // [1, pos+L]
      at::Tensor valid = cache->key_valid.narrow(1, 0, pos + L).to(q.device());  // [B, pos+L]
      at::Tensor mask = valid.unsqueeze(1) | (kpos == qpos).unsqueeze(0);        // [B, L, pos+L]
      if (causal) mask = mask & (kpos <= qpos).unsqueeze(0);
      ctx = at::scaled_dot_product_attention(qt, keys, values, mask.unsqueeze(1), 0.0, false,
                                             std::nullopt, gqa);
    } else if (!causal || L == 1) {
      // A single new query may see every cached entry.
      ctx = at::scaled_dot_product_attention(qt, keys, values, {}, 0.0, false, std::nullopt, gqa);
    } else if (pos == 0) {
      ctx = at::scaled_dot_product_attention(qt, keys, values, {}, 0.0, true, std::nullopt, gqa);
    } else {
      // Several new queries after a prefix: query i (position pos+i) sees keys 0 .. pos+i.
      at::Tensor qpos = at::arange(pos, pos + L, at::TensorOptions(at::kLong).device(q.device()));
      at::Tensor kpos = at::arange(pos + L, at::TensorOptions(at::kLong).device(q.device()));
      at::Tensor mask = kpos.unsqueeze(0) <= qpos.unsqueeze(1);  // [L, pos+L] bool
      ctx = at::scaled_dot_product_attention(qt, keys, values, mask, 0.0, false, std::nullopt, gqa);
    }
  }
  return ctx.transpose(1, 2).reshape({B, L, num_heads * head_dim});  // [B, L, H*hd]
}

KVCache& as_kv_cache(LayerCache* cache) {
  auto* kv = dynamic_cast<KVCache*>(cache);
  MVL_CHECK(kv, "attention layer was given a cache of another layer type");
  return *kv;
}

bool kv_cache_fusable(const LayerCache* cache, at::ScalarType dtype) {
  auto* kv = dynamic_cast<const KVCache*>(cache);
  return kv && !kv->left_pad.defined() && kv->k.defined() && kv->v.defined() &&
         kv->k.scalar_type() == dtype && kv->v.scalar_type() == dtype && kv->k.device().is_cpu() &&
         kv->k.is_contiguous() && kv->v.is_contiguous();
}

KVCache& kv_cache_for_step(LayerCache* cache, int64_t pos) {
  KVCache& kv = as_kv_cache(cache);
  MVL_CHECK(kv.len == pos, "KV cache holds ", kv.len, " tokens but the model is at position ", pos,
            " (a cache must be used by one sequence from its start)");
  MVL_CHECK(pos + 1 <= kv.max_len(), "KV cache overflow: the cache holds at most ", kv.max_len(),
            " tokens (make_cache max_len) but ", pos, " + 1 = ", pos + 1, " tokens were requested");
  return kv;
}

kernels::AttentionStepParams attention_step_params(const AttentionCore& core, const KVCache& kv,
                                                   int64_t pos, bool bf16, const float* cos,
                                                   const float* sin) {
  kernels::AttentionStepParams p;
  p.heads = core.num_heads;
  p.kv_heads = core.num_heads_kv;
  p.head_dim = core.head_dim;
  p.rot_dim = core.rotary.dim();
  p.pos = pos;
  p.capacity = kv.capacity();
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(core.head_dim)));
  p.bf16 = bf16;
  p.cos = cos;
  p.sin = sin;
  p.k_cache = kv.k.data_ptr();
  p.v_cache = kv.v.data_ptr();
  return p;
}

void rotary_row(const Rotary& rotary, int64_t pos, at::ScalarType dtype, float* cos, float* sin) {
  const int64_t rot = rotary.dim();
  if (rot == 0) return;
  auto [c, s] = rotary.cos_sin(pos, 1, dtype, at::kCPU);  // [1, rot] each
  at::Tensor cf = c.to(at::kFloat).contiguous(), sf = s.to(at::kFloat).contiguous();
  std::memcpy(cos, cf.data_ptr<float>(), sizeof(float) * rot);
  std::memcpy(sin, sf.data_ptr<float>(), sizeof(float) * rot);
}

void KVCache::set_left_pad(const std::vector<int64_t>& pad) {
  if (pad.empty()) {
    left_pad = key_valid = at::Tensor();
    return;
  }
  MVL_CHECK(static_cast<int64_t>(pad.size()) == k.size(0), "KV cache: left_pad has ", pad.size(),
            " entries but the cache is for batch ", k.size(0));
  left_pad = at::tensor(pad, at::kLong);                                                // [B]
  key_valid = at::arange(capacity(), at::kLong).unsqueeze(0) >= left_pad.unsqueeze(1);  // [B, cap]
  key_valid = key_valid.to(k.device());
}

void prepare_left_pad(LayerStackCache& c, int64_t L) {
  if (c.left_pad.empty()) return;
  if (c.len > 0) {
    // Already handed out at the prefill; setting it afterwards would silently do nothing.
    bool handed = true;
    for (auto& l : c.layers) {
      if (auto* kv = dynamic_cast<KVCache*>(l.get())) handed = handed && kv->left_pad.defined();
      if (auto* m = dynamic_cast<MambaLayerCache*>(l.get()))
        handed = handed && m->left_pad == c.left_pad;
    }
    MVL_CHECK(handed, "left_pad was set on a cache that already holds ", c.len,
              " tokens: set it before the prefill");
    return;
  }
  MVL_CHECK(static_cast<int64_t>(c.left_pad.size()) == c.bsz, "left_pad has ", c.left_pad.size(),
            " entries but the cache is for batch ", c.bsz);
  for (size_t b = 0; b < c.left_pad.size(); ++b)
    MVL_CHECK(c.left_pad[b] >= 0 && c.left_pad[b] < L, "left_pad[", b, "] = ", c.left_pad[b],
              " must be in [0, ", L, ") for a prefill of ", L,
              " positions (every row needs a real position)");
  for (auto& l : c.layers) {
    if (auto* kv = dynamic_cast<KVCache*>(l.get())) kv->set_left_pad(c.left_pad);
    if (auto* m = dynamic_cast<MambaLayerCache*>(l.get())) m->left_pad = c.left_pad;
  }
}

// ---------------------------------------------------------------------------------------------
// Hybrid MHA (mamba_ssm.modules.mha.MHA)

HybridAttentionImpl::HybridAttentionImpl(const MambaConfig& c)
    : cfg(c.attn),
      core(c.attn.num_heads, c.attn.num_heads_kv, c.attn.head_dim, c.attn.rotary_emb_dim,
           c.attn.rotary_emb_base, c.attn.causal) {
  const int64_t H = cfg.num_heads, Hkv = cfg.num_heads_kv, hd = cfg.head_dim;
  in_proj = register_module("in_proj", Linear(c.d_model, (H + 2 * Hkv) * hd, cfg.qkv_proj_bias));
  out_proj = register_module("out_proj", Linear(H * hd, c.d_model, cfg.out_proj_bias));
  in_proj->reset_parameters();
  out_proj->reset_parameters();
}

at::Tensor HybridAttentionImpl::mix(const at::Tensor& x, LayerCache* cache, int64_t pos) {
  const int64_t B = x.size(0), L = x.size(1);
  const int64_t H = cfg.num_heads, Hkv = cfg.num_heads_kv, hd = cfg.head_dim;
  at::Tensor qkv = in_proj->forward(x);                                   // [B, L, (H+2Hkv)*hd]
  at::Tensor q = qkv.narrow(-1, 0, H * hd).view({B, L, H, hd});           // [B, L, H, hd]
  at::Tensor k = qkv.narrow(-1, H * hd, Hkv * hd).view({B, L, Hkv, hd});  // [B, L, Hkv, hd]
  at::Tensor v = qkv.narrow(-1, (H + Hkv) * hd, Hkv * hd).view({B, L, Hkv, hd});
  at::Tensor ctx =
      core.forward(q, k, v, cache ? &as_kv_cache(cache) : nullptr, pos);  // [B, L, H*hd]
  return out_proj->forward(ctx);                                          // [B, L, d_model]
}

std::unique_ptr<LayerCache> HybridAttentionImpl::make_cache(int64_t batch, int64_t max_len,
                                                            at::ScalarType dtype,
                                                            at::Device device) const {
  return core.make_cache(batch, max_len, dtype, device);
}

std::shared_ptr<SequenceMixer> make_hybrid_attention(const MambaConfig& cfg, int64_t layer_idx) {
  MVL_CHECK(cfg.is_attention_layer(layer_idx), "layer ", layer_idx,
            " is not listed in attn_layer_idx");
  return std::make_shared<HybridAttentionImpl>(cfg);
}

}  // namespace mambavl::models
