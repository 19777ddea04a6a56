// Per-instruction-set levels of the fused 2-D scan scatter (kernels/scan2d.cpp validates, runs
// rows on at::parallel_for and dispatches to these; the gather is row memcpy's and needs none).
// Each namespace is one compilation of scan2d_impl.inc with that level's flags (see
// gemv_kernels.h); only C headers and intrinsics are included there.
#pragma once
#include <stdint.h>

namespace mambavl::kernels {

// ys [B, K, L, C] -> [B, L, C]: output row r = b * L + p is scale times the sum of the K rows
// ys[b, k, steps[k * L + p]] (steps: the step of order k at which patch p is read).
enum class Scan2dDtype : int { F32 = 0, F64 = 1, BF16 = 2 };
struct Scan2dScatterArgs {
  const void* src;
  void* dst;
  const int64_t* steps;  // [K, L]
  int64_t K, L, C;
  double scale;  // 1 (sum) or 1 / K (mean); applied in the accumulation type (fp32; fp64 for F64)
  Scan2dDtype dtype;
};

}  // namespace mambavl::kernels

#define MVL_SCAN2D_DECLARE(ns)                                                              \
  namespace mambavl::kernels::ns {                                                          \
  /* Output rows [begin, end) of B * L; accumulates in fp32 (fp64 for F64), rounds once. */ \
  void scan2d_scatter_rows(const Scan2dScatterArgs& a, int64_t begin, int64_t end);         \
  }

MVL_SCAN2D_DECLARE(isa_scalar)
MVL_SCAN2D_DECLARE(isa_avx2)
MVL_SCAN2D_DECLARE(isa_avx512)
