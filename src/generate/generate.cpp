#include "generate/generate.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>

#include "common/error.h"

namespace mambavl::generate {

namespace {

using clock = std::chrono::steady_clock;

double seconds(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Generates for prompts [first, first + n) of `embeds` as one batch (rows reported as first + b).
void run_batch(models::CausalLM& model, const std::vector<at::Tensor>& embeds, size_t first,
               size_t n, const GenerateOptions& opt, const RowTokenFn& on_token, GenerateStats& st,
               std::vector<std::vector<int64_t>>& out) {
  const int64_t B = static_cast<int64_t>(n);
  int64_t Lmax = 0;
  for (size_t i = first; i < first + n; ++i) Lmax = std::max(Lmax, embeds[i].size(0));
  std::vector<int64_t> pad(n);
  bool padded = false;
  for (size_t b = 0; b < n; ++b) {
    pad[b] = Lmax - embeds[first + b].size(0);
    padded = padded || pad[b] > 0;
    st.prompt_tokens += embeds[first + b].size(0);
    // Never sized by max_new_tokens (it may be huge when eos_id ends the rows).
    out[first + b].reserve(static_cast<size_t>(std::min<int64_t>(opt.max_new_tokens, 256)));
  }
  if (opt.max_new_tokens == 0) return;

  auto t0 = clock::now();
  at::Tensor x;  // [B, Lmax, hidden], rows right-aligned, zeros before them
  if (B == 1) {
    x = embeds[first].unsqueeze(0);
  } else {
    x = at::zeros({B, Lmax, embeds[first].size(1)}, embeds[first].options());
    for (size_t b = 0; b < n; ++b)
      x[b].narrow(0, pad[b], embeds[first + b].size(0)).copy_(embeds[first + b]);
  }
  // The cache's bound (its KV storage grows as tokens are written): prompt + new tokens, saturated
  // for models without a context limit (generate_batch checked it against max_context()).
  const int64_t max_len = opt.max_new_tokens > std::numeric_limits<int64_t>::max() - Lmax
                              ? std::numeric_limits<int64_t>::max()
                              : Lmax + opt.max_new_tokens;
  auto cache = model.make_cache(B, max_len);
  if (padded) {
    auto* sc = dynamic_cast<models::LayerStackCache*>(cache.get());
    MVL_CHECK(sc,
              "generate_batch: this model's cache does not support left padding; generate "
              "prompts of different lengths separately");
    sc->left_pad = pad;
  }
  at::Tensor logits = model.forward_embeds(x, cache.get(), /*last_only=*/true);  // [B, 1, V]
  auto t1 = clock::now();

  std::vector<Sampler> samplers;
  samplers.reserve(n);
  for (size_t b = 0; b < n; ++b) samplers.emplace_back(opt.sampling);
  std::vector<char> done(n, 0);
  std::vector<int64_t> next(n, 0);
  size_t left = n;
  at::Tensor step = at::empty({B, 1}, at::kLong);
  int64_t* step_ids = step.data_ptr<int64_t>();
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    at::Tensor l = logits.to(at::kCPU, at::kFloat).contiguous().view({B, -1});  // [B, V]
    for (size_t b = 0; b < n; ++b) {
      if (done[b]) continue;
      const int64_t tok = samplers[b].sample(l[static_cast<int64_t>(b)]);
      out[first + b].push_back(tok);
      st.new_tokens += 1;
      if (on_token) on_token(static_cast<int64_t>(first + b), tok);
      next[b] = tok;
      if ((opt.eos_id && tok == *opt.eos_id) || i + 1 == opt.max_new_tokens) {
        done[b] = 1;
        --left;
        if (opt.eos_id) next[b] = *opt.eos_id;  // what a finished row keeps feeding
      }
    }
    if (left == 0) break;
    for (size_t b = 0; b < n; ++b) step_ids[b] = next[b];
    logits = model.forward(step, cache.get(), /*last_only=*/true);  // [B, 1, V]
  }
  auto t2 = clock::now();
  st.prefill_seconds += seconds(t0, t1);
  st.decode_seconds += seconds(t1, t2);
}

}  // namespace

void check_context(const models::CausalLM& model, const std::vector<int64_t>& prompt_lengths,
                   int64_t max_new_tokens) {
  MVL_CHECK(max_new_tokens >= 0, "--max-new-tokens must be >= 0, got ", max_new_tokens);
  const int64_t ctx = model.max_context();
  if (ctx <= 0 || max_new_tokens == 0 || prompt_lengths.empty()) return;
  const auto longest = static_cast<size_t>(
      std::max_element(prompt_lengths.begin(), prompt_lengths.end()) - prompt_lengths.begin());
  const int64_t P = prompt_lengths[longest];
  const std::string prompt = prompt_lengths.size() == 1
                                 ? "the prompt (" + std::to_string(P) + " tokens)"
                                 : "the longest prompt (prompt " + std::to_string(longest) + ", " +
                                       std::to_string(P) + " tokens)";
  // Compared by subtraction: no overflow for any max_new_tokens.
  MVL_CHECK(P < ctx, "--max-new-tokens ", max_new_tokens, ": ", prompt,
            " leaves no room in the model's context of ", ctx, " tokens (",
            model.max_context_source(), "): shorten the prompt");
  MVL_CHECK(max_new_tokens <= ctx - P, "--max-new-tokens ", max_new_tokens, ": ", prompt, " + ",
            max_new_tokens, " new tokens exceed the model's context of ", ctx, " tokens (",
            model.max_context_source(), "): give --max-new-tokens ", ctx - P, " or less");
}

std::vector<std::vector<int64_t>> generate_batch(models::CausalLM& model,
                                                 const std::vector<at::Tensor>& prompt_embeds,
                                                 const GenerateOptions& opt,
                                                 const RowTokenFn& on_token, GenerateStats* stats) {
  MVL_CHECK(!prompt_embeds.empty(), "generate: no prompts were given");
  MVL_CHECK(opt.max_new_tokens >= 0, "--max-new-tokens must be >= 0, got ", opt.max_new_tokens);
  MVL_CHECK(opt.batch_size >= 0, "--batch-size must be >= 0 (0 = all prompts in one batch), got ",
            opt.batch_size);
  (void)Sampler(opt.sampling);  // validates the sampling options before any work
  const int64_t H = model.hidden_size();
  std::vector<int64_t> lengths;
  for (size_t i = 0; i < prompt_embeds.size(); ++i) {
    const at::Tensor& e = prompt_embeds[i];
    MVL_CHECK(e.defined() && e.dim() == 2 && e.size(1) == H, "generate: prompt ", i,
              " must be [length, ", H, "] embeddings, got ",
              e.defined() ? e.sizes() : at::IntArrayRef{});
    MVL_CHECK(e.size(0) > 0,
              prompt_embeds.size() == 1 ? std::string("the prompt") : "prompt " + std::to_string(i),
              " is empty: give at least one token (e.g. --ids 0)");
    MVL_CHECK(e.scalar_type() == prompt_embeds[0].scalar_type() &&
                  e.device() == prompt_embeds[0].device(),
              "generate: prompt ", i, " has another dtype or device than prompt 0");
    lengths.push_back(e.size(0));
  }
  check_context(model, lengths, opt.max_new_tokens);
  c10::InferenceMode guard;
  std::vector<std::vector<int64_t>> out(prompt_embeds.size());
  GenerateStats st;
  const size_t per = opt.batch_size > 0 ? static_cast<size_t>(opt.batch_size) : out.size();
  for (size_t first = 0; first < out.size(); first += per)
    run_batch(model, prompt_embeds, first, std::min(per, out.size() - first), opt, on_token, st,
              out);
  if (stats) *stats = st;
  return out;
}

std::vector<std::vector<int64_t>> generate_batch_ids(
    models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
    const GenerateOptions& opt, const RowTokenFn& on_token, GenerateStats* stats) {
  MVL_CHECK(!prompts.empty(), "generate: no prompts were given");
  std::vector<int64_t> lengths;
  for (const auto& p : prompts) lengths.push_back(static_cast<int64_t>(p.size()));
  check_context(model, lengths, opt.max_new_tokens);  // before embedding anything
  c10::InferenceMode guard;
  std::vector<at::Tensor> embeds;
  embeds.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto& p = prompts[i];
    MVL_CHECK(!p.empty(),
              prompts.size() == 1 ? std::string("the prompt") : "prompt " + std::to_string(i),
              " is empty: give at least one token (e.g. --ids 0)");
    at::Tensor ids = at::tensor(p, at::kLong).view({1, static_cast<int64_t>(p.size())});
    embeds.push_back(model.embed(ids)[0]);  // [L_i, hidden]
  }
  return generate_batch(model, embeds, opt, on_token, stats);
}

std::vector<int64_t> generate(models::CausalLM& model, const std::vector<int64_t>& prompt,
                              const GenerateOptions& opt,
                              const std::function<void(int64_t)>& on_token, GenerateStats* stats) {
  RowTokenFn row_fn;
  if (on_token) row_fn = [&on_token](int64_t, int64_t id) { on_token(id); };
  GenerateOptions one = opt;
  one.batch_size = 0;
  return std::move(generate_batch_ids(model, {prompt}, one, row_fn, stats)[0]);
}

}  // namespace mambavl::generate
