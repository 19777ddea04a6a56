// Named model shapes (random weights) for `mambavl init` and the benchmarks.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/lm.h"

namespace mambavl::models {

std::vector<std::string> preset_names();
// A randomly initialised (deterministic in seed) model of a named shape, e.g. "mamba-130m".
std::unique_ptr<CausalLM> make_preset(const std::string& name, uint64_t seed);

}  // namespace mambavl::models
