// The fused CPU attention over many queries (kernels/attention_prefill.h) against LibTorch's
// scaled_dot_product_attention at every kernel level: causal and full, queries after a cached
// prefix, grouped KV heads, strided views (a fused QKV projection, a KV cache), head sizes that
// take every tile width, blocks of queries and keys cut anywhere, large scores; the refusals; and
// the models that use it (GPT-NeoX, a hybrid stack, a ViT) against their reference backend.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "kernels/attention_prefill.h"
#include "kernels/backend.h"
#include "models/lm.h"
#include "models/presets.h"
#include "models/vit.h"
#include "test_util.h"

using namespace mambavl;
using testing_util::close;
using testing_util::error_of;

namespace {

// The reference: SDPA on [B, H, L, hd] with the mask spelled out (query i at position off + i
// sees keys j <= off + i when causal), KV heads repeated for grouped queries.
at::Tensor reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                     int64_t off) {
  const int64_t Lq = q.size(1), Lk = k.size(1), group = q.size(2) / k.size(2);
  at::Tensor qt = q.transpose(1, 2).to(at::kDouble);
  at::Tensor kt = k.transpose(1, 2).repeat_interleave(group, 1).to(at::kDouble);
  at::Tensor vt = v.transpose(1, 2).repeat_interleave(group, 1).to(at::kDouble);
  std::optional<at::Tensor> mask;
  if (causal)
    mask = at::arange(Lk).unsqueeze(0) <= (at::arange(Lq) + off).unsqueeze(1);  // [Lq, Lk]
  at::Tensor o = at::scaled_dot_product_attention(qt, kt, vt, mask, 0.0, false);
  return o.transpose(1, 2).to(at::kFloat);  // [B, Lq, H, hd]
}

struct Case {
  int64_t B, Lq, Lk, H, Hkv, hd;
  bool causal;
};

}  // namespace

TEST(AttentionPrefill, MatchesSdpaAtEveryLevel) {
  at::NoGradGuard ng;
  // Lq / Lk across the 64-query and 256-key blocks and the tiles; hd 16 .. 128 takes the 1-, 2-,
  // 3- and 4-vector output tiles; causal cases with Lk > Lq have a cached prefix (q_offset).
  const std::vector<Case> cases = {
      {1, 2, 2, 1, 1, 16, true},     {1, 5, 5, 2, 2, 64, true},      {2, 64, 64, 3, 3, 32, true},
      {1, 70, 70, 2, 1, 48, true},   {1, 300, 300, 2, 2, 64, true},  {2, 33, 97, 4, 2, 80, true},
      {1, 3, 520, 2, 2, 16, true},   {1, 129, 129, 1, 1, 128, true}, {1, 17, 17, 12, 12, 64, false},
      {2, 65, 300, 4, 1, 64, false}, {1, 7, 3, 2, 2, 16, false},
  };
  testing_util::for_each_kernel_level([&](cpu::Isa) {
    for (const Case& c : cases) {
      SCOPED_TRACE(::testing::Message()
                   << "B " << c.B << " Lq " << c.Lq << " Lk " << c.Lk << " H " << c.H << "/"
                   << c.Hkv << " hd " << c.hd << " causal " << c.causal);
      at::manual_seed(c.Lq * 131 + c.hd);
      at::Tensor q = at::randn({c.B, c.Lq, c.H, c.hd});
      at::Tensor k = at::randn({c.B, c.Lk, c.Hkv, c.hd});
      at::Tensor v = at::randn({c.B, c.Lk, c.Hkv, c.hd});
      const int64_t off = c.causal ? c.Lk - c.Lq : 0;
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.hd));
      at::Tensor got = kernels::attention_prefill(q, k, v, c.causal, off, scale);
      ASSERT_TRUE(got.is_contiguous());
      EXPECT_TRUE(close(got, reference(q, k, v, c.causal, off), 1e-5, 1e-5));
    }
  });
}

TEST(AttentionPrefill, ReadsStridedViewsInPlace) {
  at::NoGradGuard ng;
  testing_util::for_each_kernel_level([&](cpu::Isa) {
    // q, k, v as views of one fused projection [B, L, H, 3 * hd] (GPT-NeoX's layout)...
    const int64_t B = 2, L = 90, H = 3, hd = 32;
    at::Tensor qkv = at::randn({B, L, H, 3 * hd});
    at::Tensor q = qkv.narrow(-1, 0, hd), k = qkv.narrow(-1, hd, hd),
               v = qkv.narrow(-1, 2 * hd, hd);
    const double s = 1.0 / std::sqrt(static_cast<double>(hd));
    EXPECT_TRUE(close(kernels::attention_prefill(q, k, v, true, 0, s),
                      reference(q.contiguous(), k.contiguous(), v.contiguous(), true, 0), 1e-5,
                      1e-5));
    // ... and keys from a cache [B, Hkv, capacity, hd] with room past the written positions.
    at::Tensor kc = at::randn({B, H, 200, hd}), vc = at::randn({B, H, 200, hd});
    at::Tensor keys = kc.narrow(2, 0, 150).transpose(1, 2),
               values = vc.narrow(2, 0, 150).transpose(1, 2);
    at::Tensor qs = q.narrow(1, 0, 60);
    EXPECT_TRUE(close(kernels::attention_prefill(qs, keys, values, true, 90, s),
                      reference(qs.contiguous(), keys.contiguous(), values.contiguous(), true, 90),
                      1e-5, 1e-5));
  });
}

TEST(AttentionPrefill, LargeScoresStayFinite) {
  at::NoGradGuard ng;
  // Scores of several hundred (the max is taken per block of keys, then rescaled): no overflow.
  // fp32 scores of that size carry absolute errors of ~1e-4 (vs the fp64 reference), hence 2e-3.
  testing_util::for_each_kernel_level([&](cpu::Isa) {
    at::manual_seed(11);
    at::Tensor q = at::randn({1, 80, 2, 16}) * 30, k = at::randn({1, 600, 2, 16}) * 3;
    at::Tensor v = at::randn({1, 600, 2, 16});
    at::Tensor got = kernels::attention_prefill(q, k, v, true, 520, 1.0);
    ASSERT_TRUE(at::isfinite(got).all().item<bool>());
    EXPECT_TRUE(close(got, reference(q * 4.0, k, v, true, 520), 2e-3, 2e-3));
  });
}

TEST(AttentionPrefill, RefusesWhatItDoesNotTake) {
  at::NoGradGuard ng;
  const at::Tensor q = at::randn({1, 4, 2, 16}), k = at::randn({1, 4, 2, 16});
  EXPECT_TRUE(kernels::attention_prefill_supported(q, k, k));
  const at::Tensor q24 = at::randn({1, 4, 2, 24}), k24 = at::randn({1, 4, 2, 24});
  EXPECT_FALSE(kernels::attention_prefill_supported(q24, k24, k24));  // head_dim 24
  EXPECT_FALSE(kernels::attention_prefill_supported(q.to(at::kBFloat16), k, k));
  EXPECT_FALSE(kernels::attention_prefill_supported(q, at::randn({1, 4, 3, 16}), k));  // 2 vs 3
  EXPECT_FALSE(kernels::attention_prefill_supported(q.transpose(2, 3).contiguous().transpose(2, 3),
                                                    k, k));  // strided features
  EXPECT_NE(error_of([&] {
              kernels::attention_prefill(q24, k24, k24, true, 0, 1.0);
            }).find("head_dim must be a positive multiple of 16"),
            std::string::npos);
  // Causal queries at positions 2 .. 5 need 6 keys.
  EXPECT_NE(error_of([&] {
              kernels::attention_prefill(q, k, k, true, 2, 1.0);
            }).find("need as many keys"),
            std::string::npos);
  // The models' switch: not under autograd, not with the reference backend.
  EXPECT_TRUE(kernels::use_attention_prefill(q, k, k));
  {
    at::AutoGradMode grad(true);
    EXPECT_FALSE(kernels::use_attention_prefill(q, k, k));
  }
  const kernels::Backend saved = kernels::default_backend();
  kernels::set_default_backend(kernels::Backend::Reference);
  EXPECT_FALSE(kernels::use_attention_prefill(q, k, k));
  kernels::set_default_backend(saved);
}

namespace {

// Logits of a prefill of `ids` in one piece and in two chunks (the second after a cached prefix),
// with the current default backend.
std::pair<at::Tensor, at::Tensor> prefill_logits(models::CausalLM& m, const at::Tensor& ids,
                                                 int64_t split) {
  at::Tensor whole = m.forward(ids);
  auto cache = m.make_cache(ids.size(0), ids.size(1));
  at::Tensor a = m.forward(ids.narrow(1, 0, split), cache.get());
  at::Tensor b = m.forward(ids.narrow(1, split, ids.size(1) - split), cache.get());
  return {whole, at::cat({a, b}, 1)};
}

void expect_model_matches_reference(const std::string& preset) {
  SCOPED_TRACE(preset);
  auto m = models::make_preset(preset, 7);
  at::NoGradGuard ng;
  at::Tensor ids = at::randint(0, m->vocab_size(), {2, 75}, at::kLong);
  auto [whole, chunked] = prefill_logits(*m, ids, 30);
  const kernels::Backend saved = kernels::default_backend();
  kernels::set_default_backend(kernels::Backend::Reference);  // SDPA (and every op-by-op path)
  auto [ref_whole, ref_chunked] = prefill_logits(*m, ids, 30);
  kernels::set_default_backend(saved);
  EXPECT_TRUE(close(whole, ref_whole, 1e-4, 1e-4));
  EXPECT_TRUE(close(chunked, ref_whole, 1e-4, 1e-4));
  EXPECT_TRUE(close(ref_chunked, ref_whole, 1e-4, 1e-4));
}

}  // namespace

TEST(AttentionPrefill, GptNeoxPrefillMatchesTheReferenceBackend) {
  // pythia-tiny: head_dim 16, so its attention takes the fused kernel.
  expect_model_matches_reference("pythia-tiny");
}

TEST(AttentionPrefill, HybridPrefillMatchesTheReferenceBackend) {
  expect_model_matches_reference("hybrid-tiny");  // attention layers with head_dim 64
}

TEST(AttentionPrefill, VitEncoderMatchesTheReferenceBackend) {
  auto enc = models::make_vit_encoder_preset("clip-vit-b16", 64, 3);  // 16 patches + class token
  at::NoGradGuard ng;
  at::Tensor images = at::randn({2, 3, 64, 64});
  const auto sel = models::FeatureSelect::parse(1, "patch");
  at::Tensor got = enc->encode(images, sel).tokens;
  const kernels::Backend saved = kernels::default_backend();
  kernels::set_default_backend(kernels::Backend::Reference);
  at::Tensor want = enc->encode(images, sel).tokens;
  kernels::set_default_backend(saved);
  EXPECT_TRUE(close(got, want, 1e-4, 1e-4));
}
