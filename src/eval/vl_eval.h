// Evaluating vision-language models on a VL data set (captioning CIDEr-D, VQA exact match,
// grounding accuracy at IoU > 0.5) by batched greedy generation, and language models on the
// synthetic retrieval task (accuracy overall and per position).
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/lm_samples.h"
#include "data/vl_data.h"
#include "eval/vl_metrics.h"
#include "models/lm.h"
#include "models/vlm.h"

namespace mambavl::eval {

struct VLEvalOptions {
  std::string task = "all";  // "caption" | "vqa" | "grounding" | "all" (every example's own task)
  int64_t limit = 0;         // > 0: the first `limit` matching examples only
  int64_t batch_size = 16;   // prompts generated together
  int64_t max_new_tokens = 32;
  std::string order;     // prompt order override ("" = the model's)
  bool progress = true;  // progress bar on stderr
};

struct EvalOutput {
  // {"caption": {"cider_d", "n"}, "vqa": {"exact_match", "correct", "n"}, "grounding":
  //  {"accuracy", "correct", "unparseable", "n"}} for the tasks present; retrieval:
  //  RetrievalScore::to_json().
  nlohmann::json metrics;
  std::vector<nlohmann::json> predictions;  // one object per example
  std::string per_position_csv;             // retrieval only
};

// Greedy generation for every selected example; predictions hold id, task, prompt question,
// prediction, references (and box / IoU for grounding).
EvalOutput evaluate_vlm(models::VLM& vlm, const data::VLDataset& ds, const VLEvalOptions& opt);

// Retrieval: the prediction of each example is the argmax of the logits at its answer position
// (-1 when that token is not a position token: counted wrong).
EvalOutput evaluate_retrieval(models::CausalLM& lm, const data::RetrievalSamples& src,
                              int64_t batch_size = 32, bool progress = true);

// dir/results.json (metrics + `extra`), dir/predictions.jsonl, dir/per_position.csv (retrieval);
// each written atomically.
void write_eval_output(const std::filesystem::path& dir, const EvalOutput& out,
                       const nlohmann::json& extra = nlohmann::json::object());

}  // namespace mambavl::eval
