// `mambavl bench lm`: prefill / decode throughput vs context length for named model shapes.
#include "bench_lm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <vector>

#include "bench_load_peak.h"
#include "cli/cli_common.h"
#include "common/error.h"
#include "common/sysinfo.h"
#include "models/attention.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "models/presets.h"

namespace mambavl::bench {
using namespace ::mambavl::sys;

namespace {

// Decode steps run untimed after the prefill, before the timed ones.
constexpr int64_t kWarmupSteps = 4;
constexpr int kGemmRepeats = 5;
using clock = std::chrono::steady_clock;
double secs(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Bytes a decode step reads from the per-sequence caches of all B rows as they stand: an attention
// layer's K and V over the positions written so far, a Mamba layer's conv and SSM states.
double cache_bytes_read(const models::LMCache& cache) {
  const auto* stack = dynamic_cast<const models::LayerStackCache*>(&cache);
  if (stack == nullptr) return 0;
  double bytes = 0;
  for (const auto& layer : stack->layers) {
    if (const auto* kv = dynamic_cast<const models::KVCache*>(layer.get())) {
      if (kv->k.defined() && kv->capacity() > 0)
        bytes += 2.0 * static_cast<double>(kv->k.numel() / kv->capacity() * kv->len) *
                 static_cast<double>(kv->k.element_size());
    } else if (const auto* m = dynamic_cast<const models::MambaLayerCache*>(layer.get())) {
      for (const at::Tensor* t : {&m->conv_state, &m->ssm_state})
        if (t->defined()) bytes += static_cast<double>(t->numel() * t->element_size());
    }
  }
  return bytes;
}

struct LmBenchOptions {
  cli::RuntimeOptions rt;
  std::vector<std::string> models{"mamba-130m", "pythia-160m"};
  std::vector<int64_t> contexts{512, 2048, 4096};
  std::vector<int64_t> batches{1};
  int64_t steps = 64;
  int64_t prefill_repeats = 3;  // prefills per point, the best reported (as the GEMM bound's best)
  double bandwidth_gbs = 0;     // 0 = measure now
  int busy = 0;                 // busy-loop processes beside the measurement (contention)
  bool load_peak = false;       // also the peak memory of loading each model from a folder
};

// `n` child processes spinning until the guard ends (killed): another program busy on the cores.
struct BusyLoops {
  std::vector<pid_t> pids;
  explicit BusyLoops(int n) {
    for (int i = 0; i < n; ++i) {
      const pid_t p = fork();
      MVL_CHECK(p >= 0, "bench lm --busy: fork failed");
      if (p == 0) {
        volatile uint64_t x = 0;
        for (;;) x = x + 1;
      }
      pids.push_back(p);
    }
  }
  ~BusyLoops() {
    for (pid_t p : pids) kill(p, SIGKILL);
    for (pid_t p : pids) waitpid(p, nullptr, 0);
  }
};

void run(const LmBenchOptions& o) {
  cli::apply_runtime_options(o.rt);
  std::printf("bench lm: %s, dtype %s, %lld decode steps per point\n", machine_summary().c_str(),
              o.rt.dtype.c_str(), static_cast<long long>(o.steps));
  const double bw = o.bandwidth_gbs > 0 ? o.bandwidth_gbs : measure_read_bandwidth_gbs();
  // The GEMM rate: best of kGemmRepeats products (a low outlier would inflate the prefill share).
  const double gflops = measure_gemm_gflops(1024, 768, 3072, kGemmRepeats);
  // The bounds are measured on the quiet machine; with --busy the same bounds show what is lost.
  BusyLoops busy(o.busy);
  if (o.busy > 0)
    std::printf("contention: %d busy-loop process(es) running beside the measurements\n", o.busy);
  std::printf("measured now: read bandwidth %.1f GB/s, fp32 GEMM %.1f GFLOP/s (1024x768x3072)\n",
              bw, gflops);
  std::printf(
      "bounds: decode step <= bandwidth / (weight bytes + cache bytes read per step: K/V at the "
      "context, SSM states); prefill <= GEMM rate / matmul FLOPs per token (the weights' and "
      "attention's q.k and p.v over the causal mean of (context + 1) / 2 keys), the GEMM rate "
      "(GEMM GF/s, best of %d) measured again before each point's prefills (best of %lld)\n",
      kGemmRepeats, static_cast<long long>(o.prefill_repeats));
  std::printf("%-12s %8s %6s %12s %9s %9s %12s %9s %12s %9s %10s\n", "model", "context", "batch",
              "prefill t/s", "% bound", "GEMM GF/s", "decode t/s", "% bound", "ms/step", "cache MB",
              "peak MB");
  for (const auto& name : o.models) {
    auto model = models::make_preset(name, 0);
    if (o.rt.dtype == "bf16") model->to_dtype(at::kBFloat16);
    if (o.rt.dtype == "int8") model->quantize_int8();
    // Decode reads every weight once per token, except an input embedding table of its own (not
    // tied to the head): of that, one row per token.
    int64_t weight_bytes = 0, matmul_params = 0, weights_total = 0, vocab_matrices = 0;
    for (auto& p : model->module().named_parameters())
      vocab_matrices += p.value().dim() == 2 && p.value().size(0) == model->vocab_size();
    std::vector<std::pair<std::string, at::Tensor>> weights;
    for (auto& p : model->module().named_parameters()) weights.emplace_back(p.key(), p.value());
    for (auto& b : model->module().named_buffers()) weights.emplace_back(b.key(), b.value());
    for (auto& p : weights) {
      const int64_t bytes = p.second.numel() * p.second.element_size();
      weights_total += bytes;
      const at::Tensor& t = p.second;
      const bool input_table = vocab_matrices > 1 && t.dim() == 2 &&
                               t.size(0) == model->vocab_size() &&
                               (p.first.find("embed_in") != std::string::npos ||
                                p.first.find("embeddings") != std::string::npos ||
                                p.first.find("embedding.") != std::string::npos);
      weight_bytes += input_table ? bytes / model->vocab_size() : bytes;
      // Prefill with last-position logits applies every matrix per token except the [V, H]
      // embedding / head matrices (a lookup, and one head row-block for the last position).
      const bool vocab_matrix = t.dim() == 2 && t.size(0) == model->vocab_size();
      if (t.dim() >= 2 && !vocab_matrix) matmul_params += t.numel();
    }
    // Attention's own products (q . k and p . v, 2 FLOPs per multiply-add each): per query and
    // attention layer 4 * heads * head_dim FLOPs per key it sees. A causal prefill of C tokens
    // sees (C + 1) / 2 keys per query on average; a decode step at context C sees C + 1.
    double attn_width = 0;  // sum over the attention layers of heads * head_dim
    for (const auto& m : model->module().modules()) {
      if (auto* a = dynamic_cast<const models::GPTNeoXAttentionImpl*>(m.get()))
        attn_width += static_cast<double>(a->core.num_heads * a->core.head_dim);
      if (auto* a = dynamic_cast<const models::HybridAttentionImpl*>(m.get()))
        attn_width += static_cast<double>(a->core.num_heads * a->core.head_dim);
    }
    auto prefill_flops = [&](int64_t ctx) {  // per token
      return 2.0 * static_cast<double>(matmul_params) +
             2.0 * attn_width * static_cast<double>(ctx + 1);
    };
    auto decode_flops = [&](int64_t ctx) {
      return 2.0 * static_cast<double>(matmul_params) +
             4.0 * attn_width * static_cast<double>(ctx + 1);
    };
    const double flops_per_token = 2.0 * static_cast<double>(matmul_params);
    const double prefill_bound = gflops * 1e9 / flops_per_token;
    const double bound = bw * 1e9 / static_cast<double>(weight_bytes);
    c10::InferenceMode guard;
    {  // warm-up (first-touch of weights, thread pool, oneDNN/MKL init)
      auto cache = model->make_cache(1, 17);  // 16 prompt tokens + 1 step
      model->forward(at::randint(0, 100, {1, 16}, at::kLong), cache.get(), true);
      model->forward(at::zeros({1, 1}, at::kLong), cache.get(), true);
    }
    for (int64_t ctx : o.contexts) {
      for (int64_t B : o.batches) {
        at::manual_seed(ctx);
        at::Tensor ids = at::randint(0, model->vocab_size(), {B, ctx}, at::kLong);
        reset_peak_rss();
        // The GEMM bound again just before this point's prefills (the machine's clock moves between
        // points); under --busy the quiet machine's bound stays.
        const double point_gflops =
            o.busy > 0 ? gflops : measure_gemm_gflops(1024, 768, 3072, kGemmRepeats);
        const double point_prefill_bound = point_gflops * 1e9 / prefill_flops(ctx);
        // Best of prefill_repeats prefills, each into a fresh cache; decode continues the last.
        std::unique_ptr<models::LMCache> cache;
        at::Tensor logits;
        double prefill_s = 0;
        for (int64_t r = 0; r < o.prefill_repeats; ++r) {
          cache = model->make_cache(B, ctx + kWarmupSteps + o.steps + 1);
          const auto t0 = clock::now();
          logits = model->forward(ids, cache.get(), /*last_only=*/true);  // [B, 1, V]
          const double sec = secs(t0, clock::now());
          prefill_s = r == 0 ? sec : std::min(prefill_s, sec);
        }
        // Untimed first steps: the decode path's one-time set-up (step buffers, first touch).
        for (int64_t s = 0; s < kWarmupSteps; ++s)
          logits = model->forward(logits.argmax(-1).view({B, 1}), cache.get(), true);
        const double cache_first = cache_bytes_read(*cache);
        const auto t1 = clock::now();
        for (int64_t s = 0; s < o.steps; ++s) {
          at::Tensor step = logits.argmax(-1).view({B, 1});
          logits = model->forward(step, cache.get(), true);
        }
        auto t2 = clock::now();
        const double dec = secs(t1, t2) / static_cast<double>(o.steps);  // seconds per step
        const double pre = static_cast<double>(B * ctx) / prefill_s;
        // A step of B sequences reads the weights once and each row's cache: the mean over the
        // timed steps (the K/V read grows by one position a step).
        const double cache_bytes = 0.5 * (cache_first + cache_bytes_read(*cache));
        const double step_bound = bw * 1e9 / (static_cast<double>(weight_bytes) + cache_bytes);
        const double dec_bound =
            std::min(static_cast<double>(B) * step_bound, point_gflops * 1e9 / decode_flops(ctx));
        const double dec_tps = static_cast<double>(B) / dec;
        std::printf("%-12s %8lld %6lld %12.1f %8.0f%% %9.0f %12.1f %8.0f%% %12.2f %9.2f %10.0f\n",
                    name.c_str(), static_cast<long long>(ctx), static_cast<long long>(B), pre,
                    100 * pre / point_prefill_bound, point_gflops, dec_tps,
                    100 * dec_tps / dec_bound, dec * 1e3, cache_bytes / 1e6,
                    peak_rss_bytes() / 1e6);
        std::fflush(stdout);
      }
    }
    std::printf(
        "%-12s weights %.1f MB (%.1f MB read per decoded token, plus the cache): decode bound "
        "without the cache %.1f tok/s, prefill bound %.0f tok/s at the first GEMM rate without "
        "attention's products\n",
        name.c_str(), weights_total / 1e6, weight_bytes / 1e6, bound, prefill_bound);
    for (int64_t ctx : o.contexts)
      std::printf(
          "%-12s prefill FLOPs per token at context %lld: %.3f M (weights %.3f M + "
          "attention products %.3f M)\n",
          name.c_str(), static_cast<long long>(ctx), prefill_flops(ctx) / 1e6,
          flops_per_token / 1e6, (prefill_flops(ctx) - flops_per_token) / 1e6);
    if (o.load_peak) print_load_peak(name, *model, o.rt.dtype, o.rt.threads);
  }
}
}  // namespace

void add_lm_bench(CLI::App& bench) {
  auto o = std::make_shared<LmBenchOptions>();
  auto* c =
      bench.add_subcommand("lm", "Prefill and decode tokens/s vs context length (random weights)");
  c->add_option("--models", o->models, "Model shapes: " + join(models::preset_names()))
      ->delimiter(',');
  c->add_option("--contexts", o->contexts, "Context lengths")->delimiter(',');
  c->add_option(
       "--batches", o->batches,
       "Batch sizes (decode tokens/s counts every sequence; a step reads the weights once)")
      ->delimiter(',')
      ->check(CLI::Range(1, 64));
  c->add_option(
       "--steps", o->steps,
       "Decode steps timed per context (after " + std::to_string(kWarmupSteps) + " untimed ones)")
      ->check(cli::Positive);
  c->add_option("--prefill-repeats", o->prefill_repeats,
                "Prefills per point, each into a fresh cache; the best is reported (the GEMM "
                "bound is the best of its repeats too)")
      ->check(cli::Positive);
  c->add_option("--bandwidth", o->bandwidth_gbs,
                "Memory bandwidth (GB/s) for the decode bound (default: measured in this run)");
  c->add_option("--busy", o->busy,
                "Run N busy-loop processes beside the measurements (decode under contention; the "
                "bounds are measured before they start)")
      ->check(CLI::Range(0, 64));
  c->add_flag("--load-peak", o->load_peak,
              "Also the peak memory of `perplexity` loading each model from a folder (writes the "
              "weights to a temporary folder: GBs for the big shapes)");
  cli::add_runtime_options(*c, o->rt, /*int8=*/true);
  c->callback([o]() { run(*o); });
}

}  // namespace mambavl::bench
