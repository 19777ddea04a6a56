// `mambavl bench attention`: the fused CPU attention over many queries
// (kernels/attention_prefill.h) against LibTorch's scaled_dot_product_attention as the models
// called it before (q, k, v as views of one [B, L, H, 3 * hd] projection, SDPA on [B, H, L, hd],
// the context copied back to [B, L, H * hd]), side by side on the same inputs, with the fp32 GEMM
// rate measured in the same run: each path's GFLOP/s counts the q.k and p.v products (4 * hd FLOPs
// per query, head and key seen; causal: keys 0 .. i for query i).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"
#include "cli/cli_common.h"
#include "common/error.h"
#include "common/sysinfo.h"
#include "kernels/attention_prefill.h"

namespace mambavl::bench {

namespace {

struct AttentionBenchOpts {
  int64_t batch = 1, heads = 12, head_dim = 64;
  std::vector<int64_t> lens{197, 512, 2048};
  bool full = false;  // every query sees every key (encoders); default causal (prefill)
  int repeats = 10, threads = 0;
};

// Best wall time of f() in ms over `repeats` runs after one warm-up run.
template <class F>
double best_ms(F&& f, int repeats) {
  f();
  double best = 1e300;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(
        best,
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void run_attention_bench(const AttentionBenchOpts& o) {
  MVL_CHECK(o.batch > 0 && o.heads > 0 && o.repeats > 0 && !o.lens.empty(),
            "bench attention: --batch, --heads, --repeats and --lens must be positive / given");
  MVL_CHECK(o.head_dim > 0 && o.head_dim % 16 == 0 && o.head_dim <= 512,
            "bench attention: --head-dim must be a positive multiple of 16, at most 512 (what the "
            "fused kernel takes; got ",
            o.head_dim, ")");
  for (int64_t L : o.lens)
    MVL_CHECK(L > 0 && L <= 65536, "bench attention: each of --lens must be in [1, 65536], got ",
              L);
  if (o.threads > 0) at::set_num_threads(o.threads);
  c10::InferenceMode guard;
  const double gemm = sys::measure_gemm_gflops(1024, 768, 3072, 5);
  std::printf(
      "bench attention: B=%lld H=%lld head_dim=%lld %s, threads %d, best of %d; fp32 GEMM %.1f "
      "GFLOP/s (1024x768x3072, measured now)\n",
      static_cast<long long>(o.batch), static_cast<long long>(o.heads),
      static_cast<long long>(o.head_dim), o.full ? "full (every key)" : "causal",
      at::get_num_threads(), o.repeats, gemm);
  std::printf("%8s %12s %10s %8s %12s %10s %8s %9s %10s\n", "L", "fused ms", "GF/s", "% GEMM",
              "SDPA ms", "GF/s", "% GEMM", "speed-up", "max |diff|");
  const int64_t B = o.batch, H = o.heads, hd = o.head_dim;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int64_t L : o.lens) {
    at::Tensor qkv = at::randn({B, L, H, 3 * hd});  // [B, L, H, 3*hd]
    at::Tensor q = qkv.narrow(-1, 0, hd), k = qkv.narrow(-1, hd, hd),
               v = qkv.narrow(-1, 2 * hd, hd);
    at::Tensor fused, sdpa;
    const double t_fused = best_ms(
        [&] {
          fused = kernels::attention_prefill(q, k, v, !o.full, 0, scale).view({B, L, H * hd});
        },
        o.repeats);
    const double t_sdpa = best_ms(
        [&] {
          at::Tensor ctx = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                            v.transpose(1, 2), {}, 0.0, !o.full);
          sdpa = ctx.transpose(1, 2).reshape({B, L, H * hd});  // [B, L, H*hd]
        },
        o.repeats);
    const double keys =
        o.full ? static_cast<double>(L) * L : 0.5 * static_cast<double>(L) * (L + 1);
    const double flops = 4.0 * static_cast<double>(B * H * hd) * keys;
    const double gf_fused = flops / (t_fused * 1e6), gf_sdpa = flops / (t_sdpa * 1e6);
    std::printf("%8lld %12.3f %10.1f %7.0f%% %12.3f %10.1f %7.0f%% %8.2fx %10.2e\n",
                static_cast<long long>(L), t_fused, gf_fused, 100 * gf_fused / gemm, t_sdpa,
                gf_sdpa, 100 * gf_sdpa / gemm, t_sdpa / t_fused,
                (fused - sdpa).abs().max().item<double>());
    std::fflush(stdout);
  }
}

}  // namespace

void add_attention_bench(CLI::App& bench) {
  auto o = std::make_shared<AttentionBenchOpts>();
  CLI::App* sub = bench.add_subcommand(
      "attention", "prefill / encoder attention: the fused CPU kernel vs LibTorch's SDPA");
  sub->add_option("--batch", o->batch, "batch size B")->capture_default_str();
  sub->add_option("--heads", o->heads, "attention heads H")->capture_default_str();
  sub->add_option("--head-dim", o->head_dim, "head size (a multiple of 16)")->capture_default_str();
  sub->add_option("--lens", o->lens, "sequence lengths (queries = keys)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_flag("--full", o->full, "every query sees every key (a ViT); default causal");
  sub->add_option("--repeats", o->repeats, "timed runs (the best reported)")->capture_default_str();
  cli::add_threads_option(*sub, o->threads, "intra-op threads (0: LibTorch default)")
      ->capture_default_str();
  sub->callback([o] { run_attention_bench(*o); });
}

}  // namespace mambavl::bench
