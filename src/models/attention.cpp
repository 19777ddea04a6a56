#include "models/attention.h"

#include "common/error.h"

namespace mambavl::models {

std::shared_ptr<SequenceMixer> make_hybrid_attention(const MambaConfig& cfg, int64_t layer_idx) {
  MVL_FAIL("layer ", layer_idx, " is an attention layer (attn_layer_idx): hybrid stacks are not implemented yet");
}

}  // namespace mambavl::models
