// Reference selective scan: plain LibTorch ops, differentiable by autograd. O(B*D*L*N) memory;
// slow by design. The ground truth the fused kernels are tested against.
#include <ATen/ATen.h>

#include "kernels/selective_scan.h"

namespace mambavl::kernels::detail {

namespace {
// [B, N, L] or [B, G, N, L] -> [B, D, N, L] (compute dtype), B/C shared within each group of
// channels.
at::Tensor expand_groups(const at::Tensor& t, int64_t D, at::ScalarType cdt) {
  at::Tensor f = t.to(cdt);
  if (f.dim() == 3) return f.unsqueeze(1).expand({f.size(0), D, f.size(1), f.size(2)});
  const int64_t G = f.size(1);
  return f.repeat_interleave(D / G, 1);
}

at::Tensor softplus20(const at::Tensor& x) { return at::softplus(x, 1.0, 20.0); }
}  // namespace

SelectiveScanResult selective_scan_reference(const SelectiveScanArgs& a) {
  const int64_t Dch = a.u.size(1), L = a.u.size(2);
  // fp32 compute and state, except for float64 inputs (kept in float64 end to end, last_state
  // included, so that finite-difference gradient checks are meaningful).
  const at::ScalarType cdt = a.u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor u = a.u.to(cdt);          // [B, D, L]
  at::Tensor delta = a.delta.to(cdt);  // [B, D, L]
  if (a.delta_bias) delta = delta + a.delta_bias->to(cdt).unsqueeze(-1);
  if (a.delta_softplus) delta = softplus20(delta);
  at::Tensor A = a.A.to(cdt);                    // [D, N]
  at::Tensor Bx = expand_groups(a.B, Dch, cdt);  // [B, D, N, L]
  at::Tensor Cx = expand_groups(a.C, Dch, cdt);  // [B, D, N, L]

  at::Tensor dA = at::exp(delta.unsqueeze(2) * A.unsqueeze(0).unsqueeze(-1));  // [B, D, N, L]
  at::Tensor dBu = (delta * u).unsqueeze(2) * Bx;                              // [B, D, N, L]
  at::Tensor h = at::zeros({u.size(0), Dch, A.size(1)}, u.options());          // [B, D, N]
  std::vector<at::Tensor> ys;
  ys.reserve(L);
  for (int64_t t = 0; t < L; ++t) {
    h = dA.select(3, t) * h + dBu.select(3, t);
    ys.push_back((h * Cx.select(3, t)).sum(-1));  // [B, D]
  }
  at::Tensor y = at::stack(ys, -1);  // [B, D, L]
  if (a.D) y = y + u * a.D->to(cdt).unsqueeze(-1);
  if (a.z) y = y * at::silu(a.z->to(cdt));
  SelectiveScanResult r;
  r.y = y.to(a.u.scalar_type());
  if (a.return_last_state) r.last_state = h;
  return r;
}

at::Tensor selective_state_update_reference(at::Tensor& state, const at::Tensor& x,
                                            const at::Tensor& dt, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C,
                                            const std::optional<at::Tensor>& D,
                                            const std::optional<at::Tensor>& z,
                                            const std::optional<at::Tensor>& dt_bias,
                                            bool dt_softplus) {
  const int64_t Dch = x.size(1);
  at::Tensor xf = x.to(at::kFloat);  // [B, D]
  at::Tensor d = dt.to(at::kFloat);  // [B, D]
  if (dt_bias) d = d + dt_bias->to(at::kFloat);
  if (dt_softplus) d = softplus20(d);
  auto grp = [&](const at::Tensor& t) {  // [B, N] / [B, G, N] -> [B, D, N]
    at::Tensor f = t.to(at::kFloat);
    if (f.dim() == 2) return f.unsqueeze(1).expand({f.size(0), Dch, f.size(1)});
    return f.repeat_interleave(Dch / f.size(1), 1);
  };
  at::Tensor dA = at::exp(d.unsqueeze(-1) * A.to(at::kFloat));  // [B, D, N]
  state.mul_(dA).add_((d * xf).unsqueeze(-1) * grp(B));         // [B, D, N]
  at::Tensor y = (state * grp(C)).sum(-1);                      // [B, D]
  if (D) y = y + xf * D->to(at::kFloat);
  if (z) y = y * at::silu(z->to(at::kFloat));
  return y.to(x.scalar_type());
}

}  // namespace mambavl::kernels::detail
