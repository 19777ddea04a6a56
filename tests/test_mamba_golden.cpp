// Golden parity with Hugging Face transformers (fixtures from dev/make_model_fixtures.py):
// logits, loss and every parameter gradient of small random-weight MambaForCausalLM models,
// through both kernel backends; decoding; save/load round trips.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "io/safetensors.h"
#include "kernels/backend.h"
#include "models/mamba.h"
#include "models/registry.h"
#include "test_util.h"

using namespace mambavl;
namespace fs = std::filesystem;

namespace {
const fs::path kFixtures = MAMBAVL_FIXTURES_DIR;

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

at::Tensor shifted_ce(const at::Tensor& logits, const at::Tensor& ids) {
  const int64_t L = ids.size(1), V = logits.size(2);
  return at::cross_entropy_loss(logits.narrow(1, 0, L - 1).reshape({-1, V}),
                                ids.narrow(1, 1, L - 1).reshape({-1}));
}

struct Case {
  std::string fixture;
  kernels::Backend backend;
};

std::string case_name(const testing::TestParamInfo<Case>& i) {
  std::string s = i.param.fixture + "_" + kernels::backend_name(i.param.backend);
  for (char& c : s)
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.fixture << "/" << kernels::backend_name(c.backend);
}

class MambaGolden : public testing::TestWithParam<Case> {};
}  // namespace

TEST_P(MambaGolden, LogitsLossAndGradientsMatchTransformers) {
  const fs::path dir = kFixtures / GetParam().fixture;
  ASSERT_TRUE(fs::exists(dir / "golden.safetensors")) << "missing fixture " << dir;
  auto model = models::MambaLM::load(dir);
  model->set_backend(GetParam().backend);
  io::SafetensorsFile golden(dir / "golden.safetensors");
  at::Tensor ids = golden.tensor("input_ids");

  at::Tensor logits = model->forward(ids);
  at::Tensor want = golden.tensor("logits");
  ASSERT_EQ(logits.sizes(), want.sizes());
  EXPECT_LE(max_abs(logits - want), 1e-4);

  at::Tensor loss = shifted_ce(logits, ids);
  EXPECT_NEAR(loss.item<double>(), golden.tensor("loss").item<double>(), 1e-5);
  loss.backward();
  int checked = 0;
  for (auto& p : model->module().named_parameters()) {
    const std::string key = "grad." + model->checkpoint_key(p.key());
    ASSERT_TRUE(golden.contains(key)) << "golden has no " << key;
    at::Tensor g_ref = golden.tensor(key).to(at::kFloat);
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    const double rel = max_abs(p.value().grad() - g_ref) / std::max(max_abs(g_ref), 1e-12);
    EXPECT_LE(rel, 1e-3) << p.key();
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

TEST_P(MambaGolden, DecodingReproducesGoldenLogits) {
  const fs::path dir = kFixtures / GetParam().fixture;
  auto model = models::MambaLM::load(dir);
  model->set_backend(GetParam().backend);
  io::SafetensorsFile golden(dir / "golden.safetensors");
  at::Tensor ids = golden.tensor("input_ids");  // [B, L]
  at::Tensor want = golden.tensor("logits");
  at::NoGradGuard ng;
  auto cache = model->make_cache(ids.size(0), ids.size(1));
  std::vector<at::Tensor> parts{model->forward(ids.narrow(1, 0, 4), cache.get())};
  for (int64_t t = 4; t < ids.size(1); ++t)
    parts.push_back(model->forward(ids.narrow(1, t, 1), cache.get()));
  EXPECT_LE(max_abs(at::cat(parts, 1) - want), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MambaGolden,
                         testing::Values(Case{"mamba-tiny", kernels::Backend::Reference},
                                         Case{"mamba-tiny", kernels::Backend::Auto},
                                         Case{"mamba-tiny-bias", kernels::Backend::Reference},
                                         Case{"mamba-tiny-bias", kernels::Backend::Auto},
                                         Case{"mamba-tiny-orig", kernels::Backend::Auto},
                                         Case{"mamba-tiny-sharded", kernels::Backend::Auto},
                                         Case{"mamba-tiny-bf16", kernels::Backend::Auto}),
                         case_name);

TEST(MambaCheckpoint, RegistryDetectsBothLayouts) {
  EXPECT_EQ(models::detect_architecture(kFixtures / "mamba-tiny"), "mamba");
  EXPECT_EQ(models::detect_architecture(kFixtures / "mamba-tiny-orig"), "mamba");
  auto orig = models::MambaLM::load(kFixtures / "mamba-tiny-orig");
  EXPECT_EQ(orig->config().layout, "original");
  EXPECT_EQ(orig->vocab_size() % 8, 0);
}

TEST(MambaCheckpoint, SaveLoadRoundTripInBothLayouts) {
  for (const char* fx : {"mamba-tiny", "mamba-tiny-orig", "mamba-tiny-bias"}) {
    auto a = models::MambaLM::load(kFixtures / fx);
    const fs::path out = fs::temp_directory_path() /
                         ("mambavl_rt_" + std::string(fx) + "_" + std::to_string(getpid()));
    fs::remove_all(out);
    a->save(out);
    auto b = models::MambaLM::load(out);
    EXPECT_EQ(b->config().layout, a->config().layout) << fx;
    EXPECT_EQ(b->config().vocab_size, a->config().vocab_size) << fx;
    io::SafetensorsFile saved(out / "model.safetensors");
    io::SafetensorsFile orig(kFixtures / fx / "model.safetensors");
    EXPECT_EQ(saved.names(), orig.names()) << fx;  // same key set as the source checkpoint
    at::NoGradGuard ng;
    at::Tensor ids = at::randint(0, a->config().unpadded_vocab_size, {1, 9}, at::kLong);
    EXPECT_EQ(max_abs(a->forward(ids) - b->forward(ids)), 0.0) << fx;
    fs::remove_all(out);
  }
}

// Batch-1 decoding goes through the fused step kernel (kernels/mamba_step); it must reproduce
// the golden logits of each sequence, and agree with the generic step forced by the reference
// backend.
TEST(MambaFusedStep, BatchOneDecodeMatchesGoldenAndGenericStep) {
  for (const char* fx : {"mamba-tiny", "mamba-tiny-bias", "mamba-tiny-orig"}) {
    auto model = models::MambaLM::load(kFixtures / fx);
    io::SafetensorsFile golden(kFixtures / fx / "golden.safetensors");
    for (int64_t b = 0; b < 2; ++b) {
      at::Tensor ids = golden.tensor("input_ids").narrow(0, b, 1);  // [1, L]
      at::Tensor want = golden.tensor("logits").narrow(0, b, 1);
      at::NoGradGuard ng;
      auto run = [&](kernels::Backend be) {
        model->set_backend(be);
        auto cache = model->make_cache(1, ids.size(1));
        std::vector<at::Tensor> parts{model->forward(ids.narrow(1, 0, 3), cache.get())};
        for (int64_t t = 3; t < ids.size(1); ++t)
          parts.push_back(model->forward(ids.narrow(1, t, 1), cache.get()));
        return at::cat(parts, 1);
      };
      at::Tensor generic = run(kernels::Backend::Reference);
      testing_util::for_each_kernel_level([&](cpu::Isa) {
        at::Tensor fused = run(kernels::Backend::Auto);
        EXPECT_LE(max_abs(fused - want), 1e-4) << fx;
        EXPECT_LE(max_abs(fused - generic), 1e-4) << fx;
      });
    }
  }
}

TEST(MambaFusedStep, Bfloat16WeightsDecodeCloseToGenericBf16) {
  auto model = models::MambaLM::load(kFixtures / "mamba-tiny-bias");
  model->to_dtype(at::kBFloat16);
  io::SafetensorsFile golden(kFixtures / "mamba-tiny-bias" / "golden.safetensors");
  at::Tensor ids = golden.tensor("input_ids").narrow(0, 0, 1);
  at::NoGradGuard ng;
  auto run = [&](kernels::Backend be) {
    model->set_backend(be);
    auto cache = model->make_cache(1, ids.size(1));
    std::vector<at::Tensor> parts{model->forward(ids.narrow(1, 0, 2), cache.get())};
    for (int64_t t = 2; t < ids.size(1); ++t)
      parts.push_back(model->forward(ids.narrow(1, t, 1), cache.get()));
    return at::cat(parts, 1);
  };
  at::Tensor fused = run(kernels::Backend::Auto), generic = run(kernels::Backend::Reference);
  at::Tensor want = golden.tensor("logits").narrow(0, 0, 1);
  // bf16 weights and activations: both paths stay near the fp32 golden and near each other.
  EXPECT_LE(max_abs(fused - generic), 0.05 * max_abs(want));
  EXPECT_LE(max_abs(fused - want), 0.08 * max_abs(want));
}
