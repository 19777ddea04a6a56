// Per-instruction-set levels of the fused CPU causal depthwise conv1d + SiLU, forward and backward
// (kernels/causal_conv1d_cpu.cpp validates, runs rows on at::parallel_for and dispatches to these).
// Each namespace is one compilation of causal_conv1d_impl.inc with that level's flags (see
// gemv_kernels.h); only C headers and intrinsics are included there.
#pragma once
#include <stdint.h>

namespace mambavl::kernels {

// out = act(bias + conv(x)); x, out: [B*D, L] contiguous, fp32 or bf16 (uint16 bits, both alike);
// w: [D, W] fp32; bias: [D] fp32 or null.
struct ConvForwardArgs {
  const void* x;
  void* out;
  const float* w;
  const float* bias;
  int64_t D, L, W;
  bool bf16, silu;
};

// dout, x, dx: [B*D, L] (x's dtype; dx null unless need_dx); dw_part [B*D, W] and db_part [B*D]
// fp32 per-row partials (written when need_dw).
struct ConvBackwardArgs {
  const void* dout;
  const void* x;
  void* dx;
  const float* w;
  const float* bias;
  float* dw_part;
  float* db_part;
  int64_t D, L, W;
  bool bf16, silu, need_dx, need_dw;
};

}  // namespace mambavl::kernels

#define MVL_CONV1D_DECLARE(ns)                                                      \
  namespace mambavl::kernels::ns {                                                  \
  /* Rows r = b * D + d in [begin, end). */                                         \
  void conv1d_forward_rows(const ConvForwardArgs& a, int64_t begin, int64_t end);   \
  void conv1d_backward_rows(const ConvBackwardArgs& a, int64_t begin, int64_t end); \
  }

MVL_CONV1D_DECLARE(isa_scalar)
MVL_CONV1D_DECLARE(isa_avx2)
MVL_CONV1D_DECLARE(isa_avx512)
