// Token sampling from logits: greedy, temperature, top-k, top-p (nucleus). Deterministic per seed.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>
#include <vector>

namespace mambavl::generate {

struct SamplingOptions {
  bool greedy = false;
  double temperature = 1.0;  // > 0; ignored when greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off; in (0, 1]
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opt);  // validates (mambavl::Error on bad values)
  // logits: [V] (any float dtype, any device). Returns the chosen id.
  int64_t sample(const at::Tensor& logits);

 private:
  SamplingOptions opt_;
  std::mt19937_64 rng_;
  std::vector<float> buf_;
  std::vector<int32_t> idx_;
};

}  // namespace mambavl::generate
