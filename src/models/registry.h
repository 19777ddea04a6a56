// Loading any supported causal LM from a model folder (config.json decides the architecture).
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "models/lm.h"

namespace mambavl::models {

// "mamba" (HF MambaForCausalLM or state-spaces layout, incl. hybrids with attn_layer_idx) or
// "gpt_neox" (GPTNeoXForCausalLM). Errors name the folder / config.json and the problem.
std::string detect_architecture(const std::filesystem::path& dir);
std::unique_ptr<CausalLM> load_causal_lm(const std::filesystem::path& dir);

}  // namespace mambavl::models
