// int8 weights (MambaLM::quantize_int8, `mambavl quantize`, --dtype int8): quality against fp32,
// the fused int8 decode against the op-by-op int8 path at every kernel level, the saved layout
// loading back, and the CLI.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cli_run.h"
#include "eval/perplexity.h"
#include "io/safetensors.h"
#include "kernels/backend.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "test_util.h"

using namespace mambavl;
using testing_util::run_cli;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = MAMBAVL_FIXTURES_DIR;

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

// Logits of a prefill of 4 tokens, then one decode step per remaining token: [1, L, V].
at::Tensor decode_logits(models::CausalLM& m, const at::Tensor& ids) {
  at::NoGradGuard ng;
  auto cache = m.make_cache(1, ids.size(1));
  std::vector<at::Tensor> parts{m.forward(ids.narrow(1, 0, 4), cache.get())};
  for (int64_t t = 4; t < ids.size(1); ++t) parts.push_back(m.forward(ids.narrow(1, t, 1), cache.get()));
  return at::cat(parts, 1);
}

class Int8 : public testing_util::TempDirTest {
 protected:
  Int8() : TempDirTest("mambavl_int8_") {}
};

}  // namespace

// Quality on a small model: int8 logits stay near fp32 ones, the perplexity barely moves, greedy
// choices mostly agree (the figures for a real-size model are in docs/quantization.md).
TEST_F(Int8, MambaTracksFp32LogitsPerplexityAndGreedyChoices) {
  for (const char* fx : {"mamba-tiny", "mamba-tiny-bias"}) {
    auto f32 = models::MambaLM::load(kFixtures / fx);
    auto q = models::MambaLM::load(kFixtures / fx);
    q->quantize_int8();
    at::manual_seed(3);
    at::Tensor ids = at::randint(0, f32->config().vocab_size, {1, 48}, at::kLong);
    at::Tensor a = decode_logits(*f32, ids), b = decode_logits(*q, ids);
    const double spread = max_abs(a);
    const double err = max_abs(b - a);
    const double agree = (b.argmax(-1) == a.argmax(-1)).to(at::kDouble).mean().item<double>();
    std::vector<int64_t> v(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    const double nll_a = eval::mean_nll(*f32, v).nll, nll_b = eval::mean_nll(*q, v).nll;
    std::printf("%s: max |logit error| %.4f of max |logit| %.4f; greedy agreement %.3f; nll %.5f -> %.5f\n",
                fx, err, spread, agree, nll_a, nll_b);
    EXPECT_LE(err, 0.03 * spread) << fx;
    EXPECT_GE(agree, 0.85) << fx;
    EXPECT_LE(std::abs(nll_b - nll_a), 0.002 * nll_a) << fx;
  }
}

// The fused decode (int8 GEMV kernels, activations quantised per 64-block) against the op-by-op
// path on the same int8 weights (dequantised, fp32 activations), at every kernel level.
TEST_F(Int8, FusedDecodeMatchesTheOpByOpPathAtEveryLevel) {
  auto q = models::MambaLM::load(kFixtures / "mamba-tiny-bias");
  q->quantize_int8();
  at::manual_seed(5);
  at::Tensor ids = at::randint(0, q->config().vocab_size, {1, 24}, at::kLong);
  q->set_backend(kernels::Backend::Reference);
  at::Tensor generic = decode_logits(*q, ids);
  q->set_backend(kernels::Backend::Auto);
  at::Tensor first;
  testing_util::for_each_kernel_level([&](cpu::Isa) {
    at::Tensor fused = decode_logits(*q, ids);
    EXPECT_LE(max_abs(fused - generic), 0.02 * max_abs(generic));
    // The levels compute the same integer block sums: they agree to float rounding.
    if (!first.defined()) first = fused;
    EXPECT_LE(max_abs(fused - first), 1e-4 * max_abs(first));
  });
}

TEST_F(Int8, SavedLayoutLoadsBackIdentically) {
  auto q = models::MambaLM::load(kFixtures / "mamba-tiny");
  q->quantize_int8();
  q->save(dir / "q");
  io::SafetensorsFile st(dir / "q" / "model.safetensors");
  EXPECT_EQ(st.entry("backbone.layers.0.mixer.in_proj.weight").dtype, "I8");
  EXPECT_EQ(st.entry("backbone.layers.0.mixer.in_proj.weight_scale").dtype, "F32");
  EXPECT_EQ(st.entry("backbone.embeddings.weight").dtype, "I8");
  EXPECT_EQ(st.entry("backbone.layers.0.mixer.A_log").dtype, "F32");
  auto back = models::MambaLM::load(dir / "q");
  EXPECT_EQ(back->config().quantization, "int8");
  EXPECT_EQ(back->layers[0]->norm->weight.scalar_type(), at::kFloat);
  at::manual_seed(7);
  at::Tensor ids = at::randint(0, q->config().vocab_size, {1, 12}, at::kLong);
  at::NoGradGuard ng;
  EXPECT_EQ(max_abs(back->forward(ids) - q->forward(ids)), 0.0);
  EXPECT_EQ(max_abs(decode_logits(*back, ids) - decode_logits(*q, ids)), 0.0);
}

TEST_F(Int8, CliQuantizeGenerateAndErrors) {
  const std::string src = (kFixtures / "mamba-tiny").string(), out = (dir / "q").string();
  auto r = run_cli("quantize --model " + src + " --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("int8 weights"), std::string::npos) << r.out;
  r = run_cli("generate --model " + out + " --ids 1,2,3 --greedy --max-new-tokens 4 --print-ids");
  EXPECT_EQ(r.code, 0) << r.out;
  r = run_cli("perplexity --model " + src + " --ids 1,2,3,4,5,6 --dtype int8");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("ppl:"), std::string::npos) << r.out;
  // A GPT-NeoX folder too; a used --out is refused; a foreign quant method is named.
  r = run_cli("quantize --model " + (kFixtures / "gpt_neox-tiny-parallel").string() + " --out " +
              (dir / "n").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("generate --model " + (dir / "n").string() + " --ids 1,2,3 --greedy --max-new-tokens 4 --print-ids");
  EXPECT_EQ(r.code, 0) << r.out;
  testing_util::expect_one_error_line(
      testing_util::run_cli_limited("quantize --model " + src + " --out " + out), {out, "--overwrite"});
  fs::create_directories(dir / "bad");
  fs::copy(kFixtures / "mamba-tiny" / "model.safetensors", dir / "bad" / "model.safetensors");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(kFixtures / "mamba-tiny" / "config.json"));
  cfg["quantization_config"] = {{"quant_method", "bitsandbytes"}};
  std::ofstream(dir / "bad" / "config.json") << cfg.dump();
  testing_util::expect_one_error_line(
      testing_util::run_cli_limited("generate --model " + (dir / "bad").string() + " --ids 1 --max-new-tokens 1"),
      {"config.json", "quant_method", "bitsandbytes"});
}

// GPT-NeoX (parallel and sequential residual): the same quality bounds as Mamba's on the tiny
// fixtures; the fused int8 decode against the op-by-op int8 path at every level; the saved layout
// loads back; `mambavl quantize` writes one.
TEST_F(Int8, GptNeoXTracksFp32AndFusedDecodeMatchesOpByOp) {
  for (const char* fx : {"gpt_neox-tiny-parallel", "gpt_neox-tiny-sequential"}) {
    SCOPED_TRACE(fx);
    auto f32 = models::GPTNeoXLM::load(kFixtures / fx);
    auto q = models::GPTNeoXLM::load(kFixtures / fx);
    q->quantize_int8();
    EXPECT_EQ(q->embed_out->weight.scalar_type(), at::kChar);
    EXPECT_EQ(q->layers[0]->attention->query_key_value->weight.scalar_type(), at::kChar);
    EXPECT_EQ(q->embed_in->weight.scalar_type(), at::kFloat);
    at::manual_seed(11);
    at::Tensor ids = at::randint(0, f32->config().vocab_size, {1, 40}, at::kLong);
    at::Tensor a = decode_logits(*f32, ids), b = decode_logits(*q, ids);
    const double spread = max_abs(a), err = max_abs(b - a);
    const double agree = (b.argmax(-1) == a.argmax(-1)).to(at::kDouble).mean().item<double>();
    std::vector<int64_t> v(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
    const double nll_a = eval::mean_nll(*f32, v).nll, nll_b = eval::mean_nll(*q, v).nll;
    std::printf("%s: max |logit error| %.4f of max |logit| %.4f; greedy agreement %.3f; nll %.5f -> %.5f\n",
                fx, err, spread, agree, nll_a, nll_b);
    EXPECT_LE(err, 0.03 * spread);
    EXPECT_GE(agree, 0.85);
    EXPECT_LE(std::abs(nll_b - nll_a), 0.002 * nll_a);
    // Fused (int8 GEMV, activations quantised per 64-block) vs op-by-op (dequantised weights).
    const kernels::Backend saved = kernels::default_backend();
    kernels::set_default_backend(kernels::Backend::Reference);
    at::Tensor generic = decode_logits(*q, ids);
    kernels::set_default_backend(saved);
    at::Tensor first;
    testing_util::for_each_kernel_level([&](cpu::Isa) {
      at::Tensor fused = decode_logits(*q, ids);
      EXPECT_LE(max_abs(fused - generic), 0.02 * max_abs(generic));
      EXPECT_GT(max_abs(fused - generic), 0.0);  // the fused path ran (int8 activations)
      if (!first.defined()) first = fused;
      EXPECT_LE(max_abs(fused - first), 1e-4 * max_abs(first));
    });
    // Saved and loaded back: int8 + scales in the file, the same logits.
    q->save(dir / fx);
    io::SafetensorsFile st(dir / fx / "model.safetensors");
    EXPECT_EQ(st.entry("gpt_neox.layers.0.mlp.dense_h_to_4h.weight").dtype, "I8");
    EXPECT_EQ(st.entry("gpt_neox.layers.0.mlp.dense_h_to_4h.weight_scale").dtype, "F32");
    EXPECT_EQ(st.entry("embed_out.weight").dtype, "I8");
    EXPECT_EQ(st.entry("gpt_neox.embed_in.weight").dtype, "F32");
    auto back = models::GPTNeoXLM::load(dir / fx);
    EXPECT_EQ(back->config().quantization, "int8");
    at::NoGradGuard ng;
    EXPECT_EQ(max_abs(back->forward(ids) - q->forward(ids)), 0.0);
    EXPECT_EQ(max_abs(decode_logits(*back, ids) - decode_logits(*q, ids)), 0.0);
    // In bf16: int8 weights stay int8, the rest runs in bf16.
    auto qb = models::GPTNeoXLM::load(dir / fx, at::kBFloat16);
    EXPECT_EQ(qb->embed_out->weight.scalar_type(), at::kChar);
    EXPECT_EQ(qb->embed_in->weight.scalar_type(), at::kBFloat16);
    at::Tensor lb = decode_logits(*qb, ids);
    EXPECT_LE(max_abs(lb - b), 0.05 * spread);
  }
}

// LinearImpl::apply: inputs of up to kSmallBatchRows rows without autograd go through the batch
// kernels (each weight read once for all rows; int8 as stored) and agree with at::linear; with
// autograd, more rows or the Reference backend it is at::linear itself.
TEST(SmallBatchLinear, AgreesWithAtLinearAndKeepsAutogradAndReference) {
  at::manual_seed(11);
  models::Linear lin(70, 33, /*bias=*/true);
  lin->reset_parameters();
  const at::Tensor W = lin->weight.detach().clone(), b = lin->bias.detach().clone();
  for (int64_t rows : {1, 3, 16}) {
    at::Tensor x = at::randn({rows, 1, 70});
    at::Tensor want = at::linear(x, W, b);
    {
      at::NoGradGuard ng;
      at::Tensor got = lin->forward(x);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_LE(max_abs(got - want), 1e-5 * max_abs(want)) << rows;
      at::Tensor nb = lin->apply(x, /*with_bias=*/false);
      EXPECT_LE(max_abs(nb - at::linear(x, W)), 1e-5 * max_abs(want)) << rows;
    }
    // Autograd on: at::linear, exactly, with a graph.
    at::Tensor g = lin->forward(x);
    EXPECT_TRUE(g.requires_grad());
    EXPECT_TRUE(at::equal(g.detach(), want));
  }
  {  // More rows than the batch kernels take, and the Reference backend: at::linear exactly.
    at::NoGradGuard ng;
    at::Tensor x = at::randn({17, 70});
    EXPECT_TRUE(at::equal(lin->forward(x), at::linear(x, W, b)));
    lin->backend = kernels::Backend::Reference;
    at::Tensor x4 = at::randn({4, 70});
    EXPECT_TRUE(at::equal(lin->forward(x4), at::linear(x4, W, b)));
    lin->backend = kernels::Backend::Auto;
  }
  {  // bf16 weights and activations: one rounding of the fp32 result, like a bf16 GEMM.
    at::NoGradGuard ng;
    models::Linear lb(70, 33, true);
    lb->weight.set_data(W.to(at::kBFloat16));
    lb->bias.set_data(b.to(at::kBFloat16));
    at::Tensor x = at::randn({5, 70}).to(at::kBFloat16);
    at::Tensor got = lb->forward(x);
    EXPECT_EQ(got.scalar_type(), at::kBFloat16);
    at::Tensor exact = at::linear(x.to(at::kDouble), lb->weight.to(at::kDouble), lb->bias.to(at::kDouble));
    EXPECT_LE(max_abs(got.to(at::kDouble) - exact), 1e-2 * max_abs(exact));
  }
  {  // int8: the quantised weights as stored, x quantised per 64-block as in decode.
    at::NoGradGuard ng;
    models::Linear lq(70, 33, true);
    lq->weight.set_data(W.clone());
    lq->bias.set_data(b.clone());
    lq->quantize_int8();
    at::Tensor x = at::randn({6, 70});
    at::Tensor got = lq->forward(x);
    kernels::Int8Matrix q{lq->weight, lq->weight_scale};
    for (int64_t r = 0; r < 6; ++r)
      EXPECT_LE(max_abs(got[r] - (kernels::gemv_int8_reference(q, x[r]) + b)), 1e-4) << r;
    EXPECT_LE(max_abs(got - at::linear(x, W, b)), 0.05 * max_abs(at::linear(x, W, b)));
  }
}
