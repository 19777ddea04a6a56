// `mambavl train --config FILE.toml`: the run file (model, data, evaluation, trainer) is read here
// and turned into a trainer task; the trainer itself is src/train/trainer.h.
//
//   kind = "vlm"                  # "vlm" | "lm" | "classifier"
//   out = "runs/mamba-vl-tiny"    # output folder (or --out)
//   [model]   preset = "mamba-vl-tiny" | path = "DIR";  tokenizer = "tokenizer.json";  seed = 0
//             prompt_order = "default" | "instruction_first" | "query_first"   (vlm)
//             overrides = {...} (vlm preset: merged into its config.json), init_from = "DIR",
//             init_parts = ["vision_tower", ...] (vlm: parameters copied from another VLM folder)
//             hidden_size, num_layers, num_heads, patch_size, intermediate_size (classifier: vit)
//             num_classes = 8, arch = "mambaout" | "mambaout_ssm" | "vit", variant, causal
//             (classifier)
//   [data]    source = "scenes" | "llava" | "grounding"            (vlm)
//                    | "text" | "retrieval"                         (lm)
//                    | "synthetic" | "folder"                       (classifier)
//             n, seed, image_size, min_objects, max_objects, clutter, tasks  (scenes)
//             path, image_root, on_missing_image = "fail" | "skip"        (llava / grounding /
//             folder) paths = [...], seq_len                                       (text) lengths =
//             [20, 100], query = "after" | "before" | "both", max_n, content  (retrieval)
//             num_classes, val_fraction                                    (classifier)
//   [eval]    n (held-out examples: scenes / retrieval / synthetic), path (llava / grounding
//             held-out file), batch_size, max_new_tokens, task
//   [train]   the trainer (train/trainer.h TrainerConfig), with [[train.stages]]
// Every key is documented in docs/train-config.md; unknown keys are errors naming the file and
// the dotted key.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mambavl::experiments {

// The keys of each section (for --help and the docs).
std::string train_config_help();

struct TrainRunResult {
  std::filesystem::path out, final_model;
  int64_t steps = 0;
  nlohmann::json last_eval;
};

// Runs the training described by `cfg` (already TOML-parsed, overrides applied); `file` names it
// in errors. `resume`: a checkpoint folder or a previous run's out folder. The out folder must be
// absent or empty (stale temporaries aside), or hold the run resumed from, or `overwrite`
// (train::check_output_folder; the error says --resume OUT / --overwrite); when it was absent or
// empty and the run fails before training starts (a bad run file, data or model), what it
// wrote there is removed again, so a corrected rerun is not refused.
TrainRunResult run_training(const nlohmann::json& cfg, const std::string& file,
                            const std::filesystem::path& resume, int threads,
                            bool overwrite = false);

}  // namespace mambavl::experiments
