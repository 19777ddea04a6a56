#include "cmd_encode.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "common/error.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/vision.h"
#include "models/vit.h"
#include "models/vlm.h"

namespace mambavl::cli {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string describe_preprocess(const io::ImagePreprocess& pp) {
  std::ostringstream s;
  s << pp.size << " x " << pp.size << ", " << io::to_string(pp.resample) << ", "
    << (pp.mode == "crop" ? "shorter side + center crop" : "squash") << ", mean ["
    << fmt(pp.mean[0]) << ", " << fmt(pp.mean[1]) << ", " << fmt(pp.mean[2]) << "], std ["
    << fmt(pp.std[0]) << ", " << fmt(pp.std[1]) << ", " << fmt(pp.std[2]) << "]";
  return s.str();
}

void describe_encoder(models::VisionEncoder& enc, std::ostream& out) {
  const io::ImagePreprocess pp = enc.preprocess();
  const auto grid = enc.grid_size(pp.size, pp.size);
  out << "kind: " << to_string(FolderKind::VisionEncoder) << "\narchitecture: " << enc.arch()
      << "\nfeature dim: " << enc.feature_dim() << "\ninput: " << describe_preprocess(pp)
      << "\npatch grid: " << grid[0] << " x " << grid[1] << " (" << grid[0] * grid[1]
      << " patch tokens)\n";
  if (auto* vit = dynamic_cast<models::ViTEncoder*>(&enc)) {
    const auto& c = vit->config();
    out << "layers: " << c.num_layers << "\nheads: " << c.num_heads
        << "\npatch size: " << c.patch_size << "\nprefix tokens: " << c.num_prefix()
        << "\ncausal attention: " << (c.causal ? "yes" : "no") << "\n";
  }
  out << "parameters: " << count_parameters(enc.module()) << "\n";
}

}  // namespace

std::string to_string(FolderKind kind) {
  switch (kind) {
    case FolderKind::VisionEncoder:
      return "vision encoder";
    case FolderKind::Classifier:
      return "image classifier";
    case FolderKind::LanguageModel:
      break;
  }
  return "language model";
}

FolderKind detect_folder_kind(const fs::path& dir) {
  nlohmann::json cfg;
  try {
    if (!fs::is_regular_file(dir / "config.json")) return FolderKind::LanguageModel;
    cfg = io::read_json_file(dir / "config.json");
  } catch (const std::exception&) {
    return FolderKind::LanguageModel;  // the LM loader reports the problem as before
  }
  if (!cfg.is_object()) return FolderKind::LanguageModel;
  // VLM folders: detect them here first (before the vision rules: a VLM config has sub-configs).
  if (cfg.contains("architecture") && cfg.at("architecture").is_string()) {
    const std::string arch = cfg.at("architecture").get<std::string>();
    if (arch == "vit") return FolderKind::Classifier;
    if (starts_with(arch, "mambaout")) {
      const auto it = cfg.find("num_classes");
      const bool none = it != cfg.end() && it->is_number_integer() && it->get<int64_t>() == 0;
      return none ? FolderKind::VisionEncoder : FolderKind::Classifier;
    }
    return FolderKind::VisionEncoder;  // timm hub config (EVA-02)
  }
  if (cfg.contains("model_type") && cfg.at("model_type").is_string()) {
    const std::string mt = cfg.at("model_type").get<std::string>();
    if (mt == "clip_vision_model" || mt == "siglip_vision_model" || mt == "clip" || mt == "siglip")
      return FolderKind::VisionEncoder;
  }
  return FolderKind::LanguageModel;
}

bool describe_folder(const fs::path& dir, std::ostream& out) {
  switch (detect_folder_kind(dir)) {
    case FolderKind::LanguageModel:
      return false;
    case FolderKind::VisionEncoder: {
      auto enc = models::load_vision_encoder(dir);
      describe_encoder(*enc, out);
      return true;
    }
    case FolderKind::Classifier: {
      auto clf = models::load_classifier(dir);
      const auto classes = models::classifier_classes(dir);
      out << "kind: " << to_string(FolderKind::Classifier) << "\narchitecture: " << clf->arch()
          << "\nclasses: " << clf->num_classes();
      const size_t shown = std::min<size_t>(classes.size(), 20);
      if (shown > 0) {
        out << " (";
        for (size_t i = 0; i < shown; ++i) out << (i ? ", " : "") << classes[i];
        if (shown < classes.size()) out << ", ... " << classes.size() - shown << " more";
        out << ")";
      }
      out << "\ninput: " << describe_preprocess(clf->preprocess())
          << "\nparameters: " << count_parameters(clf->module()) << "\n";
      if (starts_with(clf->arch(), "mambaout"))
        out << "encoder: the MambaOut trunk (last stage) works with `mambavl encode`\n";
      return true;
    }
  }
  return false;
}

void add_encode_command(CLI::App& app) {
  struct Opts {
    RuntimeOptions rt;
    std::string model, feature = "patch", out;
    int64_t layer = -1, image_size = 0;
    bool final_norm = false, causal = false;
    std::vector<std::string> images;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "encode",
      "Run a vision encoder folder (CLIP / SigLIP / EVA-02 / MambaOut) on images: feature "
      "shapes and statistics, or the features as a safetensors file");
  c->add_option("--model", o->model, "Vision encoder folder (or a MambaOut classifier folder)")
      ->required();
  c->add_option("--layer", o->layer,
                "Hidden state to return: 0 = embeddings, i = after block i, negative from the end "
                "(-1 = last block, -2 = the one before); ViTs only, MambaOut has -1");
  c->add_option("--feature", o->feature,
                "patch (prefix tokens such as CLS dropped) or cls_patch (kept, first)")
      ->check(CLI::IsMember({"patch", "cls_patch"}));
  c->add_flag("--final-norm", o->final_norm,
              "Apply the encoder's final norm (post_layernorm / timm norm); last layer only");
  c->add_flag("--causal", o->causal, "Causal self-attention (ViT encoders)");
  c->add_option("--image-size", o->image_size,
                "Square input size instead of the encoder's own (position embeddings are "
                "interpolated)")
      ->check(cli::Positive);
  c->add_option("--out", o->out, "Write the features [images, tokens, dim] (f32) to this file");
  c->add_option("images", o->images, "Image files (PNG, JPEG, BMP, GIF)");
  add_runtime_options(*c, o->rt);
  c->callback([o, c]() {
    apply_runtime_options(o->rt);
    MVL_CHECK(!o->images.empty(), "encode: give one or more image files after the options");
    if (!o->out.empty()) {
      const fs::path parent = fs::path(o->out).parent_path();
      MVL_CHECK(parent.empty() || fs::is_directory(parent), o->out, ": the folder ",
                parent.string(), " does not exist (create it first)");
    }
    // One dispatch point per folder kind. A VLM folder: its encoder + connector, with the
    // feature selection and input size of its config (the tokens its language model sees).
    std::function<models::VisionFeatures(const at::Tensor&)> run;
    std::unique_ptr<models::VisionEncoder> enc;
    std::unique_ptr<models::VLM> vlm;
    io::ImagePreprocess pp;
    const at::ScalarType dtype = o->rt.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
    std::string what;
    if (models::is_vlm_folder(o->model)) {
      for (const char* opt : {"--layer", "--feature", "--final-norm", "--causal", "--image-size"})
        MVL_CHECK(c->count(opt) == 0, o->model, ": a vision-language model folder: ", opt,
                  " is set by its config.json (encode runs its encoder + connector as the model "
                  "does); give the vision encoder folder itself to choose other features");
      vlm = models::VLM::load(o->model);
      vlm->module().eval();
      if (dtype != at::kFloat) vlm->to_dtype(dtype);
      pp = vlm->preprocess();
      const auto g = vlm->grid();
      run = [&vlm, g](const at::Tensor& x) {
        models::VisionFeatures f;
        f.tokens = vlm->encode_images(x);  // [1, T, d_lm]
        f.grid_h = g[0], f.grid_w = g[1];
        f.num_prefix = f.tokens.size(1) - g[0] * g[1];
        return f;
      };
      what = vlm->config().family + ": " + vlm->vision().arch() + " + " +
             vlm->config().connector.type + ", output dim " +
             std::to_string(vlm->lm().hidden_size());
    } else {
      const FolderKind kind = detect_folder_kind(o->model);
      MVL_CHECK(fs::is_directory(o->model), o->model,
                ": not a folder (expected a vision encoder folder with config.json and "
                "model.safetensors)");
      MVL_CHECK(
          kind != FolderKind::LanguageModel || !fs::exists(fs::path(o->model) / "config.json"),
          o->model,
          ": this is a language-model folder; encode needs a vision encoder folder (CLIP / "
          "SigLIP / EVA-02 / MambaOut)");
      if (kind == FolderKind::Classifier) {
        const auto cfg = io::read_json_file(fs::path(o->model) / "config.json");
        MVL_CHECK(starts_with(cfg.value("architecture", std::string()), "mambaout"), o->model,
                  ": this is an image classifier folder (",
                  cfg.value("architecture", std::string()),
                  "); encode needs a vision encoder folder (CLIP / SigLIP / EVA-02 / MambaOut)");
      }
      enc = models::load_vision_encoder(o->model);
      enc->module().eval();
      if (o->causal) {
        auto* vit = dynamic_cast<models::ViTEncoder*>(enc.get());
        MVL_CHECK(vit, o->model, ": --causal needs a ViT encoder (clip, siglip, eva02); ",
                  enc->arch(), " has no attention");
        vit->set_causal(true);
      }
      models::FeatureSelect sel = models::FeatureSelect::parse(o->layer, o->feature);
      sel.final_norm = o->final_norm;
      pp = enc->preprocess();
      if (o->image_size > 0) pp.size = o->image_size;
      const auto grid = enc->grid_size(pp.size, pp.size);
      MVL_CHECK(grid[0] > 0 && grid[1] > 0, "--image-size ", pp.size,
                " gives no patches for this encoder (", enc->arch(), "); use a larger size");
      if (dtype != at::kFloat) enc->to_dtype(dtype);
      run = [&enc, sel](const at::Tensor& x) { return enc->encode(x, sel); };
      what = enc->arch() + ", feature dim " + std::to_string(enc->feature_dim()) + "; layer " +
             std::to_string(o->layer) + ", " + o->feature + (o->final_norm ? ", final norm" : "") +
             (o->causal ? ", causal" : "");
    }

    std::cout << "model: " << o->model << " (" << what << "); input " << describe_preprocess(pp)
              << "\n";
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> all;  // each [tokens, dim] f32
    models::VisionFeatures last;
    for (const auto& path : o->images) {
      const io::Image img = io::load_image(path);
      const at::Tensor x = pp(img).unsqueeze(0).to(dtype);  // [1, 3, S, S]
      models::VisionFeatures f;
      try {
        f = run(x);
      } catch (const Error& e) {
        MVL_FAIL(o->model, ": ", e.what());
      }
      const at::Tensor t = f.tokens[0].to(at::kFloat).contiguous();  // [tokens, dim]
      std::cout << path << ": features [" << t.size(0) << ", " << t.size(1) << "], grid "
                << f.grid_h << " x " << f.grid_w << " + " << f.num_prefix << " prefix, mean "
                << fmt(t.mean().item<double>()) << ", std "
                << fmt(t.numel() > 1 ? t.std().item<double>() : 0.0) << ", min "
                << fmt(t.min().item<double>()) << ", max " << fmt(t.max().item<double>()) << "\n";
      if (!o->out.empty()) all.push_back(t);
      last = f;
    }
    if (!o->out.empty()) {
      const at::Tensor feats = at::stack(all);  // [images, tokens, dim]
      nlohmann::json names = o->images;
      const std::map<std::string, std::string> meta = {
          {"model", o->model},
          {"layer", std::to_string(o->layer)},
          {"feature", o->feature},
          {"final_norm", o->final_norm ? "true" : "false"},
          {"causal", o->causal ? "true" : "false"},
          {"image_size", std::to_string(pp.size)},
          {"grid", std::to_string(last.grid_h) + "," + std::to_string(last.grid_w)},
          {"num_prefix", std::to_string(last.num_prefix)},
          {"images", names.dump()}};
      io::save_safetensors(o->out, {{"features", feats}}, meta);
      std::cout << "wrote features [" << feats.size(0) << ", " << feats.size(1) << ", "
                << feats.size(2) << "] (f32) to " << o->out << "\n";
    }
  });
}

}  // namespace mambavl::cli
