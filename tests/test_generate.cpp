// Sampling, cached generation and NLL scoring, on a small random Mamba model.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "eval/perplexity.h"
#include "generate/generate.h"
#include "models/mamba.h"

using namespace mambavl;

namespace {
std::unique_ptr<models::MambaLM> small_model() {
  models::MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 64;
  c.d_state = 4;
  c.d_inner = 0;
  c.dt_rank = 0;
  auto m = std::make_unique<models::MambaLM>(c);
  m->init_weights(4);
  at::NoGradGuard ng;
  for (auto& p : m->module().parameters()) p.add_(at::randn_like(p) * 0.3);
  return m;
}
}  // namespace

TEST(Sampler, GreedyAndTopK1AreArgmax) {
  at::Tensor l = at::tensor({0.1f, 3.0f, -1.0f, 2.9f});
  generate::SamplingOptions g;
  g.greedy = true;
  EXPECT_EQ(generate::Sampler(g).sample(l), 1);
  generate::SamplingOptions k;
  k.top_k = 1;
  k.seed = 5;
  generate::Sampler s(k);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(l), 1);
  generate::SamplingOptions p;
  p.top_p = 1e-6;
  generate::Sampler sp(p);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sp.sample(l), 1);
}

TEST(Sampler, FrequenciesFollowSoftmaxAndTruncation) {
  at::Tensor l = at::log(at::tensor({0.6f, 0.25f, 0.1f, 0.05f}));
  generate::SamplingOptions o;
  o.seed = 1;
  generate::Sampler s(o);
  std::vector<int> n(4);
  const int T = 20000;
  for (int i = 0; i < T; ++i) n[s.sample(l)]++;
  EXPECT_NEAR(n[0] / double(T), 0.6, 0.02);
  EXPECT_NEAR(n[1] / double(T), 0.25, 0.02);
  EXPECT_NEAR(n[3] / double(T), 0.05, 0.01);
  // top-p 0.8 keeps {0.6, 0.25}: renormalised 0.706 / 0.294, never 2 or 3
  o.top_p = 0.8;
  generate::Sampler sp(o);
  std::vector<int> m(4);
  for (int i = 0; i < T; ++i) m[sp.sample(l)]++;
  EXPECT_EQ(m[2] + m[3], 0);
  EXPECT_NEAR(m[0] / double(T), 0.6 / 0.85, 0.02);
  // top-k 3 never yields the least likely token
  generate::SamplingOptions k;
  k.top_k = 3;
  generate::Sampler sk(k);
  for (int i = 0; i < 5000; ++i) EXPECT_NE(sk.sample(l), 3);
}

TEST(Sampler, SameSeedSameSequence) {
  at::Tensor l = at::randn({100});
  generate::SamplingOptions o;
  o.seed = 42;
  o.temperature = 0.7;
  generate::Sampler a(o), b(o);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(l), b.sample(l));
}

TEST(Sampler, BadOptionsAreErrors) {
  generate::SamplingOptions o;
  o.temperature = 0;
  EXPECT_THROW(generate::Sampler{o}, Error);
  o.temperature = 1;
  o.top_p = 1.5;
  EXPECT_THROW(generate::Sampler{o}, Error);
}

TEST(Generate, GreedyCachedGenerationMatchesFullForwardArgmax) {
  auto m = small_model();
  std::vector<int64_t> prompt = {3, 17, 42, 5};
  generate::GenerateOptions o;
  o.max_new_tokens = 12;
  o.sampling.greedy = true;
  std::vector<int64_t> streamed;
  auto out = generate::generate(*m, prompt, o, [&](int64_t t) { streamed.push_back(t); });
  ASSERT_EQ(out.size(), 12u);
  EXPECT_EQ(streamed, out);
  // Each generated token is the argmax of a full (uncached) forward over everything before it.
  std::vector<int64_t> seq = prompt;
  at::NoGradGuard ng;
  for (int64_t tok : out) {
    at::Tensor ids = at::tensor(seq, at::kLong).view({1, -1});
    EXPECT_EQ(m->forward(ids).select(1, ids.size(1) - 1).argmax(-1).item<int64_t>(), tok);
    seq.push_back(tok);
  }
}

TEST(Generate, StopsAtEos) {
  auto m = small_model();
  generate::GenerateOptions o;
  o.max_new_tokens = 30;
  o.sampling.greedy = true;
  auto free_run = generate::generate(*m, {1, 2, 3}, o);
  o.eos_id = free_run[2];
  auto out = generate::generate(*m, {1, 2, 3}, o);
  ASSERT_LE(out.size(), 3u);
  EXPECT_EQ(out.back(), free_run[2]);
  EXPECT_THROW(generate::generate(*m, {}, o), Error);
}

TEST(Perplexity, EqualsLogSoftmaxOfFullForward) {
  auto m = small_model();
  std::vector<int64_t> ids = {5, 9, 1, 33, 60, 2, 2, 7, 11, 40};
  at::NoGradGuard ng;
  at::Tensor logp = at::log_softmax(m->forward(at::tensor(ids, at::kLong).view({1, -1})), -1)[0];
  double want = 0;
  for (size_t t = 1; t < ids.size(); ++t) want -= logp[t - 1][ids[t]].item<double>();
  want /= double(ids.size() - 1);
  for (int64_t chunk : {1, 3, 256}) {
    auto r = eval::mean_nll(*m, ids, chunk);
    EXPECT_NEAR(r.nll, want, 1e-5) << chunk;
    EXPECT_NEAR(r.ppl, std::exp(want), 1e-4 * std::exp(want));
    EXPECT_EQ(r.tokens, 9);
  }
  EXPECT_THROW(eval::mean_nll(*m, {3}), Error);
}
