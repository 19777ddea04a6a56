// The trainer's tasks for language models and vision-language models (the classifier's is in
// classifier_trainer.h). Each micro-batch's loss is models::lm_loss: mean over a sample's
// supervised tokens, then over the samples.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "data/lm_samples.h"
#include "data/vl_data.h"
#include "data/vl_sequence.h"
#include "models/lm.h"
#include "models/vlm.h"
#include "train/trainer.h"

namespace mambavl::train {

class VLMTask : public TrainTask {
 public:
  // `eval` (optional) is called by evaluate().
  VLMTask(models::VLM& vlm, std::shared_ptr<const data::VLDataset> train,
          data::SequenceFormat format, std::function<nlohmann::json()> eval = {});
  std::string kind() const override { return "vlm"; }
  nlohmann::json identity() const override;
  torch::nn::Module& module() override { return vlm_.module(); }
  int64_t num_samples() const override { return ds_->size(); }
  StepResult forward(const std::vector<int64_t>& samples, uint64_t step_seed) override;
  void save_model(const std::filesystem::path& dir) override { vlm_.save(dir); }
  void load_weights(const std::filesystem::path& dir) override;
  nlohmann::json evaluate() override { return eval_ ? eval_() : nlohmann::json(); }

 private:
  models::VLM& vlm_;
  std::shared_ptr<const data::VLDataset> ds_;
  data::SequenceFormat fmt_;
  std::function<nlohmann::json()> eval_;
};

class LMTask : public TrainTask {
 public:
  // `tokenizer_dir`: its tokenizer files are copied into saved model folders (may be empty).
  LMTask(models::CausalLM& lm, std::shared_ptr<const data::LMSampleSource> train, int64_t pad_id,
         std::function<nlohmann::json()> eval = {}, std::filesystem::path tokenizer_dir = {});
  std::string kind() const override { return "lm"; }
  nlohmann::json identity() const override;
  torch::nn::Module& module() override { return lm_.module(); }
  int64_t num_samples() const override { return src_->size(); }
  StepResult forward(const std::vector<int64_t>& samples, uint64_t step_seed) override;
  // lm.save(dir), plus the tokenizer files of `tokenizer_dir`.
  void save_model(const std::filesystem::path& dir) override;
  void load_weights(const std::filesystem::path& dir) override;
  nlohmann::json evaluate() override { return eval_ ? eval_() : nlohmann::json(); }

 private:
  std::filesystem::path tok_dir_;
  models::CausalLM& lm_;
  std::shared_ptr<const data::LMSampleSource> src_;
  int64_t pad_id_;
  std::function<nlohmann::json()> eval_;
};

// Copies into every parameter of `to` the parameter of the same name of `from` (Error naming
// `what` and the first name that is missing or differs in shape); with a `prefix`, only the
// parameters under it (is_frozen's rule: the name equals it or starts with prefix + ".").
// Returns how many were copied.
int64_t copy_parameters(torch::nn::Module& to, torch::nn::Module& from, const std::string& what,
                        const std::string& prefix = "");

}  // namespace mambavl::train
