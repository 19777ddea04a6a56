#include "models/registry.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/checkpoint.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"

namespace mambavl::models {

std::string detect_architecture(const nlohmann::json& j, const std::string& file) {
  MVL_CHECK(j.is_object(), file, ": config must be a JSON object");
  if (j.contains("model_type") && j["model_type"].is_string()) {
    const std::string mt = j["model_type"].get<std::string>();
    if (mt == "mamba" || mt == "gpt_neox") return mt;
    MVL_FAIL(file, ": unknown architecture model_type '", mt,
             "' (supported: mamba, gpt_neox, and state-spaces mamba configs)");
  }
  if (j.contains("d_model") && j.contains("n_layer")) return "mamba";  // mamba_ssm's config
  MVL_FAIL(file,
           ": cannot tell the architecture: no 'model_type' key (expected \"mamba\" or "
           "\"gpt_neox\") and not a state-spaces mamba config (d_model, n_layer)");
}

std::string detect_architecture(const std::filesystem::path& dir) {
  MVL_CHECK(std::filesystem::is_directory(dir), dir.string(),
            ": not a folder (expected a model folder with config.json and model.safetensors)");
  const auto path = dir / "config.json";
  MVL_CHECK(std::filesystem::exists(path), dir.string(), ": no config.json in this folder");
  return detect_architecture(io::read_json_file(path), path.string());
}

std::unique_ptr<CausalLM> make_causal_lm(const nlohmann::json& cfg, uint64_t seed, bool initialize,
                                         const std::string& file) {
  if (detect_architecture(cfg, file) == "gpt_neox") {
    auto m = std::make_unique<GPTNeoXLM>(GPTNeoXConfig::from_json(cfg, file), false);
    if (initialize) m->init_weights(seed);
    return m;
  }
  auto m = std::make_unique<MambaLM>(MambaConfig::from_json(cfg, file), false);
  if (initialize) m->init_weights(seed);
  return m;
}

ExpectedWeights expected_lm_weights(const nlohmann::json& cfg, const std::string& file,
                                    const std::string& fields) {
  if (detect_architecture(cfg, file) == "gpt_neox")
    return GPTNeoXConfig::from_json(cfg, file).expected_weights(fields);
  return MambaConfig::from_json(cfg, file).expected_weights(fields);
}

nlohmann::json lm_config_json(const CausalLM& lm) {
  if (auto* m = dynamic_cast<const MambaLM*>(&lm)) return m->save_config().to_json();
  if (auto* n = dynamic_cast<const GPTNeoXLM*>(&lm)) return n->config().to_json();
  MVL_FAIL("lm_config_json: unknown language model type '", lm.arch(), "'");
}

std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir, at::ScalarType dtype) {
  const std::string arch = detect_architecture(dir);
  if (arch == "mamba") return MambaLM::load(dir, dtype);
  if (arch == "gpt_neox") return GPTNeoXLM::load(dir, dtype);
  MVL_FAIL((dir / "config.json").string(), ": architecture '", arch, "' is not implemented yet");
}

}  // namespace mambavl::models
