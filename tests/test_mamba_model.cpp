// Mamba LM without checkpoints: names, config dialects, decode == full forward, gradients.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "mamba_configs.h"
#include "models/mamba.h"

using namespace mambavl;
using namespace mambavl::models;

namespace {
MambaConfig tiny(int64_t layers = 2) { return testing_util::small_mamba_config(24, layers, 5); }

// Random non-trivial weights (so D, norms, biases are not at identity values).
void perturb(MambaLM& m, uint64_t seed) {
  m.init_weights(seed);
  at::NoGradGuard ng;
  for (auto& p : m.module().parameters()) p.add_(at::randn_like(p) * 0.05);
}
}  // namespace

TEST(MambaModel, ParameterNamesAreCheckpointKeys) {
  MambaConfig c = tiny(1);
  MambaLM m(c);
  std::vector<std::string> names;
  for (auto& p : m.module().named_parameters()) names.push_back(p.key());
  std::sort(names.begin(), names.end());
  std::vector<std::string> want = {"backbone.embeddings.weight",
                                   "backbone.layers.0.mixer.A_log",
                                   "backbone.layers.0.mixer.D",
                                   "backbone.layers.0.mixer.conv1d.bias",
                                   "backbone.layers.0.mixer.conv1d.weight",
                                   "backbone.layers.0.mixer.dt_proj.bias",
                                   "backbone.layers.0.mixer.dt_proj.weight",
                                   "backbone.layers.0.mixer.in_proj.weight",
                                   "backbone.layers.0.mixer.out_proj.weight",
                                   "backbone.layers.0.mixer.x_proj.weight",
                                   "backbone.layers.0.norm.weight",
                                   "backbone.norm_f.weight"};
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names, want);
  auto params = m.module().named_parameters();
  EXPECT_EQ(params["backbone.layers.0.mixer.in_proj.weight"].sizes(), at::IntArrayRef({96, 24}));
  EXPECT_EQ(params["backbone.layers.0.mixer.conv1d.weight"].sizes(), at::IntArrayRef({48, 1, 4}));
  EXPECT_EQ(params["backbone.layers.0.mixer.x_proj.weight"].sizes(), at::IntArrayRef({2 + 10, 48}));
  EXPECT_EQ(params["backbone.layers.0.mixer.dt_proj.weight"].sizes(), at::IntArrayRef({48, 2}));
  EXPECT_EQ(params["backbone.layers.0.mixer.A_log"].sizes(), at::IntArrayRef({48, 5}));
}

TEST(MambaModel, InitFollowsSpec) {
  MambaLM m(tiny(3));
  m.init_weights(7);
  auto* mix = dynamic_cast<MambaMixerImpl*>(m.layers[0]->mixer.get());
  ASSERT_NE(mix, nullptr);
  // A_log[d, n] = log(n + 1); D = 1
  at::Tensor want = at::log(at::arange(1, 6, at::kFloat)).expand({48, 5});
  EXPECT_TRUE(at::allclose(mix->A_log, want));
  EXPECT_TRUE(at::allclose(mix->D, at::ones({48})));
  // softplus(dt_proj.bias) lies in [dt_min, dt_max] = [1e-3, 0.1]
  at::Tensor dt = at::softplus(mix->dt_proj->bias);
  EXPECT_GE(dt.min().item<float>(), 1e-3f * 0.999f);
  EXPECT_LE(dt.max().item<float>(), 0.1f * 1.001f);
  const double bound = std::pow(2.0, -0.5);
  EXPECT_LE(mix->dt_proj->weight.abs().max().item<float>(), bound + 1e-6);
  // embeddings ~ N(0, 0.02)
  EXPECT_NEAR(m.embeddings->weight.std().item<float>(), 0.02, 0.004);
}

TEST(MambaModel, DecodeStepsEqualFullForward) {
  for (int64_t prefill : {1, 3, 6}) {
    MambaLM m(tiny());
    perturb(m, 11);
    at::manual_seed(3);
    at::Tensor ids = at::randint(0, 50, {2, 13}, at::kLong);
    at::NoGradGuard ng;
    at::Tensor full = m.forward(ids);  // [2, 13, 50]
    auto cache = m.make_cache(2, 13);
    std::vector<at::Tensor> parts;
    parts.push_back(m.forward(ids.narrow(1, 0, prefill), cache.get()));
    for (int64_t t = prefill; t < 13; ++t)
      parts.push_back(m.forward(ids.narrow(1, t, 1), cache.get()));
    at::Tensor inc = at::cat(parts, 1);
    EXPECT_EQ(cache->length(), 13);
    EXPECT_LT((inc - full).abs().max().item<double>(), 1e-4) << "prefill " << prefill;
  }
}

TEST(MambaModel, ChunkedContinuationEqualsFullForward) {
  MambaLM m(tiny());
  perturb(m, 5);
  at::Tensor ids = at::randint(0, 50, {1, 12}, at::kLong);
  at::NoGradGuard ng;
  at::Tensor full = m.forward(ids);
  auto cache = m.make_cache(1, 12);
  at::Tensor a = m.forward(ids.narrow(1, 0, 5), cache.get());
  at::Tensor b = m.forward(ids.narrow(1, 5, 7), cache.get());  // several tokens after a prefill
  EXPECT_LT((at::cat({a, b}, 1) - full).abs().max().item<double>(), 1e-4);
}

TEST(MambaModel, LastOnlyIsTheLastRow) {
  MambaLM m(tiny());
  perturb(m, 9);
  at::Tensor ids = at::randint(0, 50, {2, 7}, at::kLong);
  at::NoGradGuard ng;
  at::Tensor full = m.forward(ids);
  at::Tensor last = m.forward(ids, nullptr, /*last_only=*/true);
  ASSERT_EQ(last.sizes(), at::IntArrayRef({2, 1, 50}));
  EXPECT_LT((last.squeeze(1) - full.select(1, 6)).abs().max().item<double>(), 1e-5);
}

TEST(MambaModel, GradientsReachEveryParameter) {
  MambaLM m(tiny());
  perturb(m, 1);
  at::Tensor ids = at::randint(0, 50, {2, 9}, at::kLong);
  at::Tensor logits = m.forward(ids);
  at::Tensor loss = at::cross_entropy_loss(logits.narrow(1, 0, 8).reshape({-1, 50}),
                                           ids.narrow(1, 1, 8).reshape({-1}));
  loss.backward();
  for (auto& p : m.module().named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(MambaModel, Bfloat16CloseToFloat32) {
  MambaLM m(tiny());
  perturb(m, 2);
  at::Tensor ids = at::randint(0, 50, {1, 10}, at::kLong);
  at::NoGradGuard ng;
  at::Tensor ref = m.forward(ids);
  m.to_dtype(at::kBFloat16);
  auto* mix = dynamic_cast<MambaMixerImpl*>(m.layers[0]->mixer.get());
  EXPECT_EQ(mix->A_log.scalar_type(), at::kFloat);
  EXPECT_EQ(mix->D.scalar_type(), at::kFloat);
  EXPECT_EQ(mix->in_proj->weight.scalar_type(), at::kBFloat16);
  at::Tensor got = m.forward(ids);
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  EXPECT_LT((got - ref).abs().max().item<double>(), 0.05 * ref.abs().max().item<double>() + 0.02);
  // bf16 decode equals bf16 full forward (same arithmetic per token up to accumulation order)
  auto cache = m.make_cache(1, 10);
  std::vector<at::Tensor> parts{m.forward(ids.narrow(1, 0, 4), cache.get())};
  for (int64_t t = 4; t < 10; ++t) parts.push_back(m.forward(ids.narrow(1, t, 1), cache.get()));
  EXPECT_LT((at::cat(parts, 1) - got).abs().max().item<double>(),
            0.05 * got.abs().max().item<double>());
}

TEST(MambaModel, OutOfRangeIdsAreAnError) {
  MambaLM m(tiny());
  at::Tensor ids = at::full({1, 3}, 50, at::kLong);
  EXPECT_THROW(m.forward(ids), Error);
}

// ---- config.json dialects ----------------------------------------------------------------------

TEST(MambaConfig, HuggingFaceDialect) {
  nlohmann::json j = {{"model_type", "mamba"}, {"hidden_size", 64},        {"num_hidden_layers", 3},
                      {"vocab_size", 100},     {"state_size", 8},          {"conv_kernel", 4},
                      {"expand", 2},           {"time_step_rank", "auto"}, {"use_bias", true}};
  MambaConfig c = MambaConfig::from_json(j, "config.json");
  EXPECT_EQ(c.layout, "hf");
  EXPECT_EQ(c.d_inner, 128);
  EXPECT_EQ(c.dt_rank, 4);
  EXPECT_TRUE(c.bias);
  EXPECT_EQ(c.vocab_size, 100);
  MambaConfig back = MambaConfig::from_json(c.to_json(), "x");
  EXPECT_EQ(back.d_inner, 128);
  EXPECT_EQ(back.dt_rank, 4);
}

TEST(MambaConfig, OriginalDialectPadsVocabulary) {
  nlohmann::json j = {{"d_model", 32},          {"n_layer", 2},
                      {"vocab_size", 50277},    {"ssm_cfg", nlohmann::json::object()},
                      {"rms_norm", true},       {"residual_in_fp32", true},
                      {"fused_add_norm", true}, {"pad_vocab_size_multiple", 8},
                      {"tie_embeddings", true}};
  MambaConfig c = MambaConfig::from_json(j, "config.json");
  EXPECT_EQ(c.layout, "original");
  EXPECT_EQ(c.vocab_size, 50280);
  EXPECT_EQ(c.dt_rank, 2);
  nlohmann::json out = c.to_json();
  EXPECT_EQ(out["vocab_size"], 50277);
  EXPECT_EQ(MambaConfig::from_json(out, "x").vocab_size, 50280);
}

namespace {
std::string error_of(const nlohmann::json& j) {
  try {
    MambaConfig::from_json(j, "/m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(MambaConfig, ErrorsNameFileAndKey) {
  nlohmann::json base = {
      {"model_type", "mamba"}, {"hidden_size", 64}, {"num_hidden_layers", 3}, {"vocab_size", 100}};
  auto j = base;
  j["hiden_size"] = 3;
  std::string m = error_of(j);
  EXPECT_NE(m.find("/m/config.json"), std::string::npos) << m;
  EXPECT_NE(m.find("'hiden_size'"), std::string::npos) << m;
  j = base;
  j["hidden_size"] = "64";
  m = error_of(j);
  EXPECT_NE(m.find("'hidden_size' must be an integer"), std::string::npos) << m;
  j = base;
  j.erase("vocab_size");
  m = error_of(j);
  EXPECT_NE(m.find("'vocab_size' is missing"), std::string::npos) << m;
  j = base;
  j["model_type"] = "llama";
  EXPECT_NE(error_of(j).find("llama"), std::string::npos);
  j = base;
  j["attn_layer_idx"] = {1, 7};
  j["attn_cfg"] = {{"num_heads", 4}};
  m = error_of(j);
  EXPECT_NE(m.find("attn_layer_idx entry 7 is out of range"), std::string::npos) << m;
  EXPECT_NE(error_of(nlohmann::json::array()).find("JSON object"), std::string::npos);
  nlohmann::json orig = {
      {"d_model", 32}, {"n_layer", 2}, {"vocab_size", 10}, {"ssm_cfg", {{"layer", "Mamba2"}}}};
  EXPECT_NE(error_of(orig).find("Mamba2"), std::string::npos);
}
