#include "generate/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>

#include "common/error.h"

namespace mambavl::generate {

std::vector<int64_t> generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opt,
                              const std::function<void(int64_t)>& on_token, GenerateStats* stats) {
  MVL_CHECK(!prompt.empty(), "the prompt is empty: give at least one token (e.g. --ids 0)");
  MVL_CHECK(opt.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  c10::InferenceMode guard;
  using clock = std::chrono::steady_clock;
  Sampler sampler(opt.sampling);
  const int64_t P = static_cast<int64_t>(prompt.size());
  auto cache = model.make_cache(1, P + opt.max_new_tokens);
  std::vector<int64_t> out;
  out.reserve(opt.max_new_tokens);
  auto t0 = clock::now();
  at::Tensor ids = at::tensor(prompt, at::kLong).view({1, P});
  at::Tensor logits = opt.max_new_tokens > 0 ? model.forward(ids, cache.get(), /*last_only=*/true)
                                             : at::Tensor();  // [1, 1, V]
  auto t1 = clock::now();
  at::Tensor step = at::empty({1, 1}, at::kLong);
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int64_t tok = sampler.sample(logits.view({-1}));
    out.push_back(tok);
    if (on_token) on_token(tok);
    if ((opt.eos_id && tok == *opt.eos_id) || i + 1 == opt.max_new_tokens) break;
    step.fill_(tok);
    logits = model.forward(step, cache.get(), /*last_only=*/true);
  }
  auto t2 = clock::now();
  if (stats) {
    stats->prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_seconds = std::chrono::duration<double>(t2 - t1).count();
    stats->prompt_tokens = P;
    stats->new_tokens = static_cast<int64_t>(out.size());
  }
  return out;
}

}  // namespace mambavl::generate
