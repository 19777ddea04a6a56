// The one trainer (SPEC §3): language models, vision-language models and image classifiers are
// all a TrainTask; train() runs stages of AdamW steps over it with warmup + cosine, gradient
// clipping and accumulation, optional bf16 autocast, per-stage freezing, JSONL metrics, a progress
// bar, and atomic, rotated checkpoints from which --resume continues bit for bit.
//
// Output layout of a run in `out_dir` (nothing is written when it is empty):
//   train_log.jsonl   one JSON object per logged step: {"step", "stage", "epoch", "loss" (mean over
//                     the steps since the previous line), "lr", "grad_norm" (before clipping;
//                     mean), "units_per_second", "<unit>_per_second", "elapsed", "epoch", + the
//                     task's numeric metrics (sample-weighted over a step's micro-batches, mean
//                     over the logged steps)};
//                     evaluation lines {"step", "stage", "eval": {...}}. On resume the lines after
//                     the resumed step are dropped and new ones appended.
//   config.json       the resolved TrainerConfig (to_json()).
//   checkpoints/step-<8 digits>/      one per saved step:
//       model/                  task.save_model (a loadable model folder)
//       optimizer.safetensors   "<param>.exp_avg", "<param>.exp_avg_sq" (F32), "<param>.step"
//                               (I64 [1]) for every parameter the optimizer has state for
//       trainer_state.json      global step, stage, step in stage, epoch, position in the epoch's
//                               permutation, the global CPU generator state (hex of the byte
//                               tensor), the running log sums, the task identity and the config
//   checkpoints/latest          a text file naming the newest complete checkpoint ("step-00000040")
//   final -> checkpoints/step-<last>/model   a relative symlink to the final model folder
// A checkpoint folder is written into a hidden temp sibling (".step-….tmp.<pid>"), fsynced and
// renamed into place, so a crash (even kill -9) while writing leaves every earlier checkpoint
// intact; --resume ignores the temp folders, and every run into out_dir removes those (and the
// other temporaries, io::remove_stale_temps) of processes that no longer exist, at its start
// and whenever it writes a checkpoint; those of live processes are never touched. Rotation
// keeps the `keep_last` newest step folders (the final one is the newest and always kept).
// (Test hook: with MAMBAVL_TEST_PAUSE_IN_CHECKPOINT=<step> in the environment the process pauses
// forever inside the write of that step's checkpoint, after the model and before the trainer state,
// leaving a file "paused" in the temp folder; tests SIGKILL it there.)
// A fresh run (no resume) into an out_dir that already holds step checkpoints is an error (say
// --resume, or use another folder) unless TrainerConfig::overwrite: then the old step folders are
// renamed to checkpoints/replaced-step-<8 digits> (no longer resumable; the old `final` link is
// repointed to them) and removed, with that link, right after this run has written its first
// checkpoint, so the folder always holds a complete model. A resumed run deletes the step
// folders of out_dir after the resumed step (an abandoned continuation) before it writes new
// ones; resuming into an out_dir that holds checkpoints of another run (the resumed checkpoint is
// not inside it) is an error unless overwrite. The front ends (train --config, train-classifier)
// refuse any non-empty output folder first: check_output_folder().
//
// Semantics
// - Stages run in order; each has its own step count, schedule (warmup + cosine restart), weight
//   decay and frozen prefixes. The AdamW state is reset at the start of every stage (as LLaVA's
//   separate stage runs); the data order restarts too: stage k, epoch e uses
//   epoch_order(num_samples, stage_seed(seed, k), e), where stage_seed(seed, 0) == seed.
// - An optimizer step takes the next batch_size samples of the current epoch's permutation; the
//   last batch of an epoch may be smaller (the rest of the epoch), then the next epoch starts. So
//   an epoch is ceil(num_samples / batch_size) steps and a stage given in `epochs` has
//   ceil(epochs * ceil(num_samples / batch_size)) steps.
// - Gradient accumulation: the step's samples are split into micro-batches of
//   batch_size / grad_accum (the last may be smaller); each micro loss is weighted by its share of
//   the step's samples, so the step gradient is the full-batch gradient of the mean loss.
// - Step seeds: micro-batch m of global step s gets step_seed = mix(stage_seed, s, m), a pure
//   function of (seed, stage, s, m). The global CPU generator (dropout, drop path) is seeded with
//   `seed` at the start and saved / restored by checkpoints.
// - Weight decay: see no_decay_param(). Frozen parameters (see is_frozen()) get
//   requires_grad(false) for the stage and are not updated; the original flags are restored when
//   train() returns.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}

namespace mambavl::train {

// What one micro-batch produced.
struct StepResult {
  at::Tensor loss;   // scalar, differentiable: the mean loss of this micro-batch (the task's rule)
  double units = 0;  // tokens (LM/VLM: supervised tokens) or images processed, for throughput
  nlohmann::json metrics = nlohmann::json::object();  // optional extra scalars for the log
};

// What the trainer trains. Implemented by ClassifierTask (classifier_trainer.h), LMTask, VLMTask.
class TrainTask {
 public:
  virtual ~TrainTask() = default;
  virtual std::string kind() const = 0;  // "lm" | "vlm" | "classifier"
  // Family + shapes; --resume refuses a checkpoint whose identity differs.
  virtual nlohmann::json identity() const = 0;
  // Every parameter; the dotted names are the freeze / no-decay keys.
  virtual torch::nn::Module& module() = 0;
  // Training samples; an epoch is a permutation of [0, num_samples).
  virtual int64_t num_samples() const = 0;
  // The loss of a micro-batch of sample indices (grad mode on, module in train mode).
  virtual StepResult forward(const std::vector<int64_t>& samples, uint64_t step_seed) = 0;
  // Writes a loadable model folder (config, weights, tokenizer) into `dir` (created).
  virtual void save_model(const std::filesystem::path& dir) = 0;
  // Restores the weights from a folder save_model wrote (resume).
  virtual void load_weights(const std::filesystem::path& dir) = 0;
  // Optional validation metrics (null = none). The trainer puts the module back in train mode.
  virtual nlohmann::json evaluate() { return nullptr; }
  virtual std::string unit() const { return "tok"; }  // progress-bar unit: "tok" | "img"
};

struct StageConfig {
  std::string name = "train";
  int64_t steps = 0;  // optimizer steps of this stage (> 0 unless epochs > 0)
  double epochs = 0;  // alternative to steps (see the semantics above); steps wins when both
  double lr = 1e-3;
  double min_lr_ratio = 0.0;  // cosine ends at lr * min_lr_ratio
  double warmup_ratio =
      0.03;  // warmup steps = round(warmup_ratio * steps) unless warmup_steps >= 0
  int64_t warmup_steps = -1;
  double weight_decay = 0.0;
  // Parameter-name prefixes frozen in this stage (see is_frozen()); a prefix that matches no
  // parameter is an error (a typo would otherwise silently train everything).
  std::vector<std::string> freeze;

  // Keys: name, steps, epochs, lr, min_lr_ratio, warmup_ratio, warmup_steps, weight_decay,
  // freeze. Unknown keys and wrong types are errors naming `file` and "section.key".
  static StageConfig from_json(const nlohmann::json& j, const std::string& file,
                               const std::string& section);
  nlohmann::json to_json() const;
};

struct TrainerConfig {
  std::vector<StageConfig> stages;  // run in order; the schedule restarts per stage
  int64_t batch_size = 8;           // samples per optimizer step
  int64_t grad_accum = 1;           // micro-batches per step (must divide batch_size)
  double grad_clip = 1.0;           // max global grad norm; 0 = off
  // "fp32" | "bf16" | "auto". bf16: CPU autocast to bf16 around forward (fp32 master weights,
  // backward and optimizer in fp32) when the CPU has native bf16 (avx512_bf16 / amx_bf16 in
  // /proc/cpuinfo); otherwise a warning on stderr and fp32. auto: bf16 when native, else fp32.
  std::string precision = "fp32";
  // No weight decay for parameters matching one of these (see no_decay_param()).
  std::vector<std::string> no_decay = {
      "norm",      "bias",     "A_log", "D", "embed", "position_embedding", "class_embedding",
      "cls_token", "pos_embed"};
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
  uint64_t seed = 0;  // data order (epoch permutations from (seed, epoch)), step seeds
  int64_t log_every =
      10;  // a train_log line every N steps (and the last of each stage); 0: only those
  // task.evaluate() every N steps; 0: only at the end of each stage; < 0: never.
  int64_t eval_every = 0;
  int64_t save_every = 0;  // checkpoint every N steps; 0: only at the end of each stage
  int64_t keep_last = 3;   // keep the N newest step checkpoints; 0: keep all
  // > 0: stop after this global step as if interrupted (with a checkpoint there when out_dir is
  // set), e.g. to split a long run into sessions; the schedule is unchanged, so a later --resume
  // with stop_at_step 0 (or larger) continues exactly. Not part of the resume config comparison.
  int64_t stop_at_step = 0;
  std::filesystem::path out_dir;  // empty: nothing written
  bool progress = true;           // progress bar on stderr (step count, loss, units/s, lr, ETA)
  // Not a run-file key (set by the front ends' --overwrite; not in to_json): a run may replace
  // the step checkpoints of another run in out_dir (see "A fresh run ..." above).
  bool overwrite = false;

  // Keys: stages (array of tables, see StageConfig), batch_size, grad_accum, grad_clip, precision,
  // no_decay, adam_beta1, adam_beta2, adam_eps, seed, log_every, eval_every, save_every,
  // keep_last, stop_at_step, out_dir, progress. Unknown keys / wrong types: errors naming file +
  // dotted key
  // ("section.key"; `section` is the table `j` came from, "" for the top level).
  static TrainerConfig from_json(const nlohmann::json& j, const std::string& file,
                                 const std::string& section = "");
  nlohmann::json to_json() const;
};

struct TrainerResult {
  std::vector<double> step_losses;  // one per optimizer step run by this call (not resumed ones)
  int64_t steps = 0;                // global step count at the end (including resumed steps)
  nlohmann::json last_eval;         // the last task.evaluate() result (null when none)
  std::filesystem::path final_checkpoint;  // the last checkpoint folder (empty when no out_dir)
};

// Everything the trainer reports after each optimizer step.
struct StepInfo {
  int64_t step = 0;        // global, 1-based
  int64_t stage = 0;       // 0-based
  int64_t stage_step = 0;  // 1-based within the stage
  int64_t epoch = 0;       // 0-based epoch of the stage the step's samples came from
  double loss = 0;         // the step's loss (sample-weighted mean of its micro-batches)
  double lr = 0, grad_norm = 0;
  double units = 0;        // summed over the micro-batches
  int64_t samples = 0;     // samples in the step
  nlohmann::json metrics;  // the micro-batches' numeric metrics, weighted by their share of samples
};

struct EpochInfo {
  int64_t stage = 0, epoch = 0;  // 0-based
  int64_t step = 0;              // global step at the end of the epoch
  bool partial = false;          // the stage ended before the epoch was complete
};

struct TrainerHooks {
  std::function<void(const StepInfo&)> on_step;
  // After the step that completes an epoch, and at the end of a stage that stopped mid-epoch.
  std::function<void(const EpochInfo&)> on_epoch_end;
  // Once everything is validated (config, freeze prefixes, the resumed checkpoint, the output
  // folder), right before the trainer writes anything into out_dir.
  std::function<void()> on_start;
};

// Trains `task` (see the semantics above). With `resume` (a checkpoint folder written by a
// previous run, or a run's out_dir: then its newest complete checkpoint) continues exactly where it
// stopped: the same weights and step losses, bit for bit, as an uninterrupted run. Errors
// (mambavl::Error): bad config values, a freeze prefix matching nothing, a non-finite loss (with
// the step and lr), a resume folder that is no checkpoint, a checkpoint whose task identity
// differs (both named), optimizer state of another shape.
TrainerResult train(TrainTask& task, const TrainerConfig& cfg, const std::filesystem::path& resume,
                    const TrainerHooks& hooks);
TrainerResult train(TrainTask& task, const TrainerConfig& cfg,
                    const std::filesystem::path& resume = {},
                    const std::function<void(int64_t step, double loss, double lr)>& on_step = {});

// The no-decay rule: true when the parameter has <= 1 dimension, or when one of the dot-separated
// components of `name` equals a pattern, or — for patterns of 3 or more characters — contains it
// ("norm" matches "norm_f", "input_layernorm"; "embed" matches "embed_in", "embeddings";
// "D" matches only a component "D", not "Dense").
bool no_decay_param(const std::string& name, int64_t dim, const std::vector<std::string>& patterns);

// Freeze rule: `name` equals `prefix` or starts with prefix + "." (a prefix ending in "." matches
// by plain string prefix).
bool is_frozen(const std::string& name, const std::vector<std::string>& prefixes);

// Steps of a stage for `num_samples` samples and `batch_size`.
int64_t stage_steps(const StageConfig& s, int64_t num_samples, int64_t batch_size);

// Whether this CPU has native bf16 arithmetic (avx512_bf16 or amx_bf16 in /proc/cpuinfo).
bool cpu_has_native_bf16();
// "fp32" | "bf16" after applying the rules of TrainerConfig::precision (warns on fallback when
// `warn`). Error for another value.
std::string resolve_precision(const std::string& precision, bool warn = true);

// The index order of epoch `epoch` (0-based): a permutation of [0, n) that depends only on
// (seed, epoch), identical on every platform (splitmix64 Fisher-Yates).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// The newest complete checkpoint of a run folder (`dir/checkpoints/step-*` with a
// trainer_state.json; temp folders ignored), or `dir` itself when it is a checkpoint folder.
// Error naming `dir` when there is none.
std::filesystem::path find_checkpoint(const std::filesystem::path& dir);

// The output folder of a new run, checked before anything is written into it (train --config,
// train-classifier). First the temporaries of dead processes are removed from it
// (io::remove_stale_temps). Then, when it holds anything else: fine with `overwrite`; fine when
// `resume` (the checkpoint or run folder resumed from; empty: none) lies inside it (continuing
// that run); otherwise an Error naming the folder and a few of its entries:
// "<dir>: the output folder is not empty (it holds a, b, ...); pass <resume_hint> to continue
// it or --overwrite to replace it (or choose another folder)" (with an empty `resume_hint`, for
// commands that cannot continue anything: "...; pass --overwrite to replace it (or choose
// another folder)"). With `resume` outside a used
// folder the error says it holds another run. Returns true when the folder is absent or empty.
bool check_output_folder(const std::filesystem::path& dir, const std::filesystem::path& resume,
                         bool overwrite, const std::string& resume_hint = "--resume");

// Whether `path` is `dir` or lies below it (after resolving both as far as they exist).
bool path_within(const std::filesystem::path& path, const std::filesystem::path& dir);

// Writes a folder atomically: `fill` writes into a temp sibling (".<name>.tmp.<pid>"), every file
// is fsynced, then it replaces `dir` by rename (an atomic exchange when `dir` exists). On error
// the temp folder is removed and the exception propagates (filesystem errors become a
// mambavl::Error naming `dir`). Temporaries of dead processes next to `dir` are removed first
// (io::remove_stale_temps on its parent).
void write_dir_atomically(const std::filesystem::path& dir,
                          const std::function<void(const std::filesystem::path& tmp)>& fill);

}  // namespace mambavl::train
