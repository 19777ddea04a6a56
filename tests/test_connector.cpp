// Connectors (MLP, VSS-MLP, VSS-L2): shapes on 1x1 / non-square / square grids, gradients reach
// every parameter, the VSS module against compositions written by hand from MambaMixerImpl (BSM /
// CSM, shared / per-order weights, sum / mean), parameter names, config round trip and errors,
// save / load round trip, deterministic init.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "io/checkpoint.h"
#include "kernels/scan2d.h"
#include "models/connector.h"
#include "models/mamba.h"
#include "test_util.h"

using namespace mambavl;
using models::ConnectorConfig;
using models::ConnectorImpl;
namespace fs = std::filesystem;

using mambavl::testing_util::error_of;

namespace {

constexpr int64_t kDv = 12, kDlm = 20;

ConnectorConfig small_cfg(const std::string& type, const std::string& scan = "bsm",
                          bool share = true, const std::string& merge = "sum") {
  ConnectorConfig c;
  c.type = type;
  c.d_vision = kDv;
  c.d_lm = kDlm;
  c.scan = scan;
  c.merge = merge;
  c.share_weights = share;
  c.d_state = 4;
  c.d_conv = 3;
  c.expand = 2;
  return c;
}

at::Tensor randn(at::IntArrayRef sizes, uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(sizes, g, at::TensorOptions().dtype(at::kFloat));
}

using testing_util::close;

// [B, L, C] row-major grid -> column-major sequence, and back.
at::Tensor to_col(const at::Tensor& x, int64_t gh, int64_t gw) {
  return x.view({x.size(0), gh, gw, x.size(2)}).transpose(1, 2).reshape(x.sizes());
}
at::Tensor from_col(const at::Tensor& x, int64_t gh, int64_t gw) {
  return x.view({x.size(0), gw, gh, x.size(2)}).transpose(1, 2).reshape(x.sizes());
}

const std::vector<std::string> kTypes = {"mlp", "vss_mlp", "vss_l2"};

}  // namespace

TEST(Connector, OutputShapesOnSquareNonSquareAnd1x1Grids) {
  for (const auto& type : kTypes)
    for (const std::string scan : {"bsm", "csm"})
      for (auto [gh, gw] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 5}, {4, 4}}) {
        ConnectorImpl c(small_cfg(type, scan));
        const at::Tensor out = c.forward(randn({2, gh * gw, kDv}, 1), gh, gw);
        EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, gh * gw, kDlm}))
            << type << " " << scan << " " << gh << "x" << gw;
        EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << type << " " << scan;
      }
}

TEST(Connector, GradientsReachEveryParameter) {
  for (const auto& type : kTypes)
    for (const std::string scan : {"bsm", "csm"})
      for (bool share : {true, false}) {
        if (type == "mlp" && (scan == "csm" || !share)) continue;
        ConnectorImpl c(small_cfg(type, scan, share));
        const at::Tensor v = randn({2, 15, kDv}, 2).requires_grad_(true);
        const at::Tensor out = c.forward(v, 3, 5);
        (out * randn(out.sizes(), 3)).sum().backward();
        const std::string what = type + " " + scan + (share ? " shared" : " per-order");
        ASSERT_TRUE(v.grad().defined()) << what;
        EXPECT_GT(v.grad().abs().sum().item<double>(), 0) << what;
        for (const auto& p : c.named_parameters()) {
          const at::Tensor& g = p.value().grad();
          ASSERT_TRUE(g.defined()) << what << ": no grad for " << p.key();
          EXPECT_EQ((g == 0).sum().item<int64_t>(), 0)
              << what << ": zero grad entries in " << p.key() << " " << g.sizes();
        }
      }
}

TEST(Connector, ParameterNames) {
  auto names = [](const ConnectorImpl& c) {
    std::set<std::string> s;
    for (const auto& p : c.named_parameters()) s.insert(p.key());
    return s;
  };
  const std::set<std::string> mixer = {
      "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",  "dt_proj.weight",
      "dt_proj.bias",   "A_log",         "D",           "out_proj.weight"};
  EXPECT_EQ(names(ConnectorImpl(small_cfg("mlp"))),
            (std::set<std::string>{"linear_1.weight", "linear_1.bias", "linear_2.weight",
                                   "linear_2.bias"}));
  std::set<std::string> want = {"linear_1.weight", "linear_1.bias", "linear_2.weight",
                                "linear_2.bias",   "norm.weight",   "norm.bias"};
  for (const auto& m : mixer) want.insert("vss.mixer." + m);
  EXPECT_EQ(names(ConnectorImpl(small_cfg("vss_l2"))), want);
  ConnectorImpl per_order(small_cfg("vss_mlp", "csm", /*share=*/false));
  const auto got = names(per_order);
  for (int k = 0; k < 4; ++k)
    for (const auto& m : mixer)
      EXPECT_TRUE(got.count("vss.mixers." + std::to_string(k) + "." + m))
          << "vss.mixers." << k << "." << m;
  EXPECT_EQ(got.size(), 6 + 4 * mixer.size());
  // Widths: VSS-MLP runs the mixer at the vision width, VSS-L2 at the LM width.
  EXPECT_EQ(per_order.vss->mixers[0]->in_proj->weight.size(1), kDv);
  EXPECT_EQ(ConnectorImpl(small_cfg("vss_l2")).vss->mixer->in_proj->weight.size(1), kDlm);
}

// BSM with one shared mixer: VSS(x) = mixer(x) + flip(mixer(flip(x))), composed by hand.
TEST(Connector, BsmSharedEqualsHandComposition) {
  ConnectorImpl c(small_cfg("vss_mlp", "bsm"));
  auto& m = *c.vss->mixer;
  for (auto [gh, gw] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 5}, {4, 4}}) {
    const at::Tensor x = randn({2, gh * gw, kDv}, 4);  // [B, L, C]
    const at::Tensor want = m.mix(x, nullptr, 0) + m.mix(x.flip(1), nullptr, 0).flip(1);
    EXPECT_TRUE(close(c.vss->forward(x, gh, gw), want, 1e-5, 1e-5)) << gh << "x" << gw;
    // The whole VSS-MLP connector, composed by hand as well.
    const at::Tensor h = at::layer_norm(want + x, {kDv}, c.norm->weight, c.norm->bias, 1e-5);
    const at::Tensor out = at::linear(at::gelu(at::linear(h, c.linear_1->weight, c.linear_1->bias)),
                                      c.linear_2->weight, c.linear_2->bias);
    EXPECT_TRUE(close(c.forward(x, gh, gw), out, 1e-5, 1e-5)) << gh << "x" << gw;
  }
}

TEST(Connector, CsmSharedAndMeanMergeEqualHandComposition) {
  const int64_t gh = 3, gw = 5;
  ConnectorImpl c(small_cfg("vss_l2", "csm", true, "mean"));
  auto& m = *c.vss->mixer;
  const at::Tensor x = randn({2, gh * gw, kDlm}, 5);
  auto mix = [&](const at::Tensor& t) { return m.mix(t, nullptr, 0); };
  const at::Tensor sum = mix(x) + from_col(mix(to_col(x, gh, gw)), gh, gw) +
                         mix(x.flip(1)).flip(1) +
                         from_col(mix(to_col(x, gh, gw).flip(1)).flip(1), gh, gw);
  EXPECT_TRUE(close(c.vss->forward(x, gh, gw), sum / 4, 1e-5, 1e-5));
  // vss_l2 composed by hand.
  const at::Tensor v = randn({1, gh * gw, kDv}, 6);
  const at::Tensor v1 = at::linear(v, c.linear_1->weight, c.linear_1->bias);
  const at::Tensor g = at::gelu(v1);
  const at::Tensor s = (mix(g) + from_col(mix(to_col(g, gh, gw)), gh, gw) + mix(g.flip(1)).flip(1) +
                        from_col(mix(to_col(g, gh, gw).flip(1)).flip(1), gh, gw)) /
                       4;
  const at::Tensor want =
      at::linear(at::layer_norm(s + v1, {kDlm}, c.norm->weight, c.norm->bias, 1e-5),
                 c.linear_2->weight, c.linear_2->bias);
  EXPECT_TRUE(close(c.forward(v, gh, gw), want, 1e-5, 1e-5));
}

TEST(Connector, PerOrderWeightsHaveKMixers) {
  ConnectorImpl bsm(small_cfg("vss_mlp", "bsm", /*share=*/false));
  ConnectorImpl csm(small_cfg("vss_mlp", "csm", /*share=*/false));
  ConnectorImpl shared(small_cfg("vss_mlp", "csm", /*share=*/true));
  EXPECT_EQ(bsm.vss->mixers.size(), 2u);
  EXPECT_EQ(csm.vss->mixers.size(), 4u);
  EXPECT_TRUE(bsm.vss->mixer == nullptr);
  EXPECT_TRUE(shared.vss->mixers.empty());
  ASSERT_TRUE(shared.vss->mixer != nullptr);
  auto count = [](torch::nn::Module& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters()) n += p.numel();
    return n;
  };
  EXPECT_EQ(count(*csm.vss), 4 * count(*shared.vss));
  // Distinct initial draws, and each order goes through its own mixer.
  EXPECT_FALSE(at::equal(bsm.vss->mixers[0]->in_proj->weight, bsm.vss->mixers[1]->in_proj->weight));
  const at::Tensor x = randn({2, 15, kDv}, 7);
  auto& m0 = *bsm.vss->mixers[0];
  auto& m1 = *bsm.vss->mixers[1];
  const at::Tensor want = m0.mix(x, nullptr, 0) + m1.mix(x.flip(1), nullptr, 0).flip(1);
  EXPECT_TRUE(close(bsm.vss->forward(x, 3, 5), want, 1e-5, 1e-5));
}

// The K orders go through the shared mixer stacked on the batch dim: no mixing across items.
TEST(Connector, BatchItemsAreIndependent) {
  ConnectorImpl c(small_cfg("vss_l2", "csm"));
  const at::Tensor v = randn({3, 12, kDv}, 8);
  const at::Tensor out = c.forward(v, 4, 3);
  for (int64_t b = 0; b < 3; ++b)
    EXPECT_TRUE(close(out[b], c.forward(v.narrow(0, b, 1), 4, 3)[0], 1e-5, 1e-5)) << b;
}

// The shared-mixer path with in_proj / out_proj hoisted out of the orders equals the plain mixer
// run on the stacked orders: outputs and every gradient; also with projection biases.
TEST(Connector, HoistedProjectionsEqualPlainMixer) {
  for (const std::string scan : {"bsm", "csm"})
    for (auto merge : {kernels::ScanMerge::Sum, kernels::ScanMerge::Mean})
      for (bool bias : {false, true}) {
        models::MambaConfig mc;
        mc.d_model = 10;
        mc.d_state = 4;
        mc.d_conv = 3;
        mc.d_inner = 0;
        mc.dt_rank = 0;
        mc.bias = bias;
        mc.finalize();
        at::manual_seed(11);
        models::VssImpl vss(mc, kernels::scan_orders(scan), merge, /*share_weights=*/true);
        if (bias) {
          at::NoGradGuard ng;
          vss.mixer->in_proj->bias.normal_();
          vss.mixer->out_proj->bias.normal_();
        }
        const at::Tensor x0 = randn({2, 15, 10}, 12), w = randn({2, 15, 10}, 13);
        std::vector<at::Tensor> outs, gx;
        std::vector<std::vector<at::Tensor>> gp;
        for (bool hoist : {true, false}) {
          vss.hoist_projections = hoist;
          vss.zero_grad();
          const at::Tensor x = x0.clone().requires_grad_(true);
          const at::Tensor out = vss.forward(x, 5, 3);
          (out * w).sum().backward();
          outs.push_back(out.detach());
          gx.push_back(x.grad());
          std::vector<at::Tensor> g;
          for (const auto& p : vss.parameters()) g.push_back(p.grad().clone());
          gp.push_back(g);
        }
        const std::string what =
            scan + (merge == kernels::ScanMerge::Sum ? " sum" : " mean") + (bias ? " bias" : "");
        EXPECT_TRUE(close(outs[0], outs[1], 1e-5, 1e-5)) << what;
        EXPECT_TRUE(close(gx[0], gx[1], 1e-4, 1e-5)) << what;
        const auto names = vss.named_parameters().keys();
        for (size_t i = 0; i < gp[0].size(); ++i)
          EXPECT_TRUE(close(gp[0][i], gp[1][i], 1e-4, 1e-5)) << what << " " << names[i];
      }
}

TEST(Connector, ScanBackendsAgree) {
  ConnectorImpl c(small_cfg("vss_mlp", "csm"));
  const at::Tensor v = randn({2, 15, kDv}, 9);
  const at::Tensor fused = c.forward(v, 5, 3);
  c.vss->scan_backend = kernels::Backend::Reference;
  EXPECT_TRUE(close(c.forward(v, 5, 3), fused, 1e-6, 1e-6));
}

TEST(Connector, InitIsDeterministicInTheSeed) {
  ConnectorImpl a(small_cfg("vss_l2", "bsm"), 42), b(small_cfg("vss_l2", "bsm"), 42),
      c(small_cfg("vss_l2", "bsm"), 43);
  const auto pa = a.named_parameters(), pb = b.named_parameters(), pc = c.named_parameters();
  bool any_diff = false;
  for (const auto& p : pa) {
    EXPECT_TRUE(at::equal(p.value(), pb[p.key()])) << p.key();
    any_diff = any_diff || !at::equal(p.value(), pc[p.key()]);
  }
  EXPECT_TRUE(any_diff);
  // Mamba init of the mixer (SPEC §1.1): A_log = log(1..N), D = 1.
  EXPECT_TRUE(at::allclose(a.vss->mixer->A_log[0], at::log(at::arange(1, 5, at::kFloat))));
  EXPECT_TRUE(at::equal(a.vss->mixer->D, at::ones_like(a.vss->mixer->D)));
}

TEST(Connector, ConfigRoundTripAndErrors) {
  auto c = small_cfg("vss_l2", "csm", false, "mean");
  c.layer_norm_eps = 1e-6;
  const nlohmann::json j = c.to_json();
  const auto back = ConnectorConfig::from_json(j, "cfg.json");
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.type, "vss_l2");
  EXPECT_EQ(back.scan, "csm");
  EXPECT_EQ(back.merge, "mean");
  EXPECT_FALSE(back.share_weights);
  EXPECT_EQ(back.d_state, 4);
  EXPECT_EQ(back.d_conv, 3);
  EXPECT_DOUBLE_EQ(back.layer_norm_eps, 1e-6);
  // Defaults: bsm, sum, shared.
  const auto d =
      ConnectorConfig::from_json({{"type", "vss_mlp"}, {"d_vision", 8}, {"d_lm", 16}}, "f");
  EXPECT_EQ(d.scan, "bsm");
  EXPECT_EQ(d.merge, "sum");
  EXPECT_TRUE(d.share_weights);
  EXPECT_EQ(d.mixer_config().d_model, 8);
  EXPECT_EQ(d.mixer_config().d_inner, 16);
  EXPECT_EQ(d.mixer_config().dt_rank, 1);

  auto err = [](nlohmann::json jj) {
    return error_of([&] { ConnectorConfig::from_json(jj, "conn.json"); });
  };
  nlohmann::json bad = j;
  bad["scna"] = "bsm";
  EXPECT_NE(err(bad).find("unknown key 'scna'"), std::string::npos) << err(bad);
  EXPECT_NE(err(bad).find("conn.json"), std::string::npos);
  bad = j;
  bad["mamba"]["d_sate"] = 8;
  EXPECT_NE(err(bad).find("'d_sate'"), std::string::npos) << err(bad);
  EXPECT_NE(err(bad).find("'mamba'"), std::string::npos) << err(bad);
  bad = j;
  bad["type"] = "qformer";
  EXPECT_NE(err(bad).find("'qformer'"), std::string::npos) << err(bad);
  bad = j;
  bad["scan"] = "zigzag";
  EXPECT_NE(err(bad).find("'zigzag'"), std::string::npos) << err(bad);
  bad = j;
  bad["merge"] = "max";
  EXPECT_NE(err(bad).find("'merge'"), std::string::npos) << err(bad);
  bad = j;
  bad["share_weights"] = "yes";
  EXPECT_NE(err(bad).find("'share_weights'"), std::string::npos) << err(bad);
  bad = j;
  bad.erase("d_lm");
  EXPECT_NE(err(bad).find("'d_lm' is missing"), std::string::npos) << err(bad);
  bad = j;
  bad["d_vision"] = 0;
  EXPECT_NE(err(bad).find("'d_vision'"), std::string::npos) << err(bad);
}

TEST(Connector, BadFeaturesAreAnErrorNamingTheProblem) {
  ConnectorImpl c(small_cfg("vss_l2"));
  EXPECT_NE(error_of([&] {
              c.forward(at::zeros({1, 15, kDv + 1}), 3, 5);
            }).find("d_vision is 12"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              c.forward(at::zeros({1, 14, kDv}), 3, 5);
            }).find("grid is 3x5 = 15"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              c.forward(at::zeros({15, kDv}), 3, 5);
            }).find("[B, gh*gw, d_vision]"),
            std::string::npos);
  // The VSS module on its own (width of the mixer, then the grid through scan2d).
  const std::string e1 = error_of([&] { c.vss->forward(at::zeros({1, 15, kDv}), 3, 5); });
  EXPECT_NE(e1.find("[B, gh*gw, 20]"), std::string::npos) << e1;
  const std::string e2 = error_of([&] { c.vss->forward(at::zeros({1, 14, kDlm}), 3, 5); });
  EXPECT_NE(e2.find("grid is 3x5"), std::string::npos) << e2;
}

TEST(Connector, SaveLoadRoundTrip) {
  const fs::path dir = fs::temp_directory_path() / ("mvl_connector_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  for (const auto& type : kTypes)
    for (bool share : {true, false}) {
      if (type == "mlp" && !share) continue;
      const auto cfg = small_cfg(type, "csm", share);
      ConnectorImpl a(cfg, 1);
      const at::Tensor v = randn({2, 15, kDv}, 10);
      const at::Tensor want = a.forward(v, 3, 5);
      const fs::path d = dir / (type + (share ? "_shared" : "_per_order"));
      // Parameters only, through io::save_module / load_module into a differently seeded twin.
      io::save_module(a, d);
      ConnectorImpl b(cfg, 2);
      ASSERT_FALSE(at::equal(b.forward(v, 3, 5), want)) << type;
      io::load_module(b, io::CheckpointFolder(d));
      EXPECT_TRUE(at::equal(b.forward(v, 3, 5), want)) << type;
      // Config + parameters.
      models::save_connector(a, d / "full");
      auto c = models::load_connector(d / "full");
      EXPECT_EQ(c->config().to_json(), cfg.to_json());
      EXPECT_TRUE(at::equal(c->forward(v, 3, 5), want)) << type;
    }
  // A per-order checkpoint does not load into a shared connector: an error naming a tensor.
  ConnectorImpl shared(small_cfg("vss_mlp", "csm", true));
  const std::string e =
      error_of([&] { io::load_module(shared, io::CheckpointFolder(dir / "vss_mlp_per_order")); });
  EXPECT_NE(e.find("vss.mixer"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(Connector, InitLeavesTheGlobalRngAlone) {
  // Building (and so initialising) a connector must not reseed or consume the process-wide
  // generator: the draws after it equal those without it.
  auto draw_after = [](const std::function<void()>& fn) {
    at::manual_seed(123);
    fn();
    return at::rand({16});
  };
  const at::Tensor want = draw_after([] {});
  for (const auto& type : kTypes)
    for (bool share : {true, false}) {
      if (type == "mlp" && !share) continue;
      EXPECT_TRUE(
          at::equal(draw_after([&] { ConnectorImpl c(small_cfg(type, "csm", share), 7); }), want))
          << type << (share ? " shared" : " per-order");
    }
  const fs::path dir = fs::temp_directory_path() / ("mvl_conn_rng_" + std::to_string(::getpid()));
  models::save_connector(ConnectorImpl(small_cfg("vss_l2")), dir);
  EXPECT_TRUE(at::equal(draw_after([&] { models::load_connector(dir); }), want));
  fs::remove_all(dir);
  // Deterministic in the seed whatever the global stream's state.
  at::manual_seed(1);
  ConnectorImpl a(small_cfg("vss_mlp", "csm", false), 5);
  at::manual_seed(2);
  (void)at::rand({100});
  ConnectorImpl b(small_cfg("vss_mlp", "csm", false), 5);
  auto pb = b.named_parameters();
  for (const auto& p : a.named_parameters()) EXPECT_TRUE(at::equal(p.value(), pb[p.key()]));
}

TEST(Connector, InitEqualsTheMixersOwnInitUnderTheSameSeed) {
  // The private-generator init draws what the former code drew from the global generator after
  // at::manual_seed(seed): linear_1 (nn.Linear default), each mixer's MambaMixerImpl::init_weights,
  // linear_2 — so the values are unchanged and stay in step with mamba.cpp's mixer init.
  for (bool share : {true, false}) {
    const auto cfg = small_cfg("vss_mlp", "csm", share);
    ConnectorImpl c(cfg, 9);
    at::manual_seed(9);
    models::Linear l1(kDv, kDlm), l2(kDlm, kDlm);
    l1->reset_parameters();
    std::vector<std::shared_ptr<models::MambaMixerImpl>> mixers;
    for (size_t k = 0; k < (share ? 1u : 4u); ++k) {
      mixers.push_back(std::make_shared<models::MambaMixerImpl>(cfg.mixer_config(), false));
      mixers.back()->init_weights();
    }
    l2->reset_parameters();
    EXPECT_TRUE(at::equal(c.linear_1->weight, l1->weight));
    EXPECT_TRUE(at::equal(c.linear_1->bias, l1->bias));
    EXPECT_TRUE(at::equal(c.linear_2->weight, l2->weight));
    EXPECT_TRUE(at::equal(c.linear_2->bias, l2->bias));
    const auto got = c.vss->all_mixers();
    ASSERT_EQ(got.size(), mixers.size());
    for (size_t k = 0; k < got.size(); ++k) {
      auto want = mixers[k]->named_parameters();
      for (const auto& p : got[k]->named_parameters())
        EXPECT_TRUE(at::equal(p.value(), want[p.key()])) << "mixer " << k << " " << p.key();
    }
  }
}

TEST(Connector, AbsurdSizesAreErrorsBeforeAllocating) {
  auto err = [](const std::string& key, nlohmann::json value) {
    nlohmann::json j = small_cfg("vss_l2").to_json();
    if (key.starts_with("mamba."))
      j["mamba"][key.substr(6)] = std::move(value);
    else
      j[key] = std::move(value);
    return error_of([&] { ConnectorConfig::from_json(j, "big.json"); });
  };
  for (const auto& [key, part] :
       std::vector<std::pair<std::string, std::string>>{{"d_vision", "'d_vision'"},
                                                        {"d_lm", "'d_lm'"},
                                                        {"mamba.d_state", "'mamba.d_state'"},
                                                        {"mamba.d_conv", "'mamba.d_conv'"},
                                                        {"mamba.expand", "'mamba.expand'"}}) {
    const std::string e = err(key, 1000000000);
    EXPECT_NE(e.find(part), std::string::npos) << key << ": " << e;
    EXPECT_NE(e.find("big.json"), std::string::npos) << e;
    EXPECT_NE(e.find("1000000000"), std::string::npos) << e;
  }
  // Each within its bound, the whole too large.
  ConnectorConfig c = small_cfg("vss_l2", "csm", /*share=*/false);
  c.d_vision = c.d_lm = 65536;
  c.expand = 64;
  const std::string e = error_of([&] { ConnectorImpl x(c); });
  EXPECT_NE(e.find("parameters"), std::string::npos) << e;
  // The count is the modules' own.
  for (const auto& type : kTypes)
    for (bool share : {true, false}) {
      const auto cfg = small_cfg(type, "csm", share);
      int64_t n = 0;
      for (const auto& p : ConnectorImpl(cfg, 0, false).parameters()) n += p.numel();
      EXPECT_EQ(cfg.num_parameters(), static_cast<double>(n)) << type << " " << share;
    }
}
