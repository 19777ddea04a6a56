// `mambavl bench train`: training throughput of LM shapes (models::make_preset, random tokens) and
// tiny VLMs (models::vlm_preset, batches of the synthetic scenes), each timed as the one trainer's
// own optimizer step (train::train over an LMTask / VLMTask: forward, backward, gradient-norm
// clipping and the trainer's AdamW update). Warm-up steps run first (first touch, AdamW state
// allocation, thread pool); the timed steps follow in the same train() call, timed between the
// trainer's on_step hooks.
//
// Achieved GFLOP/s is the standard 6PT estimate: 6 x parameters x tokens per second (2 for the
// forward and 4 for the backward multiply-adds of every weight per token). It ignores attention's
// L^2 term and the selective scan (both add work that is not counted) and counts the embedding
// matrix as if it were a matmul; it is compared with the fp32 GEMM rate measured in this run.
#include "bench_train.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "common/error.h"
#include "common/mix64.h"
#include "data/lm_samples.h"
#include "data/scenes.h"
#include "data/vl_sequence.h"
#include "data/word_tokenizer.h"
#include "io/tokenizer.h"
#include "kernels/backend.h"
#include "models/presets.h"
#include "models/vlm.h"
#include "common/sysinfo.h"
#include "train/tasks.h"
#include "train/trainer.h"

namespace mambavl::bench {
using namespace ::mambavl::sys;

namespace {

using clock = std::chrono::steady_clock;

struct TrainBenchOptions {
  int threads = 0;
  std::string kernels = "auto";
  std::string precision = "fp32";
  std::vector<std::string> models{"mamba-130m", "pythia-160m", "vlm-tiny"};
  int64_t steps = 3, warmup = 1, batch = 2, seq = 256;
  double lr = 1e-4;
  int bound_repeats = 10;  // GEMM / bandwidth measurements, best of, before and after
};

// Sample i: `len` uniformly random token ids in [0, vocab) (a pure function of i), every next
// token supervised.
class RandomTokens : public data::LMSampleSource {
 public:
  RandomTokens(int64_t n, int64_t len, int64_t vocab) : n_(n), len_(len), vocab_(vocab) {}
  int64_t size() const override { return n_; }
  data::LMSample sample(int64_t i) const override {
    data::LMSample s;
    s.ids.resize(static_cast<size_t>(len_));
    for (int64_t t = 0; t < len_; ++t)
      s.ids[static_cast<size_t>(t)] = static_cast<int64_t>(
          mix64(static_cast<uint64_t>(i * len_ + t)) % static_cast<uint64_t>(vocab_));
    s.labels = s.ids;  // labels[t]: the target of position t - 1 (HF convention)
    s.labels[0] = -100;
    return s;
  }

 private:
  int64_t n_, len_, vocab_;
};

// A temporary folder removed on scope exit.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& stem)
      : path(std::filesystem::temp_directory_path() /
             (stem + "-" + std::to_string(::getpid()) + "-" +
              std::to_string(clock::now().time_since_epoch().count()))) {
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

struct Timed {
  double s_per_step = 0;
  double first_loss = 0, last_loss = 0;
  double supervised_tokens = 0;  // summed StepInfo::units over the timed steps
};

// Runs warmup + steps trainer steps of `task` and times the last `steps` of them.
Timed time_trainer(train::TrainTask& task, const TrainBenchOptions& o) {
  train::TrainerConfig cfg;
  train::StageConfig st;
  st.name = "bench";
  st.steps = o.warmup + o.steps;
  st.lr = o.lr;
  st.warmup_steps = 0;
  cfg.stages = {st};
  cfg.batch_size = o.batch;
  cfg.precision = o.precision;
  cfg.seed = 0;
  cfg.log_every = 0;
  cfg.eval_every = -1;
  cfg.progress = false;
  std::vector<clock::time_point> stamps;
  std::vector<double> losses, units;
  train::TrainerHooks hooks;
  hooks.on_step = [&](const train::StepInfo& s) {
    stamps.push_back(clock::now());
    losses.push_back(s.loss);
    units.push_back(s.units);
  };
  train::train(task, cfg, {}, hooks);
  const size_t w = static_cast<size_t>(o.warmup), n = static_cast<size_t>(o.steps);
  MVL_CHECK(stamps.size() == w + n, "bench train: the trainer ran ", stamps.size(),
            " steps, expected ", w + n);
  Timed t;
  t.s_per_step = std::chrono::duration<double>(stamps[w + n - 1] - stamps[w - 1]).count() /
                 static_cast<double>(n);
  t.first_loss = losses[w];
  t.last_loss = losses[w + n - 1];
  for (size_t i = w; i < w + n; ++i) t.supervised_tokens += units[i];
  return t;
}

int64_t count_params(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

struct Row {
  std::string name;
  int64_t params = 0;
  double tokens_per_step = 0;  // tokens the model processes per optimizer step (padding included)
  Timed t;
};

Row bench_lm(const std::string& name, const TrainBenchOptions& o) {
  auto lm = models::make_preset(name, /*seed=*/0);
  const int64_t n = (o.warmup + o.steps) * o.batch;
  auto src = std::make_shared<RandomTokens>(n, o.seq, lm->vocab_size());
  train::LMTask task(*lm, src, /*pad_id=*/0);
  Row r;
  r.name = name;
  r.params = count_params(lm->module());
  r.tokens_per_step = static_cast<double>(o.batch * o.seq);
  r.t = time_trainer(task, o);
  return r;
}

// The tiny VLM on the synthetic scenes, with the scenes' word-level tokenizer (as `make-data
// scenes` writes it) in a temporary folder. Tokens per step are counted afterwards, outside the
// timing, by collating the same samples the trainer took (its documented order: step s of the
// single epoch takes epoch_order(n, seed, 0)[s * B, (s + 1) * B)); the supervised tokens of that
// recount are checked against the trainer's own count.
Row bench_vlm(const std::string& name, const TrainBenchOptions& o) {
  TempDir tmp("mambavl-bench-train");
  data::write_wordlevel_tokenizer(tmp.path, data::scene_texts_for_vocabulary(), {"###", "&&"});
  const auto tj = tmp.path / "tokenizer.json";
  const int64_t vocab = io::Tokenizer::from_file(tj).vocab_size();
  models::VLM vlm(models::vlm_preset(name, vocab), /*seed=*/0);
  vlm.set_tokenizer(tj);
  const int64_t n = (o.warmup + o.steps) * o.batch;
  data::SceneOptions so;
  if (vlm.config().image_size >= 16) so.image_size = vlm.config().image_size;
  auto ds = std::make_shared<data::SceneDataset>(n, /*seed=*/0, so);
  const data::SequenceFormat fmt = data::sequence_format(vlm);
  train::VLMTask task(vlm, ds, fmt);
  Row r;
  r.name = name;
  r.params = vlm.num_parameters();
  r.t = time_trainer(task, o);

  const std::vector<int64_t> order = train::epoch_order(n, /*seed=*/0, 0);
  double tokens = 0, supervised = 0;
  for (int64_t s = o.warmup; s < o.warmup + o.steps; ++s) {
    std::vector<int64_t> idx(order.begin() + s * o.batch, order.begin() + (s + 1) * o.batch);
    auto c = data::collate(*ds, idx, vlm, fmt, /*include_answer=*/true);
    tokens += static_cast<double>(c.batch.ids.numel());
    supervised += static_cast<double>(
        c.batch.labels.narrow(1, 1, c.batch.labels.size(1) - 1).ne(-100).sum().item<int64_t>());
  }
  if (supervised != r.t.supervised_tokens)
    std::printf(
        "note: %s: recounted %.0f supervised tokens, the trainer reported %.0f (the token "
        "count below may be off)\n",
        name.c_str(), supervised, r.t.supervised_tokens);
  r.tokens_per_step = tokens / static_cast<double>(o.steps);
  return r;
}

std::vector<std::string> expand_models(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  const auto lm = models::preset_names();
  for (const auto& n : names) {
    if (n == "vlm-tiny") {
      out.push_back("mamba-vl-tiny");
      out.push_back("pythia-vl-tiny");
    } else if (std::find(lm.begin(), lm.end(), n) != lm.end() || models::is_vlm_preset(n)) {
      out.push_back(n);
    } else {
      MVL_FAIL("bench train --models: unknown model '", n, "' (LM shapes: ", join(lm),
               "; VLM shapes: ", join(models::vlm_preset_names()),
               "; vlm-tiny = mamba-vl-tiny,pythia-vl-tiny)");
    }
  }
  return out;
}

void run(const TrainBenchOptions& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  kernels::set_default_backend(kernels::parse_backend(o.kernels));
  const std::vector<std::string> names = expand_models(o.models);
  const std::string prec = train::resolve_precision(o.precision);
  std::printf("bench train: %s, load average %s\n", machine_summary().c_str(),
              load_average().c_str());
  // The bound: the best of --bound-repeats GEMMs before and again after the models (other processes
  // on a shared machine lower single measurements; the best one is closest to what the cores can
  // do).
  const double gemm_before = measure_gemm_gflops(1024, 768, 3072, o.bound_repeats);
  std::printf(
      "timed: the trainer's own step (train::train with LMTask / VLMTask: forward, backward, "
      "grad-norm clip, AdamW), precision %s, batch %lld, %lld warm-up + %lld timed steps\n",
      prec.c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.warmup),
      static_cast<long long>(o.steps));
  std::printf(
      "LMs: random tokens [B, L] = [%lld, %lld]; VLMs: synthetic scenes (caption / vqa / "
      "grounding), all parameters trained, tokens = padded sequence tokens\n",
      static_cast<long long>(o.batch), static_cast<long long>(o.seq));
  std::fflush(stdout);
  std::vector<Row> rows;
  for (const auto& name : names) {
    rows.push_back(models::is_vlm_preset(name) ? bench_vlm(name, o) : bench_lm(name, o));
    std::fprintf(stderr, "bench train: %s done (%.3f s/step)\n", name.c_str(),
                 rows.back().t.s_per_step);
  }
  const double gemm_after = measure_gemm_gflops(1024, 768, 3072, o.bound_repeats);
  const double gemm = std::max(gemm_before, gemm_after);
  std::printf(
      "measured now: fp32 GEMM (1024x768x3072, best of %d) %.1f GFLOP/s before the models, %.1f "
      "after: bound %.1f GFLOP/s; load average now %s\n",
      o.bound_repeats, gemm_before, gemm_after, gemm, load_average().c_str());
  std::printf(
      "GFLOP/s = 6 x params x tokens / time: the standard 6PT estimate (ignores attention's L^2 "
      "term and the scan; counts every parameter, also an untied input embedding that is only a "
      "lookup); %% GEMM = that / the bound (goal >= 50%%)\n");
  std::printf("%-16s %9s %9s %9s %10s %9s %7s  %s\n", "model", "params M", "tok/step", "s/step",
              "tok/s", "GFLOP/s", "% GEMM", "loss first->last timed step");
  for (const Row& r : rows) {
    const double tps = r.tokens_per_step / r.t.s_per_step;
    const double gf = 6.0 * static_cast<double>(r.params) * tps / 1e9;
    std::printf("%-16s %9.1f %9.0f %9.3f %10.1f %9.1f %6.0f%%  %.3f->%.3f\n", r.name.c_str(),
                static_cast<double>(r.params) / 1e6, r.tokens_per_step, r.t.s_per_step, tps, gf,
                100.0 * gf / gemm, r.t.first_loss, r.t.last_loss);
  }
}

}  // namespace

void add_train_bench(CLI::App& bench) {
  auto o = std::make_shared<TrainBenchOptions>();
  auto* c = bench.add_subcommand(
      "train",
      "Training tokens/s (forward + backward + AdamW, the trainer's own step) of LM shapes and "
      "tiny VLMs (random weights), with 6PT GFLOP/s as a share of the fp32 GEMM rate");
  c->add_option("--models", o->models,
                "Models: LM shapes (" + join(models::preset_names()) + "), VLM shapes (" +
                    join(models::vlm_preset_names()) +
                    "; tiny ones train on the synthetic scenes), vlm-tiny = "
                    "mamba-vl-tiny,pythia-vl-tiny")
      ->delimiter(',')
      ->capture_default_str();
  c->add_option("--steps", o->steps, "Timed optimizer steps per model")
      ->check(cli::Positive)
      ->capture_default_str();
  c->add_option("--warmup", o->warmup, "Untimed optimizer steps first (at least 1)")
      ->check(cli::Positive)
      ->capture_default_str();
  c->add_option("--batch", o->batch, "Samples per optimizer step (B)")
      ->check(cli::Positive)
      ->capture_default_str();
  c->add_option("--seq", o->seq, "LM sequence length L (VLM sequences have the scenes' lengths)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  c->add_option("--precision", o->precision,
                "Trainer precision: fp32, bf16 (autocast, fp32 master weights) or auto")
      ->check(CLI::IsMember({"fp32", "bf16", "auto"}))
      ->capture_default_str();
  c->add_option("--lr", o->lr, "Learning rate of the timed steps (irrelevant to the timing)")
      ->check(cli::Positive)
      ->capture_default_str();
  cli::add_threads_option(*c, o->threads);
  c->add_option("--kernels", o->kernels, "Kernel backend: auto, fused or reference")
      ->check(CLI::IsMember({"auto", "fused", "reference"}))
      ->capture_default_str();
  c->add_option("--bound-repeats", o->bound_repeats,
                "Measurements of the machine's bounds (fp32 GEMM, read bandwidth), best of, before "
                "and after the models")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  c->callback([o]() { run(*o); });
}

}  // namespace mambavl::bench
