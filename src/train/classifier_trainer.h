// Training an ImageClassifier from scratch (the MambaOut experiment, SPEC §3 / §4.5), as a user of
// the one trainer (train/trainer.h): ClassifierTask is the TrainTask, train_classifier maps its
// TrainConfig onto one trainer stage and adds the per-epoch part (metrics, validation, last/best):
// AdamW (no weight decay on norms, biases, 1-D parameters, position embeddings and SSM A_log / D,
// as timm), linear warmup + cosine decay per step, label-smoothed cross entropy, a deterministic
// data order and augmentation from the seed, per-epoch validation top-1 / top-5, and checkpoints:
//   <out>/last/  the model after the latest saved epoch
//   <out>/best/  the model with the best validation top-1 so far (the latest when there is no
//                validation set)
//   <out>/train_log.jsonl  one JSON object per epoch (metrics, lr, throughput)
//   <out>/trainer/  the trainer's run folder (train/trainer.h layout: checkpoints/step-N with
//                the model, the AdamW state and the RNG; the newest only), written with last/:
//                what `resume` continues from, bit for bit
// Checkpoint folders are written to a temp folder next to the target and swapped in by rename,
// so a crash never leaves a half-written checkpoint; each folder also holds trainer_state.json
// (epoch, step, metrics, the config).
// A used <out> (anything in it but temporaries of dead processes, which are removed) is refused
// unless `resume` (continue its run from <out>/trainer) or `overwrite` (a new run that replaces
// last/, best/, train_log.jsonl and trainer/ as it writes its own: the old best/ stays until the
// new run's first saved epoch writes best/; other files in <out> are left alone).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/image_dataset.h"
#include "eval/classification.h"
#include "models/vision.h"
#include "train/trainer.h"

namespace mambavl::train {

struct TrainConfig {
  int64_t epochs = 10;
  // > 0: stop after this many optimizer steps (the schedule spans them); the last epoch may be
  // partial. 0: run `epochs` full epochs.
  int64_t max_steps = 0;
  int64_t batch_size = 32;
  double lr = 1e-3;
  double weight_decay = 0.05;
  // Warmup: warmup_steps when > 0, otherwise warmup_epochs * steps per epoch (rounded).
  int64_t warmup_steps = 0;
  double warmup_epochs = 0;
  double min_lr_ratio = 0.01;  // the cosine ends at lr * min_lr_ratio
  double label_smoothing = 0.1;
  double grad_clip = 0;  // max global gradient norm; 0 = off
  uint64_t seed = 0;     // data order, augmentation, drop path
  bool augment = true;   // TrainAugment (random-resized-crop + flip); false: plain preprocess
  double crop_scale_min = 0.08;  // smallest random-resized-crop area fraction
  bool eval_every_epoch = true;
  int64_t eval_batch = 64;
  std::filesystem::path out_dir;  // empty: nothing is written
  int64_t save_every = 1;         // write <out>/last every N epochs (and always after the last)
  int threads = 0;                // > 0: at::set_num_threads
  bool progress = true;           // progress bar on stderr
  // What to do with an out_dir that already holds files (see above); not part of to_json().
  bool resume = false;     // continue the run in out_dir (needs out_dir/trainer)
  bool overwrite = false;  // a new run replacing the one in out_dir

  nlohmann::json to_json() const;
};

// Parameters that get no weight decay: 1-D tensors (norm weights, biases, D), names ending in
// "bias", and position / class embeddings and SSM A_log by name.
bool no_weight_decay(const std::string& name, int64_t dim);

struct EpochMetrics {
  int64_t epoch = 0;  // 1-based
  int64_t step = 0;   // optimizer steps done so far
  double train_loss = 0, train_top1 = 0;
  double lr = 0;  // the last step's learning rate
  bool has_val = false;
  double val_top1 = 0, val_top5 = 0, val_loss = 0;
  int64_t val_count = 0;
  double seconds = 0, images_per_second = 0;
  nlohmann::json to_json() const;
  static EpochMetrics from_json(const nlohmann::json& j);  // to_json()'s inverse (a log line)
};

struct TrainCallbacks {
  // After every optimizer step: step (1-based), loss of the batch, learning rate used.
  std::function<void(int64_t step, double loss, double lr)> on_step;
  std::function<void(const EpochMetrics&)> on_epoch;
};

struct TrainResult {
  std::vector<double> step_losses;  // one per optimizer step
  std::vector<EpochMetrics> epochs;
  int64_t steps = 0;
  int64_t best_epoch = 0;  // 0 when nothing was validated
  double best_val_top1 = -1;
};

// Trains `clf` in place on `train` (labels must be < clf.num_classes(); the class names saved
// with checkpoints are train.classes()). `val` may be null. Errors (mambavl::Error): empty
// dataset, bad config values, data errors (naming the file), a used out_dir without resume /
// overwrite, resume without a checkpoint or of another model. With resume the result's epochs,
// best_epoch and best_val_top1 include the epochs of the resumed run (from its train_log.jsonl);
// step_losses are this call's steps only.
TrainResult train_classifier(models::ImageClassifier& clf, const data::ImageDataset& train,
                             const data::ImageDataset* val, const TrainConfig& cfg,
                             const TrainCallbacks& callbacks = {});

// The checkpoint a resumed classifier run continues from: the newest in out_dir/trainer. Error
// naming out_dir when there is none.
std::filesystem::path classifier_resume_checkpoint(const std::filesystem::path& out_dir);

// epoch_order(n, seed, epoch): see train/trainer.h (the trainer's data order; unchanged).

// Saves `clf` + classes (+ trainer_state.json when `state` is not null) into `dir`, replacing it
// atomically: written into a temp sibling folder, then swapped in by rename.
void save_checkpoint_dir(models::ImageClassifier& clf, const std::vector<std::string>& classes,
                         const std::filesystem::path& dir, const nlohmann::json* state = nullptr);

struct ClassifierTaskOptions {
  double label_smoothing = 0.1;
  bool augment = true;  // TrainAugment (random-resized-crop + flip); false: plain preprocess
  double crop_scale_min = 0.08;  // smallest random-resized-crop area fraction
  int64_t eval_batch = 64;
  bool eval_progress = false;  // progress bar during evaluate()
};

// The image classifier as a TrainTask: a micro-batch is make_batch(train, samples, preprocess,
// augment seeded by step_seed) through clf.forward, label-smoothed cross entropy (mean over the
// images); units = images; metrics {"top1"}. evaluate() = top-1 / top-5 / loss on `val` (null
// without a validation set). save_model writes a classifier folder (save_classifier with the
// training set's class names); load_weights reads one back.
class ClassifierTask : public TrainTask {
 public:
  // `clf`, `train` and `val` (may be null) must outlive the task. Errors: labels outside the
  // model's classes (naming the image), a class-count mismatch.
  ClassifierTask(models::ImageClassifier& clf, const data::ImageDataset& train,
                 const data::ImageDataset* val, ClassifierTaskOptions opt = {});

  std::string kind() const override { return "classifier"; }
  nlohmann::json identity() const override;  // {"kind", "arch", "num_classes", "config"}
  torch::nn::Module& module() override { return clf_.module(); }
  int64_t num_samples() const override { return train_.size(); }
  StepResult forward(const std::vector<int64_t>& samples, uint64_t step_seed) override;
  void save_model(const std::filesystem::path& dir) override;
  void load_weights(const std::filesystem::path& dir) override;
  nlohmann::json evaluate() override;
  std::string unit() const override { return "img"; }

  // The validation metrics (count 0 when there is no validation set).
  eval::ClassificationMetrics evaluate_metrics();
  bool has_val() const { return val_ && val_->size() > 0; }

  // Sums over the micro-batches since the last take_stats() (then reset).
  struct Stats {
    double loss_sum = 0;  // loss * images
    int64_t correct = 0, seen = 0;
  };
  Stats take_stats();

 private:
  models::ImageClassifier& clf_;
  const data::ImageDataset& train_;
  const data::ImageDataset* val_;
  ClassifierTaskOptions opt_;
  io::ImagePreprocess pp_;
  data::TrainAugment augment_;
  std::vector<std::string> classes_;
  Stats stats_;
};

}  // namespace mambavl::train
