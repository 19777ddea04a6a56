// `mambavl bench lm`: prefill / decode throughput vs context length for named model shapes.
#include "bench_lm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>

#include "cli_common.h"
#include "common/error.h"
#include "models/presets.h"
#include "sysinfo.h"

namespace mambavl::bench {

namespace {
using clock = std::chrono::steady_clock;
double secs(clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

struct LmBenchOptions {
  cli::RuntimeOptions rt;
  std::vector<std::string> models{"mamba-130m"};
  std::vector<int64_t> contexts{512, 4096};
  int64_t steps = 64;
  double bandwidth_gbs = 45.0;
};

void run(const LmBenchOptions& o) {
  cli::apply_runtime_options(o.rt);
  std::printf("bench lm: %s, dtype %s, %lld decode steps per point\n", machine_summary().c_str(),
              o.rt.dtype.c_str(), static_cast<long long>(o.steps));
  std::printf("%-12s %8s %12s %12s %12s %14s %12s\n", "model", "context", "prefill t/s", "decode t/s",
              "decode ms/t", "bound t/s", "peak MB");
  for (const auto& name : o.models) {
    auto model = models::make_preset(name, 0);
    if (o.rt.dtype == "bf16") model->to_dtype(at::kBFloat16);
    int64_t weight_bytes = 0;
    for (auto& p : model->module().parameters()) weight_bytes += p.numel() * p.element_size();
    const double bound = o.bandwidth_gbs * 1e9 / static_cast<double>(weight_bytes);
    c10::InferenceMode guard;
    {  // warm-up (first-touch of weights, thread pool, oneDNN/MKL init)
      auto cache = model->make_cache(1, 17);  // 16 prompt tokens + 1 step
      model->forward(at::randint(0, 100, {1, 16}, at::kLong), cache.get(), true);
      model->forward(at::zeros({1, 1}, at::kLong), cache.get(), true);
    }
    for (int64_t ctx : o.contexts) {
      at::manual_seed(ctx);
      at::Tensor ids = at::randint(0, model->vocab_size(), {1, ctx}, at::kLong);
      reset_peak_rss();
      auto cache = model->make_cache(1, ctx + o.steps + 1);
      auto t0 = clock::now();
      at::Tensor logits = model->forward(ids, cache.get(), /*last_only=*/true);
      auto t1 = clock::now();
      at::Tensor step = at::zeros({1, 1}, at::kLong);
      for (int64_t s = 0; s < o.steps; ++s) {
        step.fill_(logits.view({-1}).argmax().item<int64_t>());
        logits = model->forward(step, cache.get(), true);
      }
      auto t2 = clock::now();
      const double dec = secs(t1, t2) / static_cast<double>(o.steps);
      std::printf("%-12s %8lld %12.1f %12.1f %12.2f %14.1f %12.0f\n", name.c_str(),
                  static_cast<long long>(ctx), ctx / secs(t0, t1), 1.0 / dec, dec * 1e3, bound,
                  peak_rss_bytes() / 1e6);
      std::fflush(stdout);
    }
    std::printf("%-12s weights %.1f MB; 'bound' = %.0f GB/s / weight bytes per token\n", name.c_str(),
                weight_bytes / 1e6, o.bandwidth_gbs);
  }
}
}  // namespace

void add_lm_bench(CLI::App& bench) {
  auto o = std::make_shared<LmBenchOptions>();
  auto* c = bench.add_subcommand("lm", "Prefill and decode tokens/s vs context length (random weights)");
  c->add_option("--models", o->models, "Model shapes: " + join(models::preset_names()))->delimiter(',');
  c->add_option("--contexts", o->contexts, "Context lengths")->delimiter(',');
  c->add_option("--steps", o->steps, "Decode steps timed per context")->check(CLI::PositiveNumber);
  c->add_option("--bandwidth", o->bandwidth_gbs, "Memory bandwidth (GB/s) for the decode bound");
  cli::add_runtime_options(*c, o->rt);
  c->callback([o]() { run(*o); });
}

}  // namespace mambavl::bench
