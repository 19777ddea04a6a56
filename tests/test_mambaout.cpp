// MambaOut (SPEC §2.1) and mambaout_ssm: sizes, official key names, init, drop path, configs,
// save / load, golden parity with timm (fixtures from dev/make_mambaout_fixtures.py), the SSM
// token mixer and the VisionEncoder view.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/mambaout.h"
#include "models/vision.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::models;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(MAMBAVL_FIXTURES_DIR) / "vision";

nlohmann::json tiny_json(const std::string& arch = "mambaout") {
  return {{"architecture", arch},
          {"depths", {1, 1, 2, 1}},
          {"dims", {8, 16, 24, 32}},
          {"num_classes", 10},
          {"image_size", 32}};
}

MambaOutClassifier& as_mambaout(ImageClassifier& c) {
  auto* m = dynamic_cast<MambaOutClassifier*>(&c);
  if (m == nullptr) throw std::runtime_error("not a MambaOutClassifier");
  return *m;
}

using testing_util::expect_error;

std::map<std::string, at::Tensor> state(const torch::nn::Module& m) {
  std::map<std::string, at::Tensor> s;
  for (const auto& p : m.named_parameters()) s[p.key()] = p.value().detach().clone();
  return s;
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }
// max |a - b| / max |b|
double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return max_abs(a - b) / std::max(max_abs(b), 1e-30);
}

// The next draws of the process-wide generator after at::manual_seed(seed) and `fn`: equal to
// those without `fn` iff fn neither reseeds nor consumes the global random stream.
at::Tensor global_draw_after(uint64_t seed, const std::function<void()>& fn) {
  at::manual_seed(seed);
  fn();
  return at::rand({16});
}

// A timm hub config.json for `arch` (mambaout_<size>).
nlohmann::json timm_hub_json(const std::string& arch, int64_t num_classes, int64_t features) {
  return {{"architecture", arch},
          {"num_classes", num_classes},
          {"num_features", features},
          {"global_pool", "avg"},
          {"pretrained_cfg",
           {{"input_size", {3, 224, 224}},
            {"interpolation", "bicubic"},
            {"crop_pct", 1.0},
            {"crop_mode", "center"},
            {"mean", {0.485, 0.456, 0.406}},
            {"std", {0.229, 0.224, 0.225}},
            {"num_classes", num_classes}}}};
}

class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() /
             ("mambavl_mambaout_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Architecture

TEST(MambaOut, ParameterCountsMatchPaper) {
  // Exact counts computed by this implementation must equal timm 1.0.31's
  // (sum(p.numel() for p in timm.create_model("mambaout_<v>").parameters())):
  //   femto 7,304,536  kobe 9,141,208  tiny 26,545,096  small 48,488,072  base 84,813,092
  // and round to the paper's 7.3M / 9.1M / 26.5M / 48.5M / 84.8M.
  struct Want {
    std::string variant;
    int64_t exact;
    double paper_m;
  };
  const std::vector<Want> want = {{"femto", 7304536, 7.3},
                                  {"kobe", 9141208, 9.1},
                                  {"tiny", 26545096, 26.5},
                                  {"small", 48488072, 48.5},
                                  {"base", 84813092, 84.8}};
  for (const auto& w : want) {
    MambaOutImpl m(MambaOutConfig::preset(w.variant), /*initialize=*/false);
    const int64_t n = m.num_parameters();
    EXPECT_EQ(n, w.exact) << w.variant;
    EXPECT_DOUBLE_EQ(std::round(static_cast<double>(n) / 1e5) / 10.0, w.paper_m) << w.variant;
  }
}

TEST(MambaOut, ParameterNamesAreOfficialKeys) {
  auto clf = make_classifier(tiny_json(), 0, "tiny.json");
  std::vector<std::string> names;
  for (const auto& p : clf->module().named_parameters()) names.push_back(p.key());
  std::sort(names.begin(), names.end());
  std::vector<std::string> want;
  auto add = [&](const std::string& m) {
    want.push_back(m + ".weight");
    want.push_back(m + ".bias");
  };
  for (const char* m : {"conv1", "norm1", "conv2", "norm2"})
    add(std::string("downsample_layers.0.") + m);
  for (int s = 1; s < 4; ++s)
    for (const char* m : {"conv", "norm"}) add("downsample_layers." + std::to_string(s) + "." + m);
  const int depths[] = {1, 1, 2, 1};
  for (int s = 0; s < 4; ++s)
    for (int b = 0; b < depths[s]; ++b)
      for (const char* m : {"norm", "fc1", "conv", "fc2"})
        add("stages." + std::to_string(s) + "." + std::to_string(b) + "." + m);
  add("norm");
  for (const char* m : {"fc1", "norm", "fc2"}) add(std::string("head.") + m);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(names, want);

  auto p = clf->module().named_parameters();
  // hidden = int(8/3 * C): C = 8 -> 21, C = 32 -> 85
  EXPECT_EQ(p["stages.0.0.fc1.weight"].sizes(), at::IntArrayRef({42, 8}));
  EXPECT_EQ(p["stages.0.0.fc2.weight"].sizes(), at::IntArrayRef({8, 21}));
  EXPECT_EQ(p["stages.3.0.fc1.weight"].sizes(), at::IntArrayRef({170, 32}));
  EXPECT_EQ(p["stages.2.1.conv.weight"].sizes(), at::IntArrayRef({24, 1, 7, 7}));
  EXPECT_EQ(p["downsample_layers.0.conv1.weight"].sizes(), at::IntArrayRef({4, 3, 3, 3}));
  EXPECT_EQ(p["downsample_layers.0.conv2.weight"].sizes(), at::IntArrayRef({8, 4, 3, 3}));
  EXPECT_EQ(p["downsample_layers.2.conv.weight"].sizes(), at::IntArrayRef({24, 16, 3, 3}));
  EXPECT_EQ(p["norm.weight"].sizes(), at::IntArrayRef({32}));
  EXPECT_EQ(p["head.fc1.weight"].sizes(), at::IntArrayRef({128, 32}));
  EXPECT_EQ(p["head.norm.weight"].sizes(), at::IntArrayRef({128}));
  EXPECT_EQ(p["head.fc2.weight"].sizes(), at::IntArrayRef({10, 128}));
  EXPECT_EQ(clf->checkpoint_key("stages.2.1.fc1.weight"), "stages.2.1.fc1.weight");
}

TEST(MambaOut, TimmKeysAreTheInverseOfTimmsCheckpointFilter) {
  // timm.models.mambaout.checkpoint_filter_fn maps official -> timm as below.
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"downsample_layers.0.conv1.weight", "stem.conv1.weight"},
      {"downsample_layers.0.norm2.bias", "stem.norm2.bias"},
      {"downsample_layers.1.conv.weight", "stages.1.downsample.conv.weight"},
      {"downsample_layers.3.norm.bias", "stages.3.downsample.norm.bias"},
      {"stages.0.0.norm.weight", "stages.0.blocks.0.norm.weight"},
      {"stages.2.13.fc1.bias", "stages.2.blocks.13.fc1.bias"},
      {"norm.weight", "head.norm.weight"},
      {"head.fc1.weight", "head.pre_logits.fc.weight"},
      {"head.norm.bias", "head.pre_logits.norm.bias"},
      {"head.fc2.weight", "head.fc.weight"},
  };
  for (const auto& [ours, timm] : pairs) EXPECT_EQ(MambaOutImpl::timm_key(ours), timm) << ours;
}

TEST(MambaOut, ForwardShapesForAnyImageSize) {
  auto clf = make_classifier(tiny_json(), 1, "tiny.json");
  clf->module().eval();
  at::NoGradGuard ng;
  EXPECT_EQ(clf->forward(at::randn({2, 3, 32, 32})).sizes(), at::IntArrayRef({2, 10}));
  at::Tensor logits = clf->forward(at::randn({3, 3, 64, 48}));
  EXPECT_EQ(logits.sizes(), at::IntArrayRef({3, 10}));
  EXPECT_EQ(logits.scalar_type(), at::kFloat);
  auto& m = *as_mambaout(*clf).model;
  // stem /4, then /2 per later stage, sizes rounded up (3x3 stride 2, padding 1)
  EXPECT_EQ(m.forward_features(at::randn({1, 3, 64, 48})).sizes(), at::IntArrayRef({1, 2, 2, 32}));
  EXPECT_EQ(m.forward_features(at::randn({1, 3, 224, 96})).sizes(), at::IntArrayRef({1, 7, 3, 32}));
  expect_error(
      [&] {
        clf->forward(at::randn({2, 1, 32, 32}));
      },
      {"[B, 3, H, W]", "[2, 1, 32, 32]"});
  expect_error([&] { clf->forward(at::randn({3, 32, 32})); }, {"[B, 3, H, W]"});
}

TEST(MambaOut, InitIsSeededAndFollowsTheOfficialCode) {
  auto a = make_classifier(tiny_json(), 3, "tiny.json");
  auto b = make_classifier(tiny_json(), 3, "tiny.json");
  auto c = make_classifier(tiny_json(), 4, "tiny.json");
  const auto sa = state(a->module()), sb = state(b->module()), sc = state(c->module());
  std::vector<at::Tensor> weights;
  for (const auto& [k, v] : sa) {
    EXPECT_TRUE(at::equal(v, sb.at(k))) << k;
    const bool is_norm = k.find("norm") != std::string::npos;
    const bool is_bias = k.ends_with(".bias");
    if (is_norm && !is_bias) {
      EXPECT_TRUE(at::equal(v, at::ones_like(v))) << k;
    } else if (is_bias) {
      EXPECT_TRUE(at::equal(v, at::zeros_like(v))) << k;
    } else {
      EXPECT_FALSE(at::equal(v, sc.at(k))) << k << " does not depend on the seed";
      weights.push_back(v.reshape({-1}));
    }
  }
  at::Tensor all = at::cat(weights);  // every Conv / Linear weight ~ trunc_normal(std .02)
  EXPECT_GT(all.numel(), 10000);
  EXPECT_NEAR(all.std().item<double>(), 0.02, 0.001);
  EXPECT_NEAR(all.mean().item<double>(), 0.0, 0.001);
  EXPECT_LE(max_abs(all), 2.0);
}

TEST(MambaOut, DropPathIsLinearPerBlockTrainingOnlyAndSeeded) {
  nlohmann::json j = tiny_json();
  j["drop_path_rate"] = 0.5;
  auto clf = make_classifier(j, 2, "tiny.json");
  auto& m = *as_mambaout(*clf).model;
  // 5 blocks: linspace(0, 0.5, 5)
  std::vector<double> rates;
  for (auto& stage : m.blocks)
    for (auto& blk : stage) rates.push_back(blk->drop_path);
  ASSERT_EQ(rates.size(), 5u);
  for (size_t i = 0; i < rates.size(); ++i) EXPECT_NEAR(rates[i], 0.125 * i, 1e-7) << i;

  at::NoGradGuard ng;
  at::Tensor x = at::randn({16, 3, 32, 32});
  clf->module().eval();
  at::Tensor e1 = clf->forward(x), e2 = clf->forward(x);
  EXPECT_TRUE(at::equal(e1, e2));
  clf->module().train();
  at::manual_seed(11);
  at::Tensor t1 = clf->forward(x);
  at::manual_seed(11);
  at::Tensor t2 = clf->forward(x);
  at::manual_seed(12);
  at::Tensor t3 = clf->forward(x);
  EXPECT_TRUE(at::equal(t1, t2)) << "drop path is not deterministic under the manual seed";
  EXPECT_FALSE(at::equal(t1, t3));
  EXPECT_GT(max_abs(t1 - e1), 1e-6) << "training mode does not drop paths";

  // rate 0: training mode == eval mode
  j["drop_path_rate"] = 0.0;
  auto plain = make_classifier(j, 2, "tiny.json");
  plain->module().eval();
  at::Tensor pe = plain->forward(x);
  plain->module().train();
  EXPECT_TRUE(at::allclose(plain->forward(x), pe, 0, 0));
  EXPECT_TRUE(at::equal(pe, e1)) << "drop_path_rate changed the eval-mode function";
}

TEST(MambaOut, ConfigJsonRoundTripsAndVariantsExpand) {
  auto a = make_classifier(tiny_json(), 0, "tiny.json");
  nlohmann::json ca = a->config_json();
  EXPECT_EQ(ca.at("architecture"), "mambaout");
  EXPECT_EQ(ca.at("depths"), nlohmann::json({1, 1, 2, 1}));
  EXPECT_EQ(ca.at("dims"), nlohmann::json({8, 16, 24, 32}));
  EXPECT_EQ(ca.at("num_classes"), 10);
  EXPECT_EQ(ca.at("preprocess").at("size"), 32);
  EXPECT_FALSE(ca.contains("ssm"));
  EXPECT_EQ(make_classifier(ca, 0, "again.json")->config_json(), ca);
  EXPECT_EQ(a->arch(), "mambaout");
  EXPECT_EQ(a->num_classes(), 10);
  EXPECT_EQ(a->preprocess().size, 32);

  nlohmann::json v = {{"architecture", "mambaout"}, {"variant", "kobe"}, {"num_classes", 3}};
  MambaOutConfig c = MambaOutConfig::from_json(v, "v.json");
  EXPECT_EQ(c.depths, std::vector<int64_t>({3, 3, 15, 3}));
  EXPECT_EQ(c.dims, std::vector<int64_t>({48, 96, 192, 288}));
  EXPECT_EQ(c.preprocess.size, 224);
  nlohmann::json cj = c.to_json();
  EXPECT_EQ(cj.at("variant"), "kobe");
  EXPECT_EQ(MambaOutConfig::from_json(cj, "v.json").to_json(), cj);
  // timm's hub config
  nlohmann::json t = {{"architecture", "mambaout_tiny"},
                      {"num_classes", 1000},
                      {"num_features", 576},
                      {"global_pool", "avg"},
                      {"pretrained_cfg",
                       {{"input_size", {3, 288, 288}},
                        {"interpolation", "bilinear"},
                        {"crop_mode", "squash"},
                        {"crop_pct", 1.0},
                        {"mean", {0.5, 0.5, 0.5}},
                        {"std", {0.25, 0.25, 0.25}},
                        {"license", "apache-2.0"}}}};
  MambaOutConfig ct = MambaOutConfig::from_json(t, "hub.json");
  EXPECT_EQ(ct.dims, std::vector<int64_t>({96, 192, 384, 576}));
  EXPECT_EQ(ct.preprocess.size, 288);
  EXPECT_EQ(ct.preprocess.resample, io::Resample::Bilinear);
  EXPECT_EQ(ct.preprocess.mode, "squash");
  EXPECT_DOUBLE_EQ(ct.preprocess.std[1], 0.25);
  EXPECT_EQ(ct.to_json().at("architecture"), "mambaout");
}

TEST(MambaOut, BadConfigsAreErrorsNamingTheFile) {
  nlohmann::json j = tiny_json();
  j["dropout"] = 0.1;
  expect_error([&] { make_classifier(j, 0, "my/config.json"); },
               {"my/config.json", "unknown key", "'dropout'"});
  expect_error(
      [&] {
        make_classifier({{"architecture", "mambaout"}, {"variant", "huge"}}, 0, "a.json");
      },
      {"a.json", "'huge'", "femto"});
  expect_error(
      [&] {
        make_classifier(
            {{"architecture", "mambaout"}, {"variant", "tiny"}, {"depths", {1, 1, 1, 1}}}, 0,
            "b.json");
      },
      {"b.json", "contradict", "tiny"});
  expect_error(
      [&] {
        make_classifier({{"architecture", "mambaout"}, {"depths", {1, 1}}}, 0, "c.json");
      },
      {"c.json", "'dims'"});
  j = tiny_json();
  j["depths"] = "3,3,9,3";
  expect_error([&] { make_classifier(j, 0, "d.json"); },
               {"d.json", "'depths'", "list of integers"});
  j = tiny_json();
  j["dims"] = {8, 16, 24};
  expect_error([&] { make_classifier(j, 0, "e.json"); }, {"e.json", "same length"});
  j = tiny_json();
  j["num_classes"] = 0;
  expect_error([&] { make_classifier(j, 0, "f.json"); }, {"f.json", "num_classes"});
  j = tiny_json();
  j["drop_path_rate"] = 1.5;
  expect_error([&] { make_classifier(j, 0, "g.json"); }, {"g.json", "drop_path_rate"});
  j = tiny_json();
  j["ssm"] = {{"d_state", 4}};
  expect_error([&] { make_classifier(j, 0, "h.json"); }, {"h.json", "'ssm'", "mambaout_ssm"});
  j = tiny_json("mambaout_ssm");
  j["ssm"] = {{"d_state", 4}, {"kernel", 3}};
  expect_error([&] { make_classifier(j, 0, "i.json"); }, {"i.json", "'kernel'", "ssm"});
  expect_error(
      [&] {
        make_classifier({{"architecture", "mambaout_small_rw"}}, 0, "j.json");
      },
      {"j.json", "mambaout_small_rw", "not supported"});
  expect_error(
      [&] {
        make_classifier({{"architecture", "mambaout_femto"}, {"num_features", 100}}, 0, "k.json");
      },
      {"k.json", "num_features"});
  expect_error(
      [&] {
        make_classifier({{"architecture", "mambaout_femto"}, {"head_fn", "x"}}, 0, "l.json");
      },
      {"l.json", "'head_fn'"});
}

TEST(MambaOut, SaveLoadRoundTripWritesOfficialKeys) {
  TempDir tmp("roundtrip");
  nlohmann::json j = tiny_json();
  j["drop_path_rate"] = 0.1;
  auto clf = make_classifier(j, 5, "tiny.json");
  // make the norms non-trivial so that a norm loaded into the wrong place would show
  {
    at::NoGradGuard ng;
    for (auto& p : clf->module().parameters()) p.add_(at::randn_like(p) * 0.1);
  }
  std::vector<std::string> classes;
  for (char ch = 'a'; ch < 'a' + 10; ++ch) classes.push_back(std::string("class_") + ch);
  save_classifier(*clf, classes, tmp.path);

  io::SafetensorsFile st(tmp.path / "model.safetensors");
  EXPECT_TRUE(st.contains("downsample_layers.0.conv1.weight"));
  EXPECT_TRUE(st.contains("stages.2.1.fc1.weight"));
  EXPECT_TRUE(st.contains("head.fc2.bias"));
  EXPECT_EQ(st.names().size(), clf->module().named_parameters().size());

  auto back = load_classifier(tmp.path);
  EXPECT_EQ(back->arch(), "mambaout");
  EXPECT_EQ(back->config_json(), clf->config_json());
  EXPECT_EQ(classifier_classes(tmp.path), classes);
  const auto s1 = state(clf->module()), s2 = state(back->module());
  ASSERT_EQ(s1.size(), s2.size());
  for (const auto& [k, v] : s1) EXPECT_TRUE(at::equal(v, s2.at(k))) << k;
  clf->module().eval();
  back->module().eval();
  at::NoGradGuard ng;
  at::Tensor x = at::randn({2, 3, 32, 32});
  EXPECT_TRUE(at::equal(clf->forward(x), back->forward(x)));
}

TEST(MambaOut, LoadErrorsNameTheFolder) {
  TempDir tmp("loaderr");
  auto clf = make_classifier(tiny_json(), 0, "tiny.json");
  save_classifier(*clf, std::vector<std::string>(10, "x"), tmp.path);
  // a config that disagrees with the weights
  nlohmann::json j = io::read_json_file(tmp.path / "config.json");
  j["num_classes"] = 7;
  j.erase("classes");
  io::write_json_file(tmp.path / "config.json", j);
  expect_error([&] { load_classifier(tmp.path); }, {tmp.path.string(), "head.fc2.weight", "shape"});
  j["num_classes"] = 10;
  j["typo"] = 1;
  io::write_json_file(tmp.path / "config.json", j);
  expect_error([&] { load_classifier(tmp.path); }, {"config.json", "'typo'"});
}

TEST(MambaOut, LoadsATimmHubFolder) {
  // timm's hub layout: {"architecture": "mambaout_femto", ...} + weights under timm's keys.
  TempDir tmp("hub");
  auto src = make_classifier(
      {{"architecture", "mambaout"}, {"variant", "femto"}, {"num_classes", 5}}, 8, "femto.json");
  io::save_module(src->module(), tmp.path,
                  [](const std::string& n) { return MambaOutImpl::timm_key(n); });
  io::write_json_file(tmp.path / "config.json", {{"architecture", "mambaout_femto"},
                                                 {"num_classes", 5},
                                                 {"num_features", 288},
                                                 {"global_pool", "avg"},
                                                 {"pretrained_cfg",
                                                  {{"tag", "in1k"},
                                                   {"input_size", {3, 224, 224}},
                                                   {"test_input_size", {3, 288, 288}},
                                                   {"interpolation", "bicubic"},
                                                   {"crop_pct", 1.0},
                                                   {"crop_mode", "center"},
                                                   {"mean", {0.485, 0.456, 0.406}},
                                                   {"std", {0.229, 0.224, 0.225}},
                                                   {"num_classes", 5},
                                                   {"first_conv", "stem.conv1"},
                                                   {"classifier", "head.fc"}}}});
  io::SafetensorsFile st(tmp.path / "model.safetensors");
  ASSERT_TRUE(st.contains("stages.2.blocks.8.fc1.weight"));
  ASSERT_TRUE(st.contains("head.pre_logits.fc.weight"));
  auto back = load_classifier(tmp.path);
  EXPECT_EQ(back->arch(), "mambaout");
  EXPECT_EQ(back->num_classes(), 5);
  EXPECT_EQ(back->config_json().at("variant"), "femto");
  EXPECT_EQ(back->preprocess().size, 224);
  const auto s1 = state(src->module()), s2 = state(back->module());
  for (const auto& [k, v] : s1) EXPECT_TRUE(at::equal(v, s2.at(k))) << k;
  auto enc = load_vision_encoder(tmp.path);
  EXPECT_EQ(enc->feature_dim(), 288);
}

// ---------------------------------------------------------------------------------------------
// Golden parity with timm (random weights)

class MambaOutGolden : public testing::TestWithParam<std::string> {};

TEST_P(MambaOutGolden, LogitsFeaturesAndGradientsMatchTimm) {
  const fs::path dir = kFixtures / GetParam();
  ASSERT_TRUE(fs::exists(dir / "model.safetensors")) << "missing fixture " << dir;
  io::SafetensorsFile golden(kFixtures / "mambaout-tiny" / "golden.safetensors");
  auto clf = load_classifier(dir);
  auto& m = *as_mambaout(*clf).model;
  clf->module().eval();
  const at::Tensor x = golden.tensor("input");  // [2, 3, 64, 48]

  at::Tensor feats = m.forward_features(x);  // [2, 2, 2, 32]
  at::Tensor want_f = golden.tensor("features");
  ASSERT_EQ(feats.sizes(), want_f.sizes());
  EXPECT_LE(max_abs(feats - want_f), 1e-4);

  at::Tensor logits = clf->forward(x);  // [2, 10]
  at::Tensor want = golden.tensor("logits");
  ASSERT_EQ(logits.sizes(), want.sizes());
  EXPECT_LE(max_abs(logits - want), 1e-4);

  at::Tensor loss = at::cross_entropy_loss(logits, golden.tensor("labels"));
  EXPECT_NEAR(loss.item<double>(), golden.tensor("loss").item<double>(), 1e-5);
  loss.backward();
  size_t checked = 0, stored = 0;
  for (const auto& n : golden.names()) stored += n.starts_with("grad.");
  for (const auto& p : clf->module().named_parameters()) {
    const std::string key = "grad." + p.key();
    ASSERT_TRUE(golden.contains(key)) << key;
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_LE(rel_err(p.value().grad(), golden.tensor(key)), 1e-3) << p.key();
    ++checked;
  }
  EXPECT_EQ(checked, stored);
}

TEST_P(MambaOutGolden, DropPathInTrainingMatchesTimmUnderTheSameSeed) {
  // timm's DropPath draws x.new_empty([B, 1, 1, 1]).bernoulli_(keep) per block, in block order;
  // so do we, so the same manual seed gives the same masks (same LibTorch version as the
  // fixture's PyTorch).
  io::SafetensorsFile golden(kFixtures / "mambaout-tiny" / "golden.safetensors");
  auto clf = load_classifier(kFixtures / GetParam());
  clf->module().train();
  at::NoGradGuard ng;
  at::manual_seed(1234);
  at::Tensor logits = clf->forward(golden.tensor("input"));
  EXPECT_LE(max_abs(logits - golden.tensor("logits_train")), 1e-4);
  EXPECT_GT(max_abs(logits - golden.tensor("logits")), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Layouts, MambaOutGolden,
                         testing::Values("mambaout-tiny", "mambaout-tiny-timm"),
                         [](const testing::TestParamInfo<std::string>& i) {
                           return i.param == "mambaout-tiny" ? std::string("Official")
                                                             : std::string("Timm");
                         });

// ---------------------------------------------------------------------------------------------
// mambaout_ssm

namespace {
nlohmann::json ssm_json(bool bidirectional = true) {
  nlohmann::json j = {{"architecture", "mambaout_ssm"},
                      {"depths", {1, 1, 1, 1}},
                      {"dims", {8, 16, 24, 32}},
                      {"num_classes", 5},
                      {"image_size", 32},
                      {"ssm", {{"d_state", 4}, {"bidirectional", bidirectional}}}};
  return j;
}

// The S6 recurrence written out with loops (float64), for one direction:
//   x_dbl = W_x u; delta = softplus(W_dt x_dbl[:R] + b_dt); A = -exp(A_log)
//   h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t;  y_t = C_t . h_t + D u_t
at::Tensor reference_ssm(const MambaOutSsmImpl& s, const at::Tensor& u_in) {
  at::Tensor u = u_in.to(at::kDouble);  // [B, C, L]
  const int64_t Bn = u.size(0), C = u.size(1), L = u.size(2), R = s.dt_rank, N = s.d_state;
  at::Tensor Wx = s.x_proj->weight.to(at::kDouble), Wdt = s.dt_proj->weight.to(at::kDouble);
  at::Tensor bdt = s.dt_proj->bias.to(at::kDouble), A = -at::exp(s.A_log.to(at::kDouble));
  at::Tensor Dv = s.D.to(at::kDouble);
  at::Tensor y = at::zeros({Bn, C, L}, at::kDouble);
  for (int64_t b = 0; b < Bn; ++b) {
    at::Tensor h = at::zeros({C, N}, at::kDouble);
    for (int64_t t = 0; t < L; ++t) {
      at::Tensor ut = u[b].select(1, t);                                    // [C]
      at::Tensor xd = at::mv(Wx, ut);                                       // [R + 2N]
      at::Tensor dt = at::softplus(at::mv(Wdt, xd.narrow(0, 0, R)) + bdt);  // [C]
      at::Tensor Bt = xd.narrow(0, R, N), Ct = xd.narrow(0, R + N, N);      // [N]
      h = at::exp(dt.unsqueeze(1) * A) * h + (dt * ut).unsqueeze(1) * Bt.unsqueeze(0);
      y[b].select(1, t).copy_(at::mv(h, Ct) + Dv * ut);
    }
  }
  return y;
}
}  // namespace

TEST(MambaOutSsm, SsmCoreIsTheS6RecurrenceAndBlockFlattensRowMajor) {
  MambaOutSsmConfig sc;
  sc.d_state = 3;
  MambaOutSsmImpl s(6, sc);
  EXPECT_EQ(s.dt_rank, 1);  // ceil(6 / 16)
  at::manual_seed(3);
  s.init_weights();
  {
    at::NoGradGuard ng;  // non-trivial D and A
    s.D.add_(at::randn_like(s.D) * 0.3);
    s.A_log.add_(at::randn_like(s.A_log) * 0.3);
  }
  at::Tensor u = at::randn({2, 6, 9});
  at::NoGradGuard ng;
  at::Tensor y = s.forward(u);
  EXPECT_LE(max_abs(y.to(at::kDouble) - reference_ssm(s, u)), 1e-4);
  // causal along the token order: changing token 5 leaves outputs 0..4 unchanged
  at::Tensor u2 = u.clone();
  u2.select(2, 5).add_(1.0);
  at::Tensor y2 = s.forward(u2);
  EXPECT_TRUE(at::allclose(y.narrow(2, 0, 5), y2.narrow(2, 0, 5)));
  EXPECT_GT(max_abs(y.narrow(2, 5, 4) - y2.narrow(2, 5, 4)), 1e-6);

  // Block: the c branch is conv -> SiLU -> ssm(u) + flip(ssm_rev(flip(u))) over row-major H*W.
  MambaOutConfig c = MambaOutConfig::from_json(ssm_json(), "ssm.json");
  at::manual_seed(4);
  GatedCnnBlockImpl blk(8, 0.0, c);
  for (auto& p : blk.parameters()) p.normal_(0, 0.3);
  for (auto* core : {blk.ssm.get(), blk.ssm_rev.get()}) {
    core->A_log.copy_(at::rand_like(core->A_log));
    core->dt_proj->bias.fill_(-1.0);
  }
  at::Tensor x = at::randn({2, 3, 5, 8});  // [B, H, W, C], non-square
  at::Tensor got = blk.forward(x);
  const int64_t h = blk.hidden;
  at::Tensor z = blk.fc1->forward(blk.norm->forward(x));  // [B, H, W, 2h]
  at::Tensor cc = blk.conv->forward(z.narrow(-1, 2 * h - 8, 8).permute({0, 3, 1, 2}).contiguous());
  at::Tensor uu =
      at::silu(cc).permute({0, 2, 3, 1}).reshape({2, 15, 8}).transpose(1, 2);  // [B,C,L]
  at::Tensor ss =
      reference_ssm(*blk.ssm, uu) + reference_ssm(*blk.ssm_rev, uu.flip({-1})).flip({-1});
  at::Tensor cl = ss.transpose(1, 2).reshape({2, 3, 5, 8}).to(at::kFloat);  // [B, H, W, C]
  at::Tensor want = x + blk.fc2->forward(at::gelu(z.narrow(-1, 0, h)) *
                                         at::cat({z.narrow(-1, h, h - 8), cl}, -1));
  EXPECT_LE(max_abs(got - want), 1e-4);
}

TEST(MambaOutSsm, ForwardShapesAndGradientsReachEveryParameter) {
  auto clf = make_classifier(ssm_json(), 9, "ssm.json");
  EXPECT_EQ(clf->arch(), "mambaout_ssm");
  auto params = clf->module().named_parameters();
  for (const char* k : {"stages.0.0.ssm.x_proj.weight", "stages.0.0.ssm.dt_proj.weight",
                        "stages.0.0.ssm.dt_proj.bias", "stages.0.0.ssm.A_log", "stages.0.0.ssm.D",
                        "stages.3.0.ssm_rev.A_log", "stages.3.0.conv.weight"})
    EXPECT_TRUE(params.contains(k)) << k;
  EXPECT_EQ(params["stages.3.0.ssm.x_proj.weight"].sizes(), at::IntArrayRef({2 + 8, 32}));
  EXPECT_EQ(params["stages.3.0.ssm.A_log"].sizes(), at::IntArrayRef({32, 4}));
  EXPECT_EQ(clf->checkpoint_key("stages.3.0.ssm_rev.D"), "stages.3.0.ssm_rev.D");

  clf->module().train();
  at::Tensor x = at::randn({2, 3, 72, 40});  // non-square
  at::Tensor logits = clf->forward(x);
  EXPECT_EQ(logits.sizes(), at::IntArrayRef({2, 5}));
  at::cross_entropy_loss(logits, at::tensor(std::vector<int64_t>{1, 4})).backward();
  for (const auto& p : clf->module().named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(max_abs(p.value().grad()), 0.0) << p.key() << " gets no gradient";
    EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  // unidirectional: no ssm_rev
  auto uni = make_classifier(ssm_json(false), 9, "ssm.json");
  for (const auto& p : uni->module().named_parameters())
    EXPECT_EQ(p.key().find("ssm_rev"), std::string::npos) << p.key();
  EXPECT_EQ(uni->config_json().at("ssm").at("bidirectional"), false);
}

TEST(MambaOutSsm, InitAndConfigRoundTrip) {
  auto clf = make_classifier(ssm_json(), 9, "ssm.json");
  nlohmann::json cj = clf->config_json();
  EXPECT_EQ(cj.at("architecture"), "mambaout_ssm");
  EXPECT_EQ(cj.at("ssm"),
            nlohmann::json({{"d_state", 4}, {"dt_rank", "auto"}, {"bidirectional", true}}));
  EXPECT_EQ(make_classifier(cj, 9, "again.json")->config_json(), cj);
  auto& m = *as_mambaout(*clf).model;
  auto& core = *m.blocks[1][0]->ssm;
  EXPECT_TRUE(at::allclose(core.A_log, at::log(at::arange(1, 5, at::kFloat)).expand({16, 4})));
  EXPECT_TRUE(at::equal(core.D, at::ones({16})));
  at::Tensor dt = at::softplus(core.dt_proj->bias);
  EXPECT_GE(dt.min().item<double>(), 1e-3 * 0.999);
  EXPECT_LE(dt.max().item<double>(), 0.1 * 1.001);
  nlohmann::json j = ssm_json();
  j["ssm"]["dt_rank"] = 3;
  EXPECT_EQ(make_classifier(j, 0, "r.json")
                ->module()
                .named_parameters()["stages.0.0.ssm.dt_proj.weight"]
                .sizes(),
            at::IntArrayRef({8, 3}));
  auto again = make_classifier(ssm_json(), 9, "ssm.json");
  const auto s1 = state(clf->module()), s2 = state(again->module());
  for (const auto& [k, v] : s1) EXPECT_TRUE(at::equal(v, s2.at(k))) << k;
}

TEST(MambaOutSsm, ParameterCountIsMambaOutPlusTwoSsmCoresPerBlock) {
  // per block and direction (d_inner = C, N = 16, R = ceil(C / 16)):
  //   x_proj (R + 2N) C + dt_proj (R C + C) + A_log C N + D C
  // femto: 7,304,536 + 456,192 = 7,760,728 (base: 84,813,092 -> 88,856,356)
  MambaOutConfig c = MambaOutConfig::preset("femto");
  c.ssm = true;
  MambaOutImpl m(c, /*initialize=*/false);
  EXPECT_EQ(m.num_parameters(), 7760728);
  c.ssm_cfg.bidirectional = false;
  EXPECT_EQ(MambaOutImpl(c, false).num_parameters(), 7304536 + 456192 / 2);
}

TEST(MambaOutSsm, SaveLoadRoundTrip) {
  TempDir tmp("ssm");
  auto clf = make_classifier(ssm_json(), 10, "ssm.json");
  save_classifier(*clf, {"a", "b", "c", "d", "e"}, tmp.path);
  io::SafetensorsFile st(tmp.path / "model.safetensors");
  EXPECT_TRUE(st.contains("stages.1.0.ssm_rev.dt_proj.bias"));
  auto back = load_classifier(tmp.path);
  EXPECT_EQ(back->arch(), "mambaout_ssm");
  EXPECT_EQ(back->config_json(), clf->config_json());
  clf->module().eval();
  back->module().eval();
  at::NoGradGuard ng;
  at::Tensor x = at::randn({1, 3, 48, 32});
  EXPECT_TRUE(at::equal(clf->forward(x), back->forward(x)));
}

// ---------------------------------------------------------------------------------------------
// VisionEncoder

TEST(MambaOutEncoder, EncodeReturnsTheLastStageGrid) {
  io::SafetensorsFile golden(kFixtures / "mambaout-tiny" / "golden.safetensors");
  auto enc = load_vision_encoder(kFixtures / "mambaout-tiny");
  EXPECT_EQ(enc->arch(), "mambaout");
  EXPECT_EQ(enc->feature_dim(), 32);
  EXPECT_EQ(enc->preprocess().size, 64);
  enc->module().eval();
  at::NoGradGuard ng;
  VisionFeatures f = enc->encode(golden.tensor("input"));
  EXPECT_EQ(f.num_prefix, 0);
  EXPECT_EQ(f.grid_h, 2);
  EXPECT_EQ(f.grid_w, 2);
  ASSERT_EQ(f.tokens.sizes(), at::IntArrayRef({2, 4, 32}));
  at::Tensor want = golden.tensor("features").reshape({2, 4, 32});  // row-major grid
  EXPECT_LE(max_abs(f.tokens - want), 1e-4);
  VisionFeatures g = enc->encode(at::randn({1, 3, 96, 160}));
  EXPECT_EQ(g.grid_h, 3);
  EXPECT_EQ(g.grid_w, 5);
  EXPECT_EQ(g.tokens.sizes(), at::IntArrayRef({1, 15, 32}));
  expect_error(
      [&] {
        enc->encode(golden.tensor("input"), FeatureSelect{-2, false});
      },
      {"layer -2"});
}

TEST(MambaOutEncoder, LoadsWithoutAHeadAndSavesRoundTrip) {
  TempDir tmp("enc");
  auto src = make_classifier(tiny_json(), 6, "tiny.json");
  // weights without norm / head.*: usable as an encoder, not as a classifier
  io::save_module(src->module(), tmp.path, [](const std::string& n) {
    return n.starts_with("head.") || n.starts_with("norm.") ? std::string() : n;
  });
  io::write_json_file(tmp.path / "config.json", src->config_json());
  expect_error([&] { load_classifier(tmp.path); },
               {tmp.path.string(), "missing", "head.fc2.weight"});
  auto enc = load_vision_encoder(tmp.path);
  auto& m = *as_mambaout(*src).model;
  at::NoGradGuard ng;
  src->module().eval();
  enc->module().eval();
  at::Tensor x = at::randn({2, 3, 64, 64});
  at::Tensor want = m.forward_features(x).reshape({2, 4, 32});
  EXPECT_TRUE(at::equal(enc->encode(x).tokens, want));

  TempDir tmp2("enc2");
  enc->save(tmp2.path);
  auto back = load_vision_encoder(tmp2.path);
  back->module().eval();
  EXPECT_TRUE(at::equal(back->encode(x).tokens, want));
  EXPECT_EQ(back->preprocess().size, 32);
}

TEST(MambaOutEncoder, PresetsAreSeededRandomEncoders) {
  auto a = make_mambaout_encoder_preset("femto", 1);
  auto b = make_mambaout_encoder_preset("femto", 1);
  EXPECT_EQ(a->arch(), "mambaout");
  EXPECT_EQ(a->feature_dim(), 288);
  EXPECT_EQ(a->preprocess().size, 224);
  a->module().eval();
  b->module().eval();
  at::NoGradGuard ng;
  at::Tensor x = at::randn({1, 3, 64, 64});
  VisionFeatures fa = a->encode(x);
  EXPECT_EQ(fa.tokens.sizes(), at::IntArrayRef({1, 4, 288}));
  EXPECT_TRUE(at::equal(fa.tokens, b->encode(x).tokens));
  EXPECT_EQ(make_mambaout_encoder_preset("base", 0)->feature_dim(), 768);
  expect_error([] { make_mambaout_encoder_preset("giant", 0); }, {"'giant'", "femto"});
}

// ---------------------------------------------------------------------------------------------
// Encoder dtype and feature selection

TEST(MambaOutEncoder, ToDtypeCastsWeightsButKeepsSsmALogAndDInFp32) {
  for (const auto& arch : {std::string("mambaout"), std::string("mambaout_ssm")}) {
    nlohmann::json j = arch == "mambaout" ? tiny_json() : ssm_json();
    auto m = std::make_shared<MambaOutImpl>(MambaOutConfig::from_json(j, "enc.json"), false);
    m->init_weights(21);
    MambaOutEncoder enc(m);
    enc.module().eval();
    at::NoGradGuard ng;
    const at::Tensor x = at::randn({2, 3, 64, 48});
    const at::Tensor f32 = enc.encode(x).tokens;  // [2, 4, 32]
    EXPECT_EQ(f32.scalar_type(), at::kFloat) << arch;

    enc.to_dtype(at::kBFloat16);
    int64_t kept = 0;
    for (const auto& p : enc.module().named_parameters()) {
      const bool fp32 = p.key().ends_with(".A_log") || p.key().ends_with(".D");
      EXPECT_EQ(p.value().scalar_type(), fp32 ? at::kFloat : at::kBFloat16)
          << arch << " " << p.key();
      kept += fp32;
    }
    EXPECT_EQ(kept, arch == "mambaout" ? 0 : 4 * 2 * 2) << arch;  // 4 blocks x 2 cores x {A_log, D}
    const VisionFeatures f = enc.encode(x);  // fp32 images: cast to the weights' dtype
    EXPECT_EQ(f.tokens.scalar_type(), at::kBFloat16) << arch;
    EXPECT_EQ(f.tokens.sizes(), f32.sizes()) << arch;
    EXPECT_LE(rel_err(f.tokens.to(at::kFloat), f32), 0.1) << arch;
    EXPECT_EQ(enc.encode(x.to(at::kBFloat16)).tokens.scalar_type(), at::kBFloat16) << arch;

    enc.to_dtype(at::kFloat);  // back: every parameter fp32, features fp32
    for (const auto& p : enc.module().parameters()) EXPECT_EQ(p.scalar_type(), at::kFloat);
    EXPECT_EQ(enc.encode(x).tokens.scalar_type(), at::kFloat) << arch;
    expect_error([&] { enc.to_dtype(at::kHalf); }, {"MambaOut", "float32 or bfloat16", "Half"});
  }
  // Through the VisionEncoder interface, on a loaded encoder.
  auto enc = load_vision_encoder(kFixtures / "mambaout-tiny");
  enc->to_dtype(at::kBFloat16);
  at::NoGradGuard ng;
  EXPECT_EQ(enc->encode(at::randn({1, 3, 64, 64})).tokens.scalar_type(), at::kBFloat16);
}

TEST(MambaOutEncoder, FinalNormIsAnErrorNamingTheReason) {
  auto enc = load_vision_encoder(kFixtures / "mambaout-tiny");
  FeatureSelect sel;
  sel.final_norm = true;
  at::NoGradGuard ng;
  expect_error(
      [&] {
        enc->encode(at::randn({1, 3, 64, 64}), sel);
      },
      {"final_norm", "no final norm", "pooled"});
  sel.final_norm = false;
  EXPECT_EQ(enc->encode(at::randn({1, 3, 64, 64}), sel).tokens.sizes(),
            at::IntArrayRef({1, 4, 32}));
}

// ---------------------------------------------------------------------------------------------
// The process-wide random stream

TEST(MambaOut, BuildingOrLoadingLeavesTheGlobalRngAlone) {
  const at::Tensor want = global_draw_after(77, [] {});
  auto same = [&](const std::string& what, const std::function<void()>& fn) {
    EXPECT_TRUE(at::equal(global_draw_after(77, fn), want)) << what << " touched the global RNG";
  };
  same("make_classifier", [] { make_classifier(tiny_json(), 5, "tiny.json"); });
  same("make_classifier (ssm)", [] { make_classifier(ssm_json(), 5, "ssm.json"); });
  same("MambaOutImpl()", [] { MambaOutImpl m(MambaOutConfig::from_json(tiny_json(), "t")); });
  same("make_mambaout_encoder_preset", [] { make_mambaout_encoder_preset("femto", 1); });
  // A headless folder: load_vision_encoder initialises the (absent) head before loading.
  TempDir tmp("rng");
  auto src = make_classifier(ssm_json(), 6, "ssm.json");
  io::save_module(src->module(), tmp.path, [](const std::string& n) {
    return n.starts_with("head.") || n.starts_with("norm.") ? std::string() : n;
  });
  io::write_json_file(tmp.path / "config.json", src->config_json());
  same("load_vision_encoder (no head)", [&] { load_vision_encoder(tmp.path); });
  save_classifier(*src, {"a", "b", "c", "d", "e"}, tmp.path);
  same("load_classifier", [&] { load_classifier(tmp.path); });

  // Still deterministic in the seed, and independent of the global stream's state.
  at::manual_seed(1);
  auto a = make_classifier(ssm_json(), 9, "ssm.json");
  at::manual_seed(2);
  (void)at::rand({100});
  auto b = make_classifier(ssm_json(), 9, "ssm.json");
  const auto sa = state(a->module()), sb = state(b->module());
  for (const auto& [k, v] : sa) EXPECT_TRUE(at::equal(v, sb.at(k))) << k;
}

TEST(MambaOutSsm, InitFromAGeneratorEqualsTheGlobalStreamUnderTheSameSeed) {
  // init_weights(gen) draws exactly what the former global-RNG init drew after manual_seed.
  MambaOutSsmConfig sc;
  sc.d_state = 5;
  MambaOutSsmImpl a(20, sc), b(20, sc);
  at::manual_seed(31);
  a.init_weights();
  b.init_weights(at::make_generator<at::CPUGeneratorImpl>(31));
  const auto sa = state(a), sb = state(b);
  for (const auto& [k, v] : sa) EXPECT_TRUE(at::equal(v, sb.at(k))) << k;
}

// ---------------------------------------------------------------------------------------------
// timm hub configs: num_classes 0, crop_pct, label_names

TEST(MambaOutEncoder, LoadsTimmEncoderOnlyExportWithNumClasses0) {
  // timm.create_model("mambaout_femto", num_classes=0): head.fc is Identity, so the checkpoint
  // has head.norm and head.pre_logits.* but no head.fc.*.
  TempDir tmp("nc0");
  auto src = make_classifier(
      {{"architecture", "mambaout"}, {"variant", "femto"}, {"num_classes", 5}}, 8, "femto.json");
  io::save_module(src->module(), tmp.path, [](const std::string& n) {
    return n.starts_with("head.fc2.") ? std::string() : MambaOutImpl::timm_key(n);
  });
  nlohmann::json hub = timm_hub_json("mambaout_femto", 0, 288);
  hub["label_names"] = nlohmann::json::array();
  io::write_json_file(tmp.path / "config.json", hub);
  io::SafetensorsFile st(tmp.path / "model.safetensors");
  ASSERT_FALSE(st.contains("head.fc.weight"));
  ASSERT_TRUE(st.contains("head.pre_logits.norm.weight"));

  auto enc = load_vision_encoder(tmp.path);
  EXPECT_EQ(enc->feature_dim(), 288);
  auto& m = *dynamic_cast<MambaOutEncoder&>(*enc).model;
  EXPECT_EQ(m.cfg.num_classes, 0);
  EXPECT_FALSE(m.head->fc2) << "no classifier layer for num_classes 0";
  const auto s1 = state(src->module()), s2 = state(m);
  for (const auto& [k, v] : s2) EXPECT_TRUE(at::equal(v, s1.at(k))) << k;
  at::NoGradGuard ng;
  src->module().eval();
  enc->module().eval();
  const at::Tensor x = at::randn({1, 3, 64, 64});
  EXPECT_TRUE(at::equal(enc->encode(x).tokens,
                        as_mambaout(*src).model->forward_features(x).reshape({1, 4, 288})));
  // timm's forward with fc = Identity: the pre-logits.
  EXPECT_EQ(m.forward(x).sizes(), at::IntArrayRef({1, 4 * 288}));

  // Not a classifier: an Error pointing to load_vision_encoder.
  expect_error([&] { load_classifier(tmp.path); },
               {"config.json", "num_classes = 0", "load_vision_encoder"});
  expect_error(
      [&] {
        make_classifier({{"architecture", "mambaout"}, {"variant", "femto"}, {"num_classes", 0}}, 0,
                        "zero.json");
      },
      {"zero.json", "num_classes = 0"});
  // Saved by us (num_classes 0 in our config.json) and back.
  TempDir tmp2("nc0b");
  enc->save(tmp2.path);
  EXPECT_FALSE(io::SafetensorsFile(tmp2.path / "model.safetensors").contains("head.fc2.weight"));
  auto back = load_vision_encoder(tmp2.path);
  back->module().eval();
  EXPECT_TRUE(at::equal(back->encode(x).tokens, enc->encode(x).tokens));
  // Without any head (stage weights only) it loads too.
  TempDir tmp3("nc0c");
  io::save_module(src->module(), tmp3.path, [](const std::string& n) {
    return n.starts_with("head.") || n.starts_with("norm.") ? std::string()
                                                            : MambaOutImpl::timm_key(n);
  });
  io::write_json_file(tmp3.path / "config.json", hub);
  auto bare = load_vision_encoder(tmp3.path);
  bare->module().eval();
  EXPECT_TRUE(at::equal(bare->encode(x).tokens, enc->encode(x).tokens));
  // A classifier checkpoint with num_classes 0 in its config: head.fc is an extra tensor.
  TempDir tmp4("nc0d");
  io::save_module(src->module(), tmp4.path,
                  [](const std::string& n) { return MambaOutImpl::timm_key(n); });
  io::write_json_file(tmp4.path / "config.json", hub);
  expect_error([&] { load_vision_encoder(tmp4.path); }, {"head.fc.weight"});
}

TEST(MambaOut, TimmCropPctOtherThan1IsAnError) {
  nlohmann::json hub = timm_hub_json("mambaout_tiny", 1000, 576);
  EXPECT_EQ(MambaOutConfig::from_json(hub, "hub.json").preprocess.mode, "crop");
  hub["pretrained_cfg"]["crop_pct"] = 0.95;
  expect_error([&] { MambaOutConfig::from_json(hub, "hub.json"); },
               {"hub.json", "crop_pct", "0.95", "not supported"});
  expect_error([&] { make_classifier(hub, 0, "hub.json"); }, {"hub.json", "crop_pct"});
  hub["pretrained_cfg"]["crop_mode"] = "squash";  // squash also resizes to size / crop_pct
  expect_error([&] { MambaOutConfig::from_json(hub, "hub.json"); }, {"crop_pct", "0.95"});
  hub["pretrained_cfg"].erase("crop_pct");  // timm's default 0.875 would apply
  expect_error([&] { MambaOutConfig::from_json(hub, "hub.json"); },
               {"hub.json", "crop_pct", "missing", "0.875"});
  hub["pretrained_cfg"]["crop_pct"] = "1.0";
  expect_error([&] { MambaOutConfig::from_json(hub, "hub.json"); }, {"'crop_pct'", "number"});
  hub["pretrained_cfg"]["crop_pct"] = 1;
  EXPECT_EQ(MambaOutConfig::from_json(hub, "hub.json").preprocess.mode, "squash");
}

TEST(MambaOut, ClassifierClassesReadsTimmLabelNames) {
  TempDir tmp("labels");
  nlohmann::json hub = timm_hub_json("mambaout_femto", 3, 288);
  hub["label_names"] = {"tench", "goldfish", "great white shark"};
  io::write_json_file(tmp.path / "config.json", hub);
  EXPECT_EQ(classifier_classes(tmp.path),
            (std::vector<std::string>{"tench", "goldfish", "great white shark"}));
  hub["classes"] = {"a", "b", "c"};  // ours first
  io::write_json_file(tmp.path / "config.json", hub);
  EXPECT_EQ(classifier_classes(tmp.path), (std::vector<std::string>{"a", "b", "c"}));
  hub.erase("classes");
  hub["label_names"] = {"tench", 1, "shark"};
  io::write_json_file(tmp.path / "config.json", hub);
  expect_error([&] { classifier_classes(tmp.path); }, {"config.json", "'label_names'"});
  hub["label_names"] = {"tench", "goldfish"};
  io::write_json_file(tmp.path / "config.json", hub);
  expect_error([&] { classifier_classes(tmp.path); }, {"'label_names'", "2 names", "3"});
  hub.erase("label_names");
  io::write_json_file(tmp.path / "config.json", hub);
  EXPECT_EQ(classifier_classes(tmp.path),
            (std::vector<std::string>{"class_0", "class_1", "class_2"}));
}

// ---------------------------------------------------------------------------------------------
// Bounds

TEST(MambaOut, AbsurdSizesAreErrorsBeforeAllocating) {
  auto bad = [](const std::string& key, nlohmann::json value,
                std::initializer_list<std::string> parts, const std::string& arch = "mambaout") {
    nlohmann::json j = arch == "mambaout" ? tiny_json() : ssm_json();
    j[key] = std::move(value);
    expect_error([&] { MambaOutConfig::from_json(j, "big.json"); }, parts);
  };
  bad("dims", {1000000000, 16, 24, 32}, {"big.json", "dims[0] = 1000000000"});
  bad("dims", {8, 16, 24, 16385}, {"big.json", "dims[3]", "16384"});
  bad("depths", {1, 1000000, 2, 1}, {"big.json", "depths[1] = 1000000"});
  bad("num_classes", int64_t{1} << 40, {"big.json", "num_classes"});
  bad("image_size", 1000000000, {"big.json", "image size", "1000000000"});
  bad("ssm", {{"d_state", 1000000000}}, {"big.json", "d_state"}, "mambaout_ssm");
  bad("ssm", {{"dt_rank", 1000000000}}, {"big.json", "dt_rank"}, "mambaout_ssm");
  nlohmann::json j = tiny_json();
  j["depths"] = std::vector<int64_t>(9, 1);
  j["dims"] = std::vector<int64_t>(9, 8);
  expect_error([&] { MambaOutConfig::from_json(j, "big.json"); }, {"big.json", "9 stages"});
  // Each size within its bound, the whole far too large: the parameter count.
  j = tiny_json();
  j["dims"] = {16384, 16384, 16384, 16384};
  j["depths"] = {1024, 1024, 1024, 1024};
  expect_error([&] { make_classifier(j, 0, "huge.json"); }, {"huge.json", "parameters"});
  nlohmann::json hub = timm_hub_json("mambaout_tiny", 1000, 576);
  hub["pretrained_cfg"]["input_size"] = {3, 1000000, 1000000};
  expect_error([&] { MambaOutConfig::from_json(hub, "hub.json"); }, {"hub.json", "image size"});
  hub = timm_hub_json("mambaout_tiny", 1000000000000, 576);
  expect_error([&] { MambaOutConfig::from_json(hub, "hub.json"); }, {"hub.json", "num_classes"});
  // Direct construction validates too.
  MambaOutConfig c = MambaOutConfig::preset("femto");
  c.dims[2] = 1000000000;
  expect_error([&] { MambaOutImpl m(c, false); }, {"dims[2]"});
}

TEST(MambaOut, ConfigParameterCountEqualsTheModules) {
  std::vector<MambaOutConfig> cfgs;
  for (const auto& v : MambaOutConfig::variants()) cfgs.push_back(MambaOutConfig::preset(v));
  cfgs.push_back(MambaOutConfig::from_json(ssm_json(), "ssm.json"));
  cfgs.push_back(MambaOutConfig::from_json(ssm_json(false), "ssm.json"));
  MambaOutConfig odd = MambaOutConfig::from_json(tiny_json(), "tiny.json");
  odd.dims = {9, 17, 25, 33};  // odd stem width (dims[0] / 2 truncates)
  odd.num_classes = 0;
  cfgs.push_back(odd);
  for (const auto& c : cfgs) {
    MambaOutImpl m(c, /*initialize=*/false);
    EXPECT_EQ(c.num_parameters(), static_cast<double>(m.num_parameters())) << c.to_json().dump();
  }
}
