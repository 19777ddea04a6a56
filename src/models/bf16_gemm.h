// bf16 weights on CPUs without a fast bf16 GEMM. Without AMX, oneDNN's bf16 GEMM runs at about
// half the fp32 rate, so a matmul with a bf16 weight and more than a few rows (prefill, encoders)
// is faster as: the weight converted to fp32 one block of output rows at a time (a cache-sized
// block in a reused per-thread buffer, no allocation per call), the fp32 GEMM, the output rounded
// to bf16. Same result as the bf16 GEMM up to the summation order (both accumulate in fp32).
// Only where no gradient is recorded (inference: NoGrad / InferenceMode, or nothing requires
// grad): training keeps the plain bf16 ops and their autograd. Used by LinearImpl::forward and the
// Mamba mixer's channel-first prefill projections. int8 weights (LinearImpl's layout: int8 rows
// with fp32 row scales) times fp32 activations go the same way, dequantised block by block
// (int8_linear, int8_mm): no full fp32 copy of the matrix per call.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mambavl::models {

enum class Bf16Gemm { Auto, ViaF32, Native };
// Auto (the default): ViaF32 on CPUs without AMX, Native with it. MAMBAVL_BF16_GEMM=auto|f32|native
// sets the initial mode (read once); tests and benchmarks may set it.
void set_bf16_gemm(Bf16Gemm mode);
Bf16Gemm bf16_gemm();
// fp32 bytes of weight per converted block (rows of ~this many bytes, a multiple of 16 rows, at
// least 16); tests set smaller blocks to run several per matrix (0: back to the default).
inline constexpr int64_t kBf16BlockBytes = int64_t{8} << 20;
void set_bf16_block_bytes(int64_t bytes);
// Matmuls with fewer rows than this stay native (decode steps, tiny batches): the conversion of
// the weight would cost more than the GEMM saves.
inline constexpr int64_t kBf16ViaF32MinRows = 16;
// Whether a bf16 `weight` times `rows` activation rows of that dtype goes through fp32 here.
bool bf16_via_f32(const at::Tensor& weight, const at::Tensor& x, int64_t rows);
// The dtype a model with bf16-stored weights computes its activations in at inference: fp32 where
// bf16 GEMMs go through fp32 anyway (Auto without AMX, or ViaF32) and `weight` records no gradient,
// so norms, attention and activations run in fp32 (bf16 elementwise ops and attention are slower
// on such CPUs) and only the weights stay bf16 (converted per block in the GEMMs); otherwise the
// weight's own dtype. Used by the ViT encoders.
at::ScalarType inference_compute_dtype(const at::Tensor& weight);
// x [..., K] bf16 or fp32, weight [N, K] bf16, bias [N] or undefined -> [..., N] in x's dtype
// through the fp32 GEMM (as at::linear in fp32 on the bf16 weight, up to the summation order).
// No autograd.
at::Tensor linear_bf16_via_f32(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias);
// at::linear(x, weight, bias), through linear_bf16_via_f32 when bf16_via_f32 says so (and the
// bias records no gradient), or when x is fp32 and the weight bf16 with no gradient recorded (the
// fp32 activations of inference_compute_dtype).
at::Tensor weight_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
// W [N, K] times x [K, M] (any strides) -> [N, M] contiguous, in x's dtype: through fp32 by
// blocks of W's rows when bf16_via_f32(W, x, M), else at::mm. No autograd on the fp32 path.
at::Tensor weight_mm(const at::Tensor& W, const at::Tensor& x);

// x [..., K] times the int8 weight [N, K] with its scales [N] (+ bias [N]) -> [..., N]: fp32 x
// without a gradient recorded through the fp32 GEMM per dequantised block (the values of
// at::linear on kernels::dequantize_int8, up to the summation order); otherwise at::linear on the
// dequantised weight in x's dtype.
at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale,
                       const at::Tensor& bias);
// The int8 weight W [N, K] with scales [N] times x [K, M] (any strides) -> [N, M]: per dequantised
// block for fp32 x without a gradient recorded, else at::mm on the dequantised weight.
at::Tensor int8_mm(const at::Tensor& W, const at::Tensor& scale, const at::Tensor& x);

}  // namespace mambavl::models
