// Generation length (issue 10, class 2): nothing is sized by max_new_tokens up front. Attention KV
// caches grow as tokens are written (and decoding across a growth equals the full forward and a
// cache allocated in full up front, bit for bit); GPT-NeoX refuses prompt + max_new_tokens beyond
// max_position_embeddings before any work, without overflow for values near INT64_MAX; Mamba and
// hybrid models have no limit and a huge max_new_tokens ended by eos costs nothing.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli_run.h"
#include "common/error.h"
#include "generate/generate.h"
#include "models/attention.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::models;
using testing_util::close;
using testing_util::expect_error;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kCap0 = KVCache::kInitialCapacity;

void perturb(CausalLM& m, double scale) {
  at::NoGradGuard ng;
  for (auto& p : m.module().parameters()) p.add_(at::randn_like(p) * scale);
}

GPTNeoXConfig neox_cfg(int64_t context) {
  GPTNeoXConfig c;
  c.vocab_size = 60;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 48;
  c.rotary_pct = 0.5;  // rotary dim 4
  c.max_position_embeddings = context;
  return c;
}

std::unique_ptr<CausalLM> neox_model(int64_t context = 2048) {
  at::manual_seed(11);
  auto m = std::make_unique<GPTNeoXLM>(neox_cfg(context));
  m->init_weights(5);
  perturb(*m, 0.1);
  return m;
}

// 4 layers, attention at 1 and 3 (GQA 4 / 2 heads, head_dim 8, rotary on 4 dims).
std::unique_ptr<CausalLM> hybrid_model() {
  at::manual_seed(11);
  auto j = nlohmann::json::parse(R"({
    "d_model": 32, "d_intermediate": 0, "n_layer": 4, "vocab_size": 50,
    "ssm_cfg": {"layer": "Mamba1", "d_state": 5},
    "attn_layer_idx": [1, 3],
    "attn_cfg": {"num_heads": 4, "num_heads_kv": 2, "rotary_emb_dim": 4, "rotary_emb_base": 1000.0,
                 "causal": true},
    "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
    "pad_vocab_size_multiple": 8, "tie_embeddings": true})");
  auto m = std::make_unique<MambaLM>(MambaConfig::from_json(j, "hybrid.json"));
  m->init_weights(6);
  perturb(*m, 0.1);
  return m;
}

std::unique_ptr<CausalLM> mamba_model() {
  at::manual_seed(11);
  MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 64;
  c.d_state = 4;
  c.d_inner = 0;
  c.dt_rank = 0;
  auto m = std::make_unique<MambaLM>(c);
  m->init_weights(4);
  perturb(*m, 0.3);
  return m;
}

std::unique_ptr<CausalLM> make_model(const std::string& kind) {
  if (kind == "neox") return neox_model();
  if (kind == "hybrid") return hybrid_model();
  return mamba_model();
}

std::vector<KVCache*> kv_caches(LMCache& c) {
  std::vector<KVCache*> out;
  for (auto& l : dynamic_cast<LayerStackCache&>(c).layers)
    if (auto* kv = dynamic_cast<KVCache*>(l.get())) out.push_back(kv);
  return out;
}

// Feeds x [B, T, hidden] through `cache` in pieces of the given sizes (summing to T), with the
// stack's left padding `pad` (empty = none); returns the logits [B, T, V] and each piece's end
// capacity of the first KV cache (0 for a model without one).
at::Tensor run_pieces(CausalLM& m, LMCache& cache, const at::Tensor& x,
                      const std::vector<int64_t>& pieces, const std::vector<int64_t>& pad,
                      std::vector<int64_t>* capacities = nullptr) {
  dynamic_cast<LayerStackCache&>(cache).left_pad = pad;
  std::vector<at::Tensor> parts;
  int64_t t = 0;
  for (int64_t n : pieces) {
    parts.push_back(m.forward_embeds(x.narrow(1, t, n), &cache));
    t += n;
    if (capacities) {
      auto kvs = kv_caches(cache);
      capacities->push_back(kvs.empty() ? 0 : kvs[0]->capacity());
    }
  }
  EXPECT_EQ(t, x.size(1));
  return at::cat(parts, 1);
}

// A prefill of 200, 100 single steps (crossing 256), a chunk of 250 (crossing 512: one growth to
// max(needed, 2 * capacity)) and 50 single steps: 600 tokens.
std::vector<int64_t> growth_pieces() {
  std::vector<int64_t> p = {200};
  for (int i = 0; i < 100; ++i) p.push_back(1);
  p.push_back(250);
  for (int i = 0; i < 50; ++i) p.push_back(1);
  return p;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The KV cache itself

TEST(KVCacheGrowth, StartsSmallGrowsGeometricallyKeepsTokensAndStopsAtTheLimit) {
  AttentionCore core(4, 2, 8, 4, 1000.0, true);
  // A huge limit allocates only the initial capacity.
  auto huge = core.make_cache(2, kMax, at::kFloat, at::kCPU);
  EXPECT_EQ(huge->k.sizes(), at::IntArrayRef({2, 2, kCap0, 8}));
  EXPECT_EQ(huge->max_len(), kMax);
  // A small limit allocates just that.
  auto small = core.make_cache(1, 5, at::kFloat, at::kCPU);
  EXPECT_EQ(small->capacity(), 5);

  auto kv = core.make_cache(2, 700, at::kFloat, at::kCPU);
  EXPECT_EQ(kv->capacity(), kCap0);
  at::Tensor k = at::randn({2, 2, kCap0, 8}), v = at::randn({2, 2, kCap0, 8});
  kv->k.copy_(k);
  kv->v.copy_(v);
  kv->len = kCap0;
  kv->reserve(kCap0);  // fits: no reallocation
  EXPECT_EQ(kv->capacity(), kCap0);
  kv->reserve(kCap0 + 1);  // doubles
  EXPECT_EQ(kv->capacity(), 2 * kCap0);
  EXPECT_TRUE(at::equal(kv->k.narrow(2, 0, kCap0), k));
  EXPECT_TRUE(at::equal(kv->v.narrow(2, 0, kCap0), v));
  EXPECT_EQ(kv->k.narrow(2, kCap0, kCap0).abs().max().item<float>(), 0.0f);
  kv->reserve(2 * kCap0 + 1);  // doubling would pass the limit: the limit
  EXPECT_EQ(kv->capacity(), 700);
  EXPECT_TRUE(at::equal(kv->k.narrow(2, 0, kCap0), k));
  expect_error([&] { kv->reserve(701); }, {"overflow", "700", "701"});
  EXPECT_EQ(kv->capacity(), 700);

  // A request larger than twice the capacity grows straight to it.
  auto kv2 = core.make_cache(1, 10000, at::kFloat, at::kCPU);
  kv2->reserve(3000);
  EXPECT_EQ(kv2->capacity(), 3000);
}

TEST(KVCacheGrowth, LeftPadMaskFollowsTheGrowth) {
  AttentionCore core(4, 2, 8, 4, 1000.0, true);
  auto kv = core.make_cache(2, 1000, at::kFloat, at::kCPU);
  kv->set_left_pad({3, 0});
  ASSERT_EQ(kv->key_valid.sizes(), at::IntArrayRef({2, kCap0}));
  kv->reserve(kCap0 + 1);
  ASSERT_EQ(kv->key_valid.sizes(), at::IntArrayRef({2, 2 * kCap0}));
  at::Tensor want = at::arange(2 * kCap0, at::kLong).unsqueeze(0) >=
                    at::tensor(std::vector<int64_t>{3, 0}, at::kLong).unsqueeze(1);
  EXPECT_TRUE(at::equal(kv->key_valid, want));
}

// ---------------------------------------------------------------------------------------------
// Decoding across growths == the full forward, and == a cache allocated in full up front

class GrowthDecode : public ::testing::TestWithParam<std::string> {};

TEST_P(GrowthDecode, EqualsFullForwardAndPreallocatedCache) {
  auto m = make_model(GetParam());
  c10::InferenceMode guard;
  const int64_t T = 600;
  at::Tensor ids = at::randint(0, 50, {1, T}, at::kLong);
  at::Tensor x = m->embed(ids);  // [1, T, hidden]
  at::Tensor full = m->forward(ids);

  auto grown = m->make_cache(1, 2048);
  std::vector<int64_t> caps;
  at::Tensor got = run_pieces(*m, *grown, x, growth_pieces(), {}, &caps);
  EXPECT_EQ(grown->length(), T);
  // Capacities: 256 after the prefill of 200, 512 once 257 tokens are written, 1024 after the
  // chunk that reaches 550.
  EXPECT_EQ(caps.front(), kCap0);
  EXPECT_EQ(caps[100], 2 * kCap0);  // after 300 tokens
  EXPECT_EQ(caps.back(), 4 * kCap0);
  EXPECT_TRUE(close(got, full, 1e-4, 1e-4));

  // The old behaviour: every KV cache allocated for all 600 tokens before the prefill.
  auto pre = m->make_cache(1, T);
  for (KVCache* kv : kv_caches(*pre)) kv->reserve(T);
  at::Tensor want = run_pieces(*m, *pre, x, growth_pieces(), {});
  EXPECT_TRUE(at::equal(got, want)) << "growth changed the decode results";
}

// Left-padded batch (prompts of 250 and 3 tokens) decoding 300 steps: the pad mask grows with the
// cache, every row equals itself alone, and equals a cache allocated in full.
TEST_P(GrowthDecode, PaddedBatchAcrossGrowthEqualsAlone) {
  auto m = make_model(GetParam());
  c10::InferenceMode guard;
  const int64_t H = m->hidden_size(), steps = 300;
  const std::vector<int64_t> lens = {250, 3};
  const int64_t Lmax = 250, B = 2;
  at::Tensor step_ids = at::randint(0, 50, {B, steps}, at::kLong);
  std::vector<at::Tensor> prompt_ids;
  at::Tensor x = at::randn({B, Lmax, H});  // pad positions hold anything
  std::vector<int64_t> pad;
  for (int64_t b = 0; b < B; ++b) {
    prompt_ids.push_back(at::randint(0, 50, {1, lens[b]}, at::kLong));
    pad.push_back(Lmax - lens[b]);
    x[b].narrow(0, pad[b], lens[b]).copy_(m->embed(prompt_ids[b])[0]);
  }
  at::Tensor xs = at::cat({x, m->embed(step_ids)}, 1);  // [B, Lmax + steps, H]
  std::vector<int64_t> pieces(1 + steps, 1);
  pieces[0] = Lmax;

  auto grown = m->make_cache(B, Lmax + steps);
  at::Tensor got = run_pieces(*m, *grown, xs, pieces, pad);  // [B, Lmax + steps, V]
  for (KVCache* kv : kv_caches(*grown)) EXPECT_EQ(kv->capacity(), Lmax + steps);

  auto pre = m->make_cache(B, Lmax + steps);
  for (KVCache* kv : kv_caches(*pre)) kv->reserve(Lmax + steps);
  EXPECT_TRUE(at::equal(got, run_pieces(*m, *pre, xs, pieces, pad)));

  for (int64_t b = 0; b < B; ++b) {
    at::Tensor alone_ids = at::cat({prompt_ids[b], step_ids.narrow(0, b, 1)}, 1);
    at::Tensor alone = m->forward(alone_ids)[0];  // [lens[b] + steps, V]
    EXPECT_TRUE(close(got[b].narrow(0, pad[b], lens[b] + steps), alone, 1e-4, 1e-4)) << "row " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(AttentionBackbones, GrowthDecode, ::testing::Values("neox", "hybrid"));

// ---------------------------------------------------------------------------------------------
// max_new_tokens bounds

TEST(GenerateLength, NeoXContextBoundIsCheckedWithoutOverflow) {
  auto m = neox_model(/*context=*/64);
  generate::GenerateOptions o;
  o.sampling.greedy = true;
  const std::vector<int64_t> prompt = {1, 2, 3, 4, 5};
  for (int64_t n : {kMax, kMax - 3, kMax - 5, int64_t{100000000}, int64_t{60}}) {
    o.max_new_tokens = n;
    expect_error(
        [&] { generate::generate(*m, prompt, o); },
        {"--max-new-tokens " + std::to_string(n), "the prompt (5 tokens)", "context of 64 tokens",
         "max_position_embeddings", "give --max-new-tokens 59 or less"});
  }
  // Exactly the context: generates every token.
  o.max_new_tokens = 59;
  EXPECT_EQ(generate::generate(*m, prompt, o).size(), 59u);
  // Batches: the longest prompt is named.
  o.max_new_tokens = 30;
  expect_error(
      [&] {
        generate::generate_batch_ids(*m, {{1, 2}, std::vector<int64_t>(40, 1)}, o);
      },
      {"the longest prompt (prompt 1, 40 tokens)", "give --max-new-tokens 24 or less"});
  // A prompt that fills the context.
  o.max_new_tokens = 1;
  expect_error([&] { generate::generate(*m, std::vector<int64_t>(64, 1), o); },
               {"leaves no room", "context of 64 tokens", "shorten the prompt"});
  // max_new_tokens 0 generates nothing and needs no room.
  o.max_new_tokens = 0;
  EXPECT_TRUE(generate::generate(*m, std::vector<int64_t>(64, 1), o).empty());
  // The embeddings entry point checks the same.
  o.max_new_tokens = kMax;
  at::Tensor e;
  {
    c10::InferenceMode g;
    e = m->embed(at::tensor(prompt, at::kLong).view({1, 5}))[0];
  }
  expect_error([&] { generate::generate_batch(*m, {e}, o); },
               {"--max-new-tokens", "context of 64 tokens"});
}

// Mamba and hybrid: no context limit, and a huge max_new_tokens that eos ends costs nothing (no
// reservation, no overflow, a KV cache of its initial capacity).
class UnboundedGenerate : public ::testing::TestWithParam<std::string> {};

TEST_P(UnboundedGenerate, HugeMaxNewTokensEndedByEos) {
  auto m = make_model(GetParam());
  EXPECT_EQ(m->max_context(), 0);
  const std::vector<int64_t> prompt = {3, 1, 4, 1, 5};
  generate::GenerateOptions o;
  o.sampling.greedy = true;
  o.max_new_tokens = 6;
  const auto six = generate::generate(*m, prompt, o);
  ASSERT_EQ(six.size(), 6u);
  // A failure must not run for ever: more than 50 tokens throws out of the loop.
  int64_t produced = 0;
  auto guard = [&](int64_t, int64_t) {
    if (++produced > 50) throw std::runtime_error("eos did not end the generation");
  };
  for (int64_t n : {kMax, kMax - 3}) {
    o.max_new_tokens = n;
    o.eos_id = six[2];  // the third token (or an earlier equal one) ends it
    produced = 0;
    const auto got = generate::generate_batch_ids(*m, {prompt}, o, guard)[0];
    ASSERT_FALSE(got.empty());
    ASSERT_LE(got.size(), 3u);
    EXPECT_EQ(got, std::vector<int64_t>(six.begin(), six.begin() + got.size()));
    EXPECT_EQ(got.back(), six[2]);
    // Batched with left padding too: the second row, the prompt and its first two tokens, ends at
    // its first token.
    std::vector<int64_t> longer = prompt;
    longer.insert(longer.end(), six.begin(), six.begin() + 2);
    produced = 0;
    auto rows = generate::generate_batch_ids(*m, {prompt, longer}, o, guard);
    EXPECT_EQ(rows[0], got);
    EXPECT_EQ(rows[1], std::vector<int64_t>{six[2]});
  }
  // make_cache with the saturated bound allocates only the initial capacity.
  auto c = m->make_cache(2, kMax);
  for (KVCache* kv : kv_caches(*c)) EXPECT_EQ(kv->capacity(), kCap0);
}

INSTANTIATE_TEST_SUITE_P(NoContextLimit, UnboundedGenerate, ::testing::Values("mamba", "hybrid"));

TEST(GenerateLength, CacheBoundChecksDoNotOverflow) {
  auto m = neox_model();
  c10::InferenceMode guard;
  auto cache = m->make_cache(1, kMax);
  m->forward(at::ones({1, 3}, at::kLong), cache.get());
  m->forward(at::ones({1, 1}, at::kLong), cache.get());
  EXPECT_EQ(cache->length(), 4);
  auto tight = m->make_cache(1, 4);
  m->forward(at::ones({1, 4}, at::kLong), tight.get());
  expect_error([&] { m->forward(at::ones({1, 1}, at::kLong), tight.get()); }, {"overflow"});
}

// ---------------------------------------------------------------------------------------------
// The CLI: one error line, bounded time and memory

class RobustGenerateCli : public testing_util::TempDirTest {
 protected:
  RobustGenerateCli() : TempDirTest("mambavl_rgen_") {}
};

TEST_F(RobustGenerateCli, NeoXMaxNewTokensBeyondTheContextIsOneErrorLine) {
  const fs::path m = dir / "neox";
  neox_model(/*context=*/64)->save(m);
  const std::string base = "generate --model " + m.string() + " --ids 1,2,3 --greedy --print-ids";
  for (const std::string n : {"9223372036854775807", "9223372036854775804", "100000000", "62"}) {
    auto r = testing_util::run_cli_limited(base + " --max-new-tokens " + n);
    testing_util::expect_one_error_line(
        r, {"--max-new-tokens " + n, "the prompt (3 tokens)", "context of 64 tokens",
            "max_position_embeddings in " + (m / "config.json").string(),
            "give --max-new-tokens 61 or less"});
  }
  // The largest value that fits generates every token (run_cli: stdout is the ids).
  auto r = testing_util::run_cli(base + " --max-new-tokens 61");
  ASSERT_EQ(r.code, 0) << r.out;
  int commas = 0;
  for (char ch : r.out) commas += ch == ',';
  EXPECT_EQ(commas, 60) << r.out;
}

TEST_F(RobustGenerateCli, VlmMaxNewTokensBeyondTheContextIsOneErrorLine) {
  auto r = testing_util::run_cli("make-data scenes --n 1 --seed 0 --out " + (dir / "s").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = testing_util::run_cli("init --preset pythia-vl-tiny --tokenizer " +
                            (dir / "s/tokenizer.json").string() + " --out " + (dir / "m").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string img = (dir / "s/images/scene_000000.png").string();
  r = testing_util::run_cli_limited("generate --model " + (dir / "m").string() + " --image " + img +
                                    " --prompt hi --max-new-tokens 9223372036854775807");
  testing_util::expect_one_error_line(r, {"--max-new-tokens 9223372036854775807",
                                          "context of 4096 tokens", "max_position_embeddings"});
}
