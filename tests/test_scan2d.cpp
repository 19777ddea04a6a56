// 2-D scan orders: permutations against hand-written grids and VMamba's CrossScan construction;
// fused CPU gather / scatter vs the index_select reference (outputs and gradients) on odd,
// non-square and 1x1 grids; exact restore; finite differences in double; errors.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "kernels/backend.h"
#include "kernels/scan2d.h"
#include "test_util.h"

using namespace mambavl;
using kernels::Backend;
using kernels::ScanMerge;
using kernels::ScanOrder;

using mambavl::testing_util::error_of;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor randn(at::IntArrayRef sizes, at::Generator& g, at::ScalarType dt = at::kFloat) {
  return at::randn(sizes, g, at::TensorOptions().dtype(at::kDouble)).to(dt);
}

using testing_util::close;

std::vector<int64_t> to_vec(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

const std::vector<std::pair<int64_t, int64_t>> kGrids = {{1, 1}, {3, 5}, {4, 4}, {5, 2},
                                                         {7, 3}, {1, 6}, {6, 1}};

std::vector<std::vector<ScanOrder>> order_sets() {
  return {kernels::scan_orders("bsm"),
          kernels::scan_orders("csm"),
          {ScanOrder::Col},
          {ScanOrder::ColRev, ScanOrder::Row, ScanOrder::ColRev}};
}

std::string grid_name(int64_t gh, int64_t gw) {
  return std::to_string(gh) + "x" + std::to_string(gw);
}

}  // namespace

TEST(Scan2d, PermutationsOfA2x3Grid) {
  // Grid (row-major patch numbers):  0 1 2
  //                                  3 4 5
  EXPECT_EQ(to_vec(kernels::scan_permutation(ScanOrder::Row, 2, 3)),
            (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(to_vec(kernels::scan_permutation(ScanOrder::RowRev, 2, 3)),
            (std::vector<int64_t>{5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(to_vec(kernels::scan_permutation(ScanOrder::Col, 2, 3)),
            (std::vector<int64_t>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(to_vec(kernels::scan_permutation(ScanOrder::ColRev, 2, 3)),
            (std::vector<int64_t>{5, 2, 4, 1, 3, 0}));
  EXPECT_EQ(to_vec(kernels::scan_inverse_permutation(ScanOrder::Col, 2, 3)),
            (std::vector<int64_t>{0, 2, 4, 1, 3, 5}));
}

TEST(Scan2d, InversePermutationsInvert) {
  for (auto [gh, gw] : kGrids)
    for (ScanOrder o : kernels::scan_orders("csm")) {
      const at::Tensor perm = kernels::scan_permutation(o, gh, gw);
      const at::Tensor inv = kernels::scan_inverse_permutation(o, gh, gw);
      EXPECT_TRUE(at::equal(perm.index_select(0, inv), at::arange(gh * gw, at::kLong)))
          << kernels::scan_order_name(o) << " " << grid_name(gh, gw);
      EXPECT_TRUE(at::equal(std::get<0>(perm.sort()), at::arange(gh * gw, at::kLong)))
          << "not a permutation: " << kernels::scan_order_name(o) << " " << grid_name(gh, gw);
    }
}

TEST(Scan2d, ModesAndNames) {
  EXPECT_EQ(kernels::scan_orders("bsm"),
            (std::vector<ScanOrder>{ScanOrder::Row, ScanOrder::RowRev}));
  EXPECT_EQ(kernels::scan_orders("csm"),
            (std::vector<ScanOrder>{ScanOrder::Row, ScanOrder::Col, ScanOrder::RowRev,
                                    ScanOrder::ColRev}));
  for (ScanOrder o : kernels::scan_orders("csm"))
    EXPECT_EQ(kernels::parse_scan_order(kernels::scan_order_name(o)), o);
  EXPECT_EQ(kernels::parse_scan_merge("mean"), ScanMerge::Mean);
  EXPECT_NE(error_of([] { kernels::scan_orders("diag"); }).find("'diag'"), std::string::npos);
  EXPECT_NE(error_of([] { kernels::parse_scan_order("rows"); }).find("'rows'"), std::string::npos);
  EXPECT_NE(error_of([] { kernels::parse_scan_merge("max"); }).find("'max'"), std::string::npos);
}

// CSM built the way VMamba's CrossScan builds it (flatten, transpose + flatten, flips), without
// permutation indices: both backends must agree with it.
TEST(Scan2d, CsmMatchesVMambaCrossScanConstruction) {
  auto g = gen(1);
  for (auto [gh, gw] : kGrids) {
    const at::Tensor x = randn({2, gh * gw, 5}, g);  // [B, L, C]
    const at::Tensor row = x;                        // [B, L, C]
    const at::Tensor col = x.view({2, gh, gw, 5}).transpose(1, 2).reshape({2, gh * gw, 5});
    const at::Tensor want = at::stack({row, col, row.flip(1), col.flip(1)}, 1);  // [B, 4, L, C]
    for (Backend b : {Backend::Reference, Backend::Fused}) {
      const at::Tensor xs = kernels::scan2d_gather(x, gh, gw, kernels::scan_orders("csm"), b);
      EXPECT_TRUE(at::equal(xs, want)) << grid_name(gh, gw) << " " << kernels::backend_name(b);
      // CrossMerge: flip 2, 3 back, un-transpose 1, 3, sum.
      const at::Tensor ys = randn({2, 4, gh * gw, 5}, g);
      auto untranspose = [&](const at::Tensor& t) {  // column-major [B, L, C] -> row-major
        return t.view({2, gw, gh, 5}).transpose(1, 2).reshape({2, gh * gw, 5});
      };
      const at::Tensor merged = ys.select(1, 0) + untranspose(ys.select(1, 1)) +
                                ys.select(1, 2).flip(1) + untranspose(ys.select(1, 3).flip(1));
      EXPECT_TRUE(
          close(kernels::scan2d_scatter(ys, gh, gw, kernels::scan_orders("csm"), ScanMerge::Sum, b),
                merged, 1e-6, 1e-6))
          << grid_name(gh, gw) << " " << kernels::backend_name(b);
    }
  }
}

TEST(Scan2d, FusedMatchesReferenceOutputs) {
  auto g = gen(2);
  for (auto dt : {at::kFloat, at::kDouble, at::kBFloat16})
    for (auto [gh, gw] : kGrids)
      for (const auto& orders : order_sets()) {
        const int64_t K = static_cast<int64_t>(orders.size());
        const at::Tensor x = randn({3, gh * gw, 7}, g, dt);  // [B, L, C]
        const at::Tensor xs_ref = kernels::scan2d_gather(x, gh, gw, orders, Backend::Reference);
        const at::Tensor xs = kernels::scan2d_gather(x, gh, gw, orders, Backend::Fused);
        EXPECT_TRUE(at::equal(xs, xs_ref)) << grid_name(gh, gw) << " K=" << K;
        EXPECT_EQ(xs.dtype(), x.dtype());
        // C = 37: whole vectors and a tail at every level's width (4, 8, 16 floats).
        const at::Tensor ys = randn({3, K, gh * gw, 37}, g, dt);  // [B, K, L, C]
        for (ScanMerge m : {ScanMerge::Sum, ScanMerge::Mean}) {
          const at::Tensor ref = kernels::scan2d_scatter(ys, gh, gw, orders, m, Backend::Reference);
          testing_util::for_each_kernel_level([&](cpu::Isa) {
            const at::Tensor out = kernels::scan2d_scatter(ys, gh, gw, orders, m, Backend::Fused);
            EXPECT_EQ(out.dtype(), ys.dtype());
            // bf16: the reference rounds after every add, the fused path once.
            const double tol = dt == at::kBFloat16 ? 2e-2 : 1e-6;
            EXPECT_TRUE(close(out, ref, tol, tol))
                << grid_name(gh, gw) << " K=" << K << " " << kernels::scan_merge_name(m) << " "
                << c10::toString(dt);
          });
        }
      }
}

TEST(Scan2d, FusedMatchesReferenceGradients) {
  auto g = gen(3);
  for (auto [gh, gw] : kGrids)
    for (const auto& orders : order_sets())
      for (ScanMerge m : {ScanMerge::Sum, ScanMerge::Mean}) {
        const int64_t K = static_cast<int64_t>(orders.size()), L = gh * gw;
        const at::Tensor x0 = randn({2, L, 4}, g), wx = randn({2, K, L, 4}, g);
        const at::Tensor y0 = randn({2, K, L, 4}, g), wy = randn({2, L, 4}, g);
        // The fused gather's backward is the fused scatter: run at every level.
        testing_util::for_each_kernel_level([&](cpu::Isa) {
          std::vector<at::Tensor> gx, gy;
          for (Backend b : {Backend::Reference, Backend::Fused}) {
            const at::Tensor x = x0.clone().requires_grad_(true);
            (kernels::scan2d_gather(x, gh, gw, orders, b) * wx).sum().backward();
            gx.push_back(x.grad());
            const at::Tensor y = y0.clone().requires_grad_(true);
            (kernels::scan2d_scatter(y, gh, gw, orders, m, b) * wy).sum().backward();
            gy.push_back(y.grad());
          }
          EXPECT_TRUE(close(gx[1], gx[0], 1e-6, 1e-6)) << grid_name(gh, gw) << " K=" << K;
          EXPECT_TRUE(close(gy[1], gy[0], 1e-6, 1e-6))
              << grid_name(gh, gw) << " K=" << K << " " << kernels::scan_merge_name(m);
        });
      }
}

TEST(Scan2d, ScatterOfGatherRestoresExactly) {
  auto g = gen(4);
  for (auto [gh, gw] : kGrids) {
    const at::Tensor x = randn({2, gh * gw, 6}, g);
    for (Backend b : {Backend::Reference, Backend::Fused}) {
      for (ScanOrder o : kernels::scan_orders("csm")) {
        const at::Tensor xs = kernels::scan2d_gather(x, gh, gw, {o}, b);
        EXPECT_TRUE(at::equal(kernels::scan2d_scatter(xs, gh, gw, {o}, ScanMerge::Sum, b), x))
            << kernels::scan_order_name(o) << " " << grid_name(gh, gw);
      }
      // All four at once, merged by mean: x back (up to the 1/4 scaling's rounding).
      const auto csm = kernels::scan_orders("csm");
      const at::Tensor xs = kernels::scan2d_gather(x, gh, gw, csm, b);
      EXPECT_TRUE(close(kernels::scan2d_scatter(xs, gh, gw, csm, ScanMerge::Mean, b), x, 1e-6, 0))
          << grid_name(gh, gw);
      EXPECT_TRUE(
          close(kernels::scan2d_scatter(xs, gh, gw, csm, ScanMerge::Sum, b), 4 * x, 1e-6, 0))
          << grid_name(gh, gw);
    }
  }
}

// Central differences in double of a random-weighted sum of each op's output vs autograd.
TEST(Scan2d, GradientsMatchFiniteDifferencesInDouble) {
  auto g = gen(5);
  const double eps = 1e-6;
  for (auto [gh, gw] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {2, 3}, {3, 2}})
    for (Backend b : {Backend::Reference, Backend::Fused}) {
      const auto orders = kernels::scan_orders("csm");
      const int64_t L = gh * gw, K = 4, C = 2;
      const at::Tensor wx = randn({1, K, L, C}, g, at::kDouble);
      const at::Tensor wy = randn({1, L, C}, g, at::kDouble);
      auto fx = [&](const at::Tensor& x) {
        return (kernels::scan2d_gather(x, gh, gw, orders, b) * wx).sum();
      };
      auto fy = [&](const at::Tensor& y) {
        return (kernels::scan2d_scatter(y, gh, gw, orders, ScanMerge::Mean, b) * wy).sum();
      };
      for (int which = 0; which < 2; ++which) {
        const at::Tensor v0 =
            which == 0 ? randn({1, L, C}, g, at::kDouble) : randn({1, K, L, C}, g, at::kDouble);
        auto f = [&](const at::Tensor& v) { return which == 0 ? fx(v) : fy(v); };
        const at::Tensor v = v0.clone().requires_grad_(true);
        f(v).backward();
        at::Tensor numeric = at::zeros_like(v0);
        at::NoGradGuard ng;
        for (int64_t i = 0; i < v0.numel(); ++i) {
          at::Tensor p = v0.clone(), m = v0.clone();
          p.view(-1)[i] += eps;
          m.view(-1)[i] -= eps;
          numeric.view(-1)[i] = (f(p).item<double>() - f(m).item<double>()) / (2 * eps);
        }
        EXPECT_TRUE(close(v.grad(), numeric, 1e-6, 1e-7))
            << (which == 0 ? "gather " : "scatter ") << grid_name(gh, gw) << " "
            << kernels::backend_name(b);
      }
    }
}

TEST(Scan2d, NonContiguousInputAndManyThreads) {
  auto g = gen(6);
  const int saved = at::get_num_threads();
  at::set_num_threads(2);
  const auto csm = kernels::scan_orders("csm");
  const at::Tensor x = randn({2, 64, 24 * 24}, g).transpose(1, 2);  // [B, L, C], C-stride L
  ASSERT_FALSE(x.is_contiguous());
  EXPECT_TRUE(at::equal(kernels::scan2d_gather(x, 24, 24, csm, Backend::Fused),
                        kernels::scan2d_gather(x, 24, 24, csm, Backend::Reference)));
  const at::Tensor ys = randn({2, 4, 64, 24 * 24}, g).transpose(2, 3);  // [B, K, L, C]
  EXPECT_TRUE(close(kernels::scan2d_scatter(ys, 24, 24, csm, ScanMerge::Sum, Backend::Fused),
                    kernels::scan2d_scatter(ys, 24, 24, csm, ScanMerge::Sum, Backend::Reference),
                    1e-6, 1e-6));
  at::set_num_threads(saved);
}

TEST(Scan2d, BadInputIsAnErrorNamingTheProblem) {
  const auto bsm = kernels::scan_orders("bsm");
  const at::Tensor x = at::zeros({2, 12, 3});
  EXPECT_NE(error_of([&] { kernels::scan2d_gather(x, 3, 5, bsm); }).find("grid is 3x5 = 15"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              kernels::scan2d_gather(x.view({24, 3}), 3, 4, bsm);
            }).find("x must be [B, L, C]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { kernels::scan2d_gather(x, 3, 4, {}); }).find("no scan orders"),
            std::string::npos);
  EXPECT_NE(error_of([&] { kernels::scan2d_gather(x, 0, 4, bsm); }).find("at least 1x1"),
            std::string::npos);
  const at::Tensor ys = at::zeros({2, 4, 12, 3});
  EXPECT_NE(error_of([&] { kernels::scan2d_scatter(ys, 3, 4, bsm); }).find("4 orders"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              kernels::scan2d_scatter(ys, 2, 4, kernels::scan_orders("csm"));
            }).find("grid is 2x4 = 8"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              kernels::scan2d_scatter(at::zeros({1, 2, 12, 3}, at::kLong), 3, 4, bsm,
                                      ScanMerge::Sum, Backend::Fused);
            }).find("floating"),
            std::string::npos);
  // Auto falls back to the reference for integer tensors.
  EXPECT_TRUE(at::equal(kernels::scan2d_scatter(at::ones({1, 2, 12, 3}, at::kLong), 3, 4, bsm),
                        at::full({1, 12, 3}, 2, at::kLong)));
}
