// ViT encoders (CLIP, SigLIP, EVA-02 MIM and EVA-CLIP layouts): parity with transformers / timm
// on tiny random-weight models (dev/make_vit_fixtures.py), feature selection (final norm
// included), position-embedding interpolation, causal attention, bf16, config / checkpoint
// errors, save -> load; the "vit" classifier; the bench presets.
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
#include "models/bf16_gemm.h"
#include "models/vision.h"
#include "models/vit.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::models;
namespace fs = std::filesystem;

using mambavl::testing_util::error_of;

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

// FeatureSelect::final_norm against the reference's final norm on every token (golden
// final_norm: CLIP post_layernorm(hidden_states[-1]); SigLIP last_hidden_state; EVA-02 timm
// forward_features), at the trained and an interpolated size.
void check_final_norm(const std::string& name, int64_t prefix) {
  SCOPED_TRACE(name);
  auto enc = load(name);
  Golden g(name);
  at::NoGradGuard ng;
  const at::Tensor want = g["final_norm"];        // [B, P + 16, C]
  for (int64_t layer : {int64_t{-1}, kLayers}) {  // -1 and the same layer counted from 0
    FeatureSelect sel = FeatureSelect::parse(layer, "cls_patch");
    sel.final_norm = true;
    VisionFeatures f = enc->encode(g["pixels"], sel);
    EXPECT_EQ(f.num_prefix, prefix);
    EXPECT_LE(max_diff(f.tokens, want), 1e-4) << "layer " << layer;
    // The norm matters (the fixtures' norm scales are 1 + N(0, 0.1), biases N(0, 0.2)).
    EXPECT_GT(max_diff(f.tokens, g["hidden_" + std::to_string(kLayers)]), 1e-1);
    sel.keep_prefix = false;
    f = enc->encode(g["pixels"], sel);
    EXPECT_LE(max_diff(f.tokens, want.narrow(1, prefix, 16)), 1e-4) << "layer " << layer;
  }
  FeatureSelect sel = FeatureSelect::parse(-1, "cls_patch");
  sel.final_norm = true;
  VisionFeatures f = enc->encode(g["pixels_interp"], sel);
  EXPECT_EQ(f.grid_h, 6);
  EXPECT_EQ(f.grid_w, 5);
  EXPECT_LE(max_diff(f.tokens, g["interp_final_norm"]), 1e-4);
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
// eva02_base_patch16_clip_224 layout: scale_attn_inner (attn.norm) and global_pool "token".
TEST(VitGolden, Eva02ClipHiddenStates) { check_layers("eva02-clip-tiny", 1); }

TEST(VitGolden, ClipInterpolatedSize) { check_interpolated("clip-tiny"); }
TEST(VitGolden, SiglipInterpolatedSize) { check_interpolated("siglip-tiny"); }
TEST(VitGolden, Eva02InterpolatedSize) { check_interpolated("eva02-tiny"); }
TEST(VitGolden, Eva02ClipInterpolatedSize) { check_interpolated("eva02-clip-tiny"); }

TEST(VitGolden, ClipCausal) { check_causal_golden("clip-tiny"); }
TEST(VitGolden, SiglipCausal) { check_causal_golden("siglip-tiny"); }
TEST(VitGolden, Eva02Causal) { check_causal_golden("eva02-tiny"); }
TEST(VitGolden, Eva02ClipCausal) { check_causal_golden("eva02-clip-tiny"); }

// ---------------------------------------------------------------------------------------------
// Final norm (FeatureSelect::final_norm)

TEST(VitFinalNorm, ClipPostLayernormOnAllTokens) { check_final_norm("clip-tiny", 1); }
TEST(VitFinalNorm, ClipFullModelFolder) { check_final_norm("clip-full-tiny", 1); }
TEST(VitFinalNorm, SiglipLastHiddenState) { check_final_norm("siglip-tiny", 0); }
TEST(VitFinalNorm, SiglipFullModelFolder) { check_final_norm("siglip-full-tiny", 0); }
TEST(VitFinalNorm, Eva02ClipTimmForwardFeatures) { check_final_norm("eva02-clip-tiny", 1); }

TEST(VitFinalNorm, Errors) {
  at::NoGradGuard ng;
  const at::Tensor px = at::zeros({1, 3, 32, 32});
  // Only the last layer.
  auto clip = load("clip-tiny");
  FeatureSelect sel = FeatureSelect::parse(-2, "patch");
  sel.final_norm = true;
  std::string e = error_of([&] { clip->encode(px, sel); });
  EXPECT_NE(e.find("final_norm"), std::string::npos) << e;
  EXPECT_NE(e.find("layer -2"), std::string::npos) << e;
  // EVA-02 with global_pool "avg": timm's norm is an Identity, fc_norm is applied after pooling.
  auto eva_avg = load("eva02-tiny");
  sel = FeatureSelect::parse(-1, "patch");
  sel.final_norm = true;
  e = error_of([&] { eva_avg->encode(px, sel); });
  EXPECT_NE(e.find("avg"), std::string::npos) << e;
  EXPECT_NE(e.find("no final norm"), std::string::npos) << e;
  // A token-pool EVA-02 checkpoint without norm.*: loads (features without the norm still work),
  // but final_norm is refused rather than applied with made-up weights, and save() does not
  // invent the tensors.
  const fs::path dir = temp_dir("eva_nonorm");
  fs::copy_file(kFixtures / "eva02-clip-tiny" / "config.json", dir / "config.json");
  io::CheckpointFolder src(kFixtures / "eva02-clip-tiny");
  std::vector<std::pair<std::string, at::Tensor>> keep;
  for (const auto& n : src.names())
    if (n.rfind("norm.", 0) != 0) keep.emplace_back(n, src.tensor(n));
  ASSERT_EQ(keep.size() + 2, src.names().size());
  io::save_safetensors(dir / "model.safetensors", keep, {{"format", "pt"}});
  auto eva = load_vision_encoder(dir);
  Golden g("eva02-clip-tiny");
  EXPECT_LE(max_diff(eva->encode(g["pixels"]).tokens, g["hidden_3"].narrow(1, 1, 16)), 1e-4);
  e = error_of([&] { eva->encode(px, sel); });
  EXPECT_NE(e.find("norm.weight"), std::string::npos) << e;
  const fs::path saved = temp_dir("eva_nonorm_saved");
  eva->save(saved);
  EXPECT_FALSE(io::CheckpointFolder(saved).contains("norm.weight"));
  fs::remove_all(dir);
  fs::remove_all(saved);
}

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
  // The EVA-CLIP layout: attn.norm (scale_attn_inner) and the final norm named "norm".
  auto evac = ViTEncoder::load(kFixtures / "eva02-clip-tiny");
  EXPECT_TRUE(evac->config().scale_attn_inner);
  EXPECT_EQ(evac->config().global_pool, "token");
  EXPECT_FALSE(e->config().scale_attn_inner);
  bool attn_norm = false, final_norm = false;
  for (const auto& p : evac->module().named_parameters()) {
    attn_norm |= p.key() == "blocks.2.attn.norm.weight";
    final_norm |= p.key() == "norm.weight";
  }
  EXPECT_TRUE(attn_norm);
  EXPECT_TRUE(final_norm);
}

// to_dtype through the VisionEncoder interface (what the VLM calls): bf16 weights and
// features close to the fp32 reference; back to fp32; other dtypes refused.
TEST(VitEncoder, Bfloat16ThroughVisionEncoder) {
  for (const std::string name : {"clip-tiny", "siglip-tiny", "eva02-clip-tiny"}) {
    SCOPED_TRACE(name);
    std::unique_ptr<VisionEncoder> enc = load(name);
    Golden g(name);
    at::NoGradGuard ng;
    enc->to_dtype(at::kBFloat16);
    for (const auto& p : enc->module().parameters()) EXPECT_EQ(p.scalar_type(), at::kBFloat16);
    FeatureSelect sel = FeatureSelect::parse(-1, "cls_patch");
    for (bool norm : {false, true}) {
      sel.final_norm = norm;
      VisionFeatures f = enc->encode(g["pixels"], sel);
      EXPECT_EQ(f.tokens.scalar_type(), at::kBFloat16);
      const at::Tensor want = g[norm ? "final_norm" : "hidden_3"];
      const double rel = max_diff(f.tokens, want) / want.abs().max().item<double>();
      EXPECT_LE(rel, 0.05) << "final_norm " << norm;
      EXPECT_GT(rel, 0.0) << "final_norm " << norm;  // it did run in bf16
    }
    // Interpolated size (the position-embedding resampling) in bf16 too.
    VisionFeatures fi = enc->encode(g["pixels_interp"], FeatureSelect::parse(-1, "cls_patch"));
    EXPECT_EQ(fi.tokens.scalar_type(), at::kBFloat16);
    const at::Tensor wi = g["interp_hidden_3"];
    EXPECT_LE(max_diff(fi.tokens, wi) / wi.abs().max().item<double>(), 0.05);
    enc->to_dtype(at::kFloat);
    VisionFeatures back = enc->encode(g["pixels"], FeatureSelect::parse(-1, "cls_patch"));
    EXPECT_EQ(back.tokens.scalar_type(), at::kFloat);
    EXPECT_LE(max_diff(back.tokens, g["hidden_3"]) / g["hidden_3"].abs().max().item<double>(),
              0.05);
    const std::string e = error_of([&] { enc->to_dtype(at::kHalf); });
    EXPECT_NE(e.find("bfloat16"), std::string::npos) << e;
    EXPECT_NE(e.find("Half"), std::string::npos) << e;
  }
}

// bf16 weights on a CPU whose bf16 GEMM goes through fp32 (Bf16Gemm::ViaF32, the default without
// AMX): the encoder computes its activations in fp32 (norms, attention, GELU) with only the weights
// bf16, so its hidden states equal an fp32 run on the bf16-rounded weights up to the summation
// order, far closer than the all-bf16 (Native) run; encode() still returns the weights' dtype.
TEST(VitEncoder, Bfloat16WeightsComputeInFp32WithoutAFastBf16Gemm) {
  struct ModeGuard {
    Bf16Gemm saved = bf16_gemm();
    ~ModeGuard() { set_bf16_gemm(saved); }
  } guard;
  at::NoGradGuard ng;
  for (const std::string name : {"clip-tiny", "siglip-tiny", "eva02-clip-tiny"}) {
    SCOPED_TRACE(name);
    Golden g(name);
    auto bf = ViTEncoder::load(kFixtures / name);
    bf->to_dtype(at::kBFloat16);
    auto rounded = ViTEncoder::load(kFixtures / name);  // fp32 holding the bf16 values
    for (auto& p : rounded->module().parameters()) p.set_data(p.to(at::kBFloat16).to(at::kFloat));
    ViTModel& m = bf->model();
    const int64_t L = m.config().num_layers;
    const at::Tensor want = rounded->model().hidden_state(g["pixels"], L);  // [B, T, C] fp32
    const double scale = want.abs().max().item<double>();

    set_bf16_gemm(Bf16Gemm::ViaF32);
    EXPECT_EQ(inference_compute_dtype(m.patch_embed->weight), at::kFloat);
    const at::Tensor mixed = m.hidden_state(g["pixels"], L);
    EXPECT_EQ(mixed.scalar_type(), at::kFloat);
    const double mixed_rel = max_diff(mixed, want) / scale;
    EXPECT_LE(mixed_rel, 1e-4);
    // The final norm on fp32 activations with bf16 parameters, and encode()'s dtype.
    EXPECT_LE(max_diff(m.apply_final_norm(mixed), rounded->model().apply_final_norm(want)), 1e-3);
    FeatureSelect sel = FeatureSelect::parse(-1, "cls_patch");
    sel.final_norm = true;
    VisionFeatures f = bf->encode(g["pixels"], sel);
    EXPECT_EQ(f.tokens.scalar_type(), at::kBFloat16);
    EXPECT_LE(max_diff(f.tokens, g["final_norm"]) / g["final_norm"].abs().max().item<double>(),
              0.05);

    // Training a partly frozen bf16 encoder (the embeddings frozen, the blocks not): bf16
    // activations and autograd, the gradients reach the blocks.
    {
      at::AutoGradMode grad(true);
      for (auto& p : bf->module().parameters()) p.requires_grad_(true);
      m.patch_embed->weight.requires_grad_(false);
      const at::Tensor h = m.hidden_state(g["pixels"], L);
      EXPECT_EQ(h.scalar_type(), at::kBFloat16);
      h.to(at::kFloat).sum().backward();
      const at::Tensor gw = m.blocks[0]->mlp->fc2->weight.grad();
      ASSERT_TRUE(gw.defined());
      EXPECT_GT(gw.abs().sum().item<double>(), 0.0);
      for (auto& p : bf->module().parameters()) p.requires_grad_(false);
    }

    set_bf16_gemm(Bf16Gemm::Native);
    EXPECT_EQ(inference_compute_dtype(m.patch_embed->weight), at::kBFloat16);
    const at::Tensor native = m.hidden_state(g["pixels"], L);
    EXPECT_EQ(native.scalar_type(), at::kBFloat16);
    const double native_rel = max_diff(native, want) / scale;
    EXPECT_GT(native_rel, 10 * mixed_rel) << "bf16 activations round at every op";
  }
}

// ---------------------------------------------------------------------------------------------
// Causal attention

TEST(VitCausal, ClipLaterTokensDoNotLeak) { check_causal_perturbation("clip-tiny"); }
TEST(VitCausal, SiglipLaterTokensDoNotLeak) { check_causal_perturbation("siglip-tiny"); }
TEST(VitCausal, Eva02LaterTokensDoNotLeak) { check_causal_perturbation("eva02-tiny"); }
TEST(VitCausal, Eva02ClipLaterTokensDoNotLeak) { check_causal_perturbation("eva02-clip-tiny"); }

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
TEST(VitSaveLoad, Eva02ClipRoundTrip) { check_round_trip("eva02-clip-tiny"); }

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
  // Perturb a LATER patch: (row 2, col 1) of the 4 x 4 grid = patch 9 = token 10 (after CLS).
  at::Tensor y = x.clone();
  y.narrow(2, 16, 8).narrow(3, 8, 8).add_(1.0);
  const int64_t tok = 10, T = 17;
  for (bool causal : {true, false}) {
    SCOPED_TRACE(causal ? "causal" : "full attention");
    auto m = make_classifier(tiny_classifier(causal, "last"), 1);
    auto* vit = dynamic_cast<ViTClassifier*>(m.get());
    ASSERT_NE(vit, nullptr);
    m->module().eval();
    at::Tensor hx = vit->trunk().hidden_state(x, 2), hy = vit->trunk().hidden_state(y, 2);
    ASSERT_EQ(hx.sizes(), (std::vector<int64_t>{2, T, 32}));
    const double earlier = max_diff(hx.narrow(1, 0, tok), hy.narrow(1, 0, tok));
    const double later = max_diff(hx.narrow(1, tok, T - tok), hy.narrow(1, tok, T - tok));
    if (causal)
      EXPECT_LE(earlier, 1e-6);  // tokens before the changed patch do not see it
    else
      EXPECT_GT(earlier, 1e-3);  // full attention: they do
    EXPECT_GT(later, 1e-3);
    // forward() is computed from these hidden states: logits = head(post_layernorm(last token)).
    at::Tensor w, b;
    for (const auto& p : m->module().named_parameters()) {
      if (p.key() == "head.weight") w = p.value();
      if (p.key() == "head.bias") b = p.value();
    }
    ASSERT_TRUE(w.defined() && b.defined());
    at::Tensor want = at::linear(vit->trunk().final_norm->forward(hx.select(1, T - 1)), w, b);
    EXPECT_LE(max_diff(m->forward(x), want), 1e-5);
    EXPECT_GT(max_diff(m->forward(x), m->forward(y)), 1e-4);
  }
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
  // Absurd sizes are refused before anything is allocated.
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, int64_t>>{{"hidden_size", int64_t{1} << 30},
                                                    {"num_layers", 1000000},
                                                    {"intermediate_size", int64_t{1} << 40},
                                                    {"image_size", int64_t{1} << 31},
                                                    {"num_classes", int64_t{1} << 40}}) {
    j = tiny_classifier();
    j[key] = value;
    e = error_of([&] { make_classifier(j, 0, "my.json"); });
    EXPECT_NE(e.find("my.json"), std::string::npos) << key << ": " << e;
  }
  // Within each limit but far too many parameters in total.
  j = tiny_classifier();
  j["hidden_size"] = 65536;
  j["num_heads"] = 1;
  j["intermediate_size"] = 65536;
  j["num_layers"] = 1024;
  e = error_of([&] { make_classifier(j, 0, "my.json"); });
  EXPECT_NE(e.find("parameters"), std::string::npos) << e;
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
