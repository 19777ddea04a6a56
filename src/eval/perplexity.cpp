#include "eval/perplexity.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

#include "common/error.h"

namespace mambavl::eval {

NllResult mean_nll(models::CausalLM& model, const std::vector<int64_t>& ids, int64_t chunk) {
  MVL_CHECK(ids.size() >= 2, "perplexity needs at least 2 tokens (got ", ids.size(), ")");
  c10::InferenceMode guard;
  const int64_t L = static_cast<int64_t>(ids.size());
  at::Tensor t = at::tensor(ids, at::kLong).view({1, L});
  at::Tensor h = model.forward_hidden(model.embed(t)).select(0, 0);  // [L, hidden]
  double total = 0;
  for (int64_t s = 0; s < L - 1; s += chunk) {
    const int64_t n = std::min(chunk, L - 1 - s);
    at::Tensor logp = at::log_softmax(model.logits(h.narrow(0, s, n)), -1);  // [n, V]
    at::Tensor target = t.select(0, 0).narrow(0, s + 1, n).unsqueeze(1);     // [n, 1]
    total -= logp.gather(1, target).to(at::kDouble).sum().item<double>();
  }
  NllResult r;
  r.tokens = L - 1;
  r.nll = total / static_cast<double>(L - 1);
  r.ppl = std::exp(r.nll);
  return r;
}

}  // namespace mambavl::eval
