// Peak resident memory of loading a model folder and running it: `mambavl perplexity` on a folder
// written from the model, as a child process (its own peak, ru_maxrss), beside the weight bytes
// and the process baseline (`mambavl --help`: LibTorch loaded, no model).
#pragma once
#include <string>

#include "models/lm.h"

namespace mambavl::bench {
// Writes `model` (as it is: f32 / bf16 / int8) to a temporary folder, runs perplexity on 16 tokens
// with --dtype `dtype` (f32 / bf16 / int8) and `threads`, prints one line for `name` and removes
// the folder. Writes the weights to disk: for the big presets that is GBs (so: on request).
void print_load_peak(const std::string& name, models::CausalLM& model,
                     const std::string& dtype, int threads);
}  // namespace mambavl::bench
