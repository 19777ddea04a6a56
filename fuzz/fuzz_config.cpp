// libFuzzer harness: the configuration parsers, one family per input. The first byte picks the
// family (byte % kFamilies, in the order of the enum below); the rest is the file's content,
// written to a scratch file and read the way the engine reads it (io::read_json_file: size cap,
// nesting limit; train::load_toml for run files). Only the parse / validate functions run, never a
// model constructor: a valid config within the bounds may still describe billions of parameters.
//
// Checked beyond "only mambavl::Error": a config that parses must survive its own round trip
// (from_json(to_json())), since that is what a saved model folder is loaded back with.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "data/scenes.h"
#include "fuzz_util.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "models/connector.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "models/mambaout.h"
#include "models/registry.h"
#include "models/vit.h"
#include "models/vlm.h"
#include "train/toml_config.h"
#include "train/trainer.h"

using namespace mambavl;
using nlohmann::json;

namespace {

enum Family : uint8_t {
  kMamba,          // Mamba / hybrid config.json (HF or state-spaces layout)
  kGPTNeoX,        // GPT-NeoX (Pythia) config.json
  kLanguageModel,  // the LM registry: detect_architecture, then that family's parser
  kViT,            // CLIP / SigLIP (full or vision-only) / EVA-02 config.json
  kMambaOut,       // MambaOut (ours or timm's hub config)
  kConnector,      // connector_config (MLP / VSS)
  kVLM,            // a VLM folder's config.json, with its vision_config / text_config parsed
  kPreprocess,     // "preprocess" object (io::ImagePreprocess)
  kViTClassifier,  // ViT classifier config.json (ViTClassifier::Options)
  kRunFile,        // `mambavl train --config` TOML run file
  kOverrides,      // `--set key=value` lines applied to a fixed run file
  kFamilies
};

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// A parsed config's to_json() must parse again; anything else is a finding.
template <class F>
void must_round_trip(const char* what, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    std::fprintf(stderr, "round trip failed: %s: %s\n", what, e.what());
    std::abort();
  }
}

void parse_lm(const json& j, const std::string& file) {
  if (models::detect_architecture(j, file) == "gpt_neox") {
    auto c = models::GPTNeoXConfig::from_json(j, file);
    must_round_trip("gpt_neox", [&] { models::GPTNeoXConfig::from_json(c.to_json(), file); });
  } else {
    auto c = models::MambaConfig::from_json(j, file);
    must_round_trip("mamba", [&] { models::MambaConfig::from_json(c.to_json(), file); });
  }
}

// As the vision registry dispatches (vision_registry.cpp), without building the encoder.
void parse_vision(const json& j, const std::string& file) {
  std::string arch;
  if (j.is_object() && j.contains("architecture") && j.at("architecture").is_string())
    arch = j.at("architecture").get<std::string>();
  if (starts_with(arch, "mambaout")) {
    auto c = models::MambaOutConfig::from_json(j, file);
    must_round_trip("mambaout", [&] { models::MambaOutConfig::from_json(c.to_json(), file); });
  } else {
    auto c = models::ViTConfig::from_json(j, file);
    must_round_trip("vit", [&] { models::ViTConfig::from_json(c.to_json(), file); });
  }
}

void parse_vlm(const json& j, const std::string& file) {
  auto c = models::VLMConfig::from_json(j, file);
  parse_vision(c.vision_config, file + " vision_config");
  parse_lm(c.text_config, file + " text_config");
  must_round_trip("vlm", [&] { models::VLMConfig::from_json(c.to_json(), file); });
}

json section(const json& cfg, const char* name) {
  return cfg.is_object() && cfg.contains(name) ? cfg.at(name) : json::object();
}

// What experiments/train_run.cpp checks of a run file before it builds anything.
void parse_run(const json& cfg, const std::string& file) {
  train::check_keys(cfg, {"kind", "out", "model", "data", "eval", "train"}, file, "");
  (void)train::get_or<std::string>(cfg, "kind", "", file, "");
  (void)train::get_or<std::string>(cfg, "out", "", file, "");
  auto tc = train::TrainerConfig::from_json(section(cfg, "train"), file, "train");
  must_round_trip("trainer", [&] { train::TrainerConfig::from_json(tc.to_json(), file, "train"); });
  const json m = section(cfg, "model"), d = section(cfg, "data");
  (void)train::get_or<std::string>(m, "preset", "", file, "model");
  (void)train::get_or<uint64_t>(m, "seed", 0, file, "model");
  (void)train::get_or<std::vector<std::string>>(m, "init_parts", {}, file, "model");
  if (m.contains("overrides")) {
    // A JSON merge patch on a VLM preset's config.json (train_run.cpp build_vlm).
    const json& ov = m.at("overrides");
    MVL_CHECK(ov.is_object(), file, ": model.overrides must be a table");
    json j = models::vlm_preset("mamba-vl-tiny", 64).to_json();
    j.merge_patch(ov);
    parse_vlm(j, file + " [model.overrides]");
  }
  data::SceneOptions o;
  o.image_size = train::get_or<int64_t>(d, "image_size", o.image_size, file, "data");
  o.min_objects = train::get_or<int64_t>(d, "min_objects", o.min_objects, file, "data");
  o.max_objects = train::get_or<int64_t>(d, "max_objects", o.max_objects, file, "data");
  o.clutter = train::get_or<bool>(d, "clutter", o.clutter, file, "data");
  o.tasks = train::get_or<std::vector<std::string>>(d, "tasks", o.tasks, file, "data");
  data::check_scene_options(o);
  (void)train::get_or<std::vector<int64_t>>(d, "lengths", {20}, file, "data");
  (void)train::get_or<double>(d, "val_fraction", 0.1, file, "data");
}

constexpr std::string_view kBaseRun = R"(kind = "vlm"
out = "runs/x"
[model]
preset = "mamba-vl-tiny"
overrides = { connector_config = { type = "mlp" } }
[data]
source = "scenes"
tasks = ["caption", "vqa"]
[train]
batch_size = 4
[[train.stages]]
name = "a"
steps = 10
lr = 1e-3
[[train.stages]]
name = "b"
steps = 5
freeze = ["vision_tower"]
)";

void run(Family family, const uint8_t* data, size_t size) {
  const auto& dir = fuzz::scratch_dir("fuzz_config");
  if (family == kRunFile) {
    const auto path = dir / "run.toml";
    fuzz::write_bytes(path, data, size);
    parse_run(train::load_toml(path), path.string());
    return;
  }
  if (family == kOverrides) {
    // One override per line (at most 64), applied in order to a fixed run file.
    std::vector<std::string> sets;
    std::string_view rest(reinterpret_cast<const char*>(data), size);
    while (!rest.empty() && sets.size() < 64) {
      const size_t nl = rest.find('\n');
      sets.emplace_back(rest.substr(0, nl));
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    }
    json cfg = train::parse_toml(std::string(kBaseRun), "base.toml");
    train::apply_overrides(cfg, sets);
    parse_run(cfg, "base.toml");
    return;
  }
  const auto path = dir / "config.json";
  fuzz::write_bytes(path, data, size);
  const json j = io::read_json_file(path);
  const std::string file = path.string();
  switch (family) {
    case kMamba: {
      auto c = models::MambaConfig::from_json(j, file);
      must_round_trip("mamba", [&] { models::MambaConfig::from_json(c.to_json(), file); });
      break;
    }
    case kGPTNeoX: {
      auto c = models::GPTNeoXConfig::from_json(j, file);
      must_round_trip("gpt_neox", [&] { models::GPTNeoXConfig::from_json(c.to_json(), file); });
      break;
    }
    case kLanguageModel: parse_lm(j, file); break;
    case kViT: {
      auto c = models::ViTConfig::from_json(j, file);
      must_round_trip("vit", [&] { models::ViTConfig::from_json(c.to_json(), file); });
      break;
    }
    case kMambaOut: {
      auto c = models::MambaOutConfig::from_json(j, file);
      must_round_trip("mambaout", [&] { models::MambaOutConfig::from_json(c.to_json(), file); });
      break;
    }
    case kConnector: {
      auto c = models::ConnectorConfig::from_json(j, file);
      must_round_trip("connector", [&] { models::ConnectorConfig::from_json(c.to_json(), file); });
      break;
    }
    case kVLM: parse_vlm(j, file); break;
    case kPreprocess: {
      auto p = io::ImagePreprocess::from_json(j, file);
      must_round_trip("preprocess", [&] { io::ImagePreprocess::from_json(p.to_json(), file); });
      break;
    }
    case kViTClassifier: (void)models::ViTClassifier::Options::from_json(j, file); break;
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto family = static_cast<Family>(data[0] % kFamilies);
  fuzz::expect_ok_or_error([&] { run(family, data + 1, size - 1); });
  return 0;
}
