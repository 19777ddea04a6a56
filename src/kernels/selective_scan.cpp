// Entry points: validate once, then dispatch to the reference or a fused kernel.
#include <ATen/ATen.h>

#include "common/shape.h"
#include "kernels/selective_scan.h"
#include "kernels/selective_scan_cpu.h"

namespace mambavl::kernels {

namespace detail {

void validate(const SelectiveScanArgs& a) {
  const char* op = "selective_scan";
  MVL_CHECK(a.u.defined() && a.u.dim() == 3, op, ": u must be [B, D, L], got ",
            a.u.defined() ? shape_str(a.u.sizes()) : std::string("undefined"));
  const int64_t Bn = a.u.size(0), Dch = a.u.size(1), L = a.u.size(2);
  MVL_CHECK(a.A.defined() && a.A.dim() == 2 && a.A.size(0) == Dch, op, ": A must be [D, N] with D = ",
            Dch, ", got ", a.A.defined() ? shape_str(a.A.sizes()) : std::string("undefined"));
  const int64_t N = a.A.size(1);
  check_shape(a.delta, {Bn, Dch, L}, "selective_scan: delta", "B, D, L");
  for (const at::Tensor* t : {&a.B, &a.C}) {
    const char* nm = t == &a.B ? "selective_scan: B" : "selective_scan: C";
    MVL_CHECK(t->defined() && (t->dim() == 3 || t->dim() == 4), nm,
              ": must be [B, N, L] or [B, G, N, L], got ",
              t->defined() ? shape_str(t->sizes()) : std::string("undefined"));
    if (t->dim() == 3) {
      check_shape(*t, {Bn, N, L}, nm, "B, N, L");
    } else {
      const int64_t G = t->size(1);
      MVL_CHECK(G > 0 && Dch % G == 0, nm, ": groups G = ", G, " must divide D = ", Dch);
      check_shape(*t, {Bn, G, N, L}, nm, "B, G, N, L");
    }
  }
  MVL_CHECK(a.B.dim() == a.C.dim() && (a.B.dim() == 3 || a.B.size(1) == a.C.size(1)), op,
            ": B ", shape_str(a.B.sizes()), " and C ", shape_str(a.C.sizes()), " must have the same layout");
  if (a.D) check_shape(*a.D, {Dch}, "selective_scan: D", "D");
  if (a.delta_bias) check_shape(*a.delta_bias, {Dch}, "selective_scan: delta_bias", "D");
  if (a.z) check_shape(*a.z, {Bn, Dch, L}, "selective_scan: z", "B, D, L");

  auto float_ok = [](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16 ||
           t.scalar_type() == at::kDouble || t.scalar_type() == at::kHalf;
  };
  const at::Device dev = a.u.device();
  std::vector<std::pair<const char*, const at::Tensor*>> all = {
      {"u", &a.u}, {"delta", &a.delta}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C}};
  if (a.D) all.push_back({"D", &*a.D});
  if (a.z) all.push_back({"z", &*a.z});
  if (a.delta_bias) all.push_back({"delta_bias", &*a.delta_bias});
  for (auto& [name, t] : all) {
    MVL_CHECK(float_ok(*t), op, ": ", name, " has dtype ", c10::toString(t->scalar_type()),
              "; expected float32, bfloat16, float16 or float64");
    MVL_CHECK(t->device() == dev, op, ": ", name, " is on ", t->device().str(), " but u is on ",
              dev.str());
  }
}

}  // namespace detail

SelectiveScanResult selective_scan(const SelectiveScanArgs& args, Backend backend) {
  detail::validate(args);
  if (backend == Backend::Auto) backend = default_backend();
  if (backend == Backend::Reference) return detail::selective_scan_reference(args);
  const std::string why = detail::fused_cpu_unsupported(args);
  if (why.empty()) return detail::selective_scan_fused_cpu(args);
  MVL_CHECK(backend == Backend::Auto, "selective_scan: the fused backend cannot run this call: ",
            why);
  return detail::selective_scan_reference(args);  // Auto: float64 / float16 / non-CPU
}

at::Tensor selective_state_update(at::Tensor& state, const at::Tensor& x, const at::Tensor& dt,
                                  const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                  const std::optional<at::Tensor>& D,
                                  const std::optional<at::Tensor>& z,
                                  const std::optional<at::Tensor>& dt_bias, bool dt_softplus,
                                  Backend backend) {
  const char* op = "selective_state_update";
  MVL_CHECK(x.dim() == 2, op, ": x must be [B, D], got ", shape_str(x.sizes()));
  const int64_t Bn = x.size(0), Dch = x.size(1);
  MVL_CHECK(A.dim() == 2 && A.size(0) == Dch, op, ": A must be [D, N], got ", shape_str(A.sizes()));
  const int64_t N = A.size(1);
  check_shape(state, {Bn, Dch, N}, "selective_state_update: state", "B, D, N");
  MVL_CHECK(state.scalar_type() == at::kFloat, op, ": state must be float32");
  check_shape(dt, {Bn, Dch}, "selective_state_update: dt", "B, D");
  for (const at::Tensor* t : {&B, &C}) {
    if (t->dim() == 2) {
      check_shape(*t, {Bn, N}, "selective_state_update: B/C", "B, N");
    } else {
      MVL_CHECK(t->dim() == 3 && t->size(1) > 0 && Dch % t->size(1) == 0, op,
                ": B/C must be [B, N] or [B, G, N] with G dividing D, got ", shape_str(t->sizes()));
      check_shape(*t, {Bn, t->size(1), N}, "selective_state_update: B/C", "B, G, N");
    }
  }
  if (D) check_shape(*D, {Dch}, "selective_state_update: D", "D");
  if (z) check_shape(*z, {Bn, Dch}, "selective_state_update: z", "B, D");
  if (dt_bias) check_shape(*dt_bias, {Dch}, "selective_state_update: dt_bias", "D");
  if (backend == Backend::Auto) backend = default_backend();
  if (backend != Backend::Reference) {
    const std::string why =
        detail::fused_cpu_unsupported_update(state, x, dt, A, B, C, D, z, dt_bias);
    if (why.empty())
      return detail::selective_state_update_fused_cpu(state, x, dt, A, B, C, D, z, dt_bias,
                                                      dt_softplus);
    MVL_CHECK(backend == Backend::Auto,
              "selective_state_update: the fused backend cannot run this call: ", why);
  }
  return detail::selective_state_update_reference(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus);
}

}  // namespace mambavl::kernels
