// bf16 weights through the fp32 GEMM (models/bf16_gemm.h): equal to the plain bf16 ops up to the
// summation order (forward), only where no gradient is recorded, only with enough rows, and the
// paths that use it (Linear, the Mamba prefill projections) give the same model outputs.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "common/cpu.h"
#include "kernels/gemv.h"
#include "models/bf16_gemm.h"
#include "models/layers.h"
#include "models/mamba.h"
#include "mamba_configs.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::models;
using mambavl::testing_util::close;

namespace {

// Restores the mode after each test.
class ModeGuard {
 public:
  explicit ModeGuard(Bf16Gemm m) : saved_(bf16_gemm()) { set_bf16_gemm(m); }
  ~ModeGuard() { set_bf16_gemm(saved_); }

 private:
  Bf16Gemm saved_;
};

// Smaller converted blocks for one test (several blocks per matrix without huge tensors).
class BlockGuard {
 public:
  explicit BlockGuard(int64_t bytes) { set_bf16_block_bytes(bytes); }
  ~BlockGuard() { set_bf16_block_bytes(0); }
  BlockGuard(const BlockGuard&) = delete;
  BlockGuard& operator=(const BlockGuard&) = delete;
};

// y = x W^T + b computed in fp64 from the bf16 values, rounded once to bf16: what any fp32-
// accumulating bf16 GEMM approximates.
at::Tensor reference(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  at::Tensor y = at::matmul(x.to(at::kDouble), w.to(at::kDouble).t());
  if (b.defined()) y = y + b.to(at::kDouble);
  return y.to(at::kBFloat16);
}

// A Linear with bias, its parameters initialised from `seed` and stored in bf16 (still requiring
// gradients).
Linear bf16_linear(int64_t in, int64_t out, uint64_t seed) {
  at::manual_seed(seed);
  Linear lin(in, out, true);
  lin->reset_parameters();
  at::NoGradGuard ng;
  lin->weight.set_data(lin->weight.to(at::kBFloat16));
  lin->bias.set_data(lin->bias.to(at::kBFloat16));
  return lin;
}

// One bf16 ulp at the output's magnitude plus the fp32 summation-order error.
::testing::AssertionResult bf16_close(const at::Tensor& got, const at::Tensor& want) {
  return close(got.to(at::kFloat), want.to(at::kFloat), 1.0 / 128, 1e-3);
}

// A 2-layer Mamba of width 512 (long enough sums that two summation orders round differently
// somewhere) for the prefill tests.
MambaConfig prefill_config() { return testing_util::small_mamba_config(512, 2, 8); }

}  // namespace

TEST(Bf16Gemm, LinearEqualsBf16GemmUpToSummationOrder) {
  ModeGuard g(Bf16Gemm::ViaF32);
  at::NoGradGuard ng;
  at::manual_seed(3);
  // 1 MiB blocks and K = 2048 make the weight blocks 128 rows: N = 300 runs three blocks, the last
  // one partial.
  BlockGuard blocks(1 << 20);
  struct Case { int64_t B, T, K, N; bool bias; };
  for (const Case& c : {Case{1, 197, 64, 96, true}, Case{3, 17, 2048, 300, true},
                        Case{2, 40, 2048, 300, false}, Case{1, 16, 768, 2304, true}}) {
    SCOPED_TRACE(::testing::Message() << c.B << "x" << c.T << "x" << c.K << " -> " << c.N);
    at::Tensor x = at::randn({c.B, c.T, c.K}).to(at::kBFloat16);
    at::Tensor w = (at::randn({c.N, c.K}) * 0.05).to(at::kBFloat16);
    at::Tensor b = c.bias ? at::randn({c.N}).to(at::kBFloat16) : at::Tensor();
    ASSERT_TRUE(bf16_via_f32(w, x, c.B * c.T));
    at::Tensor got = linear_bf16_via_f32(x, w, b);
    EXPECT_EQ(got.scalar_type(), at::kBFloat16);
    EXPECT_EQ(got.sizes(), (std::vector<int64_t>{c.B, c.T, c.N}));
    EXPECT_TRUE(bf16_close(got, reference(x, w, b)));
    EXPECT_TRUE(bf16_close(got, at::linear(x, w, b)));  // the plain bf16 path
    // A non-contiguous input (transposed view) gives the same values.
    if (c.B > 1) {  // (a transposed size-1 dimension would still be contiguous)
      at::Tensor xt = x.transpose(0, 1).contiguous().transpose(0, 1);
      ASSERT_FALSE(xt.is_contiguous());
      EXPECT_TRUE(at::equal(linear_bf16_via_f32(xt, w, b), got));
    }
  }
}

TEST(Bf16Gemm, LinearModuleDispatch) {
  Linear lin = bf16_linear(96, 80, 4);
  at::Tensor x = at::randn({2, 30, 96}).to(at::kBFloat16);
  at::Tensor plain;
  {
    at::NoGradGuard ng;
    plain = at::linear(x, lin->weight, lin->bias);
  }
  {
    ModeGuard g(Bf16Gemm::ViaF32);
    at::NoGradGuard ng;
    at::Tensor got = lin->forward(x);
    EXPECT_TRUE(at::equal(got, linear_bf16_via_f32(x, lin->weight, lin->bias)));
    EXPECT_TRUE(bf16_close(got, plain));
    // In InferenceMode too (the benchmarks and generation run there).
    c10::InferenceMode im;
    EXPECT_TRUE(at::equal(lin->forward(x), got));
    // Fewer rows than kBf16ViaF32MinRows: not this path (decode steps: the module sends up to
    // kernels::kSmallBatchRows rows to the batch kernels instead, LinearImpl::apply).
    at::Tensor few = x.narrow(1, 0, 2);  // 4 rows
    EXPECT_FALSE(bf16_via_f32(lin->weight, few, 4));
    EXPECT_TRUE(bf16_close(lin->forward(few), at::linear(few, lin->weight, lin->bias)));
  }
  {
    ModeGuard g(Bf16Gemm::Native);
    at::NoGradGuard ng;
    EXPECT_FALSE(bf16_via_f32(lin->weight, x, 60));
    EXPECT_TRUE(at::equal(lin->forward(x), plain));
  }
  {
    // With gradients recorded, the plain op and its autograd: the gradients reach the weights.
    ModeGuard g(Bf16Gemm::ViaF32);
    ASSERT_TRUE(lin->weight.requires_grad());
    EXPECT_FALSE(bf16_via_f32(lin->weight, x, 60));
    at::Tensor y = lin->forward(x);
    EXPECT_TRUE(at::equal(y.detach(), plain));
    y.to(at::kFloat).sum().backward();
    ASSERT_TRUE(lin->weight.grad().defined());
    EXPECT_GT(lin->weight.grad().abs().sum().item<double>(), 0.0);
  }
  // fp32 weights never take it.
  Linear f32(96, 80, true);
  at::NoGradGuard ng;
  EXPECT_FALSE(bf16_via_f32(f32->weight, x.to(at::kFloat), 60));
}

// fp32 activations on bf16 weights (inference_compute_dtype): an fp32 GEMM on the converted
// weight, fp32 out, at any row count; at::linear would refuse the mix.
TEST(Bf16Gemm, Fp32ActivationsOnBf16Weights) {
  ModeGuard g(Bf16Gemm::ViaF32);
  BlockGuard blocks(1 << 20);  // K = 2048: 128-row blocks, N = 300 runs three
  Linear lin = bf16_linear(2048, 300, 5);
  const at::Tensor wf = lin->weight.detach().to(at::kFloat), bfl = lin->bias.detach().to(at::kFloat);
  EXPECT_EQ(inference_compute_dtype(lin->weight), at::kBFloat16);  // it records a gradient
  at::NoGradGuard ng;
  EXPECT_EQ(inference_compute_dtype(lin->weight), at::kFloat);
  EXPECT_EQ(inference_compute_dtype(wf), at::kFloat);
  for (int64_t rows : {1, 3, 16, 40}) {  // the batch kernels (<= kSmallBatchRows) and the GEMM
    SCOPED_TRACE(rows);
    at::Tensor x = at::randn({rows, 2048});
    at::Tensor want = at::linear(x, wf, bfl);
    at::Tensor got = lin->forward(x);
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    EXPECT_TRUE(close(got, want, 1e-5, 1e-4));
    EXPECT_TRUE(close(weight_linear(x, lin->weight, lin->bias), want, 1e-5, 1e-4));
    EXPECT_TRUE(close(linear_bf16_via_f32(x, lin->weight, at::Tensor()), at::linear(x, wf), 1e-5,
                      1e-4));
  }
  // One block holding all rows of the weight.
  set_bf16_block_bytes(0);
  at::Tensor x = at::randn({2, 20, 2048});
  EXPECT_TRUE(close(linear_bf16_via_f32(x, lin->weight, lin->bias), at::linear(x, wf, bfl), 1e-5,
                    1e-4));
  ModeGuard native(Bf16Gemm::Native);
  EXPECT_EQ(inference_compute_dtype(lin->weight), at::kBFloat16);
}

// bf16 batches above kAmxBatchRows rows go to the native bf16 GEMM on CPUs with AMX (faster there
// than the batch kernels), to the batch kernels otherwise; up to kAmxBatchRows always the kernels.
TEST(Bf16Gemm, AmxTakesBf16BatchesAboveEightRows) {
  Linear lin = bf16_linear(96, 80, 6);
  at::NoGradGuard ng;
  const bool amx = cpu::features().amx;
  std::printf("this CPU %s AMX\n", amx ? "has" : "has no");
  auto kernels = [&](const at::Tensor& x) {
    return kernels::linear_small(matrix_ref(*lin), x, lin->bias, at::kBFloat16);
  };
  const at::Tensor x8 = at::randn({8, 96}).to(at::kBFloat16);
  const at::Tensor x9 = at::randn({3, 3, 96}).to(at::kBFloat16);
  for (Bf16Gemm mode : {Bf16Gemm::Auto, Bf16Gemm::Native, Bf16Gemm::ViaF32}) {
    ModeGuard g(mode);
    EXPECT_TRUE(lin->uses_batch_kernels(x8));
    EXPECT_TRUE(at::equal(lin->forward(x8), kernels(x8)));
    const bool native = amx && mode != Bf16Gemm::ViaF32;
    EXPECT_EQ(lin->uses_batch_kernels(x9), !native) << "mode " << static_cast<int>(mode);
    EXPECT_TRUE(lin->uses_batch_kernels(x9.to(at::kFloat)));  // fp32 activations: the kernels
    EXPECT_TRUE(at::equal(lin->forward(x9), native ? at::linear(x9, lin->weight, lin->bias)
                                                   : kernels(x9)))
        << "mode " << static_cast<int>(mode);
  }
}

TEST(Bf16Gemm, WeightMmMatchesMm) {
  ModeGuard g(Bf16Gemm::ViaF32);
  c10::InferenceMode im;
  at::manual_seed(5);
  BlockGuard blocks(1 << 20);
  at::Tensor W = (at::randn({300, 2048}) * 0.05).to(at::kBFloat16);  // [N, K], three blocks
  at::Tensor x = at::randn({2048, 40}).to(at::kBFloat16);            // [K, M]
  at::Tensor xt = at::randn({40, 2048}).to(at::kBFloat16).t();       // [K, M], transposed
  for (const at::Tensor& in : {x, xt}) {
    at::Tensor got = weight_mm(W, in);
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_EQ(got.sizes(), (std::vector<int64_t>{300, 40}));
    EXPECT_TRUE(bf16_close(got, at::mm(W, in)));
    EXPECT_TRUE(bf16_close(got, reference(in.t(), W, at::Tensor()).t()));
  }
  // fp32 operands: at::mm itself.
  at::Tensor Wf = W.to(at::kFloat), xf = x.to(at::kFloat);
  EXPECT_TRUE(at::equal(weight_mm(Wf, xf), at::mm(Wf, xf)));
}

// A bf16 Mamba prefill (in_proj / x_proj / dt_proj through weight_mm, out_proj through Linear)
// gives the same logits through fp32 as through the plain bf16 GEMM, up to bf16 rounding.
TEST(Bf16Gemm, MambaPrefillSameLogits) {
  const MambaConfig c = prefill_config();
  MambaLM m(c);
  m.init_weights(7);
  {
    at::NoGradGuard ng;
    for (auto& p : m.module().parameters()) p.add_(at::randn_like(p) * 0.05);
  }
  m.to_dtype(at::kBFloat16);
  c10::InferenceMode im;
  at::manual_seed(8);
  at::Tensor ids = at::randint(0, 50, {2, 40}, at::kLong);
  at::Tensor native, via;
  {
    ModeGuard g(Bf16Gemm::Native);
    native = m.forward(ids);
  }
  {
    ModeGuard g(Bf16Gemm::ViaF32);
    via = m.forward(ids);
  }
  EXPECT_FALSE(at::equal(native, via));  // it did take another path
  EXPECT_LT((via - native).abs().max().item<double>(), 0.03 * native.abs().max().item<double>());
}

// int8 weights (int8 rows with fp32 row scales) times fp32 activations: the fp32 GEMM per
// dequantised block gives at::linear / at::mm on the whole dequantised matrix, up to the
// summation order; bf16 activations keep the dequantised bf16 GEMM.
TEST(Int8Gemm, PerBlockEqualsDequantisedGemm) {
  c10::InferenceMode im;
  at::manual_seed(9);
  BlockGuard blocks(1 << 20);  // K = 2048: 128-row blocks, N = 300 runs three
  const kernels::Int8Matrix q = kernels::quantize_int8(at::randn({300, 2048}) * 0.05);
  const at::Tensor wf = kernels::dequantize_int8(q);  // [N, K] fp32
  const at::Tensor b = at::randn({300});
  for (int64_t rows : {16, 40}) {
    SCOPED_TRACE(rows);
    at::Tensor x = at::randn({rows, 2048});
    EXPECT_TRUE(close(int8_linear(x, q.q, q.scale, b), at::linear(x, wf, b), 1e-5, 1e-4));
    EXPECT_TRUE(close(int8_linear(x, q.q, q.scale, at::Tensor()), at::linear(x, wf), 1e-5, 1e-4));
  }
  at::Tensor x3 = at::randn({2, 20, 2048});
  at::Tensor y3 = int8_linear(x3, q.q, q.scale, b);
  EXPECT_EQ(y3.sizes(), (std::vector<int64_t>{2, 20, 300}));
  EXPECT_TRUE(close(y3, at::linear(x3, wf, b), 1e-5, 1e-4));
  // [K, M] contiguous and transposed.
  at::Tensor x = at::randn({2048, 40}), xt = at::randn({40, 2048}).t();
  for (const at::Tensor& in : {x, xt}) {
    at::Tensor got = int8_mm(q.q, q.scale, in);
    EXPECT_TRUE(got.is_contiguous());
    EXPECT_EQ(got.sizes(), (std::vector<int64_t>{300, 40}));
    EXPECT_TRUE(close(got, at::mm(wf, in), 1e-5, 1e-4));
  }
  // bf16 activations: the bf16 GEMM on the weight dequantised to bf16, as before.
  at::Tensor xb = at::randn({40, 2048}).to(at::kBFloat16);
  const at::Tensor wb = kernels::dequantize_int8(q).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(int8_linear(xb, q.q, q.scale, at::Tensor()), at::linear(xb, wb)));
  EXPECT_TRUE(at::equal(int8_mm(q.q, q.scale, xb.t()), at::mm(wb, xb.t())));
}

// An int8 Mamba prefill (the projections per dequantised block) gives the logits of the same
// model run op by op on the dequantised weights.
TEST(Int8Gemm, MambaPrefillSameLogits) {
  const MambaConfig c = prefill_config();
  MambaLM m(c);
  m.init_weights(7);
  m.quantize_int8();
  c10::InferenceMode im;
  at::manual_seed(8);
  at::Tensor ids = at::randint(0, 50, {2, 40}, at::kLong);
  BlockGuard blocks(1 << 18);  // several blocks per projection
  const at::Tensor via = m.forward(ids);
  // The same weights as dense fp32 matrices.
  MambaLM d(c);
  d.init_weights(7);
  {
    at::NoGradGuard ng;
    auto dense = d.module().named_parameters();
    for (auto& p : m.module().named_parameters()) {
      if (p.value().scalar_type() != at::kChar) {
        dense[p.key()].copy_(p.value());
        continue;
      }
      const std::string scale_name = p.key().substr(0, p.key().size() - 6) + "weight_scale";
      at::Tensor scale;
      for (auto& bu : m.module().named_buffers())
        if (bu.key() == scale_name) scale = bu.value();
      ASSERT_TRUE(scale.defined()) << scale_name;
      dense[p.key()].copy_(kernels::dequantize_int8({p.value(), scale}));
    }
  }
  const at::Tensor want = d.forward(ids);
  EXPECT_TRUE(close(via, want, 1e-4, 1e-4));
}
