// Hybrid Mamba stacks (attn_layer_idx): mamba_ssm's MHA layer against a from-scratch reference,
// mixed-cache decode == full forward, equivalence with plain Mamba, save / load, config errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/checkpoint.h"
#include "kernels/backend.h"
#include "io/safetensors.h"
#include "models/attention.h"
#include "models/mamba.h"
#include "models/registry.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::models;
namespace fs = std::filesystem;

using mambavl::testing_util::error_of;

namespace {

// mamba_ssm config of a 4-layer hybrid: layers 1 and 3 are attention (GQA 4 query / 2 KV heads,
// head_dim 8, rotary on 4 dims).
nlohmann::json hybrid_json() {
  return nlohmann::json::parse(R"({
    "d_model": 32, "d_intermediate": 0, "n_layer": 4, "vocab_size": 50,
    "ssm_cfg": {"layer": "Mamba1", "d_state": 5},
    "attn_layer_idx": [1, 3],
    "attn_cfg": {"num_heads": 4, "num_heads_kv": 2, "rotary_emb_dim": 4, "rotary_emb_base": 1000.0,
                 "causal": true},
    "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
    "pad_vocab_size_multiple": 8, "tie_embeddings": true})");
}

MambaConfig hybrid_cfg() { return MambaConfig::from_json(hybrid_json(), "hybrid.json"); }

void perturb(MambaLM& m, uint64_t seed) {
  m.init_weights(seed);
  at::NoGradGuard ng;
  for (auto& p : m.module().parameters()) p.add_(at::randn_like(p) * 0.05);
}

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

fs::path temp_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("mambavl_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// mamba_ssm MHA written out in double precision with plain ops: in_proj -> [q | k | v] blocks,
// rotate-half rotary on the first r dims (angle t * base^(-2i/r)), KV head of query head h is
// h / (H / Hkv) (repeat_interleave), softmax(q k^T / sqrt(hd)) with a causal mask, out_proj.
at::Tensor reference_mha(HybridAttentionImpl& a, const at::Tensor& x) {
  const auto& c = a.cfg;
  const int64_t B = x.size(0), L = x.size(1), H = c.num_heads, Hkv = c.num_heads_kv,
                hd = c.head_dim, r = c.rotary_emb_dim;
  auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  at::Tensor qkv = at::linear(d(x), d(a.in_proj->weight),
                              a.in_proj->bias.defined() ? d(a.in_proj->bias) : at::Tensor());
  at::Tensor q = qkv.narrow(-1, 0, H * hd).reshape({B, L, H, hd}).clone();
  at::Tensor k = qkv.narrow(-1, H * hd, Hkv * hd).reshape({B, L, Hkv, hd}).clone();
  at::Tensor v = qkv.narrow(-1, (H + Hkv) * hd, Hkv * hd).reshape({B, L, Hkv, hd});
  for (at::Tensor* t : {&q, &k}) {
    at::Tensor out = t->clone();
    for (int64_t p = 0; p < L; ++p)
      for (int64_t i = 0; i < r / 2; ++i) {
        const double ang = p * std::pow(c.rotary_emb_base, -2.0 * i / r);
        at::Tensor x1 = t->select(1, p).select(-1, i), x2 = t->select(1, p).select(-1, i + r / 2);
        out.select(1, p).select(-1, i).copy_(x1 * std::cos(ang) - x2 * std::sin(ang));
        out.select(1, p).select(-1, i + r / 2).copy_(x2 * std::cos(ang) + x1 * std::sin(ang));
      }
    *t = out;
  }
  k = k.repeat_interleave(H / Hkv, 2);  // [B, L, H, hd]
  v = v.repeat_interleave(H / Hkv, 2);
  at::Tensor s = at::einsum("bqhd,bkhd->bhqk", {q, k}) / std::sqrt(static_cast<double>(hd));
  if (c.causal) s = s.masked_fill(at::ones({L, L}, at::kBool).triu(1), -INFINITY);
  at::Tensor ctx = at::einsum("bhqk,bkhd->bqhd", {at::softmax(s, -1), v}).reshape({B, L, H * hd});
  return at::linear(ctx, d(a.out_proj->weight),
                    a.out_proj->bias.defined() ? d(a.out_proj->bias) : at::Tensor());
}

}  // namespace

TEST(HybridAttention, ParameterNamesAndShapes) {
  MambaLM m(hybrid_cfg());
  EXPECT_EQ(m.arch(), "hybrid");
  auto p = m.module().named_parameters();
  // (H + 2 Hkv) * hd = (4 + 4) * 8
  EXPECT_EQ(p["backbone.layers.1.mixer.in_proj.weight"].sizes(), at::IntArrayRef({64, 32}));
  EXPECT_EQ(p["backbone.layers.1.mixer.in_proj.bias"].sizes(), at::IntArrayRef({64}));
  EXPECT_EQ(p["backbone.layers.3.mixer.out_proj.weight"].sizes(), at::IntArrayRef({32, 32}));
  EXPECT_EQ(p["backbone.layers.3.mixer.out_proj.bias"].sizes(), at::IntArrayRef({32}));
  EXPECT_TRUE(p.contains("backbone.layers.0.mixer.A_log"));
  EXPECT_FALSE(p.contains("backbone.layers.1.mixer.A_log"));
  nlohmann::json j = hybrid_json();
  j["attn_cfg"]["qkv_proj_bias"] = false;
  j["attn_cfg"]["out_proj_bias"] = false;
  MambaLM nb(MambaConfig::from_json(j, "h.json"));
  auto q = nb.module().named_parameters();
  EXPECT_FALSE(q.contains("backbone.layers.1.mixer.in_proj.bias"));
  EXPECT_FALSE(q.contains("backbone.layers.1.mixer.out_proj.bias"));
}

TEST(HybridAttention, MatchesReferenceMHA) {
  for (int64_t kv_heads : {4, 2, 1}) {
    for (bool causal : {true, false}) {
      nlohmann::json j = hybrid_json();
      j["attn_cfg"]["num_heads_kv"] = kv_heads;
      j["attn_cfg"]["causal"] = causal;
      MambaLM m(MambaConfig::from_json(j, "h.json"));
      perturb(m, 21);
      auto* a = dynamic_cast<HybridAttentionImpl*>(m.layers[1]->mixer.get());
      ASSERT_NE(a, nullptr);
      at::Tensor x = at::randn({2, 9, 32});
      at::NoGradGuard ng;
      at::Tensor got = a->mix(x, nullptr, 0);
      EXPECT_LT(max_abs(got.to(at::kDouble) - reference_mha(*a, x)), 1e-5)
          << "num_heads_kv " << kv_heads << (causal ? " causal" : " bidirectional");
    }
  }
}

TEST(Hybrid, DecodeWithMixedCachesEqualsFullForward) {
  for (int64_t prefill : {1, 3, 6}) {
    MambaLM m(hybrid_cfg());
    perturb(m, 11);
    at::manual_seed(3);
    at::Tensor ids = at::randint(0, 50, {2, 13}, at::kLong);
    at::NoGradGuard ng;
    at::Tensor full = m.forward(ids);  // [2, 13, 50]
    auto cache = m.make_cache(2, 16);
    std::vector<at::Tensor> parts{m.forward(ids.narrow(1, 0, prefill), cache.get())};
    for (int64_t t = prefill; t < 13; ++t)
      parts.push_back(m.forward(ids.narrow(1, t, 1), cache.get()));
    EXPECT_EQ(cache->length(), 13);
    EXPECT_LT(max_abs(at::cat(parts, 1) - full), 1e-4) << "prefill " << prefill;
  }
}

TEST(Hybrid, ChunkedContinuationEqualsFullForward) {
  MambaLM m(hybrid_cfg());
  perturb(m, 5);
  at::Tensor ids = at::randint(0, 50, {1, 12}, at::kLong);
  at::NoGradGuard ng;
  at::Tensor full = m.forward(ids);
  auto cache = m.make_cache(1, 12);
  at::Tensor a = m.forward(ids.narrow(1, 0, 5), cache.get());
  at::Tensor b = m.forward(ids.narrow(1, 5, 7), cache.get());
  EXPECT_LT(max_abs(at::cat({a, b}, 1) - full), 1e-4);
}

TEST(Hybrid, AllMambaHybridConfigEqualsPlainMamba) {
  nlohmann::json j = hybrid_json();
  j["attn_layer_idx"] = nlohmann::json::array();
  MambaLM hybrid(MambaConfig::from_json(j, "h.json"));
  EXPECT_EQ(hybrid.arch(), "mamba");
  nlohmann::json plain_j = hybrid_json();
  plain_j.erase("attn_layer_idx");
  plain_j.erase("attn_cfg");
  MambaLM plain(MambaConfig::from_json(plain_j, "p.json"));
  perturb(plain, 8);
  {
    at::NoGradGuard ng;
    auto src = plain.module().named_parameters();
    auto dst = hybrid.module().named_parameters();
    ASSERT_EQ(src.size(), dst.size());
    for (auto& p : dst) p.value().copy_(src[p.key()]);
  }
  at::Tensor ids = at::randint(0, 50, {2, 9}, at::kLong);
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(hybrid.forward(ids), plain.forward(ids)));
}

TEST(Hybrid, GradientsReachEveryParameter) {
  MambaLM m(hybrid_cfg());
  perturb(m, 1);
  at::Tensor ids = at::randint(0, 50, {2, 9}, at::kLong);
  at::Tensor logits = m.forward(ids);
  at::cross_entropy_loss(logits.narrow(1, 0, 8).reshape({-1, logits.size(-1)}),
                         ids.narrow(1, 1, 8).reshape({-1}))
      .backward();
  for (auto& p : m.module().named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
}

TEST(Hybrid, InitRescalesAttentionOutProj) {
  MambaLM m(hybrid_cfg());
  m.init_weights(4);
  auto* a = dynamic_cast<HybridAttentionImpl*>(m.layers[1]->mixer.get());
  ASSERT_NE(a, nullptr);
  // kaiming_uniform(a = sqrt 5) bound 1/sqrt(fan_in), then / sqrt(n_layer) as mamba_ssm does
  const double bound = 1.0 / std::sqrt(32.0) / std::sqrt(4.0);
  EXPECT_LE(max_abs(a->out_proj->weight), bound + 1e-6);
  EXPECT_GT(max_abs(a->out_proj->weight), 0.5 * bound);
  EXPECT_EQ(max_abs(a->in_proj->bias), 0.0);
}

TEST(Hybrid, SaveLoadRoundTripInMambaSsmLayout) {
  for (bool from_hf : {false, true}) {
    MambaConfig cfg = hybrid_cfg();
    if (from_hf) {
      cfg.layout = "hf";  // a hybrid built in the HF dialect is still written as mamba_ssm's
      cfg.vocab_size = cfg.unpadded_vocab_size = 50;  // not a multiple of 8
    }
    MambaLM m(cfg);
    perturb(m, 6);
    const fs::path dir = temp_dir("hybrid_rt");
    m.save(dir);
    nlohmann::json saved = io::read_json_file(dir / "config.json");
    EXPECT_EQ(saved["d_model"], 32);
    EXPECT_EQ(saved["attn_layer_idx"], nlohmann::json::array({1, 3}));
    EXPECT_EQ(saved["attn_cfg"]["num_heads_kv"], 2);
    EXPECT_EQ(saved["attn_cfg"]["causal"], true);
    io::SafetensorsFile st(dir / "model.safetensors");
    EXPECT_TRUE(st.contains("backbone.embedding.weight"));
    EXPECT_TRUE(st.contains("lm_head.weight"));
    EXPECT_TRUE(st.contains("backbone.layers.1.mixer.in_proj.weight"));
    EXPECT_EQ(detect_architecture(dir), "mamba");
    auto back = load_causal_lm(dir);
    EXPECT_EQ(back->arch(), "hybrid");
    EXPECT_EQ(back->vocab_size(), from_hf ? 50 : 56);  // 50 padded to a multiple of 8
    at::Tensor ids = at::randint(0, 50, {2, 7}, at::kLong);
    at::NoGradGuard ng;
    EXPECT_TRUE(at::equal(back->forward(ids), m.forward(ids))) << (from_hf ? "from hf" : "");
    fs::remove_all(dir);
  }
}

TEST(Hybrid, KVCacheOverflowIsAnError) {
  MambaLM m(hybrid_cfg());
  at::Tensor ids = at::randint(0, 50, {1, 6}, at::kLong);
  at::NoGradGuard ng;
  auto cache = m.make_cache(1, 6);
  m.forward(ids, cache.get());
  const std::string msg = error_of([&] { m.forward(ids.narrow(1, 0, 1), cache.get()); });
  EXPECT_NE(msg.find("overflow"), std::string::npos) << msg;
  EXPECT_EQ(cache->length(), 6);
  // The attention layer checks its own preallocated cache too.
  auto* a = dynamic_cast<HybridAttentionImpl*>(m.layers[1]->mixer.get());
  auto kv = a->make_cache(1, 4, at::kFloat, at::kCPU);
  EXPECT_EQ(dynamic_cast<KVCache&>(*kv).k.sizes(), at::IntArrayRef({1, 2, 4, 8}));
  const std::string msg2 = error_of([&] { a->mix(at::randn({1, 5, 32}), kv.get(), 0); });
  EXPECT_NE(msg2.find("overflow"), std::string::npos) << msg2;
}

TEST(Hybrid, Bfloat16DecodeCloseToFullForward) {
  MambaLM m(hybrid_cfg());
  perturb(m, 2);
  m.to_dtype(at::kBFloat16);
  at::Tensor ids = at::randint(0, 50, {1, 10}, at::kLong);
  at::NoGradGuard ng;
  at::Tensor full = m.forward(ids);
  auto cache = m.make_cache(1, 10);
  std::vector<at::Tensor> parts{m.forward(ids.narrow(1, 0, 4), cache.get())};
  for (int64_t t = 4; t < 10; ++t) parts.push_back(m.forward(ids.narrow(1, t, 1), cache.get()));
  EXPECT_LT(max_abs(at::cat(parts, 1) - full), 0.05 * max_abs(full));
}

TEST(HybridConfig, ErrorsNameFileAndKey) {
  auto err = [](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = hybrid_json();
    edit(j);
    return error_of([&] { MambaConfig::from_json(j, "/h/config.json"); });
  };
  auto expect_names = [](const std::string& msg, const std::string& key) {
    EXPECT_NE(msg.find("/h/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
  };
  expect_names(err([](auto& j) { j["attn_layer_idx"] = {1, 4}; }), "attn_layer_idx");
  expect_names(err([](auto& j) { j["attn_layer_idx"] = {-1}; }), "attn_layer_idx");
  expect_names(err([](auto& j) { j["attn_cfg"]["num_head"] = 4; }), "num_head");
  expect_names(err([](auto& j) { j["attn_kfg"] = nlohmann::json::object(); }), "attn_kfg");
  expect_names(err([](auto& j) { j["attn_cfg"]["num_heads"] = 5; }), "num_heads");
  expect_names(err([](auto& j) { j["attn_cfg"]["num_heads_kv"] = 3; }), "num_heads_kv");
  expect_names(err([](auto& j) { j["attn_cfg"]["rotary_emb_dim"] = 9; }), "rotary_emb_dim");
  expect_names(err([](auto& j) { j.erase("attn_cfg"); }), "num_heads");
}

// The fused batch-1 decode of a hybrid stack (Mamba layers and MHA layers in one team pass):
// equal to the full forward in fp32 and to the op-by-op decode in bf16, at every kernel level,
// across a KV cache's growth, with grouped KV heads (4 query / 2 KV) and without (4 / 4).
namespace {

std::vector<nlohmann::json> fused_hybrid_jsons() {
  nlohmann::json mha = hybrid_json();
  mha["attn_cfg"]["num_heads_kv"] = 4;
  return {hybrid_json(), mha};
}

int64_t kv_capacity(LMCache* cache, int64_t layer) {
  return as_kv_cache(dynamic_cast<LayerStackCache&>(*cache).layers[layer].get()).capacity();
}

constexpr int64_t kFusedLen = KVCache::kInitialCapacity + 12;

}  // namespace

TEST(HybridFusedDecode, Float32StepsEqualFullForwardAtEveryKernelLevel) {
  for (const nlohmann::json& j : fused_hybrid_jsons()) {
    SCOPED_TRACE(j["attn_cfg"].dump());
    MambaLM m(MambaConfig::from_json(j, "h.json"));
    perturb(m, 31);
    at::manual_seed(6);
    at::Tensor ids = at::randint(0, 50, {1, kFusedLen}, at::kLong);
    at::NoGradGuard ng;
    at::Tensor full = m.forward(ids);  // [1, T, V]
    const double tol = 1e-4 * std::max(1.0, max_abs(full));
    testing_util::for_each_kernel_level([&](cpu::Isa) {
      auto cache = m.make_cache(1, kFusedLen + 1);
      // Prefill (op by op), fused steps, a chunk of 3 op by op on the same cache, fused steps
      // across the KV caches' growth.
      at::Tensor got = testing_util::decode_mixed(m, cache.get(), ids, 3);
      EXPECT_GT(kv_capacity(cache.get(), 1), KVCache::kInitialCapacity) << "the cache grew";
      ASSERT_EQ(got.sizes(), full.sizes());
      EXPECT_LE(max_abs(got - full), tol) << "max |logit| " << max_abs(full);
    });
  }
}

TEST(HybridFusedDecode, Bfloat16StepsMatchTheOpByOpPathAtEveryKernelLevel) {
  for (const nlohmann::json& j : fused_hybrid_jsons()) {
    SCOPED_TRACE(j["attn_cfg"].dump());
    MambaLM m(MambaConfig::from_json(j, "h.json"));
    perturb(m, 32);
    m.to_dtype(at::kBFloat16);
    at::manual_seed(7);
    const int64_t T = 40;
    at::Tensor ids = at::randint(0, 50, {1, T}, at::kLong);
    std::vector<at::Tensor> want;  // the op-by-op decode (autograd on disables the fused step)
    {
      at::AutoGradMode grad(true);
      auto cache = m.make_cache(1, T);
      want.push_back(m.forward(ids.narrow(1, 0, 3), cache.get()).detach());
      for (int64_t t = 3; t < T; ++t)
        want.push_back(m.forward(ids.narrow(1, t, 1), cache.get()).detach());
      EXPECT_FALSE(testing_util::used_fused_decode(cache.get()));
    }
    const at::Tensor ref = at::cat(want, 1);
    at::NoGradGuard ng;
    testing_util::for_each_kernel_level([&](cpu::Isa) {
      auto cache = m.make_cache(1, T);
      std::vector<at::Tensor> parts{m.forward(ids.narrow(1, 0, 3), cache.get())};
      for (int64_t t = 3; t < T; ++t) parts.push_back(m.forward(ids.narrow(1, t, 1), cache.get()));
      EXPECT_TRUE(testing_util::used_fused_decode(cache.get()));
      at::Tensor got = at::cat(parts, 1);
      for (int64_t t = 0; t < got.size(1); ++t) {
        const at::Tensor g = got.select(1, t), r = ref.select(1, t);
        ASSERT_LE(max_abs(g - r), 0.03 * max_abs(r) + 1e-3) << "position " << t;
      }
    });
  }
}

TEST(HybridFusedDecode, ReferenceBackendKeepsTheOpByOpPath) {
  MambaLM m(hybrid_cfg());
  perturb(m, 33);
  at::Tensor ids = at::randint(0, 50, {1, 8}, at::kLong);
  at::NoGradGuard ng;
  const kernels::Backend saved = kernels::default_backend();
  kernels::set_default_backend(kernels::Backend::Reference);
  auto cache = m.make_cache(1, 8);
  m.forward(ids.narrow(1, 0, 4), cache.get());
  m.forward(ids.narrow(1, 4, 1), cache.get());
  kernels::set_default_backend(saved);
  EXPECT_FALSE(testing_util::used_fused_decode(cache.get()));
}
