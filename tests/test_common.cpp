#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/shape.h"
#include "kernels/backend.h"

using namespace mambavl;

TEST(Common, CheckShapeAcceptsMatchAndWildcard) {
  at::Tensor t = at::zeros({2, 3, 5});
  EXPECT_NO_THROW(check_shape(t, {2, 3, 5}, "op: t", "B, D, L"));
  EXPECT_NO_THROW(check_shape(t, {2, -1, 5}, "op: t", "B, D, L"));
}

TEST(Common, CheckShapeMessageNamesArgumentAndShapes) {
  at::Tensor t = at::zeros({2, 4});
  try {
    check_shape(t, {2, 3, 5}, "op: t", "B, D, L");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("op: t"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 4]"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3, 5]"), std::string::npos) << m;
  }
}

TEST(Common, BackendNames) {
  EXPECT_EQ(kernels::parse_backend("reference"), kernels::Backend::Reference);
  EXPECT_EQ(kernels::parse_backend("fused"), kernels::Backend::Fused);
  EXPECT_THROW(kernels::parse_backend("gpu-magic"), Error);
}
