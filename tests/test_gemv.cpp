#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "kernels/gemv.h"

using namespace mambavl;

TEST(Gemv, MatchesMatmulFp32AndBf16OddSizes) {
  for (auto [O, I] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {3, 5}, {7, 9}, {17, 64}, {130, 77}, {1000, 768}}) {
    at::Tensor W = at::randn({O, I}), x = at::randn({I});
    at::Tensor want = at::matmul(W.to(at::kDouble), x.to(at::kDouble));
    at::Tensor got = kernels::gemv(W, x);
    EXPECT_LE((got.to(at::kDouble) - want).abs().max().item<double>(), 1e-4 * std::sqrt(double(I)))
        << O << "x" << I;
    at::Tensor Wb = W.to(at::kBFloat16);
    at::Tensor want_b = at::matmul(Wb.to(at::kDouble), x.to(at::kDouble));  // same rounded weights
    EXPECT_LE((kernels::gemv(Wb, x).to(at::kDouble) - want_b).abs().max().item<double>(),
              1e-4 * std::sqrt(double(I)));
  }
}

TEST(Gemv, RejectsBadInput) {
  EXPECT_THROW(kernels::gemv(at::randn({3, 4}), at::randn({5})), Error);
  EXPECT_THROW(kernels::gemv(at::randn({3, 4}).t(), at::randn({3})), Error);
  EXPECT_THROW(kernels::gemv(at::randn({3, 4}, at::kDouble), at::randn({4})), Error);
}
