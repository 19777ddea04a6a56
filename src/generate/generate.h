// Autoregressive generation with any CausalLM: one loop that prefills a batch of prompts (token
// ids or input embeddings, of different lengths: left-padded, LayerStackCache::left_pad) once and
// then decodes every row together with one cached step per token. Row i of a batch equals
// generating prompt i alone with the same options.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "generate/sampler.h"
#include "models/lm.h"

namespace mambavl::generate {

struct GenerateOptions {
  // Tokens to generate per row. With a context limit (CausalLM::max_context, GPT-NeoX
  // max_position_embeddings) longest prompt + max_new_tokens must fit in it (else an Error before
  // any work); without one (Mamba, hybrid) any value is accepted: nothing is sized by it (KV
  // caches grow as tokens are produced; Mamba's state is constant), so eos_id may end it early.
  int64_t max_new_tokens = 32;
  SamplingOptions sampling;
  std::optional<int64_t> eos_id;  // stop after emitting it (it is included in the output)
  // Rows per forward batch in generate_batch / generate_batch_ids (0 = all prompts in one batch).
  // Results do not depend on it; it bounds memory (padding + KV caches grow with the batch).
  int64_t batch_size = 0;
};

// Totals over the whole call (every batch): prompt_tokens counts real (unpadded) prompt tokens.
struct GenerateStats {
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0, new_tokens = 0;
};

// Streaming callback of the batched functions: (row, new token id).
using RowTokenFn = std::function<void(int64_t row, int64_t id)>;

// The generation loop. prompt_embeds[i]: [L_i, hidden] input embeddings (L_i >= 1), in the model's
// compute dtype (rows of CausalLM::embed's output, possibly with image features written into
// them). Prompts are left-padded (zeros) into batches of opt.batch_size rows, each batch is
// prefilled once and then decoded together; a row stops after eos_id or max_new_tokens tokens
// (a finished row keeps feeding eos_id and its further outputs are dropped). Each row has its own
// Sampler seeded with opt.sampling.seed, so row i equals generating prompt i alone with the same
// options. on_token(row, id) is called as each token is produced. Returns the new ids per row.
// Errors (mambavl::Error): no prompts, an empty or wrongly shaped prompt (its row named), bad
// options, the longest prompt + max_new_tokens beyond the model's context (naming
// --max-new-tokens, the context and its config field, and the largest value that fits).
std::vector<std::vector<int64_t>> generate_batch(models::CausalLM& model,
                                                 const std::vector<at::Tensor>& prompt_embeds,
                                                 const GenerateOptions& opt,
                                                 const RowTokenFn& on_token = {},
                                                 GenerateStats* stats = nullptr);

// The bound generate_batch checks before any work (mambavl::Error naming --max-new-tokens, the
// context, its config field and the largest value that fits): with a context limit
// (CausalLM::max_context, GPT-NeoX max_position_embeddings), the longest prompt + max_new_tokens
// must fit in it; no limit otherwise. For callers that print something before generating.
void check_context(const models::CausalLM& model, const std::vector<int64_t>& prompt_lengths,
                   int64_t max_new_tokens);

// Token-id prompts: embeds each with model.embed (ids validated) and calls generate_batch.
std::vector<std::vector<int64_t>> generate_batch_ids(
    models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
    const GenerateOptions& opt, const RowTokenFn& on_token = {}, GenerateStats* stats = nullptr);

// One prompt (a batch of one, no padding: the models' batch-1 fast paths). Returns the new token
// ids; `on_token` (optional) is called as each is produced (streaming).
std::vector<int64_t> generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opt,
                              const std::function<void(int64_t)>& on_token = {},
                              GenerateStats* stats = nullptr);

}  // namespace mambavl::generate
