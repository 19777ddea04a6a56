// 2-D scan orders: names, permutations, the entry points (validation + dispatch), the
// index_select reference and the fused CPU gather / scatter (direct row copies, autograd
// Functions).
#include "kernels/scan2d.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "common/error.h"
#include "common/shape.h"
#include "kernels/isa/dispatch.h"
#include "kernels/isa/scan2d_kernels.h"

namespace mambavl::kernels {

namespace {

// Patch read at step j of `o` on a gh x gw grid (L = gh*gw).
inline int64_t source_of_step(ScanOrder o, int64_t j, int64_t gh, int64_t gw, int64_t L) {
  switch (o) {
    case ScanOrder::Row:
      return j;
    case ScanOrder::RowRev:
      return L - 1 - j;
    case ScanOrder::Col:
      return (j % gh) * gw + j / gh;
    case ScanOrder::ColRev: {
      const int64_t c = L - 1 - j;
      return (c % gh) * gw + c / gh;
    }
  }
  return j;
}

// Step of `o` at which patch p = h*gw + w is read.
inline int64_t step_of_source(ScanOrder o, int64_t p, int64_t gh, int64_t gw, int64_t L) {
  switch (o) {
    case ScanOrder::Row:
      return p;
    case ScanOrder::RowRev:
      return L - 1 - p;
    case ScanOrder::Col:
      return (p % gw) * gh + p / gw;
    case ScanOrder::ColRev:
      return L - 1 - ((p % gw) * gh + p / gw);
  }
  return p;
}

std::vector<int64_t> orders_to_ints(const std::vector<ScanOrder>& orders) {
  std::vector<int64_t> v;
  v.reserve(orders.size());
  for (ScanOrder o : orders) v.push_back(static_cast<int64_t>(o));
  return v;
}

std::vector<ScanOrder> ints_to_orders(const std::vector<int64_t>& v) {
  std::vector<ScanOrder> orders;
  orders.reserve(v.size());
  for (int64_t i : v) orders.push_back(static_cast<ScanOrder>(i));
  return orders;
}

// Rows (of C elements) per parallel chunk: about 32 KiB of data.
int64_t row_grain(int64_t row_bytes) {
  return std::max<int64_t>(1, (32 << 10) / std::max<int64_t>(1, row_bytes));
}

// ---- fused kernels (no autograd) ----

// x [B, L, C] -> [B, K, L, C]: one memcpy of C elements per (b, k, j).
at::Tensor gather_kernel(const at::Tensor& x_in, int64_t gh, int64_t gw,
                         const std::vector<ScanOrder>& orders) {
  const at::Tensor x = x_in.contiguous();  // [B, L, C]
  const int64_t Bn = x.size(0), L = x.size(1), C = x.size(2);
  const int64_t K = static_cast<int64_t>(orders.size());
  at::Tensor out = at::empty({Bn, K, L, C}, x.options());  // [B, K, L, C]
  if (out.numel() == 0) return out;
  const int64_t es = x.element_size();
  const size_t row_bytes = static_cast<size_t>(C * es);
  const auto* src = static_cast<const char*>(x.const_data_ptr());
  auto* dst = static_cast<char*>(out.mutable_data_ptr());
  // Work items are output rows r = (b*K + k)*L + j, i.e. batch x order x step.
  at::parallel_for(0, Bn * K * L, row_grain(C * es), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t j = r % L, bk = r / L, k = bk % K, b = bk / K;
      const int64_t p = source_of_step(orders[k], j, gh, gw, L);
      std::memcpy(dst + r * row_bytes, src + (b * L + p) * row_bytes, row_bytes);
    }
  });
  return out;
}

template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Output rows [begin, end) of the fp16 scatter: each sums its K source rows, accumulating in fp32,
// then scales (mean) and rounds once. (fp32 / fp64 / bf16: kernels/isa/scan2d_impl.inc.)
template <class T>
void scatter_rows(const T* src, T* dst, const std::vector<ScanOrder>& orders, int64_t gh,
                  int64_t gw, int64_t L, int64_t C, acc_t<T> scale, int64_t begin, int64_t end) {
  using A = acc_t<T>;
  const int64_t K = static_cast<int64_t>(orders.size());
  std::vector<A> acc(static_cast<size_t>(C));
  A* a = acc.data();
  for (int64_t r = begin; r < end; ++r) {
    const int64_t p = r % L, b = r / L;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t j = step_of_source(orders[k], p, gh, gw, L);
      const T* s = src + ((b * K + k) * L + j) * C;
      if (k == 0) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a[c] = static_cast<A>(s[c]);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a[c] += static_cast<A>(s[c]);
      }
    }
    T* o = dst + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] = static_cast<T>(a[c] * scale);
  }
}

// ys [B, K, L, C] -> [B, L, C]. Work items are output rows (batch x patch): one writer per row, so
// no races and no atomics.
at::Tensor scatter_kernel(const at::Tensor& ys_in, int64_t gh, int64_t gw,
                          const std::vector<ScanOrder>& orders, ScanMerge merge) {
  const at::Tensor ys = ys_in.contiguous();  // [B, K, L, C]
  const int64_t Bn = ys.size(0), K = ys.size(1), L = ys.size(2), C = ys.size(3);
  at::Tensor out = at::empty({Bn, L, C}, ys.options());  // [B, L, C]
  if (out.numel() == 0) return out;
  const int64_t grain = row_grain(C * K * static_cast<int64_t>(ys.element_size()));
  const auto st = ys.scalar_type();
  if (st == at::kFloat || st == at::kDouble || st == at::kBFloat16) {
    // The per-level loop (kernels/isa/scan2d_impl.inc).
    std::vector<int64_t> steps(static_cast<size_t>(K * L));  // [K, L]
    for (int64_t k = 0; k < K; ++k)
      for (int64_t p = 0; p < L; ++p)
        steps[static_cast<size_t>(k * L + p)] = step_of_source(orders[k], p, gh, gw, L);
    const Scan2dScatterArgs args{ys.const_data_ptr(),
                                 out.mutable_data_ptr(),
                                 steps.data(),
                                 K,
                                 L,
                                 C,
                                 merge == ScanMerge::Mean ? 1.0 / static_cast<double>(K) : 1.0,
                                 st == at::kFloat    ? Scan2dDtype::F32
                                 : st == at::kDouble ? Scan2dDtype::F64
                                                     : Scan2dDtype::BF16};
    const auto rows = MVL_ISA_PICK(scan2d_scatter_rows);
    at::parallel_for(0, Bn * L, grain, [&](int64_t begin, int64_t end) { rows(args, begin, end); });
    return out;
  }
  // fp16 (not a hot path on CPU): the same loop compiled for the x86-64 baseline.
  MVL_CHECK(st == at::kHalf, "scan2d_scatter (fused): unsupported dtype ", c10::toString(st));
  using T = c10::Half;
  const float scale = merge == ScanMerge::Mean ? 1.f / static_cast<float>(K) : 1.f;
  const T* src = ys.const_data_ptr<T>();
  T* dst = out.mutable_data_ptr<T>();
  at::parallel_for(0, Bn * L, grain, [&](int64_t begin, int64_t end) {
    scatter_rows<T>(src, dst, orders, gh, gw, L, C, scale, begin, end);
  });
  return out;
}

// ---- autograd Functions: gather and scatter(sum) are adjoint ----

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Scan2dGatherFn : public torch::autograd::Function<Scan2dGatherFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t gh, int64_t gw,
                            std::vector<int64_t> orders) {
    ctx->saved_data["gh"] = gh;
    ctx->saved_data["gw"] = gw;
    ctx->saved_data["orders"] = orders;
    return gather_kernel(x, gh, gw, ints_to_orders(orders));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t gh = ctx->saved_data["gh"].toInt(), gw = ctx->saved_data["gw"].toInt();
    const auto orders = ints_to_orders(ctx->saved_data["orders"].toIntVector());
    // d/dx of xs[b, k, j] = x[b, perm_k[j]]: scatter-add of the grads of all K orders.
    at::Tensor dx = detail::scan2d_scatter_fused(grads[0], gh, gw, orders, ScanMerge::Sum);
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct Scan2dScatterFn : public torch::autograd::Function<Scan2dScatterFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& ys, int64_t gh, int64_t gw,
                            std::vector<int64_t> orders, bool mean) {
    ctx->saved_data["gh"] = gh;
    ctx->saved_data["gw"] = gw;
    ctx->saved_data["orders"] = orders;
    ctx->saved_data["mean"] = mean;
    return scatter_kernel(ys, gh, gw, ints_to_orders(orders),
                          mean ? ScanMerge::Mean : ScanMerge::Sum);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const int64_t gh = ctx->saved_data["gh"].toInt(), gw = ctx->saved_data["gw"].toInt();
    const auto orders = ints_to_orders(ctx->saved_data["orders"].toIntVector());
    // d/dys of y[b, perm_k[j]] (+)= ys[b, k, j]: the gather of the output grad (scaled for mean).
    at::Tensor dys = detail::scan2d_gather_fused(grads[0], gh, gw, orders);
    if (ctx->saved_data["mean"].toBool()) dys = dys / static_cast<double>(orders.size());
    return {dys, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

bool fused_supported(const at::Tensor& t, bool needs_floating, std::string* why) {
  if (!t.device().is_cpu()) {
    *why = "tensors on " + t.device().str() + " (CPU only)";
    return false;
  }
  if (needs_floating && !at::isFloatingType(t.scalar_type())) {
    *why = std::string("dtype ") + c10::toString(t.scalar_type()) + " (floating types only)";
    return false;
  }
  return true;
}

}  // namespace

// ---- names ----

const char* scan_order_name(ScanOrder o) {
  switch (o) {
    case ScanOrder::Row:
      return "row";
    case ScanOrder::RowRev:
      return "row_rev";
    case ScanOrder::Col:
      return "col";
    case ScanOrder::ColRev:
      return "col_rev";
  }
  return "?";
}

ScanOrder parse_scan_order(const std::string& s) {
  for (ScanOrder o : {ScanOrder::Row, ScanOrder::RowRev, ScanOrder::Col, ScanOrder::ColRev})
    if (s == scan_order_name(o)) return o;
  MVL_FAIL("unknown scan order '", s, "' (known: row, row_rev, col, col_rev)");
}

std::vector<ScanOrder> scan_orders(const std::string& mode) {
  if (mode == "bsm") return {ScanOrder::Row, ScanOrder::RowRev};
  if (mode == "csm") return {ScanOrder::Row, ScanOrder::Col, ScanOrder::RowRev, ScanOrder::ColRev};
  MVL_FAIL("unknown scan mode '", mode,
           "' (known: bsm = row + row_rev, csm = row + col + row_rev + col_rev)");
}

const char* scan_merge_name(ScanMerge m) { return m == ScanMerge::Sum ? "sum" : "mean"; }

ScanMerge parse_scan_merge(const std::string& s) {
  if (s == "sum") return ScanMerge::Sum;
  if (s == "mean") return ScanMerge::Mean;
  MVL_FAIL("unknown scan merge '", s, "' (known: sum, mean)");
}

at::Tensor scan_permutation(ScanOrder order, int64_t gh, int64_t gw) {
  MVL_CHECK(gh >= 1 && gw >= 1, "scan_permutation: grid must be at least 1x1, got ", gh, "x", gw);
  const int64_t L = gh * gw;
  at::Tensor perm = at::empty({L}, at::kLong);  // [L]
  int64_t* p = perm.mutable_data_ptr<int64_t>();
  for (int64_t j = 0; j < L; ++j) p[j] = source_of_step(order, j, gh, gw, L);
  return perm;
}

at::Tensor scan_inverse_permutation(ScanOrder order, int64_t gh, int64_t gw) {
  MVL_CHECK(gh >= 1 && gw >= 1, "scan_inverse_permutation: grid must be at least 1x1, got ", gh,
            "x", gw);
  const int64_t L = gh * gw;
  at::Tensor inv = at::empty({L}, at::kLong);  // [L]
  int64_t* q = inv.mutable_data_ptr<int64_t>();
  for (int64_t p = 0; p < L; ++p) q[p] = step_of_source(order, p, gh, gw, L);
  return inv;
}

// ---- validation, reference, fused ----

namespace detail {

void validate_scan2d(const at::Tensor& t, bool stacked, int64_t gh, int64_t gw,
                     const std::vector<ScanOrder>& orders, const char* op) {
  MVL_CHECK(gh >= 1 && gw >= 1, op, ": grid must be at least 1x1, got ", gh, "x", gw);
  MVL_CHECK(!orders.empty(), op, ": no scan orders given");
  const int64_t L = gh * gw, K = static_cast<int64_t>(orders.size());
  if (stacked) {
    MVL_CHECK(t.defined() && t.dim() == 4, op, ": ys must be [B, K, L, C], got ",
              t.defined() ? shape_str(t.sizes()) : std::string("undefined"));
    MVL_CHECK(t.size(1) == K, op, ": ys has ", t.size(1), " orders (dim 1 of ",
              shape_str(t.sizes()), ") but ", K, " scan orders were given");
    MVL_CHECK(t.size(2) == L, op, ": ys has ", t.size(2), " tokens per order (dim 2 of ",
              shape_str(t.sizes()), ") but the grid is ", gh, "x", gw, " = ", L);
  } else {
    MVL_CHECK(t.defined() && t.dim() == 3, op, ": x must be [B, L, C], got ",
              t.defined() ? shape_str(t.sizes()) : std::string("undefined"));
    MVL_CHECK(t.size(1) == L, op, ": x has ", t.size(1), " tokens (dim 1 of ", shape_str(t.sizes()),
              ") but the grid is ", gh, "x", gw, " = ", L);
  }
}

at::Tensor scan2d_gather_reference(const at::Tensor& x, int64_t gh, int64_t gw,
                                   const std::vector<ScanOrder>& orders) {
  std::vector<at::Tensor> xs;
  xs.reserve(orders.size());
  for (ScanOrder o : orders)
    xs.push_back(x.index_select(1, scan_permutation(o, gh, gw).to(x.device())));  // [B, L, C]
  return at::stack(xs, 1);                                                        // [B, K, L, C]
}

at::Tensor scan2d_scatter_reference(const at::Tensor& ys, int64_t gh, int64_t gw,
                                    const std::vector<ScanOrder>& orders, ScanMerge merge) {
  at::Tensor y;
  for (size_t k = 0; k < orders.size(); ++k) {
    at::Tensor inv = scan_inverse_permutation(orders[k], gh, gw).to(ys.device());  // [L]
    at::Tensor yk = ys.select(1, static_cast<int64_t>(k)).index_select(1, inv);    // [B, L, C]
    y = k == 0 ? yk : y + yk;
  }
  if (merge == ScanMerge::Mean) y = y / static_cast<double>(orders.size());
  return y;  // [B, L, C]
}

at::Tensor scan2d_gather_fused(const at::Tensor& x, int64_t gh, int64_t gw,
                               const std::vector<ScanOrder>& orders) {
  return Scan2dGatherFn::apply(x, gh, gw, orders_to_ints(orders));
}

at::Tensor scan2d_scatter_fused(const at::Tensor& ys, int64_t gh, int64_t gw,
                                const std::vector<ScanOrder>& orders, ScanMerge merge) {
  return Scan2dScatterFn::apply(ys, gh, gw, orders_to_ints(orders), merge == ScanMerge::Mean);
}

}  // namespace detail

at::Tensor scan2d_gather(const at::Tensor& x, int64_t gh, int64_t gw,
                         const std::vector<ScanOrder>& orders, Backend backend) {
  detail::validate_scan2d(x, /*stacked=*/false, gh, gw, orders, "scan2d_gather");
  if (backend == Backend::Auto) backend = default_backend();
  if (backend == Backend::Reference) return detail::scan2d_gather_reference(x, gh, gw, orders);
  std::string why;
  const bool ok = fused_supported(x, /*needs_floating=*/false, &why);
  MVL_CHECK(ok || backend != Backend::Fused, "scan2d_gather: the fused kernel does not support ",
            why);
  return ok ? detail::scan2d_gather_fused(x, gh, gw, orders)
            : detail::scan2d_gather_reference(x, gh, gw, orders);
}

at::Tensor scan2d_scatter(const at::Tensor& ys, int64_t gh, int64_t gw,
                          const std::vector<ScanOrder>& orders, ScanMerge merge, Backend backend) {
  detail::validate_scan2d(ys, /*stacked=*/true, gh, gw, orders, "scan2d_scatter");
  if (backend == Backend::Auto) backend = default_backend();
  if (backend == Backend::Reference)
    return detail::scan2d_scatter_reference(ys, gh, gw, orders, merge);
  std::string why;
  const bool ok = fused_supported(ys, /*needs_floating=*/true, &why);
  MVL_CHECK(ok || backend != Backend::Fused, "scan2d_scatter: the fused kernel does not support ",
            why);
  return ok ? detail::scan2d_scatter_fused(ys, gh, gw, orders, merge)
            : detail::scan2d_scatter_reference(ys, gh, gw, orders, merge);
}

}  // namespace mambavl::kernels
