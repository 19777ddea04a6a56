// The "vit" image classifier (CLIP-layout trunk + head, trained from scratch) and the
// real-size random-weight encoder presets for benchmarks.
#include <ATen/ATen.h>

#include <set>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/config_util.h"
#include "models/vision_factories.h"
#include "models/vit.h"

namespace mambavl::models {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Classifier

namespace {

const std::set<std::string> kClassifierKeys = {
    "architecture", "causal",     "drop_path_rate",    "hidden_act",
    "hidden_size",  "image_size", "intermediate_size", "layer_norm_eps",
    "num_classes",  "num_heads",  "num_layers",        "patch_size",
    "pool",         "preprocess"};

}  // namespace

ViTClassifier::Options ViTClassifier::Options::from_json(const nlohmann::json& j,
                                                         const std::string& file) {
  cfg::check_known_keys(j, kClassifierKeys, file);
  const std::string arch = cfg::get_string(j, "architecture", file, "vit");
  MVL_CHECK(arch == "vit", file, ": architecture '", arch, "' is not \"vit\"");
  Options o;
  ViTConfig& c = o.vit;
  c.layout = ViTLayout::CLIP;
  c.hidden_size = cfg::require_int(j, "hidden_size", file);
  cfg::check_limit(c.hidden_size, 1, ViTConfig::kMaxHidden, file, "hidden_size");  // before 4 * h
  c.num_layers = cfg::require_int(j, "num_layers", file);
  c.num_heads = cfg::require_int(j, "num_heads", file);
  c.intermediate_size = cfg::get_int(j, "intermediate_size", file, 4 * c.hidden_size);
  c.patch_size = cfg::get_int(j, "patch_size", file, 16);
  c.image_size = cfg::get_int(j, "image_size", file, 224);
  c.hidden_act = cfg::get_string(j, "hidden_act", file, "gelu");
  c.layer_norm_eps = cfg::get_double(j, "layer_norm_eps", file, 1e-6);
  c.causal = cfg::get_bool(j, "causal", file, false);
  c.validate(file, "num_layers");
  o.num_classes = cfg::require_int(j, "num_classes", file);
  MVL_CHECK(o.num_classes > 0 && o.num_classes <= (int64_t{1} << 20), file,
            ": key 'num_classes' must be in [1, 2^20], got ", o.num_classes);
  const double params = o.expected_weights().num_parameters;
  MVL_CHECK(params <= ViTConfig::kMaxParameters, file, ": the config describes ", params,
            " parameters with the head of num_classes ", o.num_classes, ", over the limit of ",
            ViTConfig::kMaxParameters);
  o.pool = cfg::get_string(j, "pool", file, "mean");
  MVL_CHECK(o.pool == "mean" || o.pool == "cls" || o.pool == "last", file, ": key 'pool' is '",
            o.pool, "'; use \"mean\", \"cls\" or \"last\"");
  MVL_CHECK(!(c.causal && o.pool == "cls"), file,
            ": pool \"cls\" with causal attention: the class token comes first and sees no "
            "patch; use \"mean\" or \"last\"");
  o.drop_path_rate = cfg::get_double(j, "drop_path_rate", file, 0.0);
  MVL_CHECK(o.drop_path_rate >= 0.0 && o.drop_path_rate < 1.0, file,
            ": key 'drop_path_rate' must be in [0, 1), got ", o.drop_path_rate);
  if (j.contains("preprocess") && !j.at("preprocess").is_null())
    o.pp = io::ImagePreprocess::from_json(j.at("preprocess"), file);
  else
    o.pp = io::ImagePreprocess::imagenet(c.image_size);
  return o;
}

ExpectedWeights ViTClassifier::Options::expected_weights() const {
  ExpectedWeights w = vit.expected_weights("", "num_layers");
  w.tensor({"head.weight"}, {dim(num_classes, "num_classes"), dim(vit.hidden_size, "hidden_size")});
  w.num_parameters += static_cast<double>(vit.hidden_size + 1) * static_cast<double>(num_classes);
  return w;
}

ViTClassifier::ViTClassifier(Options o) : opt_(std::move(o)), trunk_(opt_.vit) {
  head =
      trunk_.module().register_module("head", Linear(opt_.vit.hidden_size, opt_.num_classes, true));
  trunk_.set_drop_path(opt_.drop_path_rate);
}

void ViTClassifier::init_weights(uint64_t seed) {
  trunk_.init_weights(seed);  // includes the head (a Linear under the same root)
}

at::Tensor ViTClassifier::forward(const at::Tensor& images) {
  at::Tensor h = trunk_.hidden_state(images, opt_.vit.num_layers);  // [B, T, C]
  const int64_t P = opt_.vit.num_prefix();
  at::Tensor pooled;  // [B, C]
  if (opt_.pool == "mean")
    pooled = h.narrow(1, P, h.size(1) - P).mean(1);
  else if (opt_.pool == "cls")
    pooled = h.select(1, 0);
  else
    pooled = h.select(1, h.size(1) - 1);
  return head->forward(trunk_.apply_final_norm(pooled)).to(at::kFloat);  // [B, K]
}

nlohmann::json ViTClassifier::config_json() const {
  const ViTConfig& c = opt_.vit;
  nlohmann::json j;
  j["architecture"] = "vit";
  j["hidden_size"] = c.hidden_size;
  j["num_layers"] = c.num_layers;
  j["num_heads"] = c.num_heads;
  j["intermediate_size"] = c.intermediate_size;
  j["patch_size"] = c.patch_size;
  j["image_size"] = c.image_size;
  j["hidden_act"] = c.hidden_act;
  j["layer_norm_eps"] = c.layer_norm_eps;
  j["num_classes"] = opt_.num_classes;
  j["causal"] = c.causal;
  j["pool"] = opt_.pool;
  j["drop_path_rate"] = opt_.drop_path_rate;
  j["preprocess"] = opt_.pp.to_json();
  return j;
}

std::unique_ptr<ImageClassifier> make_vit_classifier(const nlohmann::json& cfg, uint64_t seed,
                                                     const std::string& file) {
  auto clf = std::make_unique<ViTClassifier>(ViTClassifier::Options::from_json(cfg, file));
  clf->init_weights(seed);
  return clf;
}

std::unique_ptr<ImageClassifier> load_vit_classifier(const fs::path& dir,
                                                     const nlohmann::json& cfg) {
  const std::string file = (dir / "config.json").string();
  const ViTClassifier::Options o = ViTClassifier::Options::from_json(cfg, file);
  io::CheckpointFolder ckpt(dir);
  check_weights_match_config(o.expected_weights(), ckpt, file);  // before building
  auto clf = std::make_unique<ViTClassifier>(o);
  io::load_module(clf->module(), ckpt);  // every tensor, strictly
  return clf;
}

// ---------------------------------------------------------------------------------------------
// Presets

std::vector<std::string> vit_encoder_preset_names() {
  return {"clip-vit-b16", "clip-vit-l14", "siglip-so400m-14", "eva02-l14"};
}

ViTConfig vit_encoder_preset_config(const std::string& name, int64_t image_size) {
  ViTConfig c;
  if (name == "clip-vit-b16") {
    c.layout = ViTLayout::CLIP;
    c.hidden_size = 768, c.num_layers = 12, c.num_heads = 12, c.intermediate_size = 3072;
    c.patch_size = 16, c.hidden_act = "quick_gelu", c.layer_norm_eps = 1e-5;
  } else if (name == "clip-vit-l14") {
    c.layout = ViTLayout::CLIP;
    c.hidden_size = 1024, c.num_layers = 24, c.num_heads = 16, c.intermediate_size = 4096;
    c.patch_size = 14, c.hidden_act = "quick_gelu", c.layer_norm_eps = 1e-5;
  } else if (name == "siglip-so400m-14") {
    c.layout = ViTLayout::SigLIP;
    c.hidden_size = 1152, c.num_layers = 27, c.num_heads = 16, c.intermediate_size = 4304;
    c.patch_size = 14, c.hidden_act = "gelu_pytorch_tanh", c.layer_norm_eps = 1e-6;
  } else if (name == "eva02-l14") {
    c.layout = ViTLayout::EVA02;
    c.timm_arch = "eva02_large_patch14_224";
    c.hidden_size = 1024, c.num_layers = 24, c.num_heads = 16;
    c.intermediate_size = static_cast<int64_t>(1024.0 * c.mlp_ratio);  // 2730
    c.patch_size = 14, c.hidden_act = "swiglu", c.layer_norm_eps = 1e-6;
    c.ref_feat_shape = {16, 16};
  } else {
    MVL_FAIL("unknown ViT encoder preset '", name, "' (known: ", join(vit_encoder_preset_names()),
             ")");
  }
  MVL_CHECK(image_size >= c.patch_size, "ViT preset ", name, ": image size ", image_size,
            " is smaller than the patch size ", c.patch_size);
  c.image_size = image_size;
  return c;
}

std::unique_ptr<VisionEncoder> make_vit_encoder_preset(const std::string& name, int64_t image_size,
                                                       uint64_t seed) {
  auto enc = std::make_unique<ViTEncoder>(vit_encoder_preset_config(name, image_size));
  enc->model().init_weights(seed);
  return enc;
}

}  // namespace mambavl::models
