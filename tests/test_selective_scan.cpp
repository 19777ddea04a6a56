// Fused CPU selective scan vs the LibTorch reference: outputs and every gradient over a grid of
// shapes and options, bf16 inputs, finite differences for the reference, the decode step, error
// messages, and what backward keeps alive.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/selective_scan.h"
#include "kernels/selective_scan_cpu.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::kernels;

namespace {

struct Shape {
  int64_t B, D, N, L, G;  // G = 0: the [B, N, L] layout of B/C
};
struct Opts {
  bool D, z, bias, softplus, last;
};

std::string name_of(const Shape& s, const Opts& o) {
  return mambavl::detail::cat("B", s.B, "_D", s.D, "_N", s.N, "_L", s.L, "_G", s.G, o.D ? "_D" : "",
                              o.z ? "_z" : "", o.bias ? "_bias" : "", o.softplus ? "_sp" : "",
                              o.last ? "_last" : "");
}

// Inputs in `dt` (A, D, delta_bias in `wdt`), leaves that require grad.
struct Inputs {
  at::Tensor u, delta, A, B, C, D, z, bias;
  std::vector<std::pair<std::string, at::Tensor*>> all() {
    std::vector<std::pair<std::string, at::Tensor*>> r = {
        {"u", &u}, {"delta", &delta}, {"A", &A}, {"B", &B}, {"C", &C}};
    if (D.defined()) r.push_back({"D", &D});
    if (z.defined()) r.push_back({"z", &z});
    if (bias.defined()) r.push_back({"delta_bias", &bias});
    return r;
  }
};

Inputs make_inputs(const Shape& s, const Opts& o, at::ScalarType dt, at::ScalarType wdt,
                   uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto f = at::TensorOptions().dtype(at::kDouble);
  auto randn = [&](at::IntArrayRef sz) { return at::randn(sz, gen, f); };
  auto rand = [&](at::IntArrayRef sz) { return at::rand(sz, gen, f); };
  Inputs in;
  in.u = randn({s.B, s.D, s.L});
  // Without softplus, delta is used as is: keep it positive like a real time step.
  in.delta = o.softplus ? randn({s.B, s.D, s.L}) * 0.5 - 1.0 : rand({s.B, s.D, s.L}) * 0.5 + 0.05;
  in.A = -(rand({s.D, s.N}) * 2.0 + 0.2);
  const std::vector<int64_t> bc =
      s.G ? std::vector<int64_t>{s.B, s.G, s.N, s.L} : std::vector<int64_t>{s.B, s.N, s.L};
  in.B = randn(bc);
  in.C = randn(bc);
  if (o.D) in.D = randn({s.D});
  if (o.z) in.z = randn({s.B, s.D, s.L});
  if (o.bias) in.bias = randn({s.D}) * 0.3;
  for (auto& [n, t] : in.all()) {
    const bool weight = n == "A" || n == "D" || n == "delta_bias";
    *t = t->to(weight ? wdt : dt).set_requires_grad(true);
  }
  return in;
}

SelectiveScanArgs args_of(const Inputs& in, const Opts& o) {
  SelectiveScanArgs a;
  a.u = in.u;
  a.delta = in.delta;
  a.A = in.A;
  a.B = in.B;
  a.C = in.C;
  if (in.D.defined()) a.D = in.D;
  if (in.z.defined()) a.z = in.z;
  if (in.bias.defined()) a.delta_bias = in.bias;
  a.delta_softplus = o.softplus;
  a.return_last_state = o.last;
  return a;
}

struct Outcome {
  at::Tensor y, last;
  std::vector<std::pair<std::string, at::Tensor>> grads;
};

// Forward, then backward of sum(y * wy) (+ sum(last * wl)); the weights are seeded so both backends
// see the same ones. use_y = false: only last_state feeds the loss.
Outcome run(Inputs in, const Opts& o, Backend be, bool use_y = true) {
  for (auto& [n, t] : in.all()) *t = t->detach().set_requires_grad(true);
  SelectiveScanResult r = selective_scan(args_of(in, o), be);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  at::Tensor wy = at::randn(r.y.sizes(), gen, at::TensorOptions().dtype(at::kDouble));
  at::Tensor loss = use_y ? (r.y.to(at::kDouble) * wy).sum() : at::zeros({}, at::kDouble);
  if (o.last) {
    EXPECT_TRUE(r.last_state.defined());
    if (r.last_state.defined()) {
      at::Tensor wl = at::randn(r.last_state.sizes(), gen, at::TensorOptions().dtype(at::kDouble));
      loss = loss + (r.last_state.to(at::kDouble) * wl).sum();
    }
  } else {
    EXPECT_FALSE(r.last_state.defined());
  }
  Outcome out{r.y.detach(), o.last ? r.last_state.detach() : at::Tensor(), {}};
  loss.backward();
  for (auto& [n, t] : in.all()) out.grads.push_back({n, t->grad()});
  return out;
}

// max |a - b| <= rtol * max |b| + atol_abs.
::testing::AssertionResult close(const at::Tensor& a, const at::Tensor& b, double rtol,
                                 const std::string& what, double atol = 1e-7) {
  if (!a.defined() || !b.defined())
    return ::testing::AssertionFailure()
           << what << ": undefined (" << a.defined() << ", " << b.defined() << ")";
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << what << ": sizes " << a.sizes() << " vs " << b.sizes();
  if (a.scalar_type() != b.scalar_type())
    return ::testing::AssertionFailure()
           << what << ": dtype " << a.scalar_type() << " vs " << b.scalar_type();
  at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  if (!at::isfinite(ad).all().item<bool>())
    return ::testing::AssertionFailure() << what << ": non-finite values";
  const double scale = bd.numel() ? bd.abs().max().item<double>() : 0.0;
  const double err = ad.numel() ? (ad - bd).abs().max().item<double>() : 0.0;
  if (err <= rtol * scale + atol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": max abs err " << err << " > " << rtol << " * max|ref| " << scale;
}

void compare(const Outcome& f, const Outcome& r, double rtol, const std::string& tag) {
  EXPECT_TRUE(close(f.y, r.y, rtol, tag + " y"));
  if (r.last.defined()) EXPECT_TRUE(close(f.last, r.last, rtol, tag + " last_state"));
  ASSERT_EQ(f.grads.size(), r.grads.size());
  for (size_t i = 0; i < f.grads.size(); ++i) {
    const at::Tensor &a = f.grads[i].second, &b = r.grads[i].second;
    const std::string what = tag + " grad " + f.grads[i].first;
    if (!b.defined() && a.defined()) {
      // Autograd leaves the grad of an input that did not reach the loss undefined; the fused
      // node returns zeros there.
      EXPECT_TRUE(close(a, at::zeros_like(a), 0.0, what));
    } else {
      EXPECT_TRUE(close(a, b, rtol, what));
    }
  }
}

const std::vector<Shape> kShapes = {
    {1, 1, 1, 1, 0},     {2, 3, 4, 2, 0},    {1, 17, 16, 7, 1},  {2, 33, 4, 63, 0},
    {2, 34, 16, 130, 2}, {1, 33, 1, 130, 3}, {2, 17, 4, 130, 0}, {1, 48, 16, 65, 1},
    {2, 32, 4, 64, 2},   {1, 3, 16, 63, 3},
};
const std::vector<Opts> kOpts = {
    {true, true, true, true, true},   {false, false, false, false, false},
    {true, false, true, false, true}, {false, true, false, true, false},
    {true, true, false, false, true},
};

class ScanGrid : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(ScanGrid, Fp32FusedMatchesReference) {
  const Shape s = kShapes[std::get<0>(GetParam())];
  const Opts o = kOpts[std::get<1>(GetParam())];
  Inputs in = make_inputs(s, o, at::kFloat, at::kFloat, 1234 + s.D * 7 + s.L);
  Outcome r = run(in, o, Backend::Reference);
  // Every instruction-set level the CPU has (lanes 4 / 8 / 16: the shapes cover partial blocks).
  testing_util::for_each_kernel_level([&](cpu::Isa isa) {
    Outcome f = run(in, o, Backend::Fused);
    compare(f, r, 1e-5, name_of(s, o) + " " + cpu::isa_name(isa));
  });
}

INSTANTIATE_TEST_SUITE_P(Grid, ScanGrid,
                         ::testing::Combine(::testing::Range(0, int(kShapes.size())),
                                            ::testing::Range(0, int(kOpts.size()))));

TEST(SelectiveScan, Bf16InputsFp32Weights) {
  for (const Shape& s : {Shape{2, 33, 16, 130, 0}, Shape{1, 34, 4, 63, 2}}) {
    const Opts o{true, true, true, true, true};
    Inputs in = make_inputs(s, o, at::kBFloat16, at::kFloat, 99);
    Outcome r = run(in, o, Backend::Reference);
    Inputs in32 = in;
    for (auto& [n, t] : in32.all()) *t = t->detach().to(at::kFloat);
    Outcome r32 = run(in32, o, Backend::Reference);
    testing_util::for_each_kernel_level([&](cpu::Isa) {
      Outcome f = run(in, o, Backend::Fused);
      EXPECT_EQ(f.y.scalar_type(), at::kBFloat16);
      EXPECT_EQ(f.last.scalar_type(), at::kFloat);
      // Same bf16 inputs, fp32 math in both: differences are bf16 roundings of the outputs/grads.
      compare(f, r, 1e-2, "bf16 " + name_of(s, o));
      // And against an fp32 reference on the upcast inputs (the state stays fp32 in the kernel).
      EXPECT_TRUE(close(f.y.to(at::kFloat), r32.y, 1e-2, "bf16 vs fp32 y"));
      EXPECT_TRUE(close(f.last, r32.last, 1e-5, "bf16 vs fp32 last_state"));
    });
  }
}

TEST(SelectiveScan, Bf16Everything) {
  const Shape s{1, 17, 4, 70, 1};
  const Opts o{true, true, true, false, true};
  Inputs in = make_inputs(s, o, at::kBFloat16, at::kBFloat16, 5);
  Outcome r = run(in, o, Backend::Reference);
  testing_util::for_each_kernel_level(
      [&](cpu::Isa) { compare(run(in, o, Backend::Fused), r, 1e-2, "all-bf16"); });
}

TEST(SelectiveScan, OnlyLastStateOrOnlyYFeedsTheLoss) {
  const Shape s{2, 17, 4, 70, 0};
  Opts o{true, true, true, true, true};
  Inputs in = make_inputs(s, o, at::kFloat, at::kFloat, 11);
  compare(run(in, o, Backend::Fused, false), run(in, o, Backend::Reference, false), 1e-5,
          "last only");
  o.last = false;
  compare(run(in, o, Backend::Fused), run(in, o, Backend::Reference), 1e-5, "y only");
}

TEST(SelectiveScan, InferenceNoGradAndNonContiguousInputs) {
  const Shape s{2, 20, 8, 40, 0};
  const Opts o{true, true, true, true, true};
  Inputs in = make_inputs(s, o, at::kFloat, at::kFloat, 3);
  for (auto& [n, t] : in.all()) *t = t->detach();
  // u as a transposed view of a [B, L, D] tensor.
  in.u = in.u.transpose(1, 2).contiguous().transpose(1, 2);
  ASSERT_FALSE(in.u.is_contiguous());
  SelectiveScanResult f = selective_scan(args_of(in, o), Backend::Fused);
  SelectiveScanResult r = selective_scan(args_of(in, o), Backend::Reference);
  EXPECT_FALSE(f.y.requires_grad());
  EXPECT_TRUE(close(f.y, r.y, 1e-5, "y"));
  EXPECT_TRUE(close(f.last_state, r.last_state, 1e-5, "last_state"));
}

TEST(SelectiveScan, TwoThreadsMatchOneThread) {
  const Shape s{1, 64, 16, 130, 1};
  const Opts o{true, true, true, true, true};
  Inputs in = make_inputs(s, o, at::kFloat, at::kFloat, 21);
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  Outcome one = run(in, o, Backend::Fused);
  at::set_num_threads(2);
  Outcome two = run(in, o, Backend::Fused);
  at::set_num_threads(before);
  compare(two, one, 1e-6, "threads");
}

TEST(SelectiveScan, AutoPicksFusedOnCpuAndFallsBackForDouble) {
  const Shape s{1, 5, 4, 9, 0};
  const Opts o{true, true, true, true, true};
  Inputs in = make_inputs(s, o, at::kFloat, at::kFloat, 2);
  SelectiveScanResult a = selective_scan(args_of(in, o), Backend::Auto);
  EXPECT_GT(kernels::detail::fused_scan_saved_bytes(a.y), 0);
  SelectiveScanResult r = selective_scan(args_of(in, o), Backend::Reference);
  EXPECT_EQ(kernels::detail::fused_scan_saved_bytes(r.y), -1);
  Inputs in64 = make_inputs(s, o, at::kDouble, at::kDouble, 2);
  SelectiveScanResult d = selective_scan(args_of(in64, o), Backend::Auto);
  EXPECT_EQ(d.y.scalar_type(), at::kDouble);
  try {
    selective_scan(args_of(in64, o), Backend::Fused);
    FAIL() << "explicit fused on float64 should throw";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("fused"), std::string::npos) << m;
    EXPECT_NE(m.find("Double"), std::string::npos) << m;
  }
}

// Central differences of the float64 reference against its autograd gradients.
TEST(SelectiveScan, ReferenceFiniteDifferences) {
  for (const Shape& s : {Shape{1, 3, 2, 5, 0}, Shape{2, 4, 3, 4, 2}}) {
    const Opts o{true, true, true, true, true};
    Inputs in = make_inputs(s, o, at::kDouble, at::kDouble, 77);
    Outcome r = run(in, o, Backend::Reference);
    auto loss = [&](const Inputs& x) {
      at::NoGradGuard ng;
      SelectiveScanResult out = selective_scan(args_of(x, o), Backend::Reference);
      auto gen = at::make_generator<at::CPUGeneratorImpl>(7);  // same weights as run()
      at::Tensor wy = at::randn(out.y.sizes(), gen, at::TensorOptions().dtype(at::kDouble));
      at::Tensor wl =
          at::randn(out.last_state.sizes(), gen, at::TensorOptions().dtype(at::kDouble));
      return ((out.y * wy).sum() + (out.last_state * wl).sum()).item<double>();
    };
    auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
    size_t gi = 0;
    for (auto& [name, t] : in.all()) {
      const at::Tensor g = r.grads[gi++].second.reshape(-1);
      const int64_t numel = t->numel();
      for (int k = 0; k < 3; ++k) {
        const int64_t i = at::randint(numel, {1}, gen).item<int64_t>();
        const double eps = 1e-6;
        Inputs p = in, m = in;
        for (auto* x : {&p, &m})
          for (auto& [n2, t2] : x->all()) *t2 = t2->detach().clone();
        at::Tensor tp = *p.all()[gi - 1].second, tm = *m.all()[gi - 1].second;
        tp.view(-1)[i] += eps;
        tm.view(-1)[i] -= eps;
        const double fd = (loss(p) - loss(m)) / (2 * eps);
        const double an = g[i].item<double>();
        EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, std::abs(fd)))
            << name << "[" << i << "] shape " << name_of(s, o);
      }
    }
  }
}

// Decode step: fused == reference, and a scan of L then one update == a scan of L + 1.
TEST(SelectiveStateUpdate, FusedMatchesReferenceAndContinuesTheScan) {
  for (const Shape& s : {Shape{2, 17, 16, 9, 0}, Shape{1, 34, 4, 70, 2}, Shape{2, 5, 1, 1, 0}}) {
    for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
      const Opts o{true, true, true, true, true};
      Inputs in = make_inputs(s, o, dt, at::kFloat, 8);
      for (auto& [n, t] : in.all()) *t = t->detach();
      const int64_t L = s.L - 1;  // prefix length (may be 0)
      Inputs pre = in;
      for (auto* t : {&pre.u, &pre.delta, &pre.z}) *t = t->narrow(-1, 0, L);
      for (auto* t : {&pre.B, &pre.C}) *t = t->narrow(-1, 0, L);
      testing_util::for_each_kernel_level([&](cpu::Isa) {
        SelectiveScanResult full = selective_scan(args_of(in, o), Backend::Fused);
        SelectiveScanResult head = selective_scan(args_of(pre, o), Backend::Fused);
        auto step = [&](const at::Tensor& t) { return t.select(-1, L); };
        at::Tensor st_f = head.last_state.clone(), st_r = head.last_state.clone();
        at::Tensor yf =
            selective_state_update(st_f, step(in.u), step(in.delta), in.A, step(in.B), step(in.C),
                                   in.D, step(in.z), in.bias, true, Backend::Fused);
        at::Tensor yr =
            selective_state_update(st_r, step(in.u), step(in.delta), in.A, step(in.B), step(in.C),
                                   in.D, step(in.z), in.bias, true, Backend::Reference);
        const double tol = dt == at::kFloat ? 1e-5 : 1e-2;
        const std::string tag = name_of(s, o) + (dt == at::kFloat ? " f32" : " bf16");
        EXPECT_EQ(yf.scalar_type(), dt);
        EXPECT_TRUE(close(yf, yr, tol, tag + " y fused vs ref"));
        EXPECT_TRUE(close(st_f, st_r, 1e-5, tag + " state fused vs ref"));
        EXPECT_TRUE(close(yf, step(full.y), tol, tag + " y vs scan"));
        EXPECT_TRUE(close(st_f, full.last_state, 1e-5, tag + " state vs scan"));
      });
    }
  }
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no mambavl::Error";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << m;
  }
}

TEST(SelectiveScan, ErrorsNameTheArgument) {
  const Shape s{2, 4, 3, 5, 0};
  const Opts o{true, true, true, true, true};
  Inputs in = make_inputs(s, o, at::kFloat, at::kFloat, 1);
  for (auto& [n, t] : in.all()) *t = t->detach();
  for (Backend be : {Backend::Fused, Backend::Reference}) {
    SelectiveScanArgs a = args_of(in, o);
    a.delta = at::zeros({2, 4, 6});
    expect_error([&] { selective_scan(a, be); }, {"delta", "[2, 4, 6]"});
    a = args_of(in, o);
    a.A = at::zeros({5, 3});
    expect_error([&] { selective_scan(a, be); }, {"A"});
    a = args_of(in, o);
    a.B = a.B.to(at::kInt);
    expect_error([&] { selective_scan(a, be); }, {"B", "Int"});
    a = args_of(in, o);
    a.C = at::zeros({2, 3, 3, 5});  // G = 3 does not divide D = 4
    expect_error([&] { selective_scan(a, be); }, {"C", "G = 3"});
    a = args_of(in, o);
    a.z = at::zeros({2, 4});
    expect_error([&] { selective_scan(a, be); }, {"z"});
    a = args_of(in, o);
    a.delta_bias = at::zeros({3});
    expect_error([&] { selective_scan(a, be); }, {"delta_bias"});
    a = args_of(in, o);
    a.D = at::zeros({4}, at::kHalf).to(at::kLong);
    expect_error([&] { selective_scan(a, be); }, {"D", "Long"});
  }
  SelectiveScanArgs a = args_of(in, o);
  a.u = a.u.to(at::kHalf);
  expect_error([&] { selective_scan(a, Backend::Fused); }, {"u", "Half", "fused"});
  at::Tensor st = at::zeros({2, 4, 2});
  expect_error(
      [&] {
        selective_state_update(st, in.u.select(-1, 0), in.delta.select(-1, 0), in.A,
                               in.B.select(-1, 0), in.C.select(-1, 0), in.D, std::nullopt,
                               std::nullopt, false, Backend::Fused);
      },
      {"state"});
}

// Backward keeps the inputs plus one [B, D, N] state checkpoint per kScanChunk steps: nothing
// that grows like N * L. Bookkeeping via the autograd node's saved tensors.
TEST(SelectiveScan, BackwardMemoryDoesNotScaleWithNTimesL) {
  for (int64_t N : {4, 64}) {
    const Shape s{1, 16, N, 512, 0};
    const Opts o{true, true, true, true, false};
    Inputs in = make_inputs(s, o, at::kFloat, at::kFloat, 4);
    SelectiveScanResult r = selective_scan(args_of(in, o), Backend::Fused);
    int64_t inputs = 0;
    for (auto& [n, t] : in.all()) inputs += t->numel() * 4;
    const int64_t nck = (s.L + kernels::detail::kScanChunk - 1) / kernels::detail::kScanChunk;
    const int64_t ckpt = s.B * s.D * N * nck * 4;
    EXPECT_EQ(kernels::detail::fused_scan_saved_bytes(r.y), inputs + ckpt) << "N = " << N;
    EXPECT_LT(ckpt, s.B * s.D * N * s.L * 4 / 32);  // vs. keeping every state
  }
}

}  // namespace
