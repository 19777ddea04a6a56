#include "train/classifier_trainer.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <sstream>

#include "common/error.h"
#include "common/progress.h"
#include "eval/classification.h"
#include "io/checkpoint.h"
#include "train/lr_schedule.h"

namespace mambavl::train {

namespace fs = std::filesystem;

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t mix(uint64_t seed, uint64_t a) {
  uint64_t s = seed ^ (a * 0xD6E8FEB86659FD93ull);
  return splitmix64(s);
}

double seconds_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

nlohmann::json TrainConfig::to_json() const {
  return {{"epochs", epochs},
          {"max_steps", max_steps},
          {"batch_size", batch_size},
          {"lr", lr},
          {"weight_decay", weight_decay},
          {"warmup_steps", warmup_steps},
          {"warmup_epochs", warmup_epochs},
          {"min_lr_ratio", min_lr_ratio},
          {"label_smoothing", label_smoothing},
          {"grad_clip", grad_clip},
          {"seed", seed},
          {"augment", augment},
          {"crop_scale_min", crop_scale_min},
          {"eval_every_epoch", eval_every_epoch},
          {"eval_batch", eval_batch},
          {"save_every", save_every}};
}

nlohmann::json EpochMetrics::to_json() const {
  nlohmann::json j = {{"epoch", epoch},
                      {"step", step},
                      {"train_loss", train_loss},
                      {"train_top1", train_top1},
                      {"lr", lr},
                      {"seconds", seconds},
                      {"images_per_second", images_per_second}};
  if (has_val) {
    j["val_top1"] = val_top1;
    j["val_top5"] = val_top5;
    j["val_loss"] = val_loss;
    j["val_count"] = val_count;
  }
  return j;
}

bool no_weight_decay(const std::string& name, int64_t dim) {
  if (dim <= 1 || ends_with(name, "bias")) return true;
  static const char* const kNames[] = {
      "pos_embed", "position_embedding", "cls_token", "class_embedding", "A_log", "dist_token"};
  for (const char* k : kNames)
    if (name.find(k) != std::string::npos) return true;
  return false;
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = mix(seed, 0x5151 + static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t r = splitmix64(state);
    const auto j = static_cast<int64_t>(
        (static_cast<unsigned __int128>(r) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

void save_checkpoint_dir(models::ImageClassifier& clf, const std::vector<std::string>& classes,
                         const fs::path& dir_in, const nlohmann::json* state) {
  const fs::path dir = dir_in.has_filename() ? dir_in : dir_in.parent_path();
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  fs::create_directories(parent);
  const std::string base = "." + dir.filename().string();
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = parent / (base + ".tmp." + pid);
  fs::remove_all(tmp);
  try {
    models::save_classifier(clf, classes, tmp);
    if (state) io::write_json_file(tmp / "trainer_state.json", *state);
    fsync_dir(tmp);
    if (!fs::exists(dir)) {
      fs::rename(tmp, dir);
    } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
      fs::remove_all(tmp);  // now holds the previous checkpoint
    } else {
      // No atomic exchange on this filesystem: move the old one aside first (a crash in between
      // leaves it in <dir>.old.<pid>).
      const fs::path old = parent / (base + ".old." + pid);
      fs::remove_all(old);
      fs::rename(dir, old);
      fs::rename(tmp, dir);
      fs::remove_all(old);
    }
    fsync_dir(parent);
  } catch (const fs::filesystem_error& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    MVL_FAIL(dir.string(), ": cannot write the checkpoint: ", e.code().message());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

TrainResult train_classifier(models::ImageClassifier& clf, const data::ImageDataset& train,
                             const data::ImageDataset* val, const TrainConfig& cfg,
                             const TrainCallbacks& callbacks) {
  const int64_t n = train.size();
  MVL_CHECK(n > 0, "train_classifier: the training set is empty");
  MVL_CHECK(cfg.batch_size >= 1, "train_classifier: batch size must be >= 1, got ", cfg.batch_size);
  MVL_CHECK(cfg.max_steps > 0 || cfg.epochs >= 1,
            "train_classifier: give epochs >= 1 or max_steps >= 1");
  MVL_CHECK(cfg.lr > 0 && std::isfinite(cfg.lr), "train_classifier: lr must be > 0, got ", cfg.lr);
  MVL_CHECK(cfg.weight_decay >= 0, "train_classifier: weight decay must be >= 0");
  MVL_CHECK(cfg.label_smoothing >= 0 && cfg.label_smoothing < 1,
            "train_classifier: label smoothing must be in [0, 1), got ", cfg.label_smoothing);
  MVL_CHECK(cfg.min_lr_ratio >= 0 && cfg.min_lr_ratio <= 1,
            "train_classifier: min lr ratio must be in [0, 1], got ", cfg.min_lr_ratio);
  MVL_CHECK(cfg.grad_clip >= 0, "train_classifier: grad clip must be >= 0 (0 = off)");
  MVL_CHECK(cfg.crop_scale_min > 0 && cfg.crop_scale_min <= 1,
            "train_classifier: crop scale min must be in (0, 1], got ", cfg.crop_scale_min);
  MVL_CHECK(cfg.save_every >= 1, "train_classifier: save_every must be >= 1");
  const int64_t num_classes = clf.num_classes();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = train.label(i);
    MVL_CHECK(y >= 0 && y < num_classes, train.name(i), ": label ", y, " is outside the model's ",
              num_classes, " classes");
  }
  MVL_CHECK(static_cast<int64_t>(train.classes().size()) == num_classes,
            "train_classifier: ", train.classes().size(), " classes in the data but the model has ",
            num_classes);
  if (cfg.threads > 0) at::set_num_threads(cfg.threads);
  at::manual_seed(cfg.seed);

  const int64_t steps_per_epoch = (n + cfg.batch_size - 1) / cfg.batch_size;
  const int64_t total_steps = cfg.max_steps > 0 ? cfg.max_steps : cfg.epochs * steps_per_epoch;
  const int64_t num_epochs = (total_steps + steps_per_epoch - 1) / steps_per_epoch;
  WarmupCosineSchedule sched;
  sched.base_lr = cfg.lr;
  sched.warmup_steps =
      cfg.warmup_steps > 0
          ? cfg.warmup_steps
          : static_cast<int64_t>(std::llround(cfg.warmup_epochs * steps_per_epoch));
  sched.warmup_steps = std::min(sched.warmup_steps, total_steps);
  sched.total_steps = total_steps;
  sched.min_lr_ratio = cfg.min_lr_ratio;

  // AdamW with two groups: decayed weights and everything timm exempts.
  torch::nn::Module& module = clf.module();
  std::vector<at::Tensor> decay, no_decay, all_params;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    (no_weight_decay(item.key(), item.value().dim()) ? no_decay : decay).push_back(item.value());
    all_params.push_back(item.value());
  }
  MVL_CHECK(!all_params.empty(), "train_classifier: the model has no trainable parameters");
  std::vector<torch::optim::OptimizerParamGroup> groups;
  auto group_opts = [&](double wd) {
    auto o = std::make_unique<torch::optim::AdamWOptions>(cfg.lr);
    o->weight_decay(wd);
    return o;
  };
  if (!decay.empty()) groups.emplace_back(decay, group_opts(cfg.weight_decay));
  if (!no_decay.empty()) groups.emplace_back(no_decay, group_opts(0.0));
  torch::optim::AdamW optimizer(std::move(groups), torch::optim::AdamWOptions(cfg.lr));

  const io::ImagePreprocess pp = clf.preprocess();
  data::TrainAugment augment;
  augment.pp = pp;
  augment.scale_min = cfg.crop_scale_min;
  const std::vector<std::string> classes = train.classes();

  TrainResult result;
  std::vector<std::string> log_lines;
  const bool write = !cfg.out_dir.empty();
  if (write) fs::create_directories(cfg.out_dir);
  int64_t step = 0;
  const int64_t width = static_cast<int64_t>(std::to_string(num_epochs).size());
  for (int64_t epoch = 0; epoch < num_epochs; ++epoch) {
    module.train();
    const std::vector<int64_t> order = epoch_order(n, cfg.seed, epoch);
    const uint64_t aug_seed = mix(cfg.seed, 0xA5A5 + static_cast<uint64_t>(epoch));
    const int64_t epoch_steps = std::min(steps_per_epoch, total_steps - step);
    const int64_t epoch_images = std::min(n, epoch_steps * cfg.batch_size);
    std::optional<ProgressBar> bar;
    if (cfg.progress) {
      ProgressBar::Options po;
      po.unit = "img";
      std::ostringstream label;
      label << "epoch " << std::string(width - std::to_string(epoch + 1).size(), ' ') << (epoch + 1)
            << "/" << num_epochs;
      bar.emplace(label.str(), epoch_images, po);
    }
    const double t0 = seconds_now();
    double loss_sum = 0, lr = 0;
    int64_t seen = 0, correct = 0;
    for (int64_t s = 0; s < epoch_steps; ++s) {
      const int64_t begin = s * cfg.batch_size;
      const int64_t end = std::min(n, begin + cfg.batch_size);
      const std::vector<int64_t> idx(order.begin() + begin, order.begin() + end);
      data::Batch b = data::make_batch(train, idx, pp, cfg.augment ? &augment : nullptr, aug_seed);
      lr = sched.lr_at(step);
      for (auto& g : optimizer.param_groups())
        static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
      optimizer.zero_grad();
      const at::Tensor logits = clf.forward(b.images).to(at::kFloat);
      const at::Tensor labels = b.labels.to(at::kLong);
      at::Tensor loss = at::cross_entropy_loss(logits, labels, {}, at::Reduction::Mean, -100,
                                               cfg.label_smoothing);
      const double loss_v = loss.item<double>();
      MVL_CHECK(std::isfinite(loss_v), "training diverged: the loss is ", loss_v, " at step ",
                step + 1, " (lr ", lr, "); try a lower learning rate or gradient clipping");
      loss.backward();
      if (cfg.grad_clip > 0) torch::nn::utils::clip_grad_norm_(all_params, cfg.grad_clip);
      optimizer.step();
      ++step;
      const int64_t bs = end - begin;
      loss_sum += loss_v * bs;
      seen += bs;
      correct += eval::topk_correct(logits.detach(), labels, 1);
      result.step_losses.push_back(loss_v);
      if (callbacks.on_step) callbacks.on_step(step, loss_v, lr);
      if (bar) {
        bar->set_field("loss", loss_sum / seen, 4);
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2e", lr);
        bar->set_field("lr", buf);
        bar->advance(bs);
      }
    }
    if (bar) bar->finish();
    const double train_seconds = seconds_now() - t0;

    EpochMetrics m;
    m.epoch = epoch + 1;
    m.step = step;
    m.train_loss = seen ? loss_sum / seen : 0;
    m.train_top1 = seen ? static_cast<double>(correct) / seen : 0;
    m.lr = lr;
    m.seconds = train_seconds;
    m.images_per_second = train_seconds > 0 ? seen / train_seconds : 0;
    const bool last_epoch = epoch + 1 == num_epochs;
    if (val && val->size() > 0 && (cfg.eval_every_epoch || last_epoch)) {
      eval::EvalOptions eo;
      eo.batch = cfg.eval_batch;
      eo.progress = cfg.progress;
      const eval::ClassificationMetrics vm = eval::evaluate_classifier(clf, *val, pp, eo);
      m.has_val = true;
      m.val_top1 = vm.top1;
      m.val_top5 = vm.top5;
      m.val_loss = vm.loss;
      m.val_count = vm.count;
    }
    if (cfg.progress) {
      std::fprintf(stderr, "epoch %lld: train loss %.4f top-1 %.2f%%",
                   static_cast<long long>(m.epoch), m.train_loss, 100 * m.train_top1);
      if (m.has_val)
        std::fprintf(stderr, " | val loss %.4f top-1 %.2f%% top-5 %.2f%%", m.val_loss,
                     100 * m.val_top1, 100 * m.val_top5);
      std::fprintf(stderr, " | %.1f img/s\n", m.images_per_second);
    }
    result.epochs.push_back(m);
    result.steps = step;

    bool improved = false;
    if (m.has_val && m.val_top1 > result.best_val_top1) {
      result.best_val_top1 = m.val_top1;
      result.best_epoch = m.epoch;
      improved = true;
    }
    if (write) {
      nlohmann::json state = {{"epoch", m.epoch},
                              {"step", step},
                              {"total_steps", total_steps},
                              {"metrics", m.to_json()},
                              {"config", cfg.to_json()}};
      const bool save_last = last_epoch || m.epoch % cfg.save_every == 0;
      if (save_last) save_checkpoint_dir(clf, classes, cfg.out_dir / "last", &state);
      // best: the best validation top-1; without validation the latest saved model.
      if (improved || (!m.has_val && save_last))
        save_checkpoint_dir(clf, classes, cfg.out_dir / "best", &state);
      log_lines.push_back(m.to_json().dump());
      std::string text;
      for (const auto& l : log_lines) text += l + "\n";
      io::write_text_file_atomic(cfg.out_dir / "train_log.jsonl", text);
    }
    if (callbacks.on_epoch) callbacks.on_epoch(m);
  }
  module.train();
  return result;
}

}  // namespace mambavl::train
