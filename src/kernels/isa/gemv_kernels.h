// Per-instruction-set row kernels of the matrix-vector product (kernels/gemv.h dispatches to them).
// Each namespace is one compilation of gemv_impl.inc with that level's flags (CMakeLists.txt:
// these files are built with -march=x86-64 / x86-64-v3 / x86-64-v4 + VNNI and no precompiled
// header). They include only C headers and intrinsics, so no inline function compiled for a
// higher level can stand in for a lower level's copy at link time.
//
// Rows [r0, r1) of y = W x (+ bias); W row-major [O, I]:
//   f32  : W float
//   bf16 : W bfloat16 bits; accumulation in fp32
//   q8   : W int8 with one fp32 scale per row (y[o] = wscale[o] * sum_i W[o,i] x[i]); x is given
//          quantised: xq int8 [ceil(I/64)*64] (zero padded), xs fp32 [ceil(I/64)] per 64-block
//          (x[i] ~= xs[i/64] * xq[i])
//
// The gemm_* forms do the same for M vectors at once (a batch decode step): rows [r0, r1) of
// Y[m] = W X[m] (+ bias) for m < M; X [M, I] with row stride ldx, Y [M, O] with row stride ldy
// (q8: XQ [M, ldq] int8 and XS [M, lds] fp32 per row, each quantised as above). Each weight is
// read from memory once for all M vectors (the row range is walked once per group of vectors
// while it sits in cache).
#pragma once
#include <cstdint>

#define MVL_GEMV_DECLARE(ns)                                                                    \
  namespace mambavl::kernels::ns {                                                              \
  void gemv_f32_rows(const float* W, const float* x, float* y, const float* bias, int64_t I,    \
                     int64_t r0, int64_t r1);                                                   \
  void gemv_bf16_rows(const uint16_t* W, const float* x, float* y, const float* bias, int64_t I, \
                      int64_t r0, int64_t r1);                                                  \
  void gemv_q8_rows(const int8_t* W, const float* wscale, const int8_t* xq, const float* xs,    \
                    float* y, const float* bias, int64_t I, int64_t r0, int64_t r1);            \
  void gemm_f32_rows(const float* W, const float* X, int64_t ldx, int64_t M, float* Y,          \
                     int64_t ldy, const float* bias, int64_t I, int64_t r0, int64_t r1);        \
  void gemm_bf16_rows(const uint16_t* W, const float* X, int64_t ldx, int64_t M, float* Y,      \
                      int64_t ldy, const float* bias, int64_t I, int64_t r0, int64_t r1);       \
  void gemm_q8_rows(const int8_t* W, const float* wscale, const int8_t* XQ, int64_t ldq,        \
                    const float* XS, int64_t lds, int64_t M, float* Y, int64_t ldy,             \
                    const float* bias, int64_t I, int64_t r0, int64_t r1);                      \
  }

MVL_GEMV_DECLARE(isa_scalar)
MVL_GEMV_DECLARE(isa_avx2)
MVL_GEMV_DECLARE(isa_avx512)

// The quantised block length of x in gemv_q8_rows.
namespace mambavl::kernels {
constexpr int64_t kQ8Block = 64;
}
