// The classification trainer (train/classifier_trainer.h), its LR schedule, the classification
// metrics (eval/classification.h) and the progress bar (common/progress.h), on a tiny classifier
// and a fake dataset defined here; the real model families are exercised by test_cli_vision.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/progress.h"
#include "data/image_dataset.h"
#include "eval/classification.h"
#include "io/checkpoint.h"
#include "models/vision.h"
#include "train/classifier_trainer.h"
#include "train/lr_schedule.h"

using namespace mambavl;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kSize = 8;

// conv 3x3 (3 -> 8) + ReLU + global average + linear (8 -> K).
struct TinyNet : torch::nn::Module {
  explicit TinyNet(int64_t k) {
    conv_weight = register_parameter("conv_weight", at::randn({8, 3, 3, 3}) * 0.3);
    conv_bias = register_parameter("conv_bias", at::zeros({8}));
    fc_weight = register_parameter("fc_weight", at::randn({k, 8}) * 0.3);
    fc_bias = register_parameter("fc_bias", at::zeros({k}));
  }
  at::Tensor conv_weight, conv_bias, fc_weight, fc_bias;
};

class TinyClassifier : public models::ImageClassifier {
 public:
  TinyClassifier(int64_t k, uint64_t seed) : k_(k) {
    at::manual_seed(seed);
    net_ = std::make_shared<TinyNet>(k);
  }
  std::string arch() const override { return "tiny"; }
  int64_t num_classes() const override { return k_; }
  io::ImagePreprocess preprocess() const override {
    io::ImagePreprocess pp;
    pp.size = kSize;
    pp.resample = io::Resample::Bilinear;
    pp.mode = "squash";
    pp.mean = {0.5, 0.5, 0.5};
    pp.std = {0.5, 0.5, 0.5};
    return pp;
  }
  at::Tensor forward(const at::Tensor& x) override {
    at::Tensor h = at::conv2d(x, net_->conv_weight, net_->conv_bias, 1, 1).relu();
    return at::linear(h.mean({2, 3}), net_->fc_weight, net_->fc_bias);
  }
  torch::nn::Module& module() override { return *net_; }
  nlohmann::json config_json() const override {
    return {{"architecture", "tiny"}, {"num_classes", k_}};
  }
  TinyNet& net() { return *net_; }

 private:
  int64_t k_;
  std::shared_ptr<TinyNet> net_;
};

// Image i: class i % 3 sets which channel is bright; a deterministic noise pattern varies it.
class FakeDataset : public data::ImageDataset {
 public:
  explicit FakeDataset(int64_t n, int64_t bad_label_at = -1) : n_(n), bad_(bad_label_at) {}
  int64_t size() const override { return n_; }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t label(int64_t i) const override { return i == bad_ ? 7 : i % 3; }
  io::Image image(int64_t i) const override {
    io::Image img;
    img.width = img.height = kSize;
    img.pixels.resize(kSize * kSize * 3);
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u + 12345u;
    for (int64_t p = 0; p < kSize * kSize; ++p) {
      for (int64_t c = 0; c < 3; ++c) {
        h = h * 1664525u + 1013904223u;
        const int noise = static_cast<int>(h >> 26);  // 0..63
        const int base = c == i % 3 ? 150 : 60;
        img.pixels[p * 3 + c] = static_cast<uint8_t>(base + noise);
      }
    }
    return img;
  }
  std::string name(int64_t i) const override { return "fake#" + std::to_string(i); }

 private:
  int64_t n_, bad_;
  std::vector<std::string> classes_{"red", "green", "blue"};
};

train::TrainConfig quick_config() {
  train::TrainConfig c;
  c.epochs = 3;
  c.batch_size = 8;
  c.lr = 0.05;
  c.weight_decay = 0.01;
  c.warmup_steps = 2;
  c.label_smoothing = 0.1;
  c.seed = 5;
  c.progress = false;
  return c;
}

fs::path temp_dir(const std::string& tag) {
  fs::path d =
      fs::temp_directory_path() / ("mambavl_ct_" + std::to_string(getpid()) + "_" + tag + "_" +
                                   testing::UnitTest::GetInstance()->current_test_info()->name());
  fs::remove_all(d);
  return d;
}

double mean_of(const std::vector<double>& v, size_t begin, size_t end) {
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += v[i];
  return s / static_cast<double>(end - begin);
}

}  // namespace

TEST(ClassifierTrain, WarmupCosineSchedule) {
  train::WarmupCosineSchedule s;
  s.base_lr = 1.0;
  s.warmup_steps = 4;
  s.total_steps = 14;
  s.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.lr_at(1), 0.5);
  EXPECT_DOUBLE_EQ(s.lr_at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(4), 1.0);                // cosine starts at the peak
  EXPECT_NEAR(s.lr_at(9), 0.1 + 0.9 * 0.5, 1e-12);  // half way: the middle
  EXPECT_NEAR(s.lr_at(14), 0.1, 1e-12);             // the end: the floor
  EXPECT_NEAR(s.lr_at(100), 0.1, 1e-12);            // clamped
  for (int64_t i = 4; i < 14; ++i) EXPECT_GT(s.lr_at(i), s.lr_at(i + 1)) << i;
  s.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(s.lr_at(0), 1.0);
}

TEST(ClassifierTrain, NoWeightDecayOnNormsBiasesEmbeddings) {
  EXPECT_TRUE(train::no_weight_decay("stages.0.0.norm.weight", 1));
  EXPECT_TRUE(train::no_weight_decay("head.fc1.bias", 1));
  EXPECT_TRUE(train::no_weight_decay("embeddings.position_embedding.weight", 2));
  EXPECT_TRUE(train::no_weight_decay("pos_embed", 3));
  EXPECT_TRUE(train::no_weight_decay("cls_token", 3));
  EXPECT_TRUE(train::no_weight_decay("stages.0.0.mixer.A_log", 2));
  EXPECT_FALSE(train::no_weight_decay("stages.0.0.fc1.weight", 2));
  EXPECT_FALSE(train::no_weight_decay("downsample_layers.0.conv1.weight", 4));
}

TEST(ClassifierTrain, EpochOrderIsASeededPermutation) {
  const auto a = train::epoch_order(50, 7, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_EQ(a, train::epoch_order(50, 7, 0));
  EXPECT_NE(a, train::epoch_order(50, 7, 1));
  EXPECT_NE(a, train::epoch_order(50, 8, 0));
  // Fixed values: the order must not depend on the standard library's distributions.
  // (values from an independent Python transcription of the splitmix64 Fisher-Yates)
  EXPECT_EQ(train::epoch_order(5, 1, 0), (std::vector<int64_t>{1, 2, 0, 4, 3}));
  EXPECT_EQ(train::epoch_order(8, 42, 3), (std::vector<int64_t>{5, 1, 4, 6, 2, 7, 0, 3}));
  EXPECT_TRUE(train::epoch_order(0, 1, 0).empty());
}

TEST(ClassifierTrain, TopK) {
  const at::Tensor logits =
      at::tensor({0.1f, 3.0f, 2.0f, -1.0f, 5.0f, 4.0f, 0.0f, 1.0f}, at::kFloat).view({2, 4});
  const at::Tensor idx = eval::topk(logits, 2);
  ASSERT_EQ(idx.sizes(), (at::IntArrayRef{2, 2}));
  EXPECT_EQ(idx[0][0].item<int64_t>(), 1);
  EXPECT_EQ(idx[0][1].item<int64_t>(), 2);
  EXPECT_EQ(idx[1][0].item<int64_t>(), 0);
  EXPECT_EQ(idx[1][1].item<int64_t>(), 1);
  EXPECT_EQ(eval::topk(logits, 9).size(1), 4);  // k is capped at the class count
  const at::Tensor labels = at::tensor({2, 3}, at::kLong);
  EXPECT_EQ(eval::topk_correct(logits, labels, 1), 0);
  EXPECT_EQ(eval::topk_correct(logits, labels, 2), 1);
  EXPECT_EQ(eval::topk_correct(logits, labels, 4), 2);
  EXPECT_THROW(eval::topk(logits, 0), Error);
}

TEST(ClassifierTrain, EvaluateWithKnownLogits) {
  // Zero weights and bias (1, 0, 0): every image gets logits (1, 0, 0) -> always class 0.
  TinyClassifier clf(3, 0);
  {
    at::NoGradGuard ng;
    clf.net().fc_weight.zero_();
    clf.net().fc_bias.copy_(at::tensor({1.0f, 0.0f, 0.0f}));
  }
  FakeDataset ds(12);  // 4 per class
  const auto m = eval::evaluate_classifier(clf, ds, clf.preprocess(), 5);
  EXPECT_EQ(m.count, 12);
  EXPECT_DOUBLE_EQ(m.top1, 4.0 / 12);
  EXPECT_DOUBLE_EQ(m.top5, 1.0);  // top-min(5, 3): always right
  const double z = std::exp(1.0) + 2.0;
  const double expected = (4 * -std::log(std::exp(1.0) / z) + 8 * -std::log(1.0 / z)) / 12;
  EXPECT_NEAR(m.loss, expected, 1e-5);
  EXPECT_TRUE(clf.module().is_training());  // mode restored
}

TEST(ClassifierTrain, LossDecreasesAndRunsAreDeterministic) {
  FakeDataset ds(48);
  auto run = [&](uint64_t seed, bool augment) {
    TinyClassifier clf(3, 1);
    auto cfg = quick_config();
    cfg.seed = seed;
    cfg.augment = augment;
    cfg.epochs = 4;
    return train::train_classifier(clf, ds, nullptr, cfg).step_losses;
  };
  const auto a = run(5, false);
  ASSERT_EQ(a.size(), 4u * 6u);
  EXPECT_LT(mean_of(a, a.size() - 6, a.size()), mean_of(a, 0, 6) * 0.8);
  EXPECT_EQ(a, run(5, false));  // bit-identical
  EXPECT_NE(a, run(6, false));  // the seed changes the data order
  const auto b = run(5, true);
  EXPECT_EQ(b, run(5, true));
  EXPECT_LT(mean_of(b, b.size() - 6, b.size()), mean_of(b, 0, 6));
}

TEST(ClassifierTrain, MaxStepsAndCallbacks) {
  FakeDataset ds(20);  // batch 8: 3 steps per epoch
  TinyClassifier clf(3, 0);
  auto cfg = quick_config();
  cfg.max_steps = 7;
  std::vector<int64_t> steps;
  std::vector<double> lrs;
  int epochs = 0;
  train::TrainCallbacks cb;
  cb.on_step = [&](int64_t s, double, double lr) {
    steps.push_back(s);
    lrs.push_back(lr);
  };
  cb.on_epoch = [&](const train::EpochMetrics&) { ++epochs; };
  const auto r = train::train_classifier(clf, ds, nullptr, cfg, cb);
  EXPECT_EQ(r.steps, 7);
  EXPECT_EQ(r.step_losses.size(), 7u);
  EXPECT_EQ(epochs, 3);  // 3 + 3 + 1
  ASSERT_EQ(steps.size(), 7u);
  EXPECT_EQ(steps.back(), 7);
  EXPECT_DOUBLE_EQ(lrs[0], cfg.lr / 2);  // warmup 2 steps
  EXPECT_DOUBLE_EQ(lrs[1], cfg.lr);
  EXPECT_LT(lrs[6], lrs[2]);  // cosine decay
}

TEST(ClassifierTrain, WritesCheckpointsAndLog) {
  const fs::path out = temp_dir("ckpt");
  FakeDataset train_ds(24), val_ds(9);
  TinyClassifier clf(3, 0);
  auto cfg = quick_config();
  cfg.out_dir = out;
  cfg.epochs = 3;
  cfg.save_every = 2;
  const auto r = train::train_classifier(clf, train_ds, &val_ds, cfg);
  ASSERT_EQ(r.epochs.size(), 3u);
  for (const auto& m : r.epochs) {
    EXPECT_TRUE(m.has_val);
    EXPECT_EQ(m.val_count, 9);
    EXPECT_GE(m.val_top1, 0.0);
    EXPECT_LE(m.val_top1, m.val_top5);
  }
  EXPECT_GE(r.best_epoch, 1);
  for (const char* sub : {"last", "best"}) {
    const fs::path d = out / sub;
    ASSERT_TRUE(fs::exists(d / "model.safetensors")) << d;
    const auto cfgj = io::read_json_file(d / "config.json");
    EXPECT_EQ(cfgj.at("classes"), nlohmann::json({"red", "green", "blue"}));
    EXPECT_EQ(cfgj.at("architecture"), "tiny");
    const auto st = io::read_json_file(d / "trainer_state.json");
    EXPECT_TRUE(st.contains("metrics"));
  }
  EXPECT_EQ(io::read_json_file(out / "last" / "trainer_state.json").at("epoch"), 3);
  EXPECT_EQ(io::read_json_file(out / "best" / "trainer_state.json").at("epoch"), r.best_epoch);
  std::ifstream log(out / "train_log.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(log, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("epoch"), ++n);
    EXPECT_TRUE(j.contains("val_top1") && j.contains("train_loss") && j.contains("lr"));
  }
  EXPECT_EQ(n, 3);
  // No temp folders or files are left behind.
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  fs::remove_all(out);
}

TEST(ClassifierTrain, CheckpointFolderIsReplacedWhole) {
  const fs::path out = temp_dir("swap");
  TinyClassifier a(3, 1), b(3, 2);
  const std::vector<std::string> classes{"x", "y", "z"};
  train::save_checkpoint_dir(a, classes, out / "last");
  std::ofstream(out / "last" / "stale.txt") << "from the first save";
  const nlohmann::json state = {{"epoch", 2}};
  train::save_checkpoint_dir(b, classes, out / "last", &state);
  EXPECT_FALSE(fs::exists(out / "last" / "stale.txt"));  // a new folder, not an overwrite
  EXPECT_EQ(io::read_json_file(out / "last" / "trainer_state.json").at("epoch"), 2);
  io::CheckpointFolder ck(out / "last");
  EXPECT_TRUE(at::equal(ck.tensor("fc_weight"), b.net().fc_weight.detach()));
  int entries = 0;
  for (const auto& e : fs::directory_iterator(out)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "last");
  }
  EXPECT_EQ(entries, 1);
  fs::remove_all(out);
}

TEST(ClassifierTrain, BadInputIsAnError) {
  TinyClassifier clf(3, 0);
  auto cfg = quick_config();
  FakeDataset empty(0), bad(10, /*bad_label_at=*/4);
  EXPECT_THROW(train::train_classifier(clf, empty, nullptr, cfg), Error);
  try {
    train::train_classifier(clf, bad, nullptr, cfg);
    FAIL() << "no error for a label outside the model's classes";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fake#4"), std::string::npos) << e.what();
  }
  FakeDataset ok(10);
  cfg.lr = -1;
  EXPECT_THROW(train::train_classifier(clf, ok, nullptr, cfg), Error);
  cfg = quick_config();
  cfg.label_smoothing = 1.5;
  EXPECT_THROW(train::train_classifier(clf, ok, nullptr, cfg), Error);
}

TEST(ClassifierTrain, ProgressBarPlainLines) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  double t = 100.0;
  {
    ProgressBar::Options o;
    o.mode = ProgressBar::Mode::Lines;
    o.out = f;
    o.unit = "img";
    o.clock = [&t] { return t; };
    ProgressBar bar("epoch 1/2", 200, o);
    for (int i = 0; i < 100; ++i) {
      t += 0.5;
      bar.set_field("loss", 2.0 - i * 0.01, 3);
      bar.advance(2);
      if (i == 49) {
        // 100 of 200 in 25 s: 4 img/s, 25 s left.
        EXPECT_DOUBLE_EQ(bar.rate(), 4.0);
        EXPECT_DOUBLE_EQ(bar.eta(), 25.0);
        EXPECT_EQ(bar.status_line(),
                  "epoch 1/2 100/200 50% 4.0 img/s elapsed 00:25 eta 00:25 loss 1.510");
      }
    }
  }  // the destructor finishes
  std::fclose(f);
  const std::string out(buf, len);
  std::free(buf);
  int lines = 0;
  for (char c : out) lines += c == '\n';
  EXPECT_EQ(lines, 10) << out;  // 10 %, 20 % ... 90 %, then the final line
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_NE(out.find("200/200 100%"), std::string::npos) << out;
  EXPECT_EQ(ProgressBar::format_duration(3723), "1:02:03");
  EXPECT_EQ(ProgressBar::format_duration(65), "01:05");
  EXPECT_EQ(ProgressBar::format_duration(-1), "--:--");
}

TEST(ClassifierTrain, ProgressBarTtyRedrawsInPlace) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  double t = 0;
  {
    ProgressBar::Options o;
    o.mode = ProgressBar::Mode::Tty;
    o.out = f;
    o.width = 10;
    o.clock = [&t] { return t; };
    ProgressBar bar("eval", 4, o);
    for (int i = 0; i < 4; ++i) {
      t += 1;
      bar.advance();
    }
    bar.finish();
    bar.finish();  // idempotent
  }
  std::fclose(f);
  const std::string out(buf, len);
  std::free(buf);
  EXPECT_NE(out.find('\r'), std::string::npos);
  EXPECT_NE(out.find("[##########] eval 4/4 100%"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
}

TEST(ClassifierTrain, BuiltInSyntheticDataWithAugmentation) {
  // The images branch's synthetic shapes and TrainAugment (random-resized-crop + flip), with a
  // validation split: the loss goes down and two runs with the same seed are bit-identical.
  auto all = std::make_shared<data::SyntheticDataset>(60, 3, 16, 9);
  const data::Split sp = data::split_dataset(all, 0.2, 9);
  auto run = [&](bool augment) {
    TinyClassifier clf(3, 2);
    auto cfg = quick_config();
    cfg.epochs = 6;
    cfg.augment = augment;
    cfg.crop_scale_min = 0.5;
    return train::train_classifier(clf, *sp.train, sp.val.get(), cfg);
  };
  for (bool augment : {false, true}) {
    const auto r = run(augment);
    const auto& l = r.step_losses;
    ASSERT_EQ(l.size(), 6u * 6u);  // 48 training images, batch 8
    EXPECT_LT(mean_of(l, l.size() - 6, l.size()), mean_of(l, 0, 6)) << "augment " << augment;
    EXPECT_EQ(r.epochs.back().val_count, 12);
    EXPECT_EQ(l, run(augment).step_losses) << "augment " << augment;
  }
}

TEST(ClassifierTrain, WeightDecaySkipsBiases) {
  // One AdamW step with a huge decay: decayed weights shrink by (1 - lr * wd) = 0.5 (plus an
  // Adam update of at most ~lr per element); the 1-D biases get no decay, so they move by <= lr.
  TinyClassifier clf(3, 4);
  {
    at::NoGradGuard ng;
    clf.net().conv_bias.fill_(1.0);  // non-zero, so that a decay would show
  }
  const at::Tensor w0 = clf.net().fc_weight.detach().clone();
  const at::Tensor b0 = clf.net().conv_bias.detach().clone();
  FakeDataset ds(8);
  auto cfg = quick_config();
  cfg.lr = 0.005;
  cfg.weight_decay = 100;
  cfg.warmup_steps = 0;
  cfg.max_steps = 1;
  train::train_classifier(clf, ds, nullptr, cfg);
  const double lr_bound = cfg.lr * 1.01;
  EXPECT_LE((clf.net().fc_weight.detach() - w0 * 0.5).abs().max().item<double>(), lr_bound);
  EXPECT_LE((clf.net().conv_bias.detach() - b0).abs().max().item<double>(), lr_bound);
  EXPECT_GT((clf.net().fc_weight.detach() - w0).abs().max().item<double>(), 10 * cfg.lr);
}

TEST(ClassifierTrain, ClassifierTaskResumesExactlyThroughTheTrainer) {
  // The classifier as a TrainTask of the one trainer: N steps + resume + N steps equals 2N steps
  // bit for bit (augmentation from the step seeds, the AdamW state, the data position).
  const fs::path out = temp_dir("resume");
  FakeDataset ds(20);
  auto config = [&](const fs::path& dir) {
    train::TrainerConfig c;
    train::StageConfig s;
    s.steps = 8;  // 20 images, batch 6: epochs of 6, 6, 6, 2
    s.lr = 0.05;
    s.warmup_steps = 2;
    s.weight_decay = 0.01;
    c.stages = {s};
    c.batch_size = 6;
    c.grad_accum = 2;
    c.seed = 3;
    c.save_every = 3;
    c.progress = false;
    c.out_dir = dir;
    return c;
  };
  train::ClassifierTaskOptions opt;
  opt.crop_scale_min = 0.5;
  TinyClassifier full(3, 1);
  train::ClassifierTask full_task(full, ds, nullptr, opt);
  const auto rf = train::train(full_task, config(out / "full"));
  ASSERT_EQ(rf.step_losses.size(), 8u);

  TinyClassifier a(3, 1);
  train::ClassifierTask task_a(a, ds, nullptr, opt);
  auto c = config(out / "split");
  c.stop_at_step = 4;
  const auto r1 = train::train(task_a, c);
  TinyClassifier b(3, 9);  // other initial weights: all of them must come from the checkpoint
  train::ClassifierTask task_b(b, ds, nullptr, opt);
  const auto r2 = train::train(task_b, config(out / "split"), out / "split");
  std::vector<double> losses = r1.step_losses;
  losses.insert(losses.end(), r2.step_losses.begin(), r2.step_losses.end());
  EXPECT_EQ(losses, rf.step_losses);
  for (const auto& p : full.module().named_parameters())
    EXPECT_TRUE(at::equal(p.value(), b.module().named_parameters()[p.key()])) << p.key();
  // The checkpoint's model folder is a classifier folder with the class names.
  const auto cfgj = io::read_json_file(out / "full" / "final" / "config.json");
  EXPECT_EQ(cfgj.at("classes"), nlohmann::json({"red", "green", "blue"}));
  // Another classifier shape is refused.
  TinyClassifier other(5, 1);
  FakeDataset ds5(20);
  EXPECT_THROW(train::ClassifierTask(other, ds5, nullptr, opt), Error);  // 3 classes in the data
  fs::remove_all(out);
}
