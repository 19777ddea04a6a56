// Batched generation of prompts of different lengths (left padding, LayerStackCache::left_pad) for
// every backbone: the padded prefill, greedy and sampled generation and eos handling each equal
// generating every prompt alone; embeddings in equal ids in; generate() is the old loop.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_run.h"
#include "common/error.h"
#include "generate/generate.h"
#include "io/tokenizer.h"
#include "kernels/backend.h"
#include "models/attention.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "models/registry.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::models;
using testing_util::close;
using testing_util::expect_error;
namespace fs = std::filesystem;

namespace {

void perturb(CausalLM& m, double scale) {
  at::NoGradGuard ng;
  for (auto& p : m.module().parameters()) p.add_(at::randn_like(p) * scale);
}

std::unique_ptr<CausalLM> mamba_model(kernels::Backend backend) {
  MambaConfig c;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = 64;
  c.d_state = 4;
  c.d_conv = 4;
  c.d_inner = 0;
  c.dt_rank = 0;
  auto m = std::make_unique<MambaLM>(c);
  m->init_weights(4);
  perturb(*m, 0.3);
  m->set_backend(backend);
  return m;
}

std::unique_ptr<CausalLM> neox_model(bool parallel) {
  GPTNeoXConfig c;
  c.vocab_size = 60;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 48;
  c.rotary_pct = 0.5;  // rotary dim 4
  c.use_parallel_residual = parallel;
  auto m = std::make_unique<GPTNeoXLM>(c);
  m->init_weights(5);
  perturb(*m, 0.1);
  return m;
}

// 4 layers, attention at 1 and 3 (GQA 4 / 2 heads, head_dim 8, rotary on 4 dims).
std::unique_ptr<CausalLM> hybrid_model() {
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

std::unique_ptr<CausalLM> make_model(const std::string& kind) {
  at::manual_seed(11);
  if (kind == "mamba") return mamba_model(kernels::Backend::Auto);
  if (kind == "mamba_reference") return mamba_model(kernels::Backend::Reference);
  if (kind == "mamba_fused") return mamba_model(kernels::Backend::Fused);
  if (kind == "neox_parallel") return neox_model(true);
  if (kind == "neox_sequential") return neox_model(false);
  if (kind == "hybrid") return hybrid_model();
  throw std::runtime_error("unknown model kind " + kind);
}

// Deterministic prompts of lengths 1, 5, 9, 13 (ids below `vocab`), longest not first.
std::vector<std::vector<int64_t>> prompts(int64_t vocab) {
  std::vector<std::vector<int64_t>> out;
  uint64_t s = 12345;
  for (int64_t len : {5, 1, 13, 9}) {
    std::vector<int64_t> p;
    for (int64_t t = 0; t < len; ++t) {
      s = s * 6364136223846793005ULL + 1442695040888963407ULL;
      p.push_back(static_cast<int64_t>((s >> 33) % static_cast<uint64_t>(vocab)));
    }
    out.push_back(p);
  }
  return out;
}

at::Tensor ids_tensor(const std::vector<int64_t>& p) {
  return at::tensor(p, at::kLong).view({1, static_cast<int64_t>(p.size())});
}

// The generation loop as it was before batching (one prompt, ids, batch 1): generate() must still
// give exactly this.
std::vector<int64_t> legacy_generate(CausalLM& model, const std::vector<int64_t>& prompt,
                                     const generate::GenerateOptions& opt) {
  c10::InferenceMode guard;
  generate::Sampler sampler(opt.sampling);
  const int64_t P = static_cast<int64_t>(prompt.size());
  auto cache = model.make_cache(1, P + opt.max_new_tokens);
  std::vector<int64_t> out;
  at::Tensor logits = model.forward(ids_tensor(prompt), cache.get(), true);
  at::Tensor step = at::empty({1, 1}, at::kLong);
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int64_t tok = sampler.sample(logits.view({-1}));
    out.push_back(tok);
    if ((opt.eos_id && tok == *opt.eos_id) || i + 1 == opt.max_new_tokens) break;
    step.fill_(tok);
    logits = model.forward(step, cache.get(), true);
  }
  return out;
}

class BatchedGenerate : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model = make_model(GetParam());
    ps = prompts(std::min<int64_t>(model->vocab_size(), 50));
  }
  std::vector<std::vector<int64_t>> alone(const generate::GenerateOptions& o) {
    std::vector<std::vector<int64_t>> out;
    for (const auto& p : ps) out.push_back(generate::generate(*model, p, o));
    return out;
  }
  std::unique_ptr<CausalLM> model;
  std::vector<std::vector<int64_t>> ps;
};

}  // namespace

// (a) Every real position of each row of the padded prefill, and one decode step after it, give
// the logits of the row alone, whatever the pad positions hold.
TEST_P(BatchedGenerate, PaddedPrefillAndStepLogitsEqualAlone) {
  c10::InferenceMode guard;
  const int64_t B = static_cast<int64_t>(ps.size()), H = model->hidden_size();
  int64_t Lmax = 0;
  for (auto& p : ps) Lmax = std::max<int64_t>(Lmax, static_cast<int64_t>(p.size()));
  // Pad positions hold arbitrary embeddings: nothing of them may reach a real position.
  at::Tensor x = at::randn({B, Lmax, H});
  std::vector<int64_t> pad;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = static_cast<int64_t>(ps[b].size());
    pad.push_back(Lmax - L);
    x[b].narrow(0, Lmax - L, L).copy_(model->embed(ids_tensor(ps[b]))[0]);
  }
  auto cache = model->make_cache(B, Lmax + 2);
  dynamic_cast<LayerStackCache&>(*cache).left_pad = pad;
  at::Tensor batch = model->forward_embeds(x, cache.get());  // [B, Lmax, V]
  std::vector<int64_t> next_ids = {3, 7, 1, 2};
  at::Tensor step = model->forward(at::tensor(next_ids, at::kLong).view({B, 1}), cache.get());
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = static_cast<int64_t>(ps[b].size());
    auto c1 = model->make_cache(1, L + 2);
    at::Tensor one = model->forward(ids_tensor(ps[b]), c1.get())[0];  // [L, V]
    EXPECT_TRUE(close(batch[b].narrow(0, pad[b], L), one, 1e-5, 1e-5)) << "row " << b;
    at::Tensor one_step = model->forward(at::full({1, 1}, next_ids[b], at::kLong), c1.get())[0];
    EXPECT_TRUE(close(step[b], one_step, 1e-5, 1e-5)) << "row " << b << " step";
    // Attention layers hold the keys (after rotary: each row rotated at its own positions) and
    // values of the row alone at the row's real positions.
    auto& stack = dynamic_cast<LayerStackCache&>(*cache);
    auto& alone_stack = dynamic_cast<LayerStackCache&>(*c1);
    for (size_t i = 0; i < stack.layers.size(); ++i) {
      auto* kv = dynamic_cast<KVCache*>(stack.layers[i].get());
      if (!kv) continue;
      auto& kv1 = dynamic_cast<KVCache&>(*alone_stack.layers[i]);
      EXPECT_TRUE(
          close(kv->k[b].narrow(1, pad[b], L + 1), kv1.k[0].narrow(1, 0, L + 1), 1e-5, 1e-5))
          << "row " << b << " layer " << i << " keys";
      EXPECT_TRUE(
          close(kv->v[b].narrow(1, pad[b], L + 1), kv1.v[0].narrow(1, 0, L + 1), 1e-5, 1e-5))
          << "row " << b << " layer " << i << " values";
    }
  }
}

// (b) Greedy: each row's ids equal the prompt generated alone; streaming reports them per row.
TEST_P(BatchedGenerate, GreedyEqualsAlone) {
  generate::GenerateOptions o;
  o.max_new_tokens = 10;
  o.sampling.greedy = true;
  std::vector<std::vector<int64_t>> streamed(ps.size());
  generate::GenerateStats st;
  auto out = generate::generate_batch_ids(
      *model, ps, o, [&](int64_t row, int64_t id) { streamed.at(row).push_back(id); }, &st);
  EXPECT_EQ(out, alone(o));
  EXPECT_EQ(streamed, out);
  EXPECT_EQ(st.prompt_tokens, 1 + 5 + 9 + 13);
  EXPECT_EQ(st.new_tokens, 40);
}

// (c) Sampling with a seed: each row has its own sampler seeded alike, so it equals alone too;
// batches of 3 rows (batch_size) give the same.
TEST_P(BatchedGenerate, SeededSamplingEqualsAlone) {
  generate::GenerateOptions o;
  o.max_new_tokens = 8;
  o.sampling.temperature = 0.9;
  o.sampling.top_p = 0.95;
  o.sampling.seed = 7;
  const auto want = alone(o);
  EXPECT_EQ(generate::generate_batch_ids(*model, ps, o), want);
  o.batch_size = 3;
  EXPECT_EQ(generate::generate_batch_ids(*model, ps, o), want);
}

// (d) eos stops one row (its output ends with eos) while the others keep going, each as alone.
TEST_P(BatchedGenerate, EosStopsOneRowOthersContinue) {
  generate::GenerateOptions o;
  o.max_new_tokens = 8;
  o.sampling.greedy = true;
  const auto free_run = alone(o);
  // A token that row r emits second but that some other row never emits.
  std::optional<int64_t> eos;
  for (size_t r = 0; r < ps.size() && !eos; ++r) {
    const int64_t cand = free_run[r][1];
    if (free_run[r][0] == cand) continue;
    for (size_t q = 0; q < ps.size(); ++q)
      if (q != r && std::find(free_run[q].begin(), free_run[q].end(), cand) == free_run[q].end())
        eos = cand;
  }
  ASSERT_TRUE(eos) << "no suitable eos token in these runs";
  o.eos_id = eos;
  auto out = generate::generate_batch_ids(*model, ps, o);
  EXPECT_EQ(out, alone(o));
  size_t stopped = 0, full = 0;
  for (auto& row : out) {
    if (row.size() == 2 && row.back() == *eos) ++stopped;
    if (row.size() == 8) ++full;
  }
  EXPECT_GE(stopped, 1u);
  EXPECT_GE(full, 1u);
}

// (e) Embedding prompts equal id prompts; embeddings with arbitrary rows (as image features
// would be) equal the same embeddings generated alone.
TEST_P(BatchedGenerate, EmbedsEqualIdsAndArbitraryEmbedsEqualAlone) {
  generate::GenerateOptions o;
  o.max_new_tokens = 6;
  o.sampling.greedy = true;
  std::vector<at::Tensor> embeds;
  {
    c10::InferenceMode guard;
    for (auto& p : ps) embeds.push_back(model->embed(ids_tensor(p))[0]);
  }
  EXPECT_EQ(generate::generate_batch(*model, embeds, o),
            generate::generate_batch_ids(*model, ps, o));
  at::Tensor feat = at::randn({3, model->hidden_size()}) * 0.05;
  for (auto& e : embeds)
    if (e.size(0) >= 4) e = at::cat({e.narrow(0, 0, 1), feat, e.narrow(0, 4, e.size(0) - 4)});
  auto out = generate::generate_batch(*model, embeds, o);
  for (size_t i = 0; i < embeds.size(); ++i)
    EXPECT_EQ(out[i], generate::generate_batch(*model, {embeds[i]}, o)[0]) << "row " << i;
}

// generate() (one prompt) gives what the loop before batching gave, greedy and sampled.
TEST_P(BatchedGenerate, SinglePromptGenerateUnchanged) {
  generate::GenerateOptions o;
  o.max_new_tokens = 9;
  o.sampling.greedy = true;
  for (auto& p : ps) EXPECT_EQ(generate::generate(*model, p, o), legacy_generate(*model, p, o));
  o.sampling.greedy = false;
  o.sampling.top_k = 10;
  o.sampling.seed = 3;
  o.eos_id = 5;
  for (auto& p : ps) EXPECT_EQ(generate::generate(*model, p, o), legacy_generate(*model, p, o));
}

INSTANTIATE_TEST_SUITE_P(Backbones, BatchedGenerate,
                         ::testing::Values("mamba", "mamba_reference", "mamba_fused",
                                           "neox_parallel", "neox_sequential", "hybrid"));

TEST(BatchedGenerateErrors, BadPromptsAndPaddingAreErrors) {
  auto m = make_model("hybrid");
  generate::GenerateOptions o;
  o.max_new_tokens = 2;
  expect_error([&] { generate::generate_batch_ids(*m, {{1, 2}, {}}, o); }, {"prompt 1", "empty"});
  expect_error([&] { generate::generate_batch_ids(*m, {}, o); }, {"no prompts"});
  expect_error(
      [&] {
        generate::generate_batch(*m, {at::zeros({3, 7})}, o);
      },
      {"prompt 0", "[length, 32]"});
  expect_error([&] { generate::generate_batch_ids(*m, {{1, 2}, {1, 999}}, o); }, {"999"});
  o.batch_size = -1;
  expect_error([&] { generate::generate_batch_ids(*m, {{1}}, o); }, {"--batch-size"});

  c10::InferenceMode guard;
  at::Tensor x = m->embed(at::ones({2, 3}, at::kLong));
  auto cache = m->make_cache(2, 8);
  auto& sc = dynamic_cast<LayerStackCache&>(*cache);
  sc.left_pad = {0, 3};  // row 1 would have no real position
  expect_error([&] { m->forward_embeds(x, cache.get()); }, {"left_pad[1]", "[0, 3)"});
  sc.left_pad = {0};
  expect_error([&] { m->forward_embeds(x, cache.get()); }, {"left_pad has 1 entries", "batch 2"});
  sc.left_pad.clear();
  m->forward_embeds(x, cache.get());
  sc.left_pad = {1, 0};
  expect_error(
      [&] {
        m->forward(at::ones({2, 1}, at::kLong), cache.get());
      },
      {"before the prefill"});
}

// generate --prompt-file: one batch, one line per prompt prefixed by its line number, equal to
// each line generated alone; --batch-size does not change it.
class BatchedGenerateCli : public testing_util::TempDirTest {
 protected:
  BatchedGenerateCli() : TempDirTest("mambavl_bgen_") {}
};

TEST_F(BatchedGenerateCli, PromptFile) {
  const fs::path tokfile =
      fs::path(MAMBAVL_FIXTURES_DIR) / "tokenizer" / "bpe-small" / "tokenizer.json";
  const fs::path m = dir / "m";
  auto r = testing_util::run_cli("init --preset mamba-tiny --seed 2 --out " + m.string() +
                                 " --tokenizer " + tokfile.string());
  ASSERT_EQ(r.code, 0) << r.out;
  const std::vector<std::string> lines = {"The cat sat", "", "on the mat and then it", "A"};
  {
    std::ofstream f(dir / "prompts.txt");
    for (auto& l : lines) f << l << "\n";
  }
  auto tok = io::Tokenizer::from_file(tokfile);
  auto model = load_causal_lm(m);
  generate::GenerateOptions go;
  go.max_new_tokens = 5;
  go.sampling.greedy = true;
  go.eos_id = tok.token_to_id("<|endoftext|>");
  std::string want_ids, want_text;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    auto out = generate::generate(*model, tok.encode(lines[i]), go);
    want_ids += std::to_string(i + 1) + "\t";
    for (size_t k = 0; k < out.size(); ++k) want_ids += (k ? "," : "") + std::to_string(out[k]);
    want_ids += "\n";
    std::string text = tok.decode(out, true);
    for (size_t p = text.find('\n'); p != std::string::npos; p = text.find('\n', p + 2))
      text.replace(p, 1, "\\n");
    want_text += std::to_string(i + 1) + "\t" + text + "\n";
  }
  const std::string base = "generate --model " + m.string() + " --prompt-file " +
                           (dir / "prompts.txt").string() + " --max-new-tokens 5 --greedy";
  r = testing_util::run_cli(base + " --print-ids");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, want_ids);
  r = testing_util::run_cli(base + " --print-ids --batch-size 2");
  EXPECT_EQ(r.out, want_ids);
  r = testing_util::run_cli(base);
  EXPECT_EQ(r.out, want_text);
  r = testing_util::run_cli(base + " --prompt hi");
  EXPECT_NE(r.code, 0);
  r = testing_util::run_cli("generate --model " + m.string() + " --ids 1,2 --batch-size 2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--prompt-file"), std::string::npos) << r.out;
  r = testing_util::run_cli("generate --model " + m.string() + " --prompt-file " +
                            (dir / "missing.txt").string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("missing.txt"), std::string::npos) << r.out;
}

// bf16 weights: the padded prefill's last-position logits stay close to each prompt alone (not
// bit-equal: bf16 GEMMs and attention kernels round differently for other shapes and masks, and
// batch-1 Mamba decoding uses the fused fp32 step).
TEST(BatchedGenerateBf16, PaddedPrefillCloseToAlone) {
  for (const std::string kind : {"mamba", "neox_sequential", "hybrid"}) {
    auto m = make_model(kind);
    m->to_dtype(at::kBFloat16);
    c10::InferenceMode guard;
    auto ps = prompts(50);
    const int64_t B = static_cast<int64_t>(ps.size()), Lmax = 13;
    at::Tensor x = at::zeros({B, Lmax, m->hidden_size()}, at::kBFloat16);
    std::vector<int64_t> pad;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t L = static_cast<int64_t>(ps[b].size());
      pad.push_back(Lmax - L);
      x[b].narrow(0, Lmax - L, L).copy_(m->embed(ids_tensor(ps[b]))[0]);
    }
    auto cache = m->make_cache(B, Lmax + 1);
    dynamic_cast<LayerStackCache&>(*cache).left_pad = pad;
    at::Tensor batch = m->forward_embeds(x, cache.get(), true);                 // [B, 1, V]
    at::Tensor step = m->forward(at::full({B, 1}, 7, at::kLong), cache.get());  // [B, 1, V]
    for (int64_t b = 0; b < B; ++b) {
      auto c1 = m->make_cache(1, Lmax + 1);
      at::Tensor one = m->forward(ids_tensor(ps[b]), c1.get(), true)[0];  // [1, V]
      at::Tensor one_step = m->forward(at::full({1, 1}, 7, at::kLong), c1.get())[0];
      EXPECT_TRUE(close(batch[b], one, 2e-2, 2e-2)) << kind << " row " << b;
      EXPECT_TRUE(close(step[b], one_step, 3e-2, 3e-2)) << kind << " row " << b << " step";
    }
  }
}
