// Autoregressive generation with any CausalLM (prefill once, then one cached step per token).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "generate/sampler.h"
#include "models/lm.h"

namespace mambavl::generate {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingOptions sampling;
  std::optional<int64_t> eos_id;  // stop after emitting it (it is included in the output)
};

struct GenerateStats {
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0, new_tokens = 0;
};

// Returns the new token ids; `on_token` (optional) is called as each is produced (streaming).
std::vector<int64_t> generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opt,
                              const std::function<void(int64_t)>& on_token = {},
                              GenerateStats* stats = nullptr);

}  // namespace mambavl::generate
