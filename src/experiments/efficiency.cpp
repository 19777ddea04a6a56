// `mambavl experiment efficiency` (SPEC §4): prefill time and peak memory vs sequence length, and
// decode ms/token vs context length, for a Mamba, a Pythia (GPT-NeoX) and a hybrid (Mamba stack
// with a few attention layers) language model of about equal size, with random weights, and
// power-law fits (y = c * x^e) of every curve. The claims it tests: Mamba prefill is linear and
// its decode step is flat in the context; attention's decode step grows with the context (its KV
// cache), its prefill is super-linear (quadratic attention FLOPs).
//
// Method, per variant, per repeat r (= seed index, 0 .. seeds-1), per length L in increasing
// order:
//   1. free memory the allocator holds is handed back to the OS (tcmalloc / glibc), the RSS is
//      read and the peak RSS reset (/proc/self/clear_refs);
//   2. a decode cache for L + steps + 1 tokens is made and the L-token prompt (random ids, seeded
//      by r and L) is prefilled (forward, last-position logits, inference mode): its wall time is
//      the first prefill time, and (peak RSS - RSS before) its peak memory;
//   3. one untimed decode step, then `steps` greedy decode steps from that cache, each timed:
//      decode ms/token at context C = L is their median (robust to preemption);
//   4. while the prefills of this point have taken less than `min_point_s` in total (short L),
//      the prefill is repeated (fresh cache) up to `max_inner` times: prefill_ms is the best.
// Every result reads a scalar back from the output, so the timings are synchronous on CUDA too.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "common/error.h"
#include "common/sysinfo.h"
#include "experiments/experiment.h"
#include "models/gpt_neox.h"
#include "models/lm.h"
#include "models/mamba.h"
#include "models/registry.h"

// gperftools' C API (libtcmalloc_minimal, linked into the CLI): weak, so it is null when the
// process runs on another allocator (e.g. the test executables).
extern "C" void MallocExtension_ReleaseFreeMemory(void) __attribute__((weak));

namespace mambavl::experiments {

namespace {

const char* kName = "efficiency";
using clock_type = std::chrono::steady_clock;
constexpr int kPauseMs = 50;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The shapes and lengths of one scale. Hidden sizes are shared by the three variants; the layer
// counts make the non-embedding parameters about equal (per layer: Mamba ~6.25 d^2, a Pythia
// layer 12 d^2, a hybrid attention layer 4 d^2).
struct ScaleSpec {
  // Mamba / hybrid stack
  int64_t d_model, mamba_layers;
  std::vector<int64_t> hybrid_attn_layers;
  int64_t hybrid_heads, hybrid_rotary;
  // Pythia
  int64_t neox_hidden, neox_layers, neox_heads;
  int64_t vocab;  // the Mamba vocabulary; Pythia's is padded as its presets (multiple of 128)
  std::vector<int64_t> lengths;  // prefill lengths = decode contexts, increasing
  int64_t decode_steps;
  double min_point_s;    // repeat a point's prefill while the total is below this
  int max_inner;         // at most this many prefills per point
  double max_prefill_s;  // skip longer lengths whose predicted prefill exceeds this (0 = never)
  std::string shapes;    // for the notes
};

ScaleSpec scale_spec(const std::string& scale) {
  if (scale == "micro")
    return {.d_model = 64,
            .mamba_layers = 4,
            .hybrid_attn_layers = {1},
            .hybrid_heads = 4,
            .hybrid_rotary = 16,
            .neox_hidden = 64,
            .neox_layers = 2,
            .neox_heads = 4,
            .vocab = 256,
            .lengths = {32, 64, 128, 256},
            .decode_steps = 4,
            .min_point_s = 0,
            .max_inner = 1,
            .max_prefill_s = 0,
            .shapes =
                "micro: d 64; Mamba 4 layers, hybrid 4 layers (layer 1 attention, 4 heads), "
                "Pythia 2 layers (4 heads)"};
  if (scale == "tiny")
    // The tiny LMs of the VLM experiments (vlm_presets.cpp: tiny-mamba / tiny-pythia /
    // tiny-hybrid): d 256 is small enough that attention's L^2 term (2 d L FLOPs per token and
    // layer, causal) overtakes its matmuls (24 d^2) from L ~ 3k, so both regimes show within
    // 8192 tokens, in about half a minute of CPU time per repeat on one thread.
    return {.d_model = 256,
            .mamba_layers = 8,
            .hybrid_attn_layers = {3},
            .hybrid_heads = 4,
            .hybrid_rotary = 32,
            .neox_hidden = 256,
            .neox_layers = 4,
            .neox_heads = 4,
            .vocab = 1024,
            .lengths = {128, 256, 512, 1024, 2048, 4096, 8192},
            .decode_steps = 128,
            .min_point_s = 1.5,
            .max_inner = 3,
            .max_prefill_s = 20,
            .shapes =
                "tiny (= the VLM experiments' tiny LMs): d 256; Mamba 8 layers, hybrid 8 "
                "layers (layer 3 attention, 4 heads), Pythia 4 layers (4 heads)"};
  if (scale == "small")
    // mamba-130m vs pythia-160m; the hybrid: mamba-130m with layers 3, 11, 19 attention (1:7).
    return {.d_model = 768,
            .mamba_layers = 24,
            .hybrid_attn_layers = {3, 11, 19},
            .hybrid_heads = 12,
            .hybrid_rotary = 32,
            .neox_hidden = 768,
            .neox_layers = 12,
            .neox_heads = 12,
            .vocab = 50280,
            .lengths = {256, 512, 1024, 2048, 4096, 8192, 16384},
            .decode_steps = 32,
            .min_point_s = 0.2,
            .max_inner = 3,
            .max_prefill_s = 120,
            .shapes =
                "small: mamba-130m (24 x 768), pythia-160m (12 x 768, 12 heads), hybrid = "
                "mamba-130m with layers 3, 11, 19 attention (12 heads)"};
  MVL_CHECK(scale == "paper", "experiment efficiency: unknown scale '", scale, "'");
  // mamba-790m vs pythia-1b (the Shaking-Up comparison); the hybrid: mamba-790m with 6 of 48
  // layers attention (1:7).
  return {.d_model = 1536,
          .mamba_layers = 48,
          .hybrid_attn_layers = {3, 11, 19, 27, 35, 43},
          .hybrid_heads = 12,
          .hybrid_rotary = 64,
          .neox_hidden = 2048,
          .neox_layers = 16,
          .neox_heads = 8,
          .vocab = 50280,
          .lengths = {512, 1024, 2048, 4096, 8192, 16384},
          .decode_steps = 32,
          .min_point_s = 0.5,
          .max_inner = 3,
          .max_prefill_s = 0,
          .shapes =
              "paper: mamba-790m (48 x 1536), pythia-1b (16 x 2048, 8 heads), hybrid = "
              "mamba-790m with layers 3, 11, 19, 27, 35, 43 attention (12 heads)"};
}

const std::vector<std::string> kVariants = {"mamba", "pythia", "hybrid"};
const std::vector<std::string> kMetrics = {"prefill_ms", "prefill_peak_mb", "decode_ms_per_token"};

// Random weights deterministic in `seed` when `initialize`, else uninitialised (configs only).
std::unique_ptr<models::CausalLM> build_model(const std::string& variant, const ScaleSpec& s,
                                              uint64_t seed, bool initialize = true) {
  if (variant == "pythia") {
    models::GPTNeoXConfig c;
    c.hidden_size = s.neox_hidden;
    c.num_hidden_layers = s.neox_layers;
    c.num_attention_heads = s.neox_heads;
    c.intermediate_size = 4 * s.neox_hidden;
    c.vocab_size = (s.vocab + 127) / 128 * 128;
    c.max_position_embeddings = std::max<int64_t>(2048, s.lengths.back() + s.decode_steps + 1);
    auto m = std::make_unique<models::GPTNeoXLM>(c, /*initialize=*/false);
    if (initialize) m->init_weights(seed);
    return m;
  }
  models::MambaConfig c;
  c.d_model = s.d_model;
  c.n_layer = s.mamba_layers;
  c.vocab_size = (s.vocab + 7) / 8 * 8;
  c.d_inner = 0;
  c.dt_rank = 0;
  if (variant == "hybrid") {
    c.attn_layer_idx = s.hybrid_attn_layers;
    c.attn.num_heads = s.hybrid_heads;
    c.attn.rotary_emb_dim = s.hybrid_rotary;
  }
  auto m = std::make_unique<models::MambaLM>(c, /*initialize=*/false);
  if (initialize) m->init_weights(seed);
  return m;
}

// Total parameters and those outside the embedding / LM head (Mamba: backbone.embeddings /
// embedding, lm_head; GPT-NeoX: gpt_neox.embed_in, embed_out).
std::pair<int64_t, int64_t> count_params(models::CausalLM& lm) {
  int64_t total = 0, body = 0;
  for (const auto& p : lm.module().named_parameters()) {
    total += p.value().numel();
    const std::string& n = p.key();
    if (n.find("embed") == std::string::npos && n.rfind("lm_head", 0) != 0)
      body += p.value().numel();
  }
  return {total, body};
}

// Hands the allocator's free memory back to the OS, so that the next peak-RSS delta counts the
// memory the measured call needs rather than what earlier (larger) calls left in the free lists.
void release_free_memory() {
  if (MallocExtension_ReleaseFreeMemory) MallocExtension_ReleaseFreeMemory();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

// Sets the flush-denormal mode for the experiment and restores the default (off) after it:
// random-weight models can drive SSM states into denormals, whose slow path would distort timings.
struct FlushDenormalGuard {
  bool active;
  FlushDenormalGuard() : active(at::globalContext().setFlushDenormal(true)) {}
  ~FlushDenormalGuard() {
    if (active) at::globalContext().setFlushDenormal(false);
  }
};

// configs/<variant>.json: the model's config.json content and the measurement settings.
std::pair<int64_t, int64_t> add_variant_config(Results& results, const std::string& variant,
                                               models::CausalLM& lm, const ScaleSpec& s,
                                               const ExperimentOptions& opt) {
  const auto counts = count_params(lm);
  // Results::add_config does not create configs/ (as of this writing).
  if (!opt.out.empty()) std::filesystem::create_directories(opt.out / "configs");
  results.add_config(variant, {{"variant", variant},
                               {"scale", opt.scale},
                               {"lm_config", models::lm_config_json(lm)},
                               {"params", counts.first},
                               {"params_non_embedding", counts.second},
                               {"lengths", s.lengths},
                               {"decode_steps", s.decode_steps},
                               {"weights_seed", 0},
                               {"repeats", opt.seeds},
                               {"device", opt.device},
                               {"threads", at::get_num_threads()}});
  return counts;
}

struct Point {
  double prefill_ms, peak_mb, decode_ms;
  bool finite;
};

// One measurement at length L (see the file comment).
Point measure_point(models::CausalLM& lm, int64_t L, const ScaleSpec& s, int repeat,
                    const at::Device& device) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(1000003) *
                                                          static_cast<uint64_t>(repeat + 1) +
                                                      static_cast<uint64_t>(L));
  at::Tensor ids = at::randint(0, lm.vocab_size(), {1, L}, gen, at::kLong).to(device);  // [1, L]
  const int64_t steps = s.decode_steps;
  Point p{};

  release_free_memory();
  const int64_t rss0 = sys::current_rss_bytes();
  sys::reset_peak_rss();
  auto cache = lm.make_cache(1, L + steps + 1);
  auto t0 = clock_type::now();
  at::Tensor logits = lm.forward(ids, cache.get(), /*last_only=*/true);  // [1, 1, V]
  int64_t next = logits.view({-1}).argmax().item<int64_t>();             // synchronises
  double best = seconds_since(t0);
  double total = best;
  p.peak_mb = static_cast<double>(std::max<int64_t>(0, sys::peak_rss_bytes() - rss0)) / 1e6;
  p.finite = at::isfinite(logits).all().item<bool>();

  at::Tensor step = at::zeros({1, 1}, at::TensorOptions(at::kLong).device(device));  // [1, 1]
  step.fill_(next);
  logits = lm.forward(step, cache.get(), true);  // untimed first step
  (void)logits.view({-1}).argmax().item<int64_t>();
  // A short pause before the timed steps after a long prefill: on a shared machine, a process that
  // has just run for a while is the first to be preempted (the scheduler's fairness), which would
  // make decode after long contexts look slower for every model.
  if (best > 0.05) std::this_thread::sleep_for(std::chrono::milliseconds(kPauseMs));
  std::vector<double> step_ms;
  for (int64_t i = 0; i < steps; ++i) {
    auto t1 = clock_type::now();
    step.fill_(logits.view({-1}).argmax().item<int64_t>());  // synchronises on the last step
    logits = lm.forward(step, cache.get(), true);
    if (i + 1 == steps) (void)logits.view({-1}).argmax().item<int64_t>();
    step_ms.push_back(seconds_since(t1) * 1e3);
  }
  // The median step: robust to the preemptions of a shared machine.
  std::nth_element(step_ms.begin(), step_ms.begin() + steps / 2, step_ms.end());
  p.decode_ms = step_ms[steps / 2];
  cache.reset();

  for (int k = 1; k < s.max_inner && total < s.min_point_s; ++k) {
    auto c = lm.make_cache(1, L + 1);
    auto t2 = clock_type::now();
    at::Tensor lg = lm.forward(ids, c.get(), true);
    (void)lg.view({-1}).argmax().item<int64_t>();
    const double dt = seconds_since(t2);
    best = std::min(best, dt);
    total += dt;
  }
  p.prefill_ms = best * 1e3;
  return p;
}

// Fit over the points of `xs` / `ys` with x >= x_from and y > 0; false when fewer than 2.
bool fit_from(const std::vector<double>& xs, const std::vector<double>& ys, double x_from,
              PowerFit* out, double* x_min, double* x_max) {
  std::vector<double> fx, fy;
  for (size_t i = 0; i < xs.size(); ++i)
    if (xs[i] >= x_from && ys[i] > 0) fx.push_back(xs[i]), fy.push_back(ys[i]);
  if (fx.size() < 2) return false;
  *out = fit_power_law(fx, fy);
  *x_min = *std::min_element(fx.begin(), fx.end());
  *x_max = *std::max_element(fx.begin(), fx.end());
  return std::isfinite(out->exponent);
}

// The "long" range of a fit: the upper three doublings (x >= x_max / 8), where attention's
// quadratic term dominates sooner than over the whole range.
double long_from(const std::vector<double>& xs) {
  return xs.empty() ? 0.0 : *std::max_element(xs.begin(), xs.end()) / 8.0;
}

}  // namespace

void run_efficiency(const ExperimentOptions& opt) {
  const auto t_start = clock_type::now();
  const ScaleSpec s = scale_spec(opt.scale);
  if (opt.threads > 0) at::set_num_threads(opt.threads);
  const at::Device device(opt.device);
  Results results(kName, "Efficiency: prefill, memory and decode scaling",
                  "Prefill time and peak memory vs sequence length, decode ms/token vs context "
                  "length, for Mamba, Pythia (attention) and a hybrid of about equal size (random "
                  "weights, batch 1, fp32), with power-law fits y = c x^e.",
                  opt);
  const std::string load_before = sys::load_average();
  results.add_note("Machine: " + sys::machine_summary() + "; intra-op threads " +
                   std::to_string(at::get_num_threads()) + "; device " + opt.device +
                   "; load average (1/5/15 min) at start " + load_before +
                   ". Timings on a shared or loaded machine are noisy: compare the exponents "
                   "and ratios, not the absolute times.");
  results.add_note("Models: " + s.shapes + "; vocabulary " + std::to_string(s.vocab) +
                   "; random weights (seed 0), fp32, batch 1. Lengths " + join(s.lengths) +
                   "; decode: " + std::to_string(s.decode_steps) +
                   " greedy steps timed after one untimed step, from the prefilled context.");
  results.add_note(
      "Method: for each variant, repeat (= seed index) and length in increasing order, a decode "
      "cache for L + steps tokens is made and the L-token prompt of random ids is prefilled "
      "(inference mode, last-position logits); prefill_ms is the best of up to " +
      std::to_string(s.max_inner) + " prefills (repeated while their total is under " +
      fmt("%g", s.min_point_s) +
      " s). decode_ms_per_token at context C = L is the median of the decode steps that follow "
      "(each timed). Fits: least squares of log y on log x over the mean per x ('all': every "
      "length; 'long': x >= x_max / 8). Metrics per repeat: the exponents of that repeat's "
      "curves (prefill_exponent, memory_exponent, decode_exponent, and *_long); decode_growth = "
      "ms/token at the longest context / at the shortest (decode_growth_fit: the same ratio "
      "from the fit of every point); prefill_growth_last_doubling = prefill time at the longest "
      "length / at half of it (2: linear, 4: quadratic).");
  results.add_note(
      "Peak memory: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs) "
      "during the prefill minus the resident set just before it, after the allocator's free "
      "lists were returned to the OS (tcmalloc ReleaseFreeMemory / glibc malloc_trim). It "
      "includes the decode cache (Mamba: O(1) state; attention: the KV cache preallocated for L + "
      "steps tokens). Caveats: memory an allocator keeps without returning it makes the delta an "
      "under-estimate, which is why lengths run in increasing order; page granularity and "
      "thread-local caches make small values (below a few MB) unreliable. LibTorch's CPU "
      "scaled_dot_product_attention is a fused (flash-style) kernel that never holds the L x L "
      "score matrix, so attention's prefill memory is expected to grow linearly here, not "
      "quadratically; its prefill time still has the quadratic term.");
  if (opt.device != "cpu")
    results.add_note("Device " + opt.device +
                     ": timings are synchronous (each result is read back), but peak memory is "
                     "the host's resident set, not accelerator memory.");
  if (opt.dry_run) {
    for (const auto& variant : kVariants)
      add_variant_config(results, variant, *build_model(variant, s, 0, /*initialize=*/false), s,
                         opt);
    results.add_note("Dry run: configs written, nothing measured.");
    results.write();
    return;
  }

  FlushDenormalGuard denormal_guard;
  c10::InferenceMode inference_guard;
  // variant -> metric -> x -> one value per repeat
  std::map<std::string, std::map<std::string, std::map<int64_t, std::vector<double>>>> data;

  for (const auto& variant : kVariants) {
    const auto t_variant = clock_type::now();
    auto lm = build_model(variant, s, /*seed=*/0);
    if (device.type() != at::kCPU) lm->module().to(device);
    const auto [params, body] = add_variant_config(results, variant, *lm, s, opt);
    results.add_metric(variant, 0, "params", static_cast<double>(params));
    results.add_metric(variant, 0, "params_non_embedding", static_cast<double>(body));
    log_line(opt, kName,
             variant + ": " + std::to_string(params) + " parameters (" + std::to_string(body) +
                 " outside the embedding / head), " + lm->arch());
    {  // warm-up: first touch of the weights, thread pool, kernels
      auto c = lm->make_cache(1, 20);
      at::Tensor w = at::zeros({1, 16}, at::TensorOptions(at::kLong).device(device));
      lm->forward(w, c.get(), true);
      (void)lm->forward(w.narrow(1, 0, 1), c.get(), true).sum().item<float>();
    }

    bool warned_nonfinite = false;
    auto& vdata = data[variant];
    auto measure = [&](int64_t L, int r) {
      const Point p = measure_point(*lm, L, s, r, device);
      if (!p.finite && !warned_nonfinite) {
        results.add_note(variant + ": non-finite logits at L = " + std::to_string(L) +
                         " (random weights); its timings are kept");
        warned_nonfinite = true;
      }
      const double vals[3] = {p.prefill_ms, p.peak_mb, p.decode_ms};
      for (int m = 0; m < 3; ++m) {
        results.add_row("scaling", {{"variant", variant},
                                    {"metric", kMetrics[m]},
                                    {"x", L},
                                    {"value", vals[m]},
                                    {"seed", r}});
        vdata[kMetrics[m]][L].push_back(vals[m]);
      }
      log_line(opt, kName,
               variant + " repeat " + std::to_string(r) + " L " + std::to_string(L) + ": prefill " +
                   fmt("%.1f", p.prefill_ms) + " ms, peak " + fmt("%.1f", p.peak_mb) +
                   " MB, decode " + fmt("%.3f", p.decode_ms) + " ms/token");
      return p;
    };

    // Repeat 0 settles the lengths: one whose predicted prefill (the last one's time scaled
    // quadratically) exceeds the scale's limit is skipped with the longer ones; the later repeats
    // measure the same lengths.
    std::vector<int64_t> lengths;
    double last_s = 0;
    for (int64_t L : s.lengths) {
      if (s.max_prefill_s > 0 && !lengths.empty()) {
        const double ratio = static_cast<double>(L) / static_cast<double>(lengths.back());
        const double predicted = last_s * ratio * ratio;
        if (predicted > s.max_prefill_s) {
          const std::string msg = variant + ": lengths from " + std::to_string(L) +
                                  " skipped (predicted prefill " + fmt("%.1f", predicted) +
                                  " s > the limit of " + fmt("%g", s.max_prefill_s) +
                                  " s per point at this scale on this machine)";
          results.add_note(msg);
          log_line(opt, kName, msg);
          break;
        }
      }
      lengths.push_back(L);
      last_s = measure(L, 0).prefill_ms / 1e3;
    }
    for (int r = 1; r < opt.seeds; ++r)
      for (int64_t L : lengths) measure(L, r);

    // Per-repeat metrics: exponents and growth ratios of that repeat's curves.
    for (int r = 0; r < opt.seeds; ++r) {
      std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> curve;
      for (const auto& m : kMetrics)
        for (const auto& [x, vals] : vdata[m])
          if (r < static_cast<int>(vals.size())) {
            curve[m].first.push_back(static_cast<double>(x));
            curve[m].second.push_back(vals[r]);
          }
      const std::map<std::string, std::string> exponent_names = {
          {"prefill_ms", "prefill_exponent"},
          {"prefill_peak_mb", "memory_exponent"},
          {"decode_ms_per_token", "decode_exponent"}};
      for (const auto& [m, name] : exponent_names) {
        const auto& [xs, ys] = curve[m];
        PowerFit f;
        double lo = 0, hi = 0;
        if (fit_from(xs, ys, 0.0, &f, &lo, &hi)) results.add_metric(variant, r, name, f.exponent);
        if (fit_from(xs, ys, long_from(xs), &f, &lo, &hi))
          results.add_metric(variant, r, name + "_long", f.exponent);
      }
      const auto& [dx, dy] = curve["decode_ms_per_token"];
      if (dy.size() >= 2 && dy.front() > 0)
        results.add_metric(variant, r, "decode_growth", dy.back() / dy.front(),
                           {{"x_min", dx.front()}, {"x_max", dx.back()}});
      PowerFit df;
      double dlo = 0, dhi = 0;
      if (fit_from(dx, dy, 0.0, &df, &dlo, &dhi))  // the same ratio, from the fit of every point
        results.add_metric(variant, r, "decode_growth_fit", std::pow(dhi / dlo, df.exponent),
                           {{"x_min", dlo}, {"x_max", dhi}});
      const auto& [px, py] = curve["prefill_ms"];
      if (py.size() >= 2 && py[py.size() - 2] > 0)
        results.add_metric(variant, r, "prefill_growth_last_doubling",
                           py.back() / py[py.size() - 2],
                           {{"x_from", px[px.size() - 2]}, {"x_to", px.back()}});
      if (!py.empty()) {
        results.add_metric(variant, r, "prefill_ms_at_max", py.back(), {{"x", px.back()}});
        results.add_metric(variant, r, "prefill_tokens_per_s_at_max", px.back() / py.back() * 1e3,
                           {{"x", px.back()}});
      }
      const auto& [mx, my] = curve["prefill_peak_mb"];
      if (!my.empty())
        results.add_metric(variant, r, "prefill_peak_mb_at_max", my.back(), {{"x", mx.back()}});
      if (!dy.empty())
        results.add_metric(variant, r, "decode_ms_per_token_at_max", dy.back(), {{"x", dx.back()}});
    }
    log_line(opt, kName,
             variant + ": done in " + fmt("%.1f", seconds_since(t_variant)) + " s (load average " +
                 sys::load_average() + ")");
    results.write();
  }

  // Fits over the mean per x (all repeats), and the plots.
  json fits_of[3] = {json::array(), json::array(), json::array()};
  json points_of[3] = {json::array(), json::array(), json::array()};
  for (const auto& variant : kVariants) {
    for (int m = 0; m < 3; ++m) {
      std::vector<double> xs, ys;
      for (const auto& [x, vals] : data[variant][kMetrics[m]]) {
        const Spread sp = spread(vals);
        xs.push_back(static_cast<double>(x));
        ys.push_back(sp.mean);
        points_of[m].push_back({{"x", x}, {"y", sp.mean}, {"series", variant}});
      }
      for (const char* range : {"all", "long"}) {
        PowerFit f;
        double lo = 0, hi = 0;
        const double from = std::string(range) == "all" ? 0.0 : long_from(xs);
        if (!fit_from(xs, ys, from, &f, &lo, &hi)) continue;
        results.add_row("fits", {{"variant", variant},
                                 {"metric", kMetrics[m]},
                                 {"range", range},
                                 {"exponent", f.exponent},
                                 {"coefficient", f.coefficient},
                                 {"r2", f.r2},
                                 {"x_min", lo},
                                 {"x_max", hi},
                                 {"n", static_cast<int64_t>(xs.size())}});
        if (std::string(range) == "all")
          fits_of[m].push_back({{"series", variant},
                                {"exponent", f.exponent},
                                {"coefficient", f.coefficient},
                                {"x_min", lo},
                                {"x_max", hi}});
      }
    }
  }
  const char* titles[3] = {"Prefill time vs sequence length",
                           "Prefill peak memory vs sequence length",
                           "Decode time per token vs context length"};
  const char* x_labels[3] = {"sequence length L (tokens)", "sequence length L (tokens)",
                             "context length C (tokens)"};
  const char* y_labels[3] = {"prefill time (ms)", "peak RSS increase (MB)", "decode (ms/token)"};
  for (int m = 0; m < 3; ++m)
    results.add_plot({{"type", "scaling"},
                      {"title", titles[m]},
                      {"x_label", x_labels[m]},
                      {"y_label", y_labels[m]},
                      {"data", points_of[m]},
                      {"fits", fits_of[m]}});
  results.add_plot({{"type", "bars"},
                    {"title", "Decode ms/token growth: longest context / shortest"},
                    {"x_label", "model"},
                    {"y_label", "decode growth (x)"},
                    {"data", results.bars_data({"decode_growth"}, false)}});
  results.add_plot(
      {{"type", "bars"},
       {"title", "Fitted scaling exponents (y = c x^e)"},
       {"x_label", "model"},
       {"y_label", "exponent e"},
       {"data",
        results.bars_data({"prefill_exponent", "memory_exponent", "decode_exponent"}, true)}});
  results.add_note("Finished in " + fmt("%.1f", seconds_since(t_start)) +
                   " s; load average at the end " + sys::load_average() + ".");
  results.write();
  log_line(opt, kName,
           "done in " + fmt("%.1f", seconds_since(t_start)) + " s: " + opt.out.string());
}

}  // namespace mambavl::experiments
