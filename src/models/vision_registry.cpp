// The vision registry (vision.h): dispatch on config.json to the family constructors.
#include <torch/nn/module.h>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/config_util.h"
#include "models/mambaout.h"
#include "models/vision_factories.h"
#include "models/vit.h"

namespace mambavl::models {

namespace fs = std::filesystem;

FeatureSelect FeatureSelect::parse(int64_t layer, const std::string& feature) {
  FeatureSelect s;
  s.layer = layer;
  if (feature == "patch")
    s.keep_prefix = false;
  else if (feature == "cls_patch")
    s.keep_prefix = true;
  else
    MVL_FAIL("unknown vision feature '", feature, "': use 'patch' or 'cls_patch'");
  return s;
}

namespace {

std::string architecture_of(const nlohmann::json& cfg, const std::string& file) {
  MVL_CHECK(cfg.is_object(), file, ": must be a JSON object");
  if (cfg.contains("architecture")) {
    MVL_CHECK(cfg.at("architecture").is_string(), file, ": key 'architecture' must be a string");
    return cfg.at("architecture").get<std::string>();
  }
  return "";
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

nlohmann::json read_config(const fs::path& dir) {
  MVL_CHECK(fs::is_directory(dir), dir.string(), ": not a folder (expected a model folder with ",
            "config.json and model.safetensors)");
  nlohmann::json cfg = io::read_json_file(dir / "config.json");
  MVL_CHECK(cfg.is_object(), (dir / "config.json").string(), ": must be a JSON object");
  return cfg;
}

}  // namespace

std::unique_ptr<ImageClassifier> make_classifier(const nlohmann::json& cfg_in, uint64_t seed,
                                                 const std::string& file) {
  nlohmann::json cfg = cfg_in;
  const std::string arch = architecture_of(cfg, file);
  cfg.erase("classes");
  if (arch == "mambaout" || arch == "mambaout_ssm" || starts_with(arch, "mambaout_"))
    return make_mambaout_classifier(cfg, seed, file);
  if (arch == "vit") return make_vit_classifier(cfg, seed, file);
  MVL_FAIL(file, ": unknown classifier architecture '", arch,
           "' (expected 'mambaout', 'mambaout_ssm' or 'vit')");
}

std::unique_ptr<ImageClassifier> load_classifier(const fs::path& dir) {
  nlohmann::json cfg = read_config(dir);
  const std::string file = (dir / "config.json").string();
  const std::string arch = architecture_of(cfg, file);
  cfg.erase("classes");
  if (starts_with(arch, "mambaout")) return load_mambaout_classifier(dir, cfg);
  if (arch == "vit") return load_vit_classifier(dir, cfg);
  MVL_FAIL(file, ": not an image classifier folder (architecture '", arch,
           "'; expected 'mambaout', 'mambaout_ssm', 'vit' or a timm 'mambaout_*' model)");
}

void save_classifier(ImageClassifier& clf, const std::vector<std::string>& classes,
                     const fs::path& dir) {
  MVL_CHECK(static_cast<int64_t>(classes.size()) == clf.num_classes(),
            "save_classifier: ", classes.size(), " class names for a model with ",
            clf.num_classes(), " classes");
  nlohmann::json cfg = clf.config_json();
  cfg["classes"] = classes;
  fs::create_directories(dir);
  io::save_module(clf.module(), dir,
                  [&clf](const std::string& name) { return clf.checkpoint_key(name); });
  io::write_json_file(dir / "config.json", cfg);
}

std::vector<std::string> classifier_classes(const fs::path& dir) {
  const nlohmann::json cfg = read_config(dir);
  const std::string file = (dir / "config.json").string();
  std::vector<std::string> out;
  int64_t n = 0;
  if (cfg.contains("num_classes") && cfg.at("num_classes").is_number_integer()) {
    n = cfg::get_int(cfg, "num_classes", file, 0);
    // A name per class is made below: bounded as the classifiers bound it.
    cfg::check_limit(n, 0, MambaOutConfig::kMaxClasses, file, "num_classes");
  }
  // Ours: "classes"; timm's hub config.json: "label_names" (used when "classes" is absent).
  for (const char* key : {"classes", "label_names"}) {
    if (!cfg.contains(key) || cfg.at(key).is_null()) continue;
    const auto& c = cfg.at(key);
    MVL_CHECK(c.is_array(), file, ": key '", key, "' must be a list of names");
    for (const auto& v : c) {
      MVL_CHECK(v.is_string(), file, ": key '", key, "' must be a list of names");
      out.push_back(v.get<std::string>());
    }
    MVL_CHECK(std::string(key) == "classes" || n <= 0 || static_cast<int64_t>(out.size()) == n,
              file, ": key 'label_names' has ", out.size(), " names but num_classes is ", n);
    return out;
  }
  for (int64_t i = 0; i < n; ++i) out.push_back("class_" + std::to_string(i));
  return out;
}

std::unique_ptr<VisionEncoder> load_vision_encoder(const fs::path& dir) {
  nlohmann::json cfg = read_config(dir);
  const std::string arch = architecture_of(cfg, (dir / "config.json").string());
  if (starts_with(arch, "mambaout")) return load_mambaout_encoder(dir, cfg);
  return load_vit_encoder(dir, cfg);
}

std::unique_ptr<VisionEncoder> make_vision_encoder(const nlohmann::json& cfg, uint64_t seed,
                                                   bool initialize, const std::string& file) {
  const std::string arch = architecture_of(cfg, file);
  if (starts_with(arch, "mambaout")) return make_mambaout_encoder(cfg, seed, initialize, file);
  return make_vit_encoder(cfg, seed, initialize, file);
}

ExpectedWeights expected_vision_weights(const nlohmann::json& cfg, const std::string& file,
                                        const std::string& fields) {
  if (starts_with(architecture_of(cfg, file), "mambaout"))
    return MambaOutConfig::from_json(cfg, file).expected_weights(fields);
  return ViTConfig::from_json(cfg, file).expected_weights(fields);
}

}  // namespace mambavl::models
