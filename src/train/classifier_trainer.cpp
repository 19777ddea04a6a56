#include "train/classifier_trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include "common/error.h"
#include "common/progress.h"
#include "io/checkpoint.h"

namespace mambavl::train {

namespace fs = std::filesystem;

namespace {

double seconds_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// timm's exemptions by name (on top of every <= 1-D tensor): biases, position / class
// embeddings, SSM A_log.
const std::vector<std::string>& classifier_no_decay() {
  static const std::vector<std::string> k = {"bias",      "pos_embed",       "position_embedding",
                                             "cls_token", "class_embedding", "A_log",
                                             "dist_token"};
  return k;
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

EpochMetrics EpochMetrics::from_json(const nlohmann::json& j) {
  EpochMetrics m;
  m.epoch = j.at("epoch").get<int64_t>();
  m.step = j.at("step").get<int64_t>();
  m.train_loss = j.value("train_loss", 0.0);
  m.train_top1 = j.value("train_top1", 0.0);
  m.lr = j.value("lr", 0.0);
  m.seconds = j.value("seconds", 0.0);
  m.images_per_second = j.value("images_per_second", 0.0);
  m.has_val = j.contains("val_top1");
  if (m.has_val) {
    m.val_top1 = j.at("val_top1").get<double>();
    m.val_top5 = j.value("val_top5", 0.0);
    m.val_loss = j.value("val_loss", 0.0);
    m.val_count = j.value("val_count", int64_t{0});
  }
  return m;
}

fs::path classifier_resume_checkpoint(const fs::path& out_dir) {
  const fs::path t = out_dir / "trainer";
  try {
    return find_checkpoint(t);
  } catch (const Error&) {
    std::error_code ec;
    MVL_CHECK(fs::exists(out_dir, ec) && !fs::is_empty(out_dir, ec), out_dir.string(),
              ": nothing to resume: the folder is absent or empty; start the run without --resume");
    MVL_FAIL(out_dir.string(), ": nothing to resume: no trainer checkpoint in ", t.string(),
             " (one is written with last/ at every saved epoch; a run stopped before its first "
             "saved epoch, or written by a mambavl without train-classifier --resume, cannot be "
             "continued: start it again with --overwrite)");
  }
}

bool no_weight_decay(const std::string& name, int64_t dim) {
  return no_decay_param(name, dim, classifier_no_decay());
}

void save_checkpoint_dir(models::ImageClassifier& clf, const std::vector<std::string>& classes,
                         const fs::path& dir, const nlohmann::json* state) {
  write_dir_atomically(dir, [&](const fs::path& tmp) {
    models::save_classifier(clf, classes, tmp);
    if (state) io::write_json_file(tmp / "trainer_state.json", *state);
  });
}

// ---------------------------------------------------------------------------------------------
// ClassifierTask

ClassifierTask::ClassifierTask(models::ImageClassifier& clf, const data::ImageDataset& train,
                               const data::ImageDataset* val, ClassifierTaskOptions opt)
    : clf_(clf), train_(train), val_(val), opt_(opt), pp_(clf.preprocess()) {
  const int64_t num_classes = clf.num_classes();
  for (int64_t i = 0; i < train.size(); ++i) {
    const int64_t y = train.label(i);
    MVL_CHECK(y >= 0 && y < num_classes, train.name(i), ": label ", y, " is outside the model's ",
              num_classes, " classes");
  }
  MVL_CHECK(static_cast<int64_t>(train.classes().size()) == num_classes,
            "train_classifier: ", train.classes().size(), " classes in the data but the model has ",
            num_classes);
  augment_.pp = pp_;
  augment_.scale_min = opt.crop_scale_min;
  classes_ = train.classes();
}

nlohmann::json ClassifierTask::identity() const {
  return {{"kind", "classifier"},
          {"arch", clf_.arch()},
          {"num_classes", clf_.num_classes()},
          {"config", clf_.config_json()}};
}

StepResult ClassifierTask::forward(const std::vector<int64_t>& samples, uint64_t step_seed) {
  data::Batch b =
      data::make_batch(train_, samples, pp_, opt_.augment ? &augment_ : nullptr, step_seed);
  const at::Tensor logits = clf_.forward(b.images).to(at::kFloat);  // [B, K]
  const at::Tensor labels = b.labels.to(at::kLong);                 // [B]
  StepResult r;
  r.loss =
      at::cross_entropy_loss(logits, labels, {}, at::Reduction::Mean, -100, opt_.label_smoothing);
  const auto bs = static_cast<int64_t>(samples.size());
  const int64_t correct = eval::topk_correct(logits.detach(), labels, 1);
  r.units = static_cast<double>(bs);
  r.metrics = {{"top1", static_cast<double>(correct) / static_cast<double>(bs)}};
  stats_.loss_sum += r.loss.detach().item<double>() * static_cast<double>(bs);
  stats_.correct += correct;
  stats_.seen += bs;
  return r;
}

void ClassifierTask::save_model(const fs::path& dir) {
  models::save_classifier(clf_, classes_, dir);
}

void ClassifierTask::load_weights(const fs::path& dir) {
  io::CheckpointFolder ck(dir);
  io::LoadOptions lo;
  models::ImageClassifier* clf = &clf_;
  lo.keys_for = [clf](const std::string& name) {
    return std::vector<std::string>{clf->checkpoint_key(name)};
  };
  lo.allow_missing = [clf](const std::string& name) { return clf->checkpoint_key(name).empty(); };
  io::load_module(clf_.module(), ck, lo);
}

eval::ClassificationMetrics ClassifierTask::evaluate_metrics() {
  if (!has_val()) return {};
  eval::EvalOptions eo;
  eo.batch = opt_.eval_batch;
  eo.progress = opt_.eval_progress;
  return eval::evaluate_classifier(clf_, *val_, pp_, eo);
}

nlohmann::json ClassifierTask::evaluate() {
  if (!has_val()) return nullptr;
  const eval::ClassificationMetrics m = evaluate_metrics();
  return {{"val_top1", m.top1}, {"val_top5", m.top5}, {"val_loss", m.loss}, {"val_count", m.count}};
}

ClassifierTask::Stats ClassifierTask::take_stats() {
  Stats s = stats_;
  stats_ = {};
  return s;
}

// ---------------------------------------------------------------------------------------------
// train_classifier: one trainer stage + the per-epoch part.

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
  const bool write = !cfg.out_dir.empty();
  MVL_CHECK(!(cfg.resume && cfg.overwrite), "train_classifier: resume and overwrite exclude each "
            "other (resume continues the run in the output folder, overwrite replaces it)");
  MVL_CHECK(!cfg.resume || write, "train_classifier: resume needs the run's output folder");
  fs::path resume_from;
  if (write) {
    // Before anything is written: a used folder needs resume or overwrite; stale temporaries go.
    check_output_folder(cfg.out_dir, cfg.resume ? cfg.out_dir / "trainer" : fs::path(),
                        cfg.overwrite);
    if (cfg.resume) resume_from = classifier_resume_checkpoint(cfg.out_dir);
  }
  ClassifierTaskOptions topt;
  topt.label_smoothing = cfg.label_smoothing;
  topt.augment = cfg.augment;
  topt.crop_scale_min = cfg.crop_scale_min;
  topt.eval_batch = cfg.eval_batch;
  topt.eval_progress = cfg.progress;
  ClassifierTask task(clf, train, val, topt);
  if (cfg.threads > 0) at::set_num_threads(cfg.threads);

  const int64_t steps_per_epoch = (n + cfg.batch_size - 1) / cfg.batch_size;
  const int64_t total_steps = cfg.max_steps > 0 ? cfg.max_steps : cfg.epochs * steps_per_epoch;
  const int64_t num_epochs = (total_steps + steps_per_epoch - 1) / steps_per_epoch;

  // One trainer stage with the classifier's schedule; the trainer writes nothing itself (the
  // classifier's folder layout is last/ best/ train_log.jsonl, written per epoch below).
  StageConfig stage;
  stage.name = "train";
  stage.steps = total_steps;
  stage.lr = cfg.lr;
  stage.min_lr_ratio = cfg.min_lr_ratio;
  stage.weight_decay = cfg.weight_decay;
  stage.warmup_steps = std::min(
      total_steps, cfg.warmup_steps > 0
                       ? cfg.warmup_steps
                       : static_cast<int64_t>(std::llround(cfg.warmup_epochs * steps_per_epoch)));
  TrainerConfig tc;
  tc.stages = {stage};
  tc.batch_size = cfg.batch_size;
  tc.grad_accum = 1;
  tc.grad_clip = cfg.grad_clip;
  tc.precision = "fp32";
  tc.no_decay = classifier_no_decay();
  tc.seed = cfg.seed;
  tc.log_every = 0;
  tc.eval_every = -1;   // validation is per epoch, below
  tc.progress = false;  // a bar per epoch, below
  if (write) {
    // The trainer's own checkpoint (weights, AdamW state, RNG) for resume, written at the same
    // epochs as last/ (epochs end at multiples of steps_per_epoch, the last one at the end).
    tc.out_dir = cfg.out_dir / "trainer";
    tc.save_every = cfg.save_every * steps_per_epoch;
    tc.keep_last = 1;
    tc.overwrite = cfg.overwrite;
  }

  TrainResult result;
  std::vector<std::string> log_lines;
  if (write) fs::create_directories(cfg.out_dir);
  const int64_t width = static_cast<int64_t>(std::to_string(num_epochs).size());
  std::optional<ProgressBar> bar;
  double t0 = seconds_now(), last_lr = 0;
  int64_t epoch_index = 0;  // 0-based epoch being trained
  if (!resume_from.empty()) {
    // The resumed run's epochs up to its checkpoint (later ones are redone, identically).
    const fs::path state_file = resume_from / "trainer_state.json";
    const nlohmann::json st = io::read_json_file(state_file);
    int64_t resumed_step = 0;
    try {
      resumed_step = st.at("global_step").get<int64_t>();
      epoch_index = st.at("epoch").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
      MVL_FAIL(state_file.string(), ": malformed trainer state: ", e.what());
    }
    const fs::path log = cfg.out_dir / "train_log.jsonl";
    std::ifstream f(log);
    std::string line;
    for (int64_t ln = 1; std::getline(f, line); ++ln) {
      if (line.empty()) continue;
      EpochMetrics m;
      try {
        m = EpochMetrics::from_json(nlohmann::json::parse(line));
      } catch (const nlohmann::json::exception& e) {
        MVL_FAIL(log.string(), ":", ln, ": malformed log line: ", e.what());
      }
      if (m.step > resumed_step) break;
      result.epochs.push_back(m);
      log_lines.push_back(line);
      if (m.has_val && m.val_top1 > result.best_val_top1) {
        result.best_val_top1 = m.val_top1;
        result.best_epoch = m.epoch;
      }
    }
    // The classifier-only settings (the trainer compares its own config).
    std::error_code ec;
    const fs::path last_state = cfg.out_dir / "last" / "trainer_state.json";
    if (fs::exists(last_state, ec)) {
      const nlohmann::json ls = io::read_json_file(last_state);
      if (ls.contains("config") && ls.at("config") != cfg.to_json())
        std::fprintf(stderr,
                     "warning: resuming %s with other training settings than it was written "
                     "with; the run will not equal an uninterrupted one\n",
                     cfg.out_dir.string().c_str());
    }
  }

  TrainerHooks hooks;
  hooks.on_step = [&](const StepInfo& s) {
    last_lr = s.lr;
    if (callbacks.on_step) callbacks.on_step(s.step, s.loss, s.lr);
    if (cfg.progress) {
      if (!bar) {
        const int64_t epoch_steps = std::min(steps_per_epoch, total_steps - (s.step - 1));
        const int64_t epoch_images = std::min(n, epoch_steps * cfg.batch_size);
        ProgressBar::Options po;
        po.unit = "img";
        std::ostringstream label;
        label << "epoch " << std::string(width - std::to_string(epoch_index + 1).size(), ' ')
              << (epoch_index + 1) << "/" << num_epochs;
        bar.emplace(label.str(), epoch_images, po);
      }
      bar->set_field("loss", s.loss, 4);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2e", s.lr);
      bar->set_field("lr", buf);
      bar->advance(s.samples);
    }
  };
  hooks.on_epoch_end = [&](const EpochInfo& e) {
    if (bar) bar->finish();
    bar.reset();
    const double train_seconds = seconds_now() - t0;
    const ClassifierTask::Stats st = task.take_stats();
    EpochMetrics m;
    m.epoch = e.epoch + 1;
    m.step = e.step;
    m.train_loss = st.seen ? st.loss_sum / static_cast<double>(st.seen) : 0;
    m.train_top1 = st.seen ? static_cast<double>(st.correct) / static_cast<double>(st.seen) : 0;
    m.lr = last_lr;
    m.seconds = train_seconds;
    m.images_per_second = train_seconds > 0 ? static_cast<double>(st.seen) / train_seconds : 0;
    const bool last_epoch = e.step == total_steps;
    if (task.has_val() && (cfg.eval_every_epoch || last_epoch)) {
      const eval::ClassificationMetrics vm = task.evaluate_metrics();
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
    bool improved = false;
    if (m.has_val && m.val_top1 > result.best_val_top1) {
      result.best_val_top1 = m.val_top1;
      result.best_epoch = m.epoch;
      improved = true;
    }
    if (write) {
      const nlohmann::json state = {{"epoch", m.epoch},
                                    {"step", m.step},
                                    {"total_steps", total_steps},
                                    {"metrics", m.to_json()},
                                    {"config", cfg.to_json()}};
      const bool save_last = last_epoch || m.epoch % cfg.save_every == 0;
      if (save_last) save_checkpoint_dir(clf, train.classes(), cfg.out_dir / "last", &state);
      // best: the best validation top-1; without validation the latest saved model.
      if (improved || (!m.has_val && save_last))
        save_checkpoint_dir(clf, train.classes(), cfg.out_dir / "best", &state);
      log_lines.push_back(m.to_json().dump());
      std::string text;
      for (const auto& l : log_lines) text += l + "\n";
      io::write_text_file_atomic(cfg.out_dir / "train_log.jsonl", text);
    }
    if (callbacks.on_epoch) callbacks.on_epoch(m);
    ++epoch_index;
    t0 = seconds_now();
  };

  const TrainerResult r = train::train(task, tc, resume_from, hooks);
  result.step_losses = r.step_losses;
  result.steps = r.steps;
  clf.module().train();
  return result;
}

}  // namespace mambavl::train
