#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/cpu.h"
#include "common/error.h"
#include "kernels/gemv.h"
#include "test_util.h"

using namespace mambavl;

namespace {

const std::vector<std::pair<int64_t, int64_t>> kShapes{
    {1, 1}, {3, 5}, {7, 9}, {5, 31}, {6, 33}, {17, 64}, {9, 48}, {130, 77}, {11, 129}, {13, 300},
    {1000, 768}};

}  // namespace

TEST(Gemv, MatchesMatmulFp32AndBf16OddSizesAtEveryLevel) {
  testing_util::for_each_kernel_level([](cpu::Isa) {
    for (auto [O, I] : kShapes) {
      at::manual_seed(O * 1000 + I);
      at::Tensor W = at::randn({O, I}), x = at::randn({I}), bias = at::randn({O});
      at::Tensor want = at::matmul(W.to(at::kDouble), x.to(at::kDouble));
      at::Tensor got = kernels::gemv(W, x);
      EXPECT_LE((got.to(at::kDouble) - want).abs().max().item<double>(), 1e-4 * std::sqrt(double(I)))
          << O << "x" << I;
      at::Tensor Wb = W.to(at::kBFloat16);
      at::Tensor want_b = at::matmul(Wb.to(at::kDouble), x.to(at::kDouble));  // same rounded weights
      EXPECT_LE((kernels::gemv(Wb, x).to(at::kDouble) - want_b).abs().max().item<double>(),
                1e-4 * std::sqrt(double(I)))
          << O << "x" << I;
      at::Tensor yb = at::empty({O});
      kernels::gemv(Wb, x.data_ptr<float>(), yb.data_ptr<float>(), bias.data_ptr<float>());
      EXPECT_LE((yb.to(at::kDouble) - want_b - bias.to(at::kDouble)).abs().max().item<double>(),
                1e-4 * std::sqrt(double(I)))
          << "bias " << O << "x" << I;
    }
  });
}

TEST(Gemv, Int8MatchesItsReferenceAtEveryLevelAndApproximatesFp32) {
  testing_util::for_each_kernel_level([](cpu::Isa) {
    for (auto [O, I] : kShapes) {
      at::manual_seed(O * 7 + I);
      at::Tensor W = at::randn({O, I}), x = at::randn({I}), bias = at::randn({O});
      kernels::Int8Matrix q = kernels::quantize_int8(W);
      at::Tensor ref = kernels::gemv_int8_reference(q, x).to(at::kDouble);
      at::Tensor got = kernels::gemv(q, x).to(at::kDouble);
      // Integer block sums are exact; only the fp32 scaling and summation order differ.
      EXPECT_LE((got - ref).abs().max().item<double>(), 1e-4 * std::sqrt(double(I)) + 1e-5)
          << O << "x" << I;
      at::Tensor yb = at::empty({O});
      kernels::gemv(q, x.data_ptr<float>(), yb.data_ptr<float>(), bias.data_ptr<float>());
      EXPECT_LE((yb.to(at::kDouble) - ref - bias.to(at::kDouble)).abs().max().item<double>(),
                1e-4 * std::sqrt(double(I)) + 1e-5);
      // Against the fp32 product: weight and activation rounding, ~1/127 of the row norms.
      at::Tensor exact = at::matmul(W.to(at::kDouble), x.to(at::kDouble));
      const double tol = 2.0 * (W.abs().amax(1).max().item<double>() * x.abs().max().item<double>()) *
                         std::sqrt(double(I)) / 127.0;
      EXPECT_LE((got - exact).abs().max().item<double>(), tol) << O << "x" << I;
    }
  });
}

// Batch decode: M vectors at once equal M separate products, at every level, for every vector
// count a tile can have (1..4 and a remainder group) and odd sizes; bias; strided layouts through
// the tensor form.
TEST(Gemv, SmallBatchMatchesPerVectorProductsAtEveryLevel) {
  testing_util::for_each_kernel_level([](cpu::Isa) {
    for (auto [O, I] : kShapes) {
      for (int64_t M : {1, 2, 3, 4, 5, 7, 16}) {
        at::manual_seed(O * 131 + I * 7 + M);
        at::Tensor W = at::randn({O, I}), X = at::randn({M, I}), bias = at::randn({O});
        const double tol = 1e-4 * std::sqrt(double(I));
        for (auto dt : {at::kFloat, at::kBFloat16}) {
          at::Tensor Wd = W.to(dt).contiguous();
          at::Tensor want = at::matmul(X.to(at::kDouble), Wd.to(at::kDouble).t()) +
                            bias.to(at::kDouble);  // [M, O]
          at::Tensor got = kernels::linear_small(kernels::MatrixRef::of(Wd), X, bias, at::kFloat);
          ASSERT_EQ(got.sizes(), (std::vector<int64_t>{M, O}));
          EXPECT_LE((got.to(at::kDouble) - want).abs().max().item<double>(), tol)
              << (dt == at::kFloat ? "f32 " : "bf16 ") << O << "x" << I << " M=" << M;
        }
        kernels::Int8Matrix q = kernels::quantize_int8(W);
        at::Tensor got = kernels::linear_small(kernels::MatrixRef::of(q), X.view({M, 1, I}), bias,
                                               at::kFloat);  // [M, 1, O]
        ASSERT_EQ(got.sizes(), (std::vector<int64_t>{M, 1, O}));
        for (int64_t m = 0; m < M; ++m) {
          at::Tensor ref = kernels::gemv_int8_reference(q, X[m]).to(at::kDouble) + bias.to(at::kDouble);
          EXPECT_LE((got[m][0].to(at::kDouble) - ref).abs().max().item<double>(), tol + 1e-5)
              << "int8 " << O << "x" << I << " M=" << M << " row " << m;
        }
      }
    }
  });
  // Output dtype: rounded once from fp32.
  at::Tensor W = at::randn({8, 40}), X = at::randn({3, 40});
  at::Tensor f = kernels::linear_small(kernels::MatrixRef::of(W), X, {}, at::kFloat);
  at::Tensor b = kernels::linear_small(kernels::MatrixRef::of(W), X, {}, at::kBFloat16);
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(b, f.to(at::kBFloat16)));
  EXPECT_THROW(kernels::linear_small(kernels::MatrixRef::of(W), at::randn({3, 41}), {}, at::kFloat),
               Error);
}

TEST(Gemv, Int8QuantisationRoundTripsWithinHalfAStep) {
  at::Tensor W = at::randn({37, 100});
  W[3].zero_();  // a zero row gets scale 1 and zeros
  kernels::Int8Matrix q = kernels::quantize_int8(W);
  EXPECT_EQ(q.q.scalar_type(), at::kChar);
  EXPECT_LE(q.q.abs().max().item<int>(), 127);
  at::Tensor back = kernels::dequantize_int8(q);
  at::Tensor half_step = q.scale.unsqueeze(1) / 2 + 1e-7;
  EXPECT_TRUE(((back - W).abs() <= half_step).all().item<bool>());
  EXPECT_EQ(q.scale[3].item<float>(), 1.f);
  EXPECT_EQ(q.q[3].abs().max().item<int>(), 0);
}

TEST(Gemv, LevelsAreDetectedAndForcing) {
  // The best level follows the CPU's features; an unknown name is refused with the valid ones.
  const cpu::Features& f = cpu::features();
  if (f.avx512f && f.avx512bw && f.avx512vnni && f.avx512dq && f.avx512vl && f.avx2 && f.fma)
    EXPECT_EQ(cpu::best_isa(), cpu::Isa::Avx512);
  else if (f.avx2 && f.fma && f.f16c)
    EXPECT_EQ(cpu::best_isa(), cpu::Isa::Avx2);
  try {
    cpu::parse_isa("sse9");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expected scalar, avx2 or avx512"), std::string::npos);
  }
  EXPECT_NO_THROW(cpu::set_active_isa(cpu::Isa::Scalar));  // every x86-64 CPU has it
  cpu::set_active_isa(cpu::best_isa());
}

TEST(Gemv, RejectsBadInput) {
  EXPECT_THROW(kernels::gemv(at::randn({3, 4}), at::randn({5})), Error);
  EXPECT_THROW(kernels::gemv(at::randn({3, 4}).t(), at::randn({3})), Error);
  EXPECT_THROW(kernels::gemv(at::randn({3, 4}, at::kDouble), at::randn({4})), Error);
  kernels::Int8Matrix q = kernels::quantize_int8(at::randn({3, 4}));
  EXPECT_THROW(kernels::gemv(q, at::randn({5})), Error);
  q.scale = at::ones({2});
  EXPECT_THROW(kernels::gemv(q, at::randn({4})), Error);
}
