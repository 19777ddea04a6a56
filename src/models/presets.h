// Named model shapes (random weights) for `mambavl init` and the benchmarks.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/lm.h"

namespace mambavl::models {

std::vector<std::string> preset_names();
// A randomly initialised (deterministic in seed) model of a named shape, e.g. "mamba-130m".
// vocab > 0 overrides the shape's vocabulary (rounded up to a multiple of 8).
std::unique_ptr<CausalLM> make_preset(const std::string& name, uint64_t seed, int64_t vocab = 0);

}  // namespace mambavl::models
