// The language-modelling loss every trainer task uses (LM, VLM): next-token cross entropy on the
// supervised positions only, mean over each sample's supervised tokens, then mean over samples.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "models/lm.h"

namespace mambavl::models {

struct LMLoss {
  at::Tensor loss;        // scalar: mean over each sample's supervised tokens, then over samples
                          // (samples without supervised tokens are left out of the mean)
  at::Tensor per_sample;  // [B] fp32, detached (0 where a sample has no supervised token)
  int64_t tokens = 0;     // supervised tokens in the batch
};

// hidden [B, L, H] (the LM's final hidden states), labels [B, L] int64: labels[b][t] is the target
// of position t - 1 (-100: none; Hugging Face convention). Only the supervised positions go
// through the LM head, so memory is O(supervised tokens * V), not O(B * L * V).
LMLoss lm_loss(CausalLM& lm, const at::Tensor& hidden, const at::Tensor& labels);

}  // namespace mambavl::models
