// Causal depthwise conv1d: reference vs a naive loop and finite differences; fused CPU kernel vs
// the reference (outputs and gradients); decode update vs the full conv; dispatch and errors.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/backend.h"
#include "kernels/causal_conv1d.h"
#include "kernels/causal_conv1d_cpu.h"
#include "test_util.h"

using namespace mambavl;
using kernels::Backend;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor randn(at::IntArrayRef sizes, at::Generator& g, at::ScalarType dt = at::kFloat) {
  return at::randn(sizes, g, at::TensorOptions().dtype(at::kFloat)).to(dt);
}

using testing_util::close;

// out[b,d,t] = act(bias[d] + sum_k w[d,k] * x[b,d,t-(W-1)+k]) by plain loops, in double.
at::Tensor naive_conv(const at::Tensor& x_in, const at::Tensor& w_in,
                      const std::optional<at::Tensor>& b_in, bool silu) {
  const at::Tensor x = x_in.to(at::kDouble).contiguous();  // [B, D, L]
  const at::Tensor w = w_in.to(at::kDouble).contiguous();  // [D, W]
  const int64_t B = x.size(0), D = x.size(1), L = x.size(2), W = w.size(1);
  at::Tensor out = at::zeros({B, D, L}, x.options());  // [B, D, L]
  auto xa = x.accessor<double, 3>();
  auto wa = w.accessor<double, 2>();
  auto oa = out.accessor<double, 3>();
  std::vector<double> bias(static_cast<size_t>(D), 0.0);
  if (b_in) {
    const at::Tensor bb = b_in->to(at::kDouble).contiguous();
    for (int64_t d = 0; d < D; ++d) bias[d] = bb[d].item<double>();
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t d = 0; d < D; ++d)
      for (int64_t t = 0; t < L; ++t) {
        double acc = bias[d];
        for (int64_t k = 0; k < W; ++k) {
          const int64_t src = t - (W - 1) + k;
          if (src >= 0) acc += wa[d][k] * xa[b][d][src];
        }
        oa[b][d][t] = silu ? acc / (1.0 + std::exp(-acc)) : acc;
      }
  return out;
}

struct Result {
  at::Tensor out, dx, dw, db;  // [B, D, L], [B, D, L], [D, W], [D]
};

// Forward + backward of causal_conv1d with upstream gradient gout.
Result run(const at::Tensor& x0, const at::Tensor& w0, const std::optional<at::Tensor>& b0,
           bool silu, Backend backend, const at::Tensor& gout) {
  at::Tensor x = x0.detach().clone().requires_grad_(true);
  at::Tensor w = w0.detach().clone().requires_grad_(true);
  std::optional<at::Tensor> b;
  if (b0) b = b0->detach().clone().requires_grad_(true);
  at::Tensor out = kernels::causal_conv1d(x, w, b, silu, backend);
  out.backward(gout);
  return {out.detach(), x.grad(), w.grad(), b ? b->grad() : at::Tensor()};
}

std::string case_name(int64_t B, int64_t D, int64_t L, int64_t W, bool bias, bool silu) {
  std::ostringstream s;
  s << "B=" << B << " D=" << D << " L=" << L << " W=" << W << " bias=" << bias << " silu=" << silu;
  return s.str();
}

// Restores the process-wide default backend at scope exit.
struct DefaultBackendGuard {
  Backend saved = kernels::default_backend();
  explicit DefaultBackendGuard(Backend b) { kernels::set_default_backend(b); }
  ~DefaultBackendGuard() { kernels::set_default_backend(saved); }
};

const int64_t kBs[] = {1, 2, 3};
const int64_t kDs[] = {1, 5, 17};
const int64_t kLs[] = {1, 2, 3, 4, 5, 67};
const int64_t kWs[] = {1, 2, 4, 5};

}  // namespace

TEST(CausalConv1d, ReferenceMatchesNaiveLoop) {
  at::Generator g = gen(1);
  for (int64_t L : kLs)
    for (int64_t W : kWs)
      for (bool bias : {false, true})
        for (bool silu : {false, true}) {
          const int64_t B = 2, D = 5;
          SCOPED_TRACE(case_name(B, D, L, W, bias, silu));
          at::Tensor x = randn({B, D, L}, g, at::kDouble);
          at::Tensor w = randn({D, W}, g, at::kDouble);
          std::optional<at::Tensor> b;
          if (bias) b = randn({D}, g, at::kDouble);
          at::Tensor ref = kernels::causal_conv1d(x, w, b, silu, Backend::Reference);
          EXPECT_TRUE(close(ref, naive_conv(x, w, b, silu), 1e-12, 1e-12));
        }
}

TEST(CausalConv1d, ReferenceGradientsMatchFiniteDifferences) {
  at::Generator g = gen(2);
  const int64_t B = 2, D = 3, L = 7, W = 4;
  for (bool silu : {false, true}) {
    SCOPED_TRACE(silu ? "silu" : "no silu");
    at::Tensor x = randn({B, D, L}, g, at::kDouble).requires_grad_(true);
    at::Tensor w = randn({D, W}, g, at::kDouble).requires_grad_(true);
    at::Tensor b = randn({D}, g, at::kDouble).requires_grad_(true);
    const at::Tensor r = randn({B, D, L}, g, at::kDouble);  // loss = sum(out * r)
    auto loss = [&](const at::Tensor& xx, const at::Tensor& ww, const at::Tensor& bb) {
      return (kernels::causal_conv1d(xx, ww, bb, silu, Backend::Reference) * r).sum();
    };
    const auto grads = torch::autograd::grad({loss(x, w, b)}, {x, w, b});
    const double eps = 1e-6;
    // A few elements of each input, including the first / last time steps and taps.
    struct Probe {
      int which;  // 0 x, 1 weight, 2 bias
      std::vector<int64_t> idx;
    };
    const std::vector<Probe> probes = {{0, {0, 0, 0}}, {0, {1, 2, 6}}, {0, {1, 1, 3}},
                                       {0, {0, 2, 5}}, {1, {0, 0}},    {1, {2, 3}},
                                       {1, {1, 2}},    {2, {0}},       {2, {2}}};
    for (const Probe& p : probes) {
      at::NoGradGuard no_grad;
      at::Tensor xs[3] = {x.detach().clone(), w.detach().clone(), b.detach().clone()};
      at::Tensor plus[3] = {xs[0].clone(), xs[1].clone(), xs[2].clone()};
      at::Tensor minus[3] = {xs[0].clone(), xs[1].clone(), xs[2].clone()};
      std::vector<at::indexing::TensorIndex> ix(p.idx.begin(), p.idx.end());
      plus[p.which].index(ix).add_(eps);
      minus[p.which].index(ix).sub_(eps);
      const double num = (loss(plus[0], plus[1], plus[2]).item<double>() -
                          loss(minus[0], minus[1], minus[2]).item<double>()) /
                         (2 * eps);
      const double ana = grads[p.which].index(ix).item<double>();
      EXPECT_NEAR(ana, num, 1e-6 * (1.0 + std::abs(num))) << "input " << p.which;
    }
  }
}

TEST(CausalConv1d, FusedMatchesReferenceFp32) {
  at::Generator g = gen(3);
  int cases = 0;
  for (int64_t B : kBs)
    for (int64_t D : kDs)
      for (int64_t L : kLs)
        for (int64_t W : kWs)
          for (bool bias : {false, true})
            for (bool silu : {false, true}) {
              SCOPED_TRACE(case_name(B, D, L, W, bias, silu));
              at::Tensor x = randn({B, D, L}, g);
              at::Tensor w = randn({D, W}, g).mul_(0.5);
              std::optional<at::Tensor> b;
              if (bias) b = randn({D}, g);
              at::Tensor gout = randn({B, D, L}, g);
              Result r = run(x, w, b, silu, Backend::Reference, gout);
              // Every instruction-set level the CPU has: output and every gradient.
              testing_util::for_each_kernel_level([&](cpu::Isa) {
                Result f = run(x, w, b, silu, Backend::Fused, gout);
                ASSERT_TRUE(close(f.out, r.out, 1e-5, 1e-5));
                ASSERT_TRUE(close(f.dx, r.dx, 1e-5, 1e-5));
                ASSERT_TRUE(close(f.dw, r.dw, 1e-5, 1e-4));
                if (bias) ASSERT_TRUE(close(f.db, r.db, 1e-5, 1e-4));
                ASSERT_EQ(f.out.scalar_type(), at::kFloat);
              });
              if (HasFatalFailure()) return;
              ++cases;
            }
  EXPECT_EQ(cases, 3 * 3 * 6 * 4 * 2 * 2);
}

TEST(CausalConv1d, FusedMatchesReferenceBf16) {
  at::Generator g = gen(4);
  for (int64_t B : {1, 3})
    for (int64_t D : kDs)
      for (int64_t L : kLs)
        for (int64_t W : kWs)
          for (bool bias : {false, true})
            for (bool silu : {false, true})
              for (at::ScalarType wdt : {at::kFloat, at::kBFloat16}) {
                SCOPED_TRACE(case_name(B, D, L, W, bias, silu) +
                             (wdt == at::kFloat ? " weight fp32" : " weight bf16"));
                at::Tensor x = randn({B, D, L}, g, at::kBFloat16);
                at::Tensor w = randn({D, W}, g, wdt).mul_(0.5);
                std::optional<at::Tensor> b;
                if (bias) b = randn({D}, g, wdt);
                at::Tensor gout = randn({B, D, L}, g, at::kBFloat16);
                testing_util::for_each_kernel_level([&](cpu::Isa) {
                  Result f = run(x, w, b, silu, Backend::Fused, gout);
                  ASSERT_EQ(f.out.scalar_type(), at::kBFloat16);
                  ASSERT_EQ(f.dx.scalar_type(), at::kBFloat16);
                  ASSERT_EQ(f.dw.scalar_type(), wdt);
                  // Against the fp32 reference on the same (bf16-exact) values: the fused kernel
                  // accumulates in fp32 and rounds once, so outputs / dx are within bf16 rounding
                  // and dw / db (fp32 sums of exact products) are close even when stored as fp32.
                  std::optional<at::Tensor> b32;
                  if (b) b32 = b->to(at::kFloat);
                  Result r32 = run(x.to(at::kFloat), w.to(at::kFloat), b32, silu,
                                   Backend::Reference, gout.to(at::kFloat));
                  const double wtol = wdt == at::kFloat ? 1e-4 : 8e-3;
                  ASSERT_TRUE(close(f.out, r32.out, 8e-3, 1e-3));
                  ASSERT_TRUE(close(f.dx, r32.dx, 8e-3, 1e-3));
                  ASSERT_TRUE(close(f.dw, r32.dw, wtol, 1e-3));
                  if (bias) ASSERT_TRUE(close(f.db, r32.db, wtol, 1e-3));
                  // Against the bf16 reference (which rounds in between): loose.
                  Result r = run(x, w, b, silu, Backend::Reference, gout);
                  ASSERT_TRUE(close(f.out, r.out, 3e-2, 3e-2));
                  ASSERT_TRUE(close(f.dx, r.dx, 3e-2, 3e-2));
                  ASSERT_TRUE(close(f.dw, r.dw, 3e-2, 1e-1));
                  if (bias) ASSERT_TRUE(close(f.db, r.db, 3e-2, 1e-1));
                });
                if (HasFatalFailure()) return;
              }
}

TEST(CausalConv1d, FusedMatchesNaiveLoopAndHandlesStridedInput) {
  at::Generator g = gen(5);
  const int64_t B = 2, D = 17, L = 67, W = 4;
  at::Tensor x = randn({B, L, D}, g).transpose(1, 2);  // [B, D, L], not contiguous
  ASSERT_FALSE(x.is_contiguous());
  at::Tensor w = randn({D, W}, g);
  at::Tensor b = randn({D}, g);
  const at::Tensor ref = naive_conv(x, w, b, true);
  testing_util::for_each_kernel_level([&](cpu::Isa) {
    at::Tensor f = kernels::causal_conv1d(x, w, b, true, Backend::Fused);
    EXPECT_TRUE(close(f, ref, 1e-5, 1e-5));
  });
}

// The fused SiLU uses its own vectorisable exp (clamped to [-87, 88]): check far-out inputs and
// NaN against the reference. W = 1, weight 1, no bias: z = x exactly.
TEST(CausalConv1d, FusedSiluExtremeValuesAndNaN) {
  const std::vector<float> vals = {-1e30f, -1e4f, -100.f, -88.5f, -87.f, -20.f, -1e-3f, 0.f,
                                   1e-3f,  0.5f,  20.f,   87.5f,  88.5f, 100.f, 1e4f,   1e30f};
  const int64_t n = static_cast<int64_t>(vals.size());
  at::Tensor x = at::tensor(vals).view({1, 1, n});
  at::Tensor w = at::ones({1, 1});
  at::Tensor gout = at::ones({1, 1, n});
  Result r = run(x, w, std::nullopt, true, Backend::Reference, gout);
  at::Tensor xn = x.clone();
  xn.view({-1})[3] = std::numeric_limits<float>::quiet_NaN();
  testing_util::for_each_kernel_level([&](cpu::Isa) {
    Result f = run(x, w, std::nullopt, true, Backend::Fused, gout);
    EXPECT_TRUE(close(f.out, r.out, 1e-6, 1e-6));
    EXPECT_TRUE(close(f.dx, r.dx, 1e-6, 1e-6));
    at::Tensor out = kernels::causal_conv1d(xn, w, std::nullopt, true, Backend::Fused);
    EXPECT_TRUE(std::isnan(out.view({-1})[3].item<float>()));
    EXPECT_EQ(at::isnan(out).sum().item<int64_t>(), 1);
  });
}

TEST(CausalConv1d, FusedPartialGradients) {
  at::Generator g = gen(6);
  const int64_t B = 2, D = 5, L = 9, W = 4;
  at::Tensor x0 = randn({B, D, L}, g), w0 = randn({D, W}, g), b0 = randn({D}, g);
  at::Tensor gout = randn({B, D, L}, g);
  Result r = run(x0, w0, b0, true, Backend::Reference, gout);
  {  // only x requires grad
    at::Tensor x = x0.clone().requires_grad_(true);
    kernels::causal_conv1d(x, w0, b0, true, Backend::Fused).backward(gout);
    EXPECT_TRUE(close(x.grad(), r.dx, 1e-5, 1e-5));
  }
  {  // only weight and bias require grad
    at::Tensor w = w0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    kernels::causal_conv1d(x0, w, b, true, Backend::Fused).backward(gout);
    EXPECT_TRUE(close(w.grad(), r.dw, 1e-5, 1e-4));
    EXPECT_TRUE(close(b.grad(), r.db, 1e-5, 1e-4));
  }
  {  // nothing requires grad: plain forward
    at::Tensor out = kernels::causal_conv1d(x0, w0, b0, true, Backend::Fused);
    EXPECT_FALSE(out.requires_grad());
    EXPECT_TRUE(close(out, r.out, 1e-5, 1e-5));
  }
}

TEST(CausalConv1d, EmptySequence) {
  at::Generator g = gen(7);
  const int64_t B = 2, D = 3, W = 4;
  at::Tensor x = randn({B, D, 0}, g);
  at::Tensor w = randn({D, W}, g), b = randn({D}, g);
  for (Backend be : {Backend::Fused, Backend::Reference}) {
    SCOPED_TRACE(kernels::backend_name(be));
    Result f = run(x, w, b, true, be, at::zeros({B, D, 0}));
    EXPECT_EQ(f.out.sizes(), (std::vector<int64_t>{B, D, 0}));
    EXPECT_TRUE(close(f.dw, at::zeros({D, W}), 0, 0));
    EXPECT_TRUE(close(f.db, at::zeros({D}), 0, 0));
  }
}

TEST(CausalConv1d, AutoDispatch) {
  DefaultBackendGuard guard(Backend::Auto);
  at::Generator g = gen(8);
  const int64_t B = 1, D = 5, L = 6, W = 4;
  // fp32 / bf16 on CPU: the fused autograd function.
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    at::Tensor x = randn({B, D, L}, g, dt).requires_grad_(true);
    at::Tensor out = kernels::causal_conv1d(x, randn({D, W}, g), std::nullopt, true);
    ASSERT_TRUE(out.grad_fn());
    EXPECT_NE(out.grad_fn()->name().find("CausalConv1d"), std::string::npos)
        << out.grad_fn()->name();
  }
  // float64: falls back to the reference, which is exact against the naive loop.
  at::Tensor x = randn({B, D, L}, g, at::kDouble), w = randn({D, W}, g, at::kDouble);
  EXPECT_TRUE(close(kernels::causal_conv1d(x, w, std::nullopt, true), naive_conv(x, w, {}, true),
                    1e-12, 1e-12));
}

TEST(CausalConv1d, FusedRejectsUnsupportedDtypes) {
  at::Generator g = gen(9);
  const int64_t B = 1, D = 3, L = 4, W = 2;
  auto expect_error = [](auto&& fn, const std::vector<std::string>& parts) {
    try {
      fn();
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      const std::string m = e.what();
      for (const std::string& p : parts) EXPECT_NE(m.find(p), std::string::npos) << m;
    }
  };
  at::Tensor xd = randn({B, D, L}, g, at::kDouble), wd = randn({D, W}, g, at::kDouble);
  expect_error([&] { kernels::causal_conv1d(xd, wd, std::nullopt, false, Backend::Fused); },
               {"fused", "x of dtype Double"});
  at::Tensor xh = randn({B, D, L}, g, at::kHalf), wh = randn({D, W}, g, at::kHalf);
  expect_error([&] { kernels::causal_conv1d(xh, wh, std::nullopt, false, Backend::Fused); },
               {"fused", "x of dtype Half"});
  at::Tensor xf = randn({B, D, L}, g);
  expect_error([&] { kernels::causal_conv1d(xf, wd, std::nullopt, false, Backend::Fused); },
               {"fused", "weight of dtype Double"});
  expect_error(
      [&] {
        kernels::causal_conv1d(xf, randn({D, W}, g), randn({D}, g, at::kDouble), false,
                               Backend::Fused);
      },
      {"fused", "bias of dtype Double"});
  at::Tensor state = at::zeros({B, D, W}, at::kDouble);
  expect_error(
      [&] {
        kernels::causal_conv1d_update(randn({B, D}, g), state, randn({D, W}, g), std::nullopt,
                                      false, Backend::Fused);
      },
      {"fused", "conv_state of dtype Double"});
  // Auto falls back to the reference for the float64 state.
  DefaultBackendGuard guard(Backend::Auto);
  EXPECT_NO_THROW(kernels::causal_conv1d_update(randn({B, D}, g), state, randn({D, W}, g),
                                                std::nullopt, false));
}

TEST(CausalConv1d, ShapeErrorsNameTheArgument) {
  auto expect_error = [](auto&& fn, const std::string& part) {
    try {
      fn();
      ADD_FAILURE() << "no error, expected one naming " << part;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  const int64_t B = 2, D = 3, L = 4, W = 4;
  const at::Tensor x = at::zeros({B, D, L}), w = at::zeros({D, W}), b = at::zeros({D});
  for (Backend be : {Backend::Auto, Backend::Fused, Backend::Reference}) {
    SCOPED_TRACE(kernels::backend_name(be));
    expect_error(
        [&] {
          kernels::causal_conv1d(at::zeros({D, L}), w, b, true, be);
        },
        "x must be [B, D, L], got [3, 4]");
    expect_error(
        [&] {
          kernels::causal_conv1d(x, at::zeros({D + 1, W}), b, true, be);
        },
        "weight must be [D, W]");
    expect_error([&] { kernels::causal_conv1d(x, at::zeros({D}), b, true, be); },
                 "weight must be [D, W]");
    expect_error(
        [&] {
          kernels::causal_conv1d(x, at::zeros({D, 0}), b, true, be);
        },
        "width W must be >= 1");
    expect_error([&] { kernels::causal_conv1d(x, w, at::zeros({D + 1}), true, be); },
                 "causal_conv1d: bias");

    at::Tensor state = at::zeros({B, D, W});
    const at::Tensor xt = at::zeros({B, D});
    expect_error([&] { kernels::causal_conv1d_update(x, state, w, b, true, be); },
                 "causal_conv1d_update: x must be [B, D]");
    expect_error(
        [&] {
          kernels::causal_conv1d_update(xt, state, at::zeros({D + 1, W}), b, true, be);
        },
        "causal_conv1d_update: weight");
    at::Tensor bad_state = at::zeros({B, D, W - 1});
    expect_error([&] { kernels::causal_conv1d_update(xt, bad_state, w, b, true, be); },
                 "causal_conv1d_update: conv_state");
    expect_error([&] { kernels::causal_conv1d_update(xt, state, w, at::zeros({1}), true, be); },
                 "causal_conv1d_update: bias");
  }
  expect_error(
      [&] {
        kernels::conv_state_from_prefix(at::zeros({D, L}), W);
      },
      "conv_state_from_prefix: x must be [B, D, L]");
  expect_error([&] { kernels::conv_state_from_prefix(x, 0); }, "conv_state_from_prefix: width");
}

TEST(CausalConv1d, EmptyPrefixGivesZeroState) {
  at::Tensor s = kernels::conv_state_from_prefix(at::ones({2, 3, 0}), 4);
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_TRUE(close(s, at::zeros({2, 3, 4}), 0, 0));
  at::Tensor s2 = kernels::conv_state_from_prefix(at::arange(1, 3, at::kFloat).view({1, 1, 2}), 4);
  EXPECT_TRUE(close(s2, at::tensor({0.f, 0.f, 1.f, 2.f}).view({1, 1, 4}), 0, 0));
}

// Prefill L tokens (conv_state_from_prefix), then k update steps == the full conv over L + k.
TEST(CausalConv1d, UpdateAfterPrefillMatchesFullConv) {
  at::Generator g = gen(10);
  const int64_t B = 2, D = 5, K = 5;
  for (Backend be : {Backend::Fused, Backend::Reference})
    for (at::ScalarType sdt : {at::kFloat, at::kBFloat16})
      for (at::ScalarType xdt : {at::kFloat, at::kBFloat16})
        for (int64_t W : {1, 2, 4, 5})
          for (int64_t L : {0, 1, 2, 3, 4, 7})
            for (bool bias : {false, true})
              for (bool silu : {false, true}) {
                SCOPED_TRACE(case_name(B, D, L, W, bias, silu) + " " + kernels::backend_name(be) +
                             " state " + c10::toString(sdt) + " x " + c10::toString(xdt));
                // bf16-exact inputs, so a bf16 state stores them without rounding.
                at::Tensor xfull = randn({B, D, L + K}, g, at::kBFloat16).to(at::kFloat);
                at::Tensor w = randn({D, W}, g);
                std::optional<at::Tensor> b;
                if (bias) b = randn({D}, g);
                const at::Tensor full = kernels::causal_conv1d(xfull, w, b, silu,
                                                               Backend::Reference);  // [B, D, L+K]
                at::Tensor state =
                    kernels::conv_state_from_prefix(xfull.narrow(2, 0, L), W).to(sdt);
                for (int64_t i = 0; i < K; ++i) {
                  const at::Tensor xt = xfull.select(2, L + i).to(xdt);  // [B, D]
                  at::Tensor y = kernels::causal_conv1d_update(xt, state, w, b, silu, be);
                  ASSERT_EQ(y.scalar_type(), xdt);
                  const double tol = xdt == at::kFloat ? 1e-5 : 8e-3;
                  ASSERT_TRUE(close(y, full.select(2, L + i), tol, tol)) << "step " << i;
                }
                EXPECT_TRUE(close(state, kernels::conv_state_from_prefix(xfull, W).to(sdt), 0, 0));
              }
}

TEST(CausalConv1d, FusedUpdateWritesStridedStateInPlace) {
  at::Generator g = gen(11);
  const int64_t B = 3, D = 7, W = 4;
  at::Tensor storage = randn({B, W, D}, g);
  at::Tensor state = storage.transpose(1, 2);  // [B, D, W] view, not contiguous
  at::Tensor ref_state = state.contiguous();
  at::Tensor x = randn({B, D}, g), w = randn({D, W}, g), b = randn({D}, g);
  const int64_t version = state._version();
  at::Tensor y = kernels::causal_conv1d_update(x, state, w, b, true, Backend::Fused);
  at::Tensor yr = kernels::causal_conv1d_update(x, ref_state, w, b, true, Backend::Reference);
  EXPECT_TRUE(close(y, yr, 1e-6, 1e-6));
  EXPECT_TRUE(close(storage.transpose(1, 2), ref_state, 0, 0));
  EXPECT_GT(state._version(), version);
}
