// Softmax attention over many queries on the CPU (prefill, encoders): one pass per (batch row,
// query head, block of 64 queries) over blocks of keys with an online softmax, register-tiled
// products and the keys packed once per KV head (kernels/isa/attention_prefill_impl.inc). It
// reads q, k and v in place through their strides (a fused QKV projection's views, a KV cache)
// and writes [B, Lq, H, hd], the layout the output projection reads, so no transposed copy is
// made on either side. Inference only (no autograd). The reference is
// at::scaled_dot_product_attention, which the tests compare against at every kernel level.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mambavl::kernels {

// Whether attention_prefill takes these tensors: fp32 on the CPU, q [B, Lq, H, hd], k and v
// [B, Lk, Hkv, hd] with contiguous features, H a multiple of Hkv, hd a multiple of 16 and at most
// 512, the packed keys of one head (hd * Lk floats per thread) at most 64 MB.
bool attention_prefill_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// What the models ask: supported, and neither autograd recording (grad mode) nor the reference
// backend (MAMBAVL_KERNELS=reference / --kernels reference, which keeps SDPA for checking).
bool use_attention_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// softmax(q . k^T * scale) v per head -> [B, Lq, H, hd] fp32 contiguous. Causal: query i sits at
// position q_offset + i and sees keys 0 .. q_offset + i (needs q_offset + Lq <= Lk); otherwise
// every query sees all Lk keys. Errors (mambavl::Error) name what attention_prefill_supported
// refuses.
at::Tensor attention_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             bool causal, int64_t q_offset, double scale);

}  // namespace mambavl::kernels
