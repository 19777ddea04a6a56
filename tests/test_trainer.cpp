// The one trainer (train/trainer.h) on a toy TrainTask defined here: a 2-layer MLP regressing a
// fixed data set, with dropout (the global CPU generator) and input noise (the step seed), so that
// an exact resume must restore the data position, the optimizer state and both RNG sources.
// The real ClassifierTask is exercised in test_classifier_train.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cli_run.h"
#include "common/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"
#include "train/trainer.h"

extern char** environ;

using namespace mambavl;
using mambavl::testing_util::expect_error;
namespace fs = std::filesystem;

namespace {

struct Scale : torch::nn::Module {
  explicit Scale(int64_t n) { weight = register_parameter("weight", at::ones({n})); }
  at::Tensor weight;
};

// encoder.{weight,bias}, norm.weight (1-D), head.{weight,bias}.
struct ToyNet : torch::nn::Module {
  explicit ToyNet(int64_t hidden) {
    encoder = register_module("encoder", torch::nn::Linear(4, hidden));
    norm = register_module("norm", std::make_shared<Scale>(hidden));
    head = register_module("head", torch::nn::Linear(hidden, 1));
  }
  torch::nn::Linear encoder{nullptr}, head{nullptr};
  std::shared_ptr<Scale> norm;
};

struct ToyOptions {
  int64_t n = 24;
  int64_t hidden = 8;
  double dropout = 0.1;  // global generator
  bool noise = true;     // generator seeded by the step seed
  bool with_eval = true;
};

class ToyTask : public train::TrainTask {
 public:
  explicit ToyTask(ToyOptions o = {}) : o_(o) {
    at::manual_seed(123);  // the same initial weights and data every time
    net_ = std::make_shared<ToyNet>(o.hidden);
    x_ = at::randn({o.n, 4});
    y_ = (x_.select(1, 0) * 0.7 - x_.select(1, 1).sin() + x_.select(1, 2) * x_.select(1, 3) * 0.3)
             .unsqueeze(1);  // [n, 1]
  }
  std::string kind() const override { return "toy"; }
  nlohmann::json identity() const override {
    return {{"family", "toy-mlp"}, {"hidden", o_.hidden}};
  }
  torch::nn::Module& module() override { return *net_; }
  int64_t num_samples() const override { return o_.n; }
  train::StepResult forward(const std::vector<int64_t>& samples, uint64_t step_seed) override {
    const at::Tensor idx = at::tensor(samples, at::kLong);
    at::Tensor x = x_.index_select(0, idx);  // [B, 4]
    if (o_.noise) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(step_seed);
      x = x + at::randn(x.sizes(), gen) * 0.05;
    }
    at::Tensor h = at::tanh(net_->encoder(x)) * net_->norm->weight;  // [B, H]
    if (o_.dropout > 0) h = at::dropout(h, o_.dropout, /*train=*/true);
    const at::Tensor out = net_->head(h);  // [B, 1]
    train::StepResult r;
    r.loss = at::mse_loss(out, y_.index_select(0, idx));
    r.units = static_cast<double>(samples.size());
    r.metrics = {{"max_err", (out - y_.index_select(0, idx)).abs().max().item<double>()}};
    ++forward_calls;
    return r;
  }
  void save_model(const fs::path& dir) override {
    io::save_module(*net_, dir);
    io::write_json_file(dir / "config.json", identity());
  }
  void load_weights(const fs::path& dir) override {
    io::load_module(*net_, io::CheckpointFolder(dir));
  }
  nlohmann::json evaluate() override {
    if (!o_.with_eval) return nullptr;
    at::NoGradGuard ng;
    const at::Tensor h = at::tanh(net_->encoder(x_)) * net_->norm->weight;
    return {{"mse", at::mse_loss(net_->head(h), y_).item<double>()}};
  }
  std::string unit() const override { return "sample"; }

  std::map<std::string, at::Tensor> weights() {
    std::map<std::string, at::Tensor> m;
    for (const auto& p : net_->named_parameters()) m[p.key()] = p.value().detach().clone();
    return m;
  }
  int64_t forward_calls = 0;

 private:
  ToyOptions o_;
  std::shared_ptr<ToyNet> net_;
  at::Tensor x_, y_;
};

// Two stages (the schedule restarts, the second freezes nothing), batches crossing epochs
// (24 samples, batch 5: 5 steps per epoch, the last one of 4), accumulation 5 x 1.
train::TrainerConfig resume_config(const fs::path& out) {
  train::TrainerConfig c;
  train::StageConfig a, b;
  a.name = "one";
  a.steps = 7;
  a.lr = 0.05;
  a.warmup_steps = 2;
  a.weight_decay = 0.1;
  a.freeze = {"head"};
  b.name = "two";
  b.steps = 9;
  b.lr = 0.02;
  b.warmup_ratio = 0.25;
  b.min_lr_ratio = 0.1;
  c.stages = {a, b};
  c.batch_size = 5;
  c.grad_accum = 5;
  c.grad_clip = 0.5;
  c.seed = 11;
  c.log_every = 3;
  c.save_every = 4;
  c.keep_last = 2;
  c.progress = false;
  c.out_dir = out;
  return c;
}

bool same_weights(const std::map<std::string, at::Tensor>& a,
                  const std::map<std::string, at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [k, v] : a)
    if (!b.count(k) || !at::equal(v, b.at(k))) return false;
  return true;
}

std::vector<nlohmann::json> read_log(const fs::path& file) {
  std::vector<nlohmann::json> out;
  std::ifstream f(file);
  std::string line;
  while (std::getline(f, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The kill -9 test's child: this same binary started with MAMBAVL_TRAINER_TEST_CHILD=<out_dir>
// (and MAMBAVL_TEST_PAUSE_IN_CHECKPOINT) runs the training before main() and pauses inside a
// checkpoint write, where the parent kills it.
[[maybe_unused]] const bool kChildMode = [] {
  const char* out = std::getenv("MAMBAVL_TRAINER_TEST_CHILD");
  if (!out) return false;
  int code = 0;
  try {
    ToyTask task;
    train::train(task, resume_config(out));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    code = 1;
  }
  std::_Exit(code == 0 ? 3 : code);  // 3: it finished, which the test does not expect
}();

class Trainer : public testing_util::TempDirTest {
 protected:
  Trainer() : TempDirTest("mambavl_trainer_") {}
};

}  // namespace

TEST_F(Trainer, ScheduleWarmupCosinePerStage) {
  ToyTask task({.n = 10});
  train::TrainerConfig c;
  train::StageConfig a, b;
  a.epochs = 2.5;  // ceil(10 / 4) = 3 steps per epoch -> ceil(7.5) = 8 steps
  a.lr = 1.0;
  a.warmup_ratio = 0.25;  // round(0.25 * 8) = 2
  a.min_lr_ratio = 0.1;
  b.steps = 4;
  b.lr = 0.5;
  b.warmup_steps = 0;
  c.stages = {a, b};
  c.batch_size = 4;
  c.progress = true;  // the bar on stderr (plain lines in a test)
  EXPECT_EQ(train::stage_steps(a, 10, 4), 8);
  std::vector<double> lrs;
  std::vector<int64_t> steps, samples;
  train::TrainerHooks hooks;
  hooks.on_step = [&](const train::StepInfo& s) {
    lrs.push_back(s.lr);
    steps.push_back(s.step);
    samples.push_back(s.samples);
  };
  std::vector<std::pair<int64_t, bool>> epochs;
  hooks.on_epoch_end = [&](const train::EpochInfo& e) { epochs.emplace_back(e.step, e.partial); };
  const auto r = train::train(task, c, {}, hooks);
  ASSERT_EQ(r.steps, 12);
  ASSERT_EQ(lrs.size(), 12u);
  EXPECT_DOUBLE_EQ(lrs[0], 0.5);
  EXPECT_DOUBLE_EQ(lrs[1], 1.0);
  EXPECT_DOUBLE_EQ(lrs[2], 1.0);  // cosine starts at the peak
  EXPECT_NEAR(lrs[7], 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 5.0 / 6.0)), 1e-12);
  for (int i = 2; i < 7; ++i) EXPECT_GT(lrs[i], lrs[i + 1]) << i;
  EXPECT_DOUBLE_EQ(lrs[8], 0.5);  // stage 2 restarts: no warmup, its own peak
  EXPECT_NEAR(lrs[11], 0.5 * 0.5 * (1 + std::cos(M_PI * 3.0 / 4.0)), 1e-12);
  // Epochs of 4 + 4 + 2 samples; stage 1 ends mid-epoch (partial), stage 2 restarts the data.
  EXPECT_EQ(samples, (std::vector<int64_t>{4, 4, 2, 4, 4, 2, 4, 4, 4, 4, 2, 4}));
  EXPECT_EQ(epochs, (std::vector<std::pair<int64_t, bool>>{
                        {3, false}, {6, false}, {8, true}, {11, false}, {12, true}}));
}

TEST(TrainerRules, NoDecayAndFreezeRules) {
  const train::TrainerConfig c;
  const auto& p = c.no_decay;
  EXPECT_TRUE(train::no_decay_param("backbone.layers.0.mixer.A_log", 2, p));
  EXPECT_TRUE(train::no_decay_param("backbone.layers.0.mixer.D", 2, p));
  EXPECT_TRUE(train::no_decay_param("gpt_neox.embed_in.weight", 2, p));
  EXPECT_TRUE(train::no_decay_param("backbone.embedding.weight", 2, p));
  EXPECT_TRUE(train::no_decay_param("gpt_neox.layers.0.input_layernorm.weight", 2, p));
  EXPECT_TRUE(train::no_decay_param("vision_tower.embeddings.position_embedding.weight", 2, p));
  EXPECT_TRUE(train::no_decay_param("anything.weight", 1, p));  // 1-D
  EXPECT_TRUE(train::no_decay_param("pos_embed", 3, p));
  EXPECT_FALSE(train::no_decay_param("backbone.layers.0.mixer.in_proj.weight", 2, p));
  EXPECT_FALSE(train::no_decay_param("multi_modal_projector.linear_1.weight", 2, p));
  EXPECT_FALSE(train::no_decay_param("layers.0.Dense.weight", 2, p));  // "D" only as a whole name
  EXPECT_FALSE(train::no_decay_param("x.weight", 2, {}));
  EXPECT_TRUE(train::is_frozen("vision_tower.blocks.0.w", {"vision_tower"}));
  EXPECT_TRUE(train::is_frozen("vision_tower", {"vision_tower"}));
  EXPECT_FALSE(train::is_frozen("vision_tower2.w", {"vision_tower"}));
  EXPECT_FALSE(train::is_frozen("layers.10.w", {"layers.1"}));
  EXPECT_TRUE(train::is_frozen("layers.1.w", {"layers.1"}));
  EXPECT_TRUE(train::is_frozen("layers.10.w", {"layers."}));
}

TEST(TrainerRules, WeightDecayOnlyOnDecayedGroup) {
  // One step, huge decay, tiny lr: decayed matrices shrink by (1 - lr * wd) plus an Adam update of
  // at most ~lr; the 1-D norm weight and the biases do not decay.
  ToyTask task({.dropout = 0, .noise = false});
  const auto w0 = task.weights();
  train::TrainerConfig c;
  train::StageConfig s;
  s.steps = 1;
  s.lr = 1e-3;
  s.warmup_steps = 0;
  s.weight_decay = 500;
  c.stages = {s};
  c.progress = false;
  c.grad_clip = 0;
  train::train(task, c);
  const auto w1 = task.weights();
  const double bound = s.lr * 1.01;
  EXPECT_LE((w1.at("encoder.weight") - w0.at("encoder.weight") * 0.5).abs().max().item<double>(),
            bound);
  EXPECT_LE((w1.at("head.weight") - w0.at("head.weight") * 0.5).abs().max().item<double>(), bound);
  for (const char* k : {"encoder.bias", "head.bias", "norm.weight"})
    EXPECT_LE((w1.at(k) - w0.at(k)).abs().max().item<double>(), bound) << k;
}

TEST(TrainerRules, AdamWMatchesTorchOptim) {
  // Full-batch steps at a constant lr: the trainer's AdamW (decay groups by the no-decay rule)
  // equals torch::optim::AdamW with the same two groups, up to summation order.
  ToyTask ours({.n = 16, .dropout = 0, .noise = false});
  ToyTask ref({.n = 16, .dropout = 0, .noise = false});
  train::TrainerConfig c;
  train::StageConfig s;
  s.steps = 4;
  s.lr = 0.01;
  s.warmup_steps = 0;
  s.min_lr_ratio = 1.0;  // constant
  s.weight_decay = 0.2;
  c.stages = {s};
  c.batch_size = 16;
  c.grad_clip = 0;
  c.adam_beta2 = 0.99;
  c.adam_eps = 1e-6;
  c.progress = false;
  train::train(ours, c);

  std::vector<at::Tensor> decay, no_decay;
  for (const auto& p : ref.module().named_parameters())
    (train::no_decay_param(p.key(), p.value().dim(), c.no_decay) ? no_decay : decay)
        .push_back(p.value());
  ASSERT_EQ(decay.size(), 2u);  // encoder.weight, head.weight
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto opts = [&](double wd) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(s.lr);
    o->weight_decay(wd).betas({c.adam_beta1, c.adam_beta2}).eps(c.adam_eps);
    return o;
  };
  groups.emplace_back(decay, opts(s.weight_decay));
  groups.emplace_back(no_decay, opts(0.0));
  torch::optim::AdamW opt(std::move(groups), torch::optim::AdamWOptions(s.lr));
  std::vector<int64_t> all(16);
  for (int64_t i = 0; i < 16; ++i) all[i] = i;
  for (int step = 0; step < 4; ++step) {
    opt.zero_grad();
    ref.forward(all, 0).loss.backward();
    opt.step();
  }
  const auto a = ours.weights(), b = ref.weights();
  for (const auto& [k, v] : b) EXPECT_TRUE(testing_util::close(a.at(k), v, 1e-4, 1e-6)) << k;
}

TEST(TrainerRules, GradNormAndClipping) {
  // betas 0 and eps 1 make one AdamW step p -= lr * g / (|g| + 1): the clipped gradient shows
  // directly. g' = g * clip / (norm + 1e-6), norm = the global L2 norm before clipping.
  ToyTask ref({.n = 16, .dropout = 0, .noise = false});
  std::vector<int64_t> all(16);
  for (int64_t i = 0; i < 16; ++i) all[i] = i;
  const auto w0 = ref.weights();
  ref.forward(all, 0).loss.backward();
  double sq = 0;
  std::map<std::string, at::Tensor> grads;
  for (const auto& p : ref.module().named_parameters()) {
    grads[p.key()] = p.value().grad().clone();
    sq += p.value().grad().pow(2).sum().item<double>();
  }
  const double norm = std::sqrt(sq);
  for (double clip : {0.0, 0.01}) {
    ToyTask task({.n = 16, .dropout = 0, .noise = false});
    train::TrainerConfig c;
    c.stages.resize(1);
    c.stages[0].steps = 1;
    c.stages[0].lr = 0.1;
    c.stages[0].warmup_steps = 0;
    c.batch_size = 16;
    c.grad_clip = clip;
    c.adam_beta1 = c.adam_beta2 = 0;
    c.adam_eps = 1;
    c.progress = false;
    double reported = -1;
    train::TrainerHooks hooks;
    hooks.on_step = [&](const train::StepInfo& s) { reported = s.grad_norm; };
    train::train(task, c, {}, hooks);
    EXPECT_NEAR(reported, norm, 1e-5 * norm) << "clip " << clip;
    const double scale = clip > 0 ? clip / (norm + 1e-6) : 1.0;
    const auto w1 = task.weights();
    for (const auto& [k, g] : grads) {
      const at::Tensor gc = g * scale;
      const at::Tensor expected = w0.at(k) - 0.1 * gc / (gc.abs() + 1);
      EXPECT_TRUE(testing_util::close(w1.at(k), expected, 1e-5, 1e-7)) << k << " clip " << clip;
    }
  }
}

TEST(TrainerRules, GradientAccumulationEqualsTheFullBatch) {
  auto run = [](int64_t accum) {
    ToyTask task({.n = 20, .dropout = 0, .noise = false});
    train::TrainerConfig c;
    train::StageConfig s;
    s.steps = 5;  // 20 samples, batch 8: steps of 8, 8, 4, 8, 8 (micro 2: a 4-batch is 2 + 2)
    s.lr = 0.05;
    s.weight_decay = 0.01;
    c.stages = {s};
    c.batch_size = 8;
    c.grad_accum = accum;
    c.progress = false;
    const auto r = train::train(task, c);
    return std::make_pair(task.weights(), r.step_losses);
  };
  const auto [w1, l1] = run(1);
  const auto [w4, l4] = run(4);
  ASSERT_EQ(l1.size(), 5u);
  for (size_t i = 0; i < l1.size(); ++i) EXPECT_NEAR(l1[i], l4[i], 1e-5 * std::abs(l1[i])) << i;
  for (const auto& [k, v] : w1) EXPECT_TRUE(testing_util::close(w4.at(k), v, 1e-4, 1e-6)) << k;
  // batch_size must split evenly.
  ToyTask task;
  train::TrainerConfig c;
  c.stages.resize(1);
  c.stages[0].steps = 1;
  c.batch_size = 8;
  c.grad_accum = 3;
  expect_error([&] { train::train(task, c); }, {"batch_size 8", "grad_accum 3"});
}

TEST(TrainerRules, FreezingPerStage) {
  ToyTask task;
  const auto w0 = task.weights();
  train::TrainerConfig c;
  train::StageConfig a, b;
  a.steps = 3;
  a.freeze = {"encoder", "norm"};
  b.steps = 3;
  b.freeze = {"head"};
  c.stages = {a, b};
  c.batch_size = 4;
  c.progress = false;
  std::map<std::string, at::Tensor> mid;
  train::TrainerHooks hooks;
  hooks.on_step = [&](const train::StepInfo& s) {
    if (s.stage == 0 && s.stage_step == 3) mid = task.weights();
  };
  train::train(task, c, {}, hooks);
  const auto w2 = task.weights();
  ASSERT_FALSE(mid.empty());
  for (const char* k : {"encoder.weight", "encoder.bias", "norm.weight"}) {
    EXPECT_TRUE(at::equal(mid.at(k), w0.at(k))) << k << " changed while frozen";
    EXPECT_FALSE(at::equal(w2.at(k), mid.at(k))) << k << " did not train in stage 2";
  }
  for (const char* k : {"head.weight", "head.bias"}) {
    EXPECT_FALSE(at::equal(mid.at(k), w0.at(k))) << k << " did not train in stage 1";
    EXPECT_TRUE(at::equal(w2.at(k), mid.at(k))) << k << " changed while frozen";
  }
  for (const auto& p : task.module().parameters()) EXPECT_TRUE(p.requires_grad());  // restored
  // A prefix that matches nothing is an error, not a silent no-op.
  c.stages[1].freeze = {"vision_towr"};
  expect_error([&] { train::train(task, c); }, {"vision_towr", "matches no parameter"});
  c.stages[1].freeze = {"encoder", "norm", "head"};
  expect_error([&] { train::train(task, c); }, {"every parameter is frozen"});
  // A loss that depends on nothing trainable: a clear error, not a backward() failure.
  c.stages[1].freeze = {"head"};
  struct HeadOnly : ToyTask {
    using ToyTask::ToyTask;
    train::StepResult forward(const std::vector<int64_t>& s, uint64_t seed) override {
      train::StepResult r = ToyTask::forward(s, seed);
      r.loss = r.loss.detach();
      return r;
    }
  } detached;
  expect_error([&] { train::train(detached, c); }, {"does not depend on any trainable parameter"});
}

TEST_F(Trainer, ResumeIsBitIdentical) {
  ToyTask full;
  const auto rf = train::train(full, resume_config(dir / "full"));
  ASSERT_EQ(rf.steps, 16);
  ASSERT_EQ(rf.step_losses.size(), 16u);
  EXPECT_EQ(rf.final_checkpoint, dir / "full" / "checkpoints" / "step-00000016");
  // Interrupted at 6 (mid-stage, mid-epoch, not a save_every multiple), then at 7 (a stage end),
  // each resumed from the run folder.
  for (int64_t stop : {6, 7}) {
    const fs::path out = dir / ("split" + std::to_string(stop));
    ToyTask a;
    auto c1 = resume_config(out);
    c1.stop_at_step = stop;
    const auto r1 = train::train(a, c1);
    ASSERT_EQ(r1.steps, stop);
    ToyTask b;  // fresh weights: everything must come from the checkpoint
    const auto r2 = train::train(b, resume_config(out), out);
    EXPECT_EQ(r2.steps, 16);
    std::vector<double> losses = r1.step_losses;
    losses.insert(losses.end(), r2.step_losses.begin(), r2.step_losses.end());
    EXPECT_EQ(losses, rf.step_losses) << "stop " << stop;
    EXPECT_TRUE(same_weights(b.weights(), full.weights())) << "stop " << stop;
    // The logs agree too (loss means, lr, grad norm per logged step).
    const auto la = read_log(dir / "full" / "train_log.jsonl"),
               lb = read_log(out / "train_log.jsonl");
    ASSERT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < la.size(); ++i)
      for (const char* k : {"step", "loss", "lr", "grad_norm", "max_err"})
        EXPECT_EQ(la[i].value(k, nlohmann::json()), lb[i].value(k, nlohmann::json()))
            << k << " line " << i;
  }
  // A fresh run into a folder with checkpoints is refused (it would mix two runs).
  ToyTask again;
  expect_error([&] { train::train(again, resume_config(dir / "full")); },
               {"step-000000", "already holds a run's checkpoints", "--resume"});
  // A checkpoint folder itself works as --resume too.
  ToyTask c;
  const auto r3 = train::train(c, resume_config(dir / "from_folder"),
                               dir / "full" / "checkpoints" / "step-00000012");
  EXPECT_EQ(r3.step_losses.size(), 4u);
  EXPECT_TRUE(same_weights(c.weights(), full.weights()));
  // Resuming a run from an older checkpoint of its own folder drops the later ones and redoes them.
  ToyTask d;
  const fs::path ck16 = dir / "full" / "checkpoints" / "step-00000016";
  const auto t16 = fs::last_write_time(ck16);
  const auto r4 =
      train::train(d, resume_config(dir / "full"), dir / "full" / "checkpoints" / "step-00000012");
  EXPECT_EQ(r4.step_losses, std::vector<double>(rf.step_losses.end() - 4, rf.step_losses.end()));
  EXPECT_TRUE(same_weights(d.weights(), full.weights()));
  EXPECT_TRUE(fs::exists(ck16));
  EXPECT_NE(fs::last_write_time(ck16), t16);                         // rewritten
  EXPECT_EQ(read_log(dir / "full" / "train_log.jsonl").size(), 9u);  // 7 step lines + 2 eval lines
}

TEST_F(Trainer, OutputLayoutRotationAndLog) {
  ToyTask task;
  auto c = resume_config(dir / "run");
  c.save_every = 2;
  c.keep_last = 3;
  c.eval_every = 5;
  const auto r = train::train(task, c);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "run" / "checkpoints"))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000012", "step-00000014",
                                             "step-00000016"}));
  std::ifstream latest(dir / "run" / "checkpoints" / "latest");
  std::string l;
  latest >> l;
  EXPECT_EQ(l, "step-00000016");
  const fs::path ck = dir / "run" / "checkpoints" / "step-00000016";
  for (const char* f : {"model/model.safetensors", "model/config.json", "optimizer.safetensors",
                        "trainer_state.json"})
    EXPECT_TRUE(fs::exists(ck / f)) << f;
  const auto st = io::read_json_file(ck / "trainer_state.json");
  EXPECT_EQ(st.at("global_step"), 16);
  EXPECT_EQ(st.at("identity"), task.identity());
  EXPECT_TRUE(st.at("rng_cpu").is_string());
  // final -> the last model folder.
  EXPECT_TRUE(fs::is_symlink(dir / "run" / "final"));
  EXPECT_TRUE(fs::exists(dir / "run" / "final" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "run" / "config.json"));
  // Log: lines at 3, 6, 7 (stage end), 9, 12, 15, 16 (stage end) + eval lines at 5, 7, 10, 15, 16.
  std::vector<int64_t> steps, evals;
  for (const auto& j : read_log(dir / "run" / "train_log.jsonl")) {
    if (j.contains("eval")) {
      evals.push_back(j.at("step"));
      EXPECT_TRUE(j.at("eval").contains("mse"));
      continue;
    }
    steps.push_back(j.at("step"));
    for (const char* k : {"stage", "loss", "lr", "grad_norm", "units_per_second", "elapsed"})
      EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{3, 6, 7, 9, 12, 15, 16}));
  EXPECT_EQ(evals, (std::vector<int64_t>{5, 7, 10, 15, 16}));
  EXPECT_TRUE(r.last_eval.contains("mse"));
  // The optimizer file holds per-parameter state.
  io::SafetensorsFile opt(ck / "optimizer.safetensors");
  EXPECT_TRUE(opt.contains("head.weight.exp_avg") && opt.contains("head.weight.exp_avg_sq") &&
              opt.contains("head.weight.step"));
}

TEST_F(Trainer, ResumeAfterKillDuringCheckpointWrite) {
  ToyTask full;
  train::train(full, resume_config(dir / "full"));

  // Child: the same training, paused inside the write of the step-12 checkpoint, then SIGKILLed.
  const fs::path out = dir / "killed";
  std::vector<std::string> env_s = {"MAMBAVL_TRAINER_TEST_CHILD=" + out.string(),
                                    "MAMBAVL_TEST_PAUSE_IN_CHECKPOINT=12", "OMP_NUM_THREADS=1"};
  for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  char* argv[] = {exe.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv, envp.data()), 0);
  fs::path paused_tmp;
  for (int i = 0; i < 1200 && paused_tmp.empty(); ++i) {  // up to 60 s
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(out / "checkpoints", ec))
      if (e.path().filename().string().rfind(".step-00000012.tmp", 0) == 0 &&
          fs::exists(e.path() / "paused"))
        paused_tmp = e.path();
    int status = 0;
    if (paused_tmp.empty() && waitpid(pid, &status, WNOHANG) == pid) {
      FAIL() << "the child ended before pausing (status " << status << ")";
    }
    if (paused_tmp.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(paused_tmp.empty()) << "the child never paused in the checkpoint write";
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  // The half-written folder is there, the step-12 checkpoint is not; the newest complete one (8,
  // mid-stage: the optimizer state matters) is intact.
  EXPECT_TRUE(fs::exists(paused_tmp));
  EXPECT_FALSE(fs::exists(out / "checkpoints" / "step-00000012"));
  EXPECT_EQ(train::find_checkpoint(out), out / "checkpoints" / "step-00000008");

  ToyTask resumed;
  const auto r = train::train(resumed, resume_config(out), out);
  EXPECT_EQ(r.steps, 16);
  EXPECT_EQ(r.step_losses.size(), 8u);
  EXPECT_TRUE(same_weights(resumed.weights(), full.weights()));
  EXPECT_FALSE(fs::exists(paused_tmp));  // temp folders are cleaned up
}

TEST_F(Trainer, ResumeRefusesAnotherModel) {
  ToyTask a;
  auto c = resume_config(dir / "run");
  c.stop_at_step = 4;
  train::train(a, c);
  ToyTask b({.hidden = 16});
  expect_error([&] { train::train(b, resume_config(dir / "run"), dir / "run"); },
               {"trainer_state.json", "another model", "\"hidden\":8", "\"hidden\":16"});
  expect_error([&] { train::train(b, resume_config(dir / "x"), dir / "nothing_here"); },
               {"nothing_here", "no checkpoint to resume from"});
}

TEST(TrainerRules, Bf16AutocastOrFallback) {
  auto run = [](const std::string& precision) {
    ToyTask task({.dropout = 0, .noise = false});
    train::TrainerConfig c;
    c.stages.resize(1);
    c.stages[0].steps = 4;
    c.stages[0].lr = 0.01;
    c.batch_size = 8;
    c.precision = precision;
    c.progress = false;
    return train::train(task, c).step_losses;
  };
  const auto fp32 = run("fp32");
  const auto bf16 = run("bf16");
  ASSERT_EQ(bf16.size(), 4u);
  if (train::cpu_has_native_bf16()) {
    EXPECT_EQ(train::resolve_precision("bf16", false), "bf16");
    EXPECT_EQ(train::resolve_precision("auto", false), "bf16");
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_TRUE(std::isfinite(bf16[i]));
      EXPECT_NEAR(bf16[i], fp32[i], 0.03 * fp32[i] + 1e-3) << i;
    }
    EXPECT_NE(bf16, fp32);  // autocast did something
  } else {
    EXPECT_EQ(train::resolve_precision("bf16", false), "fp32");
    EXPECT_EQ(bf16, fp32);
  }
  expect_error([] { train::resolve_precision("fp8"); }, {"fp8", "fp32, bf16 or auto"});
}

TEST(TrainerRules, DivergenceIsAnError) {
  ToyTask task;
  train::TrainerConfig c;
  c.stages.resize(1);
  c.stages[0].steps = 50;
  c.stages[0].lr = 1e30;
  c.stages[0].warmup_steps = 0;
  c.grad_clip = 0;
  c.progress = false;
  expect_error([&] { train::train(task, c); }, {"training diverged", "lower learning rate"});
}

TEST(TrainerRules, ConfigFromJson) {
  const nlohmann::json j = {
      {"batch_size", 16},
      {"grad_accum", 2},
      {"precision", "auto"},
      {"seed", 5},
      {"stages",
       {{{"name", "align"}, {"steps", 10}, {"lr", 1e-3}, {"freeze", {"vision_tower"}}},
        {{"name", "tune"}, {"epochs", 1.5}, {"lr", 2e-5}}}}};
  const auto c = train::TrainerConfig::from_json(j, "run.toml", "train");
  EXPECT_EQ(c.batch_size, 16);
  EXPECT_EQ(c.grad_accum, 2);
  EXPECT_EQ(c.seed, 5u);
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[0].freeze, std::vector<std::string>{"vision_tower"});
  EXPECT_DOUBLE_EQ(c.stages[1].epochs, 1.5);
  // to_json -> from_json is the identity.
  EXPECT_EQ(train::TrainerConfig::from_json(c.to_json(), "x", "").to_json(), c.to_json());
  auto bad = j;
  bad["stages"][1]["lrr"] = 1;
  bad["batchsize"] = 1;
  expect_error([&] { train::TrainerConfig::from_json(bad, "run.toml", "train"); },
               {"run.toml", "'train.batchsize'"});
  bad.erase("batchsize");
  expect_error([&] { train::TrainerConfig::from_json(bad, "run.toml", "train"); },
               {"run.toml", "'train.stages.1.lrr'"});
  auto wrong = j;
  wrong["batch_size"] = "16";
  expect_error([&] { train::TrainerConfig::from_json(wrong, "run.toml", "train"); },
               {"run.toml", "'train.batch_size'", "integer"});
  wrong = j;
  wrong["grad_accum"] = 3;
  expect_error([&] { train::TrainerConfig::from_json(wrong, "run.toml", "train"); },
               {"run.toml", "not divisible"});
  wrong = j;
  wrong.erase("stages");
  expect_error([&] { train::TrainerConfig::from_json(wrong, "run.toml", "train"); },
               {"run.toml", "'train.stages'"});
}
