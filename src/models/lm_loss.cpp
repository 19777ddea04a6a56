#include "models/lm_loss.h"

#include <ATen/ATen.h>

#include "common/error.h"

namespace mambavl::models {

LMLoss lm_loss(CausalLM& lm, const at::Tensor& h, const at::Tensor& labels) {
  MVL_CHECK(h.dim() == 3 && labels.dim() == 2 && labels.size(0) == h.size(0) &&
                labels.size(1) == h.size(1),
            "lm_loss: hidden [B, L, H] and labels [B, L] do not match (", h.sizes(), " vs ",
            labels.sizes(), ")");
  const int64_t B = h.size(0), L = h.size(1), H = h.size(2);
  LMLoss out;
  out.per_sample = at::zeros({B}, at::kFloat);
  if (L < 2) {
    out.loss = h.sum() * 0.0;
    return out;
  }
  at::Tensor tgt = labels.narrow(1, 1, L - 1);                  // [B, L-1]
  at::Tensor mask = tgt.ne(-100);                               // [B, L-1]
  at::Tensor idx = mask.reshape({-1}).nonzero().reshape({-1});  // flat indices into [B, L-1]
  out.tokens = idx.numel();
  if (out.tokens == 0) {
    out.loss = h.sum() * 0.0;  // keeps the graph; nothing to learn from
    return out;
  }
  at::Tensor rows = idx.div(L - 1, "floor");                   // [N] sample of each token
  at::Tensor pos = rows * L + idx.remainder(L - 1);            // [N] flat position in [B*L]
  at::Tensor hs = h.reshape({B * L, H}).index_select(0, pos);  // [N, H]
  at::Tensor lg = lm.logits(hs);                               // [N, V] fp32
  at::Tensor y = tgt.reshape({-1}).index_select(0, idx);       // [N]
  MVL_CHECK(y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < lg.size(1),
            "lm_loss: a target id is outside the vocabulary of ", lg.size(1));
  at::Tensor nll = at::cross_entropy_loss(lg, y, {}, at::Reduction::None);  // [N]
  at::Tensor sums = at::zeros({B}, nll.options()).index_add(0, rows, nll);  // [B]
  at::Tensor counts = mask.sum(1).to(nll.scalar_type());                    // [B]
  at::Tensor per = sums / counts.clamp_min(1.0);
  out.per_sample = per.detach().to(at::kFloat);
  out.loss = per.masked_select(counts.gt(0)).mean();
  return out;
}

}  // namespace mambavl::models
