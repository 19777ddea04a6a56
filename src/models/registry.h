// Loading any supported causal LM from a model folder (config.json decides the architecture).
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "models/lm.h"
#include "models/weights_check.h"

namespace mambavl::models {

// "mamba" (HF MambaForCausalLM or state-spaces layout, incl. hybrids with attn_layer_idx) or
// "gpt_neox" (GPTNeoXForCausalLM). Errors name the folder / config.json and the problem.
std::string detect_architecture(const std::filesystem::path& dir);
// `dtype` (kFloat / kBFloat16; Undefined: float32): the weights are loaded in it (no float32
// copy first); weights stored in it are memory-mapped (MambaLM::load).
std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir,
                                         at::ScalarType dtype = at::ScalarType::Undefined);
// The architecture of a config.json-style object ("mamba" or "gpt_neox"); Error naming `file`.
std::string detect_architecture(const nlohmann::json& cfg, const std::string& file);
// Builds a language model from a config.json-style object (as load_causal_lm reads it / as
// lm_config_json writes it): random weights deterministic in `seed` when `initialize`, else
// uninitialised (to be loaded).
std::unique_ptr<CausalLM> make_causal_lm(const nlohmann::json& cfg, uint64_t seed, bool initialize,
                                         const std::string& file);
// What a language-model config.json-style object implies about its checkpoint (weights_check.h),
// without building the model: parse errors name `file`, header mismatches name the fields with
// `fields` before them (e.g. "text_config.").
ExpectedWeights expected_lm_weights(const nlohmann::json& cfg, const std::string& file,
                                    const std::string& fields = "");
// The config.json content `lm.save()` writes.
nlohmann::json lm_config_json(const CausalLM& lm);

}  // namespace mambavl::models
