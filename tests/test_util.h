// Assertions shared by the test suites: element-wise tensor closeness with the worst offender on
// failure, and "this throws a mambavl::Error whose message names ...".
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/cpu.h"
#include "common/error.h"
#include "models/lm.h"

namespace mambavl::testing_util {

// Element-wise |a - b| <= atol + rtol * |b| (in double), with the worst offender on failure.
inline ::testing::AssertionResult close(const at::Tensor& a, const at::Tensor& b, double rtol,
                                        double atol) {
  if (!a.defined() || !b.defined())
    return ::testing::AssertionFailure()
           << "undefined tensor (a " << a.defined() << ", b " << b.defined() << ")";
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "shape " << a.sizes() << " vs " << b.sizes();
  const at::Tensor ad = a.detach().to(at::kDouble), bd = b.detach().to(at::kDouble);
  const at::Tensor excess = (ad - bd).abs() - (atol + rtol * bd.abs());
  if (a.numel() == 0 || excess.max().item<double>() <= 0.0) return ::testing::AssertionSuccess();
  const int64_t i = excess.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure()
         << "mismatch at flat index " << i << ": " << ad.flatten()[i].item<double>() << " vs "
         << bd.flatten()[i].item<double>() << " (max |diff| "
         << (ad - bd).abs().max().item<double>() << ", rtol " << rtol << ", atol " << atol << ")";
}

// The message of the mambavl::Error that f throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Runs f, which must throw mambavl::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "expected mambavl::Error containing '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
  }
}

// Runs body(level) once per hand-kernel level this CPU supports (scalar, avx2, avx512), restoring
// the level after; levels the CPU lacks are reported as skipped on stdout.
template <class F>
void for_each_kernel_level(F body) {
  const cpu::Isa saved = cpu::active_isa();
  for (cpu::Isa isa : {cpu::Isa::Scalar, cpu::Isa::Avx2, cpu::Isa::Avx512}) {
    if (static_cast<int>(isa) > static_cast<int>(cpu::best_isa())) {
      std::printf("[ SKIPPED  ] kernel level %s: this CPU lacks it (%s)\n", cpu::isa_name(isa),
                  cpu::features_string().c_str());
      continue;
    }
    cpu::set_active_isa(isa);
    SCOPED_TRACE(std::string("kernel level ") + cpu::isa_name(isa));
    body(isa);
  }
  cpu::set_active_isa(saved);
}

// Whether a fused decode step ran on `cache` (the fused steps keep their scratch there).
inline bool used_fused_decode(models::LMCache* cache) {
  auto* c = dynamic_cast<models::LayerStackCache*>(cache);
  return c && c->decode_state != nullptr;
}

// Logits [1, T, V] of ids [1, T] decoded on `cache`: a prefill of 5 tokens, single-token steps to
// position 9 (expected to take the fused path), a chunk of `chunk` tokens op by op on the same
// cache, single-token steps to T.
inline at::Tensor decode_mixed(models::CausalLM& m, models::LMCache* cache, const at::Tensor& ids,
                               int64_t chunk) {
  const int64_t T = ids.size(1);
  std::vector<at::Tensor> parts{m.forward(ids.narrow(1, 0, 5), cache)};
  for (int64_t t = 5; t < 9; ++t) parts.push_back(m.forward(ids.narrow(1, t, 1), cache));
  EXPECT_TRUE(used_fused_decode(cache)) << "the single-token steps took the fused path";
  parts.push_back(m.forward(ids.narrow(1, 9, chunk), cache));
  for (int64_t t = 9 + chunk; t < T; ++t) parts.push_back(m.forward(ids.narrow(1, t, 1), cache));
  EXPECT_EQ(cache->length(), T);
  return at::cat(parts, 1);
}

}  // namespace mambavl::testing_util
