// ViT encoders (CLIP, SigLIP, EVA-02): parity with transformers / timm on tiny random-weight
// models (dev/make_vit_fixtures.py), feature selection, position-embedding interpolation, causal
// attention, config / checkpoint errors, save -> load; the "vit" classifier; the bench presets.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <tuple>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/vision.h"
#include "models/vit.h"

using namespace mambavl;
using namespace mambavl::models;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(MAMBAVL_FIXTURES_DIR) / "vision";
constexpr int64_t kLayers = 3;  // every fixture has 3 blocks

fs::path temp_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("mambavl_vit_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

struct Golden {
  explicit Golden(const std::string& name) : file(kFixtures / name / "golden.safetensors") {}
  at::Tensor operator[](const std::string& key) const { return file.tensor(key); }
  io::SafetensorsFile file;
};

std::unique_ptr<VisionEncoder> load(const std::string& name) {
  return load_vision_encoder(kFixtures / name);
}

// Every hidden state, with and without the prefix, at the trained size.
void check_layers(const std::string& name, int64_t prefix) {
  SCOPED_TRACE(name);
  auto enc = load(name);
  Golden g(name);
  at::NoGradGuard ng;
  const at::Tensor px = g["pixels"];
  for (int64_t layer : {-1, -2, 0, 1}) {
    const int64_t idx = layer < 0 ? kLayers + 1 + layer : layer;
    const at::Tensor want = g["hidden_" + std::to_string(idx)];  // [B, P + 16, C]
    VisionFeatures with = enc->encode(px, FeatureSelect::parse(layer, "cls_patch"));
    EXPECT_EQ(with.num_prefix, prefix);
    EXPECT_EQ(with.grid_h, 4);
    EXPECT_EQ(with.grid_w, 4);
    EXPECT_LE(max_diff(with.tokens, want), 1e-4) << "layer " << layer;
    VisionFeatures without = enc->encode(px, FeatureSelect::parse(layer, "patch"));
    EXPECT_EQ(without.num_prefix, 0);
    EXPECT_EQ(without.tokens.size(1), 16);
    EXPECT_LE(max_diff(without.tokens, want.narrow(1, prefix, 16)), 1e-4) << "layer " << layer;
  }
}

// A 48 x 40 input (grid 6 x 5): interpolated position embeddings (and rope grid for EVA-02).
void check_interpolated(const std::string& name) {
  SCOPED_TRACE(name);
  auto enc = load(name);
  Golden g(name);
  at::NoGradGuard ng;
  for (int64_t layer : {-1, -2}) {
    VisionFeatures f = enc->encode(g["pixels_interp"], FeatureSelect::parse(layer, "cls_patch"));
    EXPECT_EQ(f.grid_h, 6);
    EXPECT_EQ(f.grid_w, 5);
    const int64_t idx = kLayers + 1 + layer;
    EXPECT_LE(max_diff(f.tokens, g["interp_hidden_" + std::to_string(idx)]), 1e-4);
  }
}

void check_causal_golden(const std::string& name) {
  SCOPED_TRACE(name);
  auto enc = ViTEncoder::load(kFixtures / name);
  Golden g(name);
  at::NoGradGuard ng;
  enc->set_causal(true);
  VisionFeatures f = enc->encode(g["pixels"], FeatureSelect::parse(-1, "cls_patch"));
  const at::Tensor want = g["causal_hidden_" + std::to_string(kLayers)];
  EXPECT_LE(max_diff(f.tokens, want), 1e-4);
  EXPECT_GT(max_diff(f.tokens, g["hidden_" + std::to_string(kLayers)]), 1e-2);
}

// Token t of a causal encoder does not depend on later patches: perturbing patch k changes
// outputs at positions >= its token index only.
void check_causal_perturbation(const std::string& name) {
  SCOPED_TRACE(name);
  auto enc = ViTEncoder::load(kFixtures / name);
  Golden g(name);
  at::NoGradGuard ng;
  enc->set_causal(true);
  const int64_t P = enc->config().num_prefix();
  at::Tensor px = g["pixels"];
  at::Tensor moved = px.clone();
  // Patch (row 2, col 1) of the 4 x 4 grid = patch index 9 -> token P + 9.
  moved.narrow(2, 16, 8).narrow(3, 8, 8).add_(1.0);
  const int64_t tok = P + 9;
  at::Tensor a = enc->encode(px, FeatureSelect::parse(-1, "cls_patch")).tokens;
  at::Tensor b = enc->encode(moved, FeatureSelect::parse(-1, "cls_patch")).tokens;
  EXPECT_LE(max_diff(a.narrow(1, 0, tok), b.narrow(1, 0, tok)), 1e-6);
  EXPECT_GT(max_diff(a.narrow(1, tok, a.size(1) - tok), b.narrow(1, tok, a.size(1) - tok)), 1e-3);
  // Fully visible attention: an earlier token does change.
  enc->set_causal(false);
  at::Tensor c = enc->encode(px, FeatureSelect::parse(-1, "cls_patch")).tokens;
  at::Tensor d = enc->encode(moved, FeatureSelect::parse(-1, "cls_patch")).tokens;
  EXPECT_GT(max_diff(c.narrow(1, 0, 1), d.narrow(1, 0, 1)), 1e-3);
}

void check_round_trip(const std::string& name) {
  SCOPED_TRACE(name);
  auto enc = load(name);
  const fs::path dir = temp_dir("rt_" + name);
  enc->save(dir);
  auto back = load_vision_encoder(dir);
  EXPECT_EQ(back->arch(), enc->arch());
  Golden g(name);
  at::NoGradGuard ng;
  for (const auto& px : {g["pixels"], g["pixels_interp"]}) {
    at::Tensor a = enc->encode(px, FeatureSelect::parse(-2, "cls_patch")).tokens;
    at::Tensor b = back->encode(px, FeatureSelect::parse(-2, "cls_patch")).tokens;
    EXPECT_EQ(max_diff(a, b), 0.0);
  }
  // Same tensors, same names.
  io::CheckpointFolder x(kFixtures / name), y(dir);
  for (const auto& n : y.names()) {
    const std::string src = x.contains(n) ? n : n.substr(std::string("vision_model.").size());
    EXPECT_TRUE(at::equal(x.tensor(src), y.tensor(n))) << n;
  }
  fs::remove_all(dir);
}

// A copy of a fixture folder with config.json edited.
fs::path edited_copy(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  const fs::path dir = temp_dir("edit_" + name);
  fs::copy_file(kFixtures / name / "model.safetensors", dir / "model.safetensors");
  nlohmann::json j = io::read_json_file(kFixtures / name / "config.json");
  edit(j);
  io::write_json_file(dir / "config.json", j);
  return dir;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Parity

TEST(VitGolden, ClipHiddenStates) { check_layers("clip-tiny", 1); }
TEST(VitGolden, ClipFullModelFolder) { check_layers("clip-full-tiny", 1); }
TEST(VitGolden, SiglipHiddenStates) { check_layers("siglip-tiny", 0); }
TEST(VitGolden, SiglipFullModelFolder) { check_layers("siglip-full-tiny", 0); }
TEST(VitGolden, Eva02HiddenStates) { check_layers("eva02-tiny", 1); }

TEST(VitGolden, ClipInterpolatedSize) { check_interpolated("clip-tiny"); }
TEST(VitGolden, SiglipInterpolatedSize) { check_interpolated("siglip-tiny"); }
TEST(VitGolden, Eva02InterpolatedSize) { check_interpolated("eva02-tiny"); }

TEST(VitGolden, ClipCausal) { check_causal_golden("clip-tiny"); }
TEST(VitGolden, SiglipCausal) { check_causal_golden("siglip-tiny"); }
TEST(VitGolden, Eva02Causal) { check_causal_golden("eva02-tiny"); }

TEST(VitEncoder, ArchAndDims) {
  auto clip = load("clip-tiny");
  auto siglip = load("siglip-full-tiny");
  auto eva = load("eva02-tiny");
  EXPECT_EQ(clip->arch(), "clip");
  EXPECT_EQ(siglip->arch(), "siglip");
  EXPECT_EQ(eva->arch(), "eva02");
  EXPECT_EQ(clip->feature_dim(), 32);
  auto* e = dynamic_cast<ViTEncoder*>(eva.get());
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->config().intermediate_size, 85);  // int(32 * 8 / 3), timm's SwiGLU width
  EXPECT_EQ(e->config().ref_feat_shape[0], 3);
  // EVA-02 preprocessing: bilinear squash with the pretrained_cfg mean / std.
  io::ImagePreprocess pp = eva->preprocess();
  EXPECT_EQ(pp.size, 32);
  EXPECT_EQ(pp.mode, "squash");
  EXPECT_EQ(pp.resample, io::Resample::Bilinear);
  EXPECT_DOUBLE_EQ(pp.mean[0], 0.48145466);
  EXPECT_DOUBLE_EQ(pp.std[2], 0.27577711);
}

TEST(VitEncoder, Bfloat16CloseToFloat32) {
  auto enc = ViTEncoder::load(kFixtures / "eva02-tiny");
  Golden g("eva02-tiny");
  at::NoGradGuard ng;
  enc->to_dtype(at::kBFloat16);
  VisionFeatures f = enc->encode(g["pixels"], FeatureSelect::parse(-1, "cls_patch"));
  EXPECT_EQ(f.tokens.scalar_type(), at::kBFloat16);
  const at::Tensor want = g["hidden_3"];
  EXPECT_LE(max_diff(f.tokens, want) / want.abs().max().item<double>(), 0.05);
}

// ---------------------------------------------------------------------------------------------
// Causal attention

TEST(VitCausal, ClipLaterTokensDoNotLeak) { check_causal_perturbation("clip-tiny"); }
TEST(VitCausal, SiglipLaterTokensDoNotLeak) { check_causal_perturbation("siglip-tiny"); }
TEST(VitCausal, Eva02LaterTokensDoNotLeak) { check_causal_perturbation("eva02-tiny"); }

TEST(VitCausal, ConfigKeyAndSaveKeepIt) {
  const fs::path dir = edited_copy("clip-tiny", [](nlohmann::json& j) { j["causal"] = true; });
  auto enc = ViTEncoder::load(dir);
  EXPECT_TRUE(enc->config().causal);
  Golden g("clip-tiny");
  at::NoGradGuard ng;
  at::Tensor out = enc->encode(g["pixels"], FeatureSelect::parse(-1, "cls_patch")).tokens;
  EXPECT_LE(max_diff(out, g["causal_hidden_3"]), 1e-4);
  const fs::path saved = temp_dir("causal_saved");
  enc->save(saved);
  EXPECT_TRUE(ViTEncoder::load(saved)->config().causal);
  fs::remove_all(dir);
  fs::remove_all(saved);
}

// ---------------------------------------------------------------------------------------------
// Save / load

TEST(VitSaveLoad, ClipRoundTrip) { check_round_trip("clip-tiny"); }
TEST(VitSaveLoad, ClipFullToVisionOnly) { check_round_trip("clip-full-tiny"); }
TEST(VitSaveLoad, SiglipRoundTripWithoutHead) { check_round_trip("siglip-tiny"); }
TEST(VitSaveLoad, Eva02RoundTrip) { check_round_trip("eva02-tiny"); }

TEST(VitSaveLoad, SiglipSaveDropsHead) {
  auto enc = load("siglip-tiny");
  const fs::path dir = temp_dir("siglip_nohead");
  enc->save(dir);
  const nlohmann::json j = io::read_json_file(dir / "config.json");
  EXPECT_EQ(j.at("model_type"), "siglip_vision_model");
  EXPECT_EQ(j.at("vision_use_head"), false);
  io::CheckpointFolder ck(dir);
  for (const auto& n : ck.names()) EXPECT_EQ(n.rfind("vision_model.", 0), 0u) << n;
  EXPECT_TRUE(io::CheckpointFolder(kFixtures / "siglip-tiny").contains("head.probe"));
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(VitErrors, UnknownVisionKey) {
  const fs::path dir = edited_copy("clip-tiny", [](nlohmann::json& j) { j["hiden_size"] = 32; });
  const std::string e = error_of([&] { load_vision_encoder(dir); });
  EXPECT_NE(e.find("config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("'hiden_size'"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(VitErrors, GenericHFKeysAreAccepted) {
  const fs::path dir = edited_copy("clip-full-tiny", [](nlohmann::json& j) {
    j["vision_config"]["bad_words_ids"] = nullptr;  // old CLIP configs repeat generation keys
    j["vision_config"]["use_bfloat16"] = false;
    j["torch_dtype"] = "float32";
    j["text_config"]["made_up_text_key"] = 1;  // the text tower is not read
    // Legacy CLIPConfig: vision_config_dict overrides vision_config.
    j["vision_config"]["intermediate_size"] = 48;
    j["vision_config_dict"] = {{"intermediate_size", 64}};
  });
  EXPECT_EQ(error_of([&] { load_vision_encoder(dir); }), "");
  fs::remove_all(dir);
}

TEST(VitErrors, LegacyBuffersAreIgnored) {
  // Older CLIP / SigLIP checkpoints store the position_ids buffer (int64).
  const fs::path dir = temp_dir("position_ids");
  fs::copy_file(kFixtures / "clip-full-tiny" / "config.json", dir / "config.json");
  io::CheckpointFolder src(kFixtures / "clip-full-tiny");
  std::vector<std::pair<std::string, at::Tensor>> all;
  for (const auto& n : src.names()) all.emplace_back(n, src.tensor(n));
  all.emplace_back("vision_model.embeddings.position_ids", at::arange(17).unsqueeze(0));
  all.emplace_back("text_model.embeddings.position_ids", at::arange(8).unsqueeze(0));
  io::save_safetensors(dir / "model.safetensors", all, {{"format", "pt"}});
  auto enc = load_vision_encoder(dir);
  Golden g("clip-full-tiny");
  at::NoGradGuard ng;
  EXPECT_LE(max_diff(enc->encode(g["pixels"]).tokens, g["hidden_3"].narrow(1, 1, 16)), 1e-4);
  // An unexpected tensor inside the vision tower is still an error.
  all.emplace_back("vision_model.encoder.layers.7.mlp.fc1.weight", at::zeros({2, 2}));
  io::save_safetensors(dir / "model.safetensors", all, {{"format", "pt"}});
  const std::string e = error_of([&] { load_vision_encoder(dir); });
  EXPECT_NE(e.find("unexpected"), std::string::npos) << e;
  EXPECT_NE(e.find("layers.7"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(VitErrors, UnknownKeyInsideVisionConfig) {
  const fs::path dir = edited_copy(
      "siglip-full-tiny", [](nlohmann::json& j) { j["vision_config"]["use_rope"] = true; });
  const std::string e = error_of([&] { load_vision_encoder(dir); });
  EXPECT_NE(e.find("'use_rope'"), std::string::npos) << e;
  EXPECT_NE(e.find("vision_config"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(VitErrors, UnsupportedTimmOption) {
  const fs::path dir =
      edited_copy("eva02-tiny", [](nlohmann::json& j) { j["model_args"]["qkv_fused"] = true; });
  const std::string e = error_of([&] { load_vision_encoder(dir); });
  EXPECT_NE(e.find("qkv_fused"), std::string::npos) << e;
  fs::remove_all(dir);
  const fs::path dir2 = edited_copy(
      "eva02-tiny", [](nlohmann::json& j) { j["architecture"] = "eva02_tiny_patch14_224"; });
  const std::string e2 = error_of([&] { load_vision_encoder(dir2); });
  EXPECT_NE(e2.find("eva02_tiny_patch14_224"), std::string::npos) << e2;
  fs::remove_all(dir2);
}

TEST(VitErrors, MissingTensor) {
  const fs::path dir = temp_dir("missing");
  fs::copy_file(kFixtures / "clip-tiny" / "config.json", dir / "config.json");
  io::CheckpointFolder src(kFixtures / "clip-tiny");
  std::vector<std::pair<std::string, at::Tensor>> keep;
  for (const auto& n : src.names())
    if (n != "encoder.layers.1.mlp.fc2.weight") keep.emplace_back(n, src.tensor(n));
  io::save_safetensors(dir / "model.safetensors", keep, {{"format", "pt"}});
  const std::string e = error_of([&] { load_vision_encoder(dir); });
  EXPECT_NE(e.find(dir.string()), std::string::npos) << e;
  EXPECT_NE(e.find("encoder.layers.1.mlp.fc2.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(VitErrors, WrongShapeInConfig) {
  const fs::path dir =
      edited_copy("siglip-tiny", [](nlohmann::json& j) { j["intermediate_size"] = 48; });
  const std::string e = error_of([&] { load_vision_encoder(dir); });
  EXPECT_NE(e.find("fc1.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("shape"), std::string::npos) << e;
  fs::remove_all(dir);
}

TEST(VitErrors, BadImagesAndLayer) {
  auto enc = load("clip-tiny");
  at::NoGradGuard ng;
  std::string e = error_of([&] { enc->encode(at::zeros({1, 3, 4, 32})); });
  EXPECT_NE(e.find("patch size 8"), std::string::npos) << e;
  // A remainder smaller than a patch is dropped, as the patch conv does (36 -> grid 4).
  VisionFeatures f = enc->encode(at::zeros({1, 3, 36, 32}));
  EXPECT_EQ(f.grid_h, 4);
  EXPECT_EQ(f.grid_w, 4);
  e = error_of([&] { enc->encode(at::zeros({1, 32, 32})); });
  EXPECT_NE(e.find("[B, 3, H, W]"), std::string::npos) << e;
  e = error_of([&] { enc->encode(at::zeros({1, 3, 32, 32}), FeatureSelect::parse(-5, "patch")); });
  EXPECT_NE(e.find("out of range"), std::string::npos) << e;
  EXPECT_EQ(error_of([&] {
              enc->encode(at::zeros({1, 3, 32, 32}), FeatureSelect::parse(-4, "patch"));
            }),
            "");
}

TEST(VitErrors, NotAnEncoderFolder) {
  const fs::path dir =
      edited_copy("clip-tiny", [](nlohmann::json& j) { j["model_type"] = "gpt_neox"; });
  const std::string e = error_of([&] { load_vision_encoder(dir); });
  EXPECT_NE(e.find("gpt_neox"), std::string::npos) << e;
  fs::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// Classifier

namespace {

nlohmann::json tiny_classifier(bool causal = false, const std::string& pool = "mean") {
  return {{"architecture", "vit"}, {"hidden_size", 32},       {"num_layers", 2},
          {"num_heads", 4},        {"intermediate_size", 64}, {"patch_size", 8},
          {"image_size", 32},      {"num_classes", 5},        {"causal", causal},
          {"pool", pool},          {"drop_path_rate", 0.1}};
}

}  // namespace

TEST(VitClassifier, ForwardShapeAndDeterministicInit) {
  auto a = make_classifier(tiny_classifier(), 7);
  auto b = make_classifier(tiny_classifier(), 7);
  auto c = make_classifier(tiny_classifier(), 8);
  EXPECT_EQ(a->arch(), "vit");
  EXPECT_EQ(a->num_classes(), 5);
  a->module().eval();
  b->module().eval();
  c->module().eval();
  at::Tensor x = at::randn({3, 3, 32, 32}, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat);
  at::NoGradGuard ng;
  at::Tensor la = a->forward(x), lb = b->forward(x), lc = c->forward(x);
  EXPECT_EQ(la.sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(la.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(la, lb));
  EXPECT_GT(max_diff(la, lc), 0.0);
  // timm-style init: Linear weights trunc-normal(0.02), biases 0, LayerNorm 1.
  for (const auto& p : a->module().named_parameters()) {
    if (p.key().ends_with("fc1.weight")) {
      const double sd = p.value().std().item<double>();
      EXPECT_NEAR(sd, 0.02, 0.004) << p.key();
    }
    if (p.key().ends_with("fc1.bias")) EXPECT_EQ(p.value().abs().max().item<double>(), 0.0);
    if (p.key().ends_with("layer_norm1.weight")) EXPECT_TRUE(at::all(p.value() == 1).item<bool>());
  }
}

TEST(VitClassifier, PoolingModesAndCausal) {
  at::Tensor x = at::randn({2, 3, 32, 32});
  at::NoGradGuard ng;
  for (const char* pool : {"mean", "cls", "last"}) {
    auto m = make_classifier(tiny_classifier(false, pool), 1);
    m->module().eval();
    EXPECT_EQ(m->forward(x).sizes(), (std::vector<int64_t>{2, 5})) << pool;
  }
  // Causal + "last": the last token sees every patch, so changing the first patch changes the
  // logits.
  auto m = make_classifier(tiny_classifier(true, "last"), 1);
  m->module().eval();
  at::Tensor y = x.clone();
  y.narrow(2, 0, 8).narrow(3, 0, 8).add_(1.0);
  EXPECT_GT(max_diff(m->forward(x), m->forward(y)), 0.0);
  const std::string e = error_of([] { make_classifier(tiny_classifier(true, "cls"), 1); });
  EXPECT_NE(e.find("causal"), std::string::npos) << e;
}

TEST(VitClassifier, DropPathOnlyInTraining) {
  auto m = make_classifier(tiny_classifier(), 3);
  at::Tensor x = at::randn({4, 3, 32, 32});
  at::NoGradGuard ng;
  m->module().eval();
  at::Tensor e1 = m->forward(x), e2 = m->forward(x);
  EXPECT_TRUE(at::equal(e1, e2));
  m->module().train();
  at::manual_seed(0);
  at::Tensor t1 = m->forward(x);
  at::manual_seed(1);
  at::Tensor t2 = m->forward(x);
  EXPECT_GT(max_diff(t1, t2), 0.0);
}

TEST(VitClassifier, ConfigRoundTripAndSaveLoad) {
  auto m = make_classifier(tiny_classifier(true, "last"), 11);
  const nlohmann::json j = m->config_json();
  EXPECT_EQ(j.at("architecture"), "vit");
  EXPECT_EQ(j.at("causal"), true);
  EXPECT_EQ(j.at("pool"), "last");
  EXPECT_TRUE(j.contains("preprocess"));
  EXPECT_EQ(make_classifier(j, 0)->config_json(), j);

  const fs::path dir = temp_dir("clf");
  save_classifier(*m, {"a", "b", "c", "d", "e"}, dir);
  auto back = load_classifier(dir);
  EXPECT_EQ(back->config_json(), j);
  EXPECT_EQ(classifier_classes(dir), (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  io::CheckpointFolder ck(dir);
  EXPECT_TRUE(ck.contains("vision_model.embeddings.class_embedding"));
  EXPECT_TRUE(ck.contains("head.weight"));
  m->module().eval();
  back->module().eval();
  at::Tensor x = at::randn({2, 3, 32, 32});
  at::NoGradGuard ng;
  EXPECT_TRUE(at::equal(m->forward(x), back->forward(x)));
  fs::remove_all(dir);
}

TEST(VitClassifier, Errors) {
  nlohmann::json j = tiny_classifier();
  j["num_layer"] = 3;
  std::string e = error_of([&] { make_classifier(j, 0, "my.json"); });
  EXPECT_NE(e.find("my.json"), std::string::npos) << e;
  EXPECT_NE(e.find("'num_layer'"), std::string::npos) << e;
  j = tiny_classifier();
  j["pool"] = "max";
  e = error_of([&] { make_classifier(j, 0, "my.json"); });
  EXPECT_NE(e.find("pool"), std::string::npos) << e;
  j = tiny_classifier();
  j.erase("num_classes");
  e = error_of([&] { make_classifier(j, 0, "my.json"); });
  EXPECT_NE(e.find("num_classes"), std::string::npos) << e;
}

// ---------------------------------------------------------------------------------------------
// Presets

TEST(VitPresets, ParameterCountsMatchReference) {
  // Counts from transformers / timm on the meta device (CLIPVisionModel ViT-B/16 and L/14,
  // SiglipVisionModel so400m/14 at 384 without head, timm eva02_large_patch14_224 num_classes=0).
  const std::vector<std::tuple<std::string, int64_t, int64_t>> want = {
      {"clip-vit-b16", 224, 85799424},
      {"clip-vit-l14", 224, 303179776},
      {"siglip-so400m-14", 384, 412987248},
      {"eva02-l14", 224, 303268800}};
  for (const auto& [name, size, count] : want) {
    ViTEncoder enc(vit_encoder_preset_config(name, size));  // allocated, not initialised
    int64_t n = 0;
    for (const auto& p : enc.module().parameters()) n += p.numel();
    EXPECT_EQ(n, count) << name;
  }
  const std::string e = error_of([] { make_vit_encoder_preset("clip-vit-h14", 224, 0); });
  EXPECT_NE(e.find("clip-vit-b16"), std::string::npos) << e;
}

TEST(VitPresets, SmallInputRuns) {
  auto enc = make_vit_encoder_preset("clip-vit-b16", 32, 0);
  EXPECT_EQ(enc->arch(), "clip");
  EXPECT_EQ(enc->feature_dim(), 768);
  at::NoGradGuard ng;
  VisionFeatures f = enc->encode(at::randn({1, 3, 32, 32}), FeatureSelect::parse(1, "patch"));
  EXPECT_EQ(f.tokens.sizes(), (std::vector<int64_t>{1, 4, 768}));
  EXPECT_TRUE(at::isfinite(f.tokens).all().item<bool>());
}
