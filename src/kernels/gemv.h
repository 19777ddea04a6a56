// Matrix-vector product for batch-1 decoding, where every weight byte is read once per token and
// the op is memory-bound: y[o] = sum_i W[o, i] * x[i] (+ bias[o]). W row-major [O, I] in fp32,
// bf16 (half the bytes; accumulation in fp32) or int8 with one fp32 scale per output row (a quarter
// of the bytes; x is quantised to int8 per 64-block on the fly, VNNI dot products where the CPU has
// them). x and y fp32. Parallel over rows. The row kernels are chosen at run time from the CPU
// (common/cpu.h: avx512 / avx2 / scalar, MAMBAVL_ISA to force one); kernels/isa/ holds them.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace mambavl::kernels {

// An int8 matrix: q [O, I] int8 contiguous, scale [O] fp32 (W[o, i] ~= scale[o] * q[o, i]).
struct Int8Matrix {
  at::Tensor q, scale;
  int64_t rows() const { return q.size(0); }
  int64_t cols() const { return q.size(1); }
};

// Symmetric per-row quantisation of an fp32/bf16 [O, I] matrix: scale = max|row| / 127 (1 for a
// zero row), q = round(W / scale) in [-127, 127].
Int8Matrix quantize_int8(const at::Tensor& W);
at::Tensor dequantize_int8(const Int8Matrix& W);  // [O, I] fp32

// A weight matrix as the row kernels see it: fp32, bf16 or int8 (+ per-row scale), row-major.
struct MatrixRef {
  enum Kind { F32, BF16, Int8 } kind = F32;
  const void* data = nullptr;
  const float* scale = nullptr;  // int8: [rows]
  int64_t rows = 0, cols = 0;
  static MatrixRef of(const at::Tensor& W);  // contiguous CPU fp32 / bf16 [O, I] (validated)
  static MatrixRef of(const Int8Matrix& W);
};

// x quantised for the int8 kernels: int8 per 64-block (zero padded) and the blocks' scales.
// Buffers are reused (no allocation once sized).
struct QuantizedVector {
  std::vector<int8_t> q;
  std::vector<float> scale;
  void set(const float* x, int64_t n);
};

// Rows [r0, r1) of y = W x (+ bias), on this thread, with the kernel level's row kernel. For an
// int8 W, `xq` must hold x quantised (QuantizedVector::set); otherwise it is ignored.
void gemv_rows(const MatrixRef& W, const float* x, const QuantizedVector* xq, float* y,
               const float* bias, int64_t r0, int64_t r1);
// Rows per chunk when a team shares a matrix: ~32 KiB of weights, a multiple of 4.
int64_t gemv_chunk_rows(const MatrixRef& W);

// y = W x (+ bias) on the intra-op threads: x: W.cols floats; y: W.rows floats; bias: W.rows
// floats or null.
void gemv(const MatrixRef& W, const float* x, float* y, const float* bias = nullptr);
// W: [O, I] contiguous fp32/bf16 on CPU; x: I floats; y: O floats; bias: O floats or null.
void gemv(const at::Tensor& W, const float* x, float* y, const float* bias = nullptr);
void gemv(const Int8Matrix& W, const float* x, float* y, const float* bias = nullptr);

// A few rows of x quantised for the int8 kernels, each row as QuantizedVector does (buffers reused).
struct QuantizedRows {
  std::vector<int8_t> q;    // [M, ldq]
  std::vector<float> scale; // [M, lds]
  int64_t ldq = 0, lds = 0;
  void set(const float* X, int64_t M, int64_t n, int64_t ldx);  // X [M, n], row stride ldx
};

// Batch decode: rows [r0, r1) of Y[m] = W X[m] (+ bias) for M vectors at once, on this thread
// (X [M, W.cols] with row stride ldx, Y [M, W.rows] with row stride ldy). Each weight is read from
// memory once for all M vectors. For an int8 W, `xq` must hold X quantised (QuantizedRows::set).
void gemm_rows(const MatrixRef& W, const float* X, int64_t ldx, int64_t M, const QuantizedRows* xq,
               float* Y, int64_t ldy, const float* bias, int64_t r0, int64_t r1);
// The same on the intra-op threads, parallel over rows: Y [M, O] = X [M, I] W^T (+ bias), X and Y
// contiguous.
void gemm_small(const MatrixRef& W, const float* X, int64_t M, float* Y, const float* bias = nullptr);
// Tensor form for a linear layer at batch decode: x [..., I] (any floating dtype, converted to
// fp32), bias [O] or undefined -> [..., O] in `out_dtype` (results rounded once, from fp32).
at::Tensor linear_small(const MatrixRef& W, const at::Tensor& x, const at::Tensor& bias,
                        at::ScalarType out_dtype);
// Rows of x up to which linear_small beats a GEMM library call (weights read once, no packing).
constexpr int64_t kSmallBatchRows = 16;

// Tensor forms (validate): x [I] fp32 -> [O] fp32. Used by tests and the reference comparison.
at::Tensor gemv(const at::Tensor& W, const at::Tensor& x);
at::Tensor gemv(const Int8Matrix& W, const at::Tensor& x);

// The int8 path's own reference, in LibTorch ops: x quantised per 64-block exactly as the kernel
// does, then integer dot products per block (as doubles), scaled. Every level must agree with it
// to rounding.
at::Tensor gemv_int8_reference(const Int8Matrix& W, const at::Tensor& x);

}  // namespace mambavl::kernels
