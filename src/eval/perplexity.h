// Mean negative log-likelihood of each token given its prefix.
#pragma once
#include <cstdint>
#include <vector>

#include "models/lm.h"

namespace mambavl::eval {

struct NllResult {
  double nll = 0;      // mean natural-log NLL over the scored tokens
  double ppl = 0;      // exp(nll)
  int64_t tokens = 0;  // scored tokens (= ids.size() - 1)
};

// Scores ids[1..] given their prefixes in one forward pass; the LM head and log-softmax run in
// chunks of `chunk` positions so memory stays O(L * hidden + chunk * V).
NllResult mean_nll(models::CausalLM& model, const std::vector<int64_t>& ids, int64_t chunk = 256);

}  // namespace mambavl::eval
