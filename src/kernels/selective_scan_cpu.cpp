// Fused CPU selective scan: forward, backward (as a torch::autograd::Function) and the one-step
// decode update. See selective_scan.h for the math. This file validates, lays the tensors out and
// runs the tasks on at::parallel_for; the loops themselves are compiled once per instruction-set
// level (kernels/isa/selective_scan_impl.inc) and picked at run time (kernels/isa/dispatch.h).
//
// Layout of the work: a task owns one batch row b and a block of up to kW consecutive channels of
// one group g (so B/C are shared by all its lanes); the channels are the SIMD lanes (kW = 16 with
// AVX-512, 8 with AVX2, 4 at the scalar (SSE2) level), and the loop over time and state runs
// inside. Time is processed in chunks of kScanChunk steps: inputs of a chunk are transposed into
// small [T][kW] fp32 tiles (bf16 converted on the way), the recurrence runs on the tiles, and
// outputs are transposed back. B and C are transposed once per call to [B, G, L, N] fp32 (no D
// factor), so one step's N values are adjacent. Backward: tasks own (b, g, a slice of the group's
// blocks) so that the gB/gC sums over channels accumulate in a per-task [N, L] buffer, reduced over
// slices at the end.
//
// Backward memory: the forward pass checkpoints the state h at the start of every chunk
// ([B, L/T, N, D] fp32, i.e. B*D*L*N/64 floats); backward walks the chunks in reverse, recomputes
// the T states of one chunk from its checkpoint into a per-thread [T][N][kW] buffer, and runs the
// adjoint recurrence over it. Nothing of size B*D*N*L is ever held (transient backward buffers:
// per-thread tiles plus [B, G, slices, N, L] partial gB/gC).
#include "kernels/selective_scan_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/error.h"
#include "kernels/isa/dispatch.h"

namespace mambavl::kernels::detail {

namespace {

using Problem = ScanProblem;

bool fused_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

// Read-only / writable view of a contiguous fp32 or bf16 tensor (or nothing).
ScanIn in_of(const at::Tensor& t) {
  if (!t.defined()) return {nullptr, false};
  return {t.data_ptr(), t.scalar_type() == at::kBFloat16};
}
ScanOut out_of(const at::Tensor& t) {
  if (!t.defined()) return {nullptr, false};
  return {t.data_ptr(), t.scalar_type() == at::kBFloat16};
}

// fp32 contiguous copy (or the tensor itself) of a small parameter; undefined stays undefined.
at::Tensor f32(const std::optional<at::Tensor>& t) {
  if (!t || !t->defined()) return {};
  return t->to(at::kFloat).contiguous();
}

// The level's loops, picked once per call.
struct ScanLevel {
  int64_t lanes;
  void (*forward)(const ScanProblem&, const ScanForwardOut&, int64_t, int64_t);
  void (*backward)(const ScanProblem&, const ScanBackwardIO&, int64_t, int64_t);
};
ScanLevel scan_level() {
  return {MVL_ISA_PICK(scan_lanes)(), MVL_ISA_PICK(scan_forward_tasks),
          MVL_ISA_PICK(scan_backward_tasks)};
}

// Keeps the contiguous / fp32 tensors a Problem points into alive.
struct Holder {
  at::Tensor u, delta, z, B, C, A, D, bias;
};

Problem make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                     const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                     const std::optional<at::Tensor>& z,
                     const std::optional<at::Tensor>& delta_bias, bool softplus, int64_t lanes,
                     Holder& h) {
  h.u = u.contiguous();
  h.delta = delta.contiguous();
  h.z = z && z->defined() ? z->contiguous() : at::Tensor();
  // [B, N, L] / [B, G, N, L] -> [B, G, L, N] fp32 (small: no D), read by every channel block.
  auto bc_t = [&](const at::Tensor& t) {
    const int64_t G = t.dim() == 4 ? t.size(1) : 1;
    return t.to(at::kFloat)
        .reshape({t.size(0), G, A.size(1), u.size(2)})
        .transpose(2, 3)
        .contiguous();
  };
  h.B = bc_t(B);
  h.C = bc_t(C);
  h.A = f32(A);
  h.D = f32(D);
  h.bias = f32(delta_bias);
  Problem p;
  p.Bn = u.size(0);
  p.D = u.size(1);
  p.L = u.size(2);
  p.N = A.size(1);
  p.G = B.dim() == 4 ? B.size(1) : 1;
  p.dg = p.D / p.G;
  p.nbg = (p.dg + lanes - 1) / lanes;
  p.nck = (p.L + kScanChunk - 1) / kScanChunk;
  p.u = in_of(h.u);
  p.delta = in_of(h.delta);
  p.z = in_of(h.z);
  p.Bt = h.B.data_ptr<float>();
  p.Ct = h.C.data_ptr<float>();
  p.A = h.A.data_ptr<float>();
  p.Dv = h.D.defined() ? h.D.data_ptr<float>() : nullptr;
  p.bias = h.bias.defined() ? h.bias.data_ptr<float>() : nullptr;
  p.softplus = softplus;
  return p;
}

struct FwdResult {
  at::Tensor y, last, ckpt;
};

FwdResult forward_impl(const ScanLevel& lv, const Problem& p, at::ScalarType y_dtype,
                       bool want_last, bool want_ckpt) {
  FwdResult r;
  const auto f32opt = at::TensorOptions().dtype(at::kFloat);
  r.y = at::empty({p.Bn, p.D, p.L}, f32opt.dtype(y_dtype));            // [B, D, L]
  if (want_last) r.last = at::empty({p.Bn, p.D, p.N}, f32opt);         // [B, D, N]
  if (want_ckpt) r.ckpt = at::empty({p.Bn, p.nck, p.N, p.D}, f32opt);  // [B, L/T, N, D]
  const ScanForwardOut o{out_of(r.y), want_last ? r.last.data_ptr<float>() : nullptr,
                         want_ckpt ? r.ckpt.data_ptr<float>() : nullptr};
  at::parallel_for(0, p.Bn * p.G * p.nbg, 1,
                   [&](int64_t begin, int64_t end) { lv.forward(p, o, begin, end); });
  return r;
}

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SelectiveScanFn : public torch::autograd::Function<SelectiveScanFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& delta,
                               const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                               const std::optional<at::Tensor>& D,
                               const std::optional<at::Tensor>& z,
                               const std::optional<at::Tensor>& delta_bias, bool softplus) {
    Holder hold;
    const ScanLevel lv = scan_level();
    const Problem p = make_problem(u, delta, A, B, C, D, z, delta_bias, softplus, lv.lanes, hold);
    FwdResult r = forward_impl(lv, p, u.scalar_type(), /*want_last=*/true, /*want_ckpt=*/true);
    ctx->save_for_backward({u, delta, A, B, C, D.value_or(at::Tensor()), z.value_or(at::Tensor()),
                            delta_bias.value_or(at::Tensor()), r.ckpt});
    ctx->saved_data["softplus"] = softplus;
    ctx->set_materialize_grads(false);
    return {r.y, r.last};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list sv = ctx->get_saved_variables();
    const at::Tensor &u = sv[0], &delta = sv[1], &A = sv[2], &B = sv[3], &C = sv[4], &D = sv[5],
                     &z = sv[6], &bias = sv[7], &ckpt = sv[8];
    const bool softplus = ctx->saved_data["softplus"].toBool();
    Holder hold;
    const ScanLevel lv = scan_level();
    const Problem p =
        make_problem(u, delta, A, B, C, opt(D), opt(z), opt(bias), softplus, lv.lanes, hold);
    at::Tensor gout = grads[0].defined() ? grads[0].to(u.scalar_type()).contiguous() : at::Tensor();
    at::Tensor glast = grads[1].defined() ? grads[1].to(at::kFloat).contiguous() : at::Tensor();

    const auto f32opt = at::TensorOptions().dtype(at::kFloat);
    at::Tensor gu = at::empty(u.sizes(), u.options());              // [B, D, L]
    at::Tensor gdelta = at::empty(delta.sizes(), delta.options());  // [B, D, L]
    at::Tensor gz = z.defined() ? at::empty(z.sizes(), z.options()) : at::Tensor();
    at::Tensor gAp = at::empty({p.Bn, p.D, p.N}, f32opt);  // [B, D, N]
    at::Tensor gDp = at::empty({p.Bn, p.D}, f32opt);       // [B, D]
    at::Tensor gbp = at::empty({p.Bn, p.D}, f32opt);       // [B, D]
    // Blocks of a group are split into S slices, each accumulating its own gB/gC partial; enough
    // slices to keep every thread busy.
    const int64_t want = 4 * at::get_num_threads();
    const int64_t S = std::clamp<int64_t>((want + p.Bn * p.G - 1) / (p.Bn * p.G), 1, p.nbg);
    at::Tensor gBp = at::zeros({p.Bn, p.G, S, p.N, p.L}, f32opt);  // [B, G, S, N, L]
    at::Tensor gCp = at::zeros({p.Bn, p.G, S, p.N, p.L}, f32opt);  // [B, G, S, N, L]

    const ScanBackwardIO io{in_of(gout),
                            glast.defined() ? glast.data_ptr<float>() : nullptr,
                            ckpt.data_ptr<float>(),
                            out_of(gu),
                            out_of(gdelta),
                            out_of(gz),
                            gAp.data_ptr<float>(),
                            gDp.data_ptr<float>(),
                            gbp.data_ptr<float>(),
                            gBp.data_ptr<float>(),
                            gCp.data_ptr<float>(),
                            S};
    at::parallel_for(0, p.Bn * p.G * S, 1,
                     [&](int64_t begin, int64_t end) { lv.backward(p, io, begin, end); });

    auto reduce_bc = [&](const at::Tensor& part, const at::Tensor& like) {
      at::Tensor g = part.sum(2);  // [B, G, N, L]
      if (like.dim() == 3) g = g.squeeze(1);
      return g.to(like.scalar_type());
    };
    at::Tensor gA = gAp.sum(0).to(A.scalar_type());
    at::Tensor gB = reduce_bc(gBp, B);
    at::Tensor gC = reduce_bc(gCp, C);
    at::Tensor gD = D.defined() ? gDp.sum(0).to(D.scalar_type()) : at::Tensor();
    at::Tensor gbias = bias.defined() ? gbp.sum(0).to(bias.scalar_type()) : at::Tensor();
    return {gu, gdelta, gA, gB, gC, gD, gz, gbias, at::Tensor()};
  }
};

bool any_requires_grad(const SelectiveScanArgs& a) {
  bool r = a.u.requires_grad() || a.delta.requires_grad() || a.A.requires_grad() ||
           a.B.requires_grad() || a.C.requires_grad();
  for (const auto* o : {&a.D, &a.z, &a.delta_bias})
    if (*o && (*o)->defined()) r = r || (*o)->requires_grad();
  return r;
}

}  // namespace

namespace {
using NamedTensors = std::vector<std::pair<const char*, const at::Tensor*>>;

// Why the fused kernel cannot take these tensors ("" when it can).
std::string first_unsupported(const NamedTensors& all) {
  for (auto& [name, t] : all) {
    if (!t->device().is_cpu())
      return mambavl::detail::cat(name, " is on ", t->device().str(),
                                  " (the fused kernel runs on CPU only)");
    if (!fused_dtype(*t))
      return mambavl::detail::cat(name, " has dtype ", c10::toString(t->scalar_type()),
                                  " (the fused kernel takes float32 or bfloat16)");
  }
  return {};
}
}  // namespace

std::string fused_cpu_unsupported(const SelectiveScanArgs& a) {
  NamedTensors all = {{"u", &a.u}, {"delta", &a.delta}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C}};
  if (a.D) all.push_back({"D", &*a.D});
  if (a.z) all.push_back({"z", &*a.z});
  if (a.delta_bias) all.push_back({"delta_bias", &*a.delta_bias});
  return first_unsupported(all);
}

std::string fused_cpu_unsupported_update(const at::Tensor& state, const at::Tensor& x,
                                         const at::Tensor& dt, const at::Tensor& A,
                                         const at::Tensor& B, const at::Tensor& C,
                                         const std::optional<at::Tensor>& D,
                                         const std::optional<at::Tensor>& z,
                                         const std::optional<at::Tensor>& dt_bias) {
  NamedTensors all = {{"state", &state}, {"x", &x}, {"dt", &dt}, {"A", &A}, {"B", &B}, {"C", &C}};
  if (D) all.push_back({"D", &*D});
  if (z) all.push_back({"z", &*z});
  if (dt_bias) all.push_back({"dt_bias", &*dt_bias});
  return first_unsupported(all);
}

SelectiveScanResult selective_scan_fused_cpu(const SelectiveScanArgs& a) {
  SelectiveScanResult res;
  if (at::GradMode::is_enabled() && any_requires_grad(a)) {
    variable_list out = SelectiveScanFn::apply(a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias,
                                               a.delta_softplus);
    res.y = out[0];
    if (a.return_last_state) res.last_state = out[1];
    return res;
  }
  Holder hold;
  const ScanLevel lv = scan_level();
  const Problem p = make_problem(a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias,
                                 a.delta_softplus, lv.lanes, hold);
  FwdResult r = forward_impl(lv, p, a.u.scalar_type(), a.return_last_state, /*want_ckpt=*/false);
  res.y = r.y;
  res.last_state = r.last;
  return res;
}

at::Tensor selective_state_update_fused_cpu(at::Tensor& state, const at::Tensor& x,
                                            const at::Tensor& dt, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C,
                                            const std::optional<at::Tensor>& D,
                                            const std::optional<at::Tensor>& z,
                                            const std::optional<at::Tensor>& dt_bias,
                                            bool dt_softplus) {
  const int64_t Bn = x.size(0), Dch = x.size(1), N = A.size(1);
  const int64_t G = B.dim() == 3 ? B.size(1) : 1;
  at::Tensor st = state.is_contiguous() ? state : state.contiguous();  // [B, D, N] fp32
  at::Tensor xf = x.to(at::kFloat).contiguous();                       // [B, D]
  at::Tensor df = dt.to(at::kFloat).contiguous();                      // [B, D]
  at::Tensor Af = A.to(at::kFloat).contiguous();                       // [D, N]
  at::Tensor Bf = B.to(at::kFloat).contiguous();                       // [B, G, N]
  at::Tensor Cf = C.to(at::kFloat).contiguous();                       // [B, G, N]
  at::Tensor Df = f32(D), zf = f32(z), bf = f32(dt_bias);              // [D], [B, D], [D]
  at::Tensor y = at::empty({Bn, Dch}, xf.options());                   // [B, D]
  const ScanUpdateArgs q{Dch,
                         N,
                         G,
                         st.data_ptr<float>(),
                         xf.data_ptr<float>(),
                         df.data_ptr<float>(),
                         Af.data_ptr<float>(),
                         Bf.data_ptr<float>(),
                         Cf.data_ptr<float>(),
                         Df.defined() ? Df.data_ptr<float>() : nullptr,
                         zf.defined() ? zf.data_ptr<float>() : nullptr,
                         bf.defined() ? bf.data_ptr<float>() : nullptr,
                         y.data_ptr<float>(),
                         dt_softplus};
  const auto rows = MVL_ISA_PICK(scan_update_rows);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1));
  at::parallel_for(0, Bn * Dch, grain, [&](int64_t begin, int64_t end) { rows(q, begin, end); });
  if (!st.is_same(state)) state.copy_(st);
  return y.to(x.scalar_type());
}

int64_t fused_scan_saved_bytes(const at::Tensor& y) {
  auto* node = dynamic_cast<torch::autograd::CppNode<SelectiveScanFn>*>(y.grad_fn().get());
  if (!node) return -1;
  int64_t bytes = 0;
  std::unordered_set<const void*> seen;
  for (const at::Tensor& t : node->ctx_.get_saved_variables()) {
    if (!t.defined() || !seen.insert(t.storage().data()).second) continue;
    bytes += static_cast<int64_t>(t.storage().nbytes());
  }
  return bytes;
}

}  // namespace mambavl::kernels::detail
