// One attention head of the fused GPT-NeoX / hybrid decode steps: the loops are compiled once per
// instruction-set level (kernels/isa/decode_step_impl.inc) and picked at run time.
#include "kernels/attention_step.h"

#include "kernels/isa/dispatch.h"

namespace mambavl::kernels {

void attention_step_head(const AttentionStepParams& p, int64_t h, float* qkv, float* scores,
                         float* ctx) {
  MVL_ISA_PICK(attention_head)(p, h, qkv, scores, ctx);
}

void attention_step_kv(const AttentionStepParams& p, int64_t g, float* k, const float* v) {
  MVL_ISA_PICK(attention_kv)(p, g, k, v);
}

void attention_step_query(const AttentionStepParams& p, int64_t h, float* q, float* scores,
                          float* ctx) {
  MVL_ISA_PICK(attention_query)(p, h, q, scores, ctx);
}

}  // namespace mambavl::kernels
