// Entry point of the fused CPU attention over many queries: validation, the parallel split of the
// work items and the dispatch to the kernel level (kernels/isa/attention_prefill_*.cpp).
#include "kernels/attention_prefill.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <string>

#include "common/error.h"
#include "kernels/backend.h"
#include "kernels/isa/attention_prefill_kernels.h"
#include "kernels/isa/dispatch.h"

namespace mambavl::kernels {

namespace {

constexpr int64_t kMaxHeadDim = 512;
constexpr int64_t kMaxPackedFloats = int64_t{16} << 20;  // 64 MB of packed keys per thread

// Empty when supported, else why not.
std::string refusal(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  for (const at::Tensor* t : {&q, &k, &v}) {
    if (!t->defined() || t->dim() != 4) return "q, k and v must be 4-D [B, L, heads, head_dim]";
    if (t->scalar_type() != at::kFloat) return "q, k and v must be fp32";
    if (!t->device().is_cpu()) return "q, k and v must be on the CPU";
    if (t->stride(3) != 1) return "the head features of q, k and v must be contiguous";
  }
  const int64_t B = q.size(0), H = q.size(2), hd = q.size(3);
  if (k.sizes() != v.sizes()) return "k and v must have the same shape";
  if (k.size(0) != B || k.size(3) != hd) return "k and v must match q's batch and head_dim";
  const int64_t Hkv = k.size(2);
  if (Hkv <= 0 || H <= 0 || H % Hkv != 0)
    return "the query heads must be a multiple of the KV heads";
  if (hd <= 0 || hd % 16 != 0 || hd > kMaxHeadDim)
    return "head_dim must be a positive multiple of 16, at most 512";
  if (k.size(1) <= 0) return "there must be at least one key";
  if (hd * (k.size(1) + kAttnKeyPad) > kMaxPackedFloats)
    return "too many keys for the packed layout";
  return "";
}

}  // namespace

bool attention_prefill_supported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return refusal(q, k, v).empty();
}

bool use_attention_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return !at::GradMode::is_enabled() && default_backend() != Backend::Reference &&
         attention_prefill_supported(q, k, v);
}

at::Tensor attention_prefill(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             bool causal, int64_t q_offset, double scale) {
  const std::string why = refusal(q, k, v);
  MVL_CHECK(why.empty(), "attention_prefill: ", why, " (q ", q.sizes(), ", k ", k.sizes(), ")");
  MVL_CHECK(!causal || (q_offset >= 0 && q_offset + q.size(1) <= k.size(1)),
            "attention_prefill: causal queries at positions ", q_offset, " .. ",
            q_offset + q.size(1) - 1, " need as many keys (got ", k.size(1), ")");
  at::Tensor out = at::empty(q.sizes(), q.options());  // [B, Lq, H, hd]
  if (q.numel() == 0) return out;
  AttentionPrefillArgs a;
  a.q = q.data_ptr<float>();
  a.k = k.data_ptr<float>();
  a.v = v.data_ptr<float>();
  a.out = out.data_ptr<float>();
  a.batch = q.size(0);
  a.q_len = q.size(1);
  a.k_len = k.size(1);
  a.heads = q.size(2);
  a.kv_heads = k.size(2);
  a.head_dim = q.size(3);
  a.q_offset = causal ? q_offset : 0;
  a.causal = causal;
  a.scale = static_cast<float>(scale);
  a.q_sb = q.stride(0), a.q_sl = q.stride(1), a.q_sh = q.stride(2);
  a.k_sb = k.stride(0), a.k_sl = k.stride(1), a.k_sh = k.stride(2);
  a.v_sb = v.stride(0), a.v_sl = v.stride(1), a.v_sh = v.stride(2);
  a.o_sb = out.stride(0), a.o_sl = out.stride(1), a.o_sh = out.stride(2);
  const auto run = MVL_ISA_PICK(attention_prefill_run);
  const int64_t scratch = attention_prefill_scratch_floats(a);
  at::parallel_for(0, attention_prefill_items(a), 1, [&](int64_t begin, int64_t end) {
    at::Tensor w = at::empty({scratch}, at::kFloat);  // 64-byte aligned (c10's CPU allocator)
    run(a, begin, end, w.data_ptr<float>());
  });
  return out;
}

}  // namespace mambavl::kernels
