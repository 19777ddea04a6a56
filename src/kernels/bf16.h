// bfloat16 rounding for the fused decode steps: they keep activations in fp32 and round where the
// op-by-op bf16 path casts to bf16, so the two paths agree.
#pragma once
#include <cstdint>
#include <cstring>

namespace mambavl::kernels {

// To bfloat16 precision (nearest even), as a bf16 tensor round trip does (inf / nan kept).
inline float round_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}
inline void round_bf16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = round_bf16(x[i]);
}

}  // namespace mambavl::kernels
