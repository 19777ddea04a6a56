// One attention head of the fused GPT-NeoX decode step: the loops are compiled once per
// instruction-set level (kernels/isa/decode_step_impl.inc) and picked at run time.
#include "kernels/attention_step.h"

#include "kernels/isa/dispatch.h"

namespace mambavl::kernels {

void attention_step_head(const AttentionStepParams& p, int64_t h, float* qkv, float* scores,
                         float* ctx) {
  MVL_ISA_PICK(attention_head)(p, h, qkv, scores, ctx);
}

}  // namespace mambavl::kernels
