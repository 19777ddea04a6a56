// Attention mixers. make_hybrid_attention builds mamba_ssm's MHA layer (in_proj [q;k;v], out_proj,
// partial rotary, causal) for the attention layers of a hybrid Mamba stack.
#pragma once
#include <memory>

#include "models/mamba.h"
#include "models/mixer.h"

namespace mambavl::models {

std::shared_ptr<SequenceMixer> make_hybrid_attention(const MambaConfig& cfg, int64_t layer_idx);

}  // namespace mambavl::models
