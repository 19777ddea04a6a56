#include "train/tasks.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "common/error.h"
#include "models/lm_loss.h"
#include "models/registry.h"

namespace mambavl::train {

int64_t copy_parameters(torch::nn::Module& to, torch::nn::Module& from, const std::string& what,
                        const std::string& prefix) {
  at::NoGradGuard ng;
  auto src = from.named_parameters();
  int64_t copied = 0;
  for (auto& p : to.named_parameters()) {
    if (!prefix.empty() && !is_frozen(p.key(), {prefix})) continue;
    const at::Tensor* s = src.find(p.key());
    MVL_CHECK(s, what, ": has no parameter '", p.key(), "'");
    MVL_CHECK(s->sizes() == p.value().sizes(), what, ": parameter '", p.key(), "' has shape ",
              s->sizes(), ", expected ", p.value().sizes());
    p.value().copy_(*s);
    ++copied;
  }
  return copied;
}

VLMTask::VLMTask(models::VLM& vlm, std::shared_ptr<const data::VLDataset> train,
                 data::SequenceFormat format, std::function<nlohmann::json()> eval)
    : vlm_(vlm), ds_(std::move(train)), fmt_(std::move(format)), eval_(std::move(eval)) {
  MVL_CHECK(ds_ && ds_->size() > 0, "VLM training: the training data set is empty");
}

nlohmann::json VLMTask::identity() const {
  nlohmann::json j = vlm_.config().to_json();
  j.erase("prompt_order");  // an ablation may change the order between stages of one model
  return j;
}

StepResult VLMTask::forward(const std::vector<int64_t>& samples, uint64_t) {
  auto c = data::collate(*ds_, samples, vlm_, fmt_, /*include_answer=*/true);
  auto l = vlm_.loss(c.batch);
  StepResult r;
  r.loss = l.loss;
  r.units = static_cast<double>(l.tokens);
  return r;
}

void VLMTask::load_weights(const std::filesystem::path& dir) {
  auto other = models::VLM::load(dir);
  copy_parameters(vlm_.module(), other->module(), dir.string());
}

LMTask::LMTask(models::CausalLM& lm, std::shared_ptr<const data::LMSampleSource> train,
               int64_t pad_id, std::function<nlohmann::json()> eval,
               std::filesystem::path tokenizer_dir)
    : tok_dir_(std::move(tokenizer_dir)),
      lm_(lm),
      src_(std::move(train)),
      pad_id_(pad_id),
      eval_(std::move(eval)) {
  MVL_CHECK(src_ && src_->size() > 0, "LM training: the training data set is empty");
}

nlohmann::json LMTask::identity() const { return models::lm_config_json(lm_); }

StepResult LMTask::forward(const std::vector<int64_t>& samples, uint64_t) {
  std::vector<data::LMSample> s;
  s.reserve(samples.size());
  for (int64_t i : samples) s.push_back(src_->sample(i));
  auto b = data::make_lm_batch(s, pad_id_);
  auto l = models::lm_loss(lm_, lm_.forward_hidden(lm_.embed(b.ids)), b.labels);
  StepResult r;
  r.loss = l.loss;
  r.units = static_cast<double>(l.tokens);
  return r;
}

void LMTask::save_model(const std::filesystem::path& dir) {
  lm_.save(dir);
  models::copy_tokenizer_files(tok_dir_, dir);
}

void LMTask::load_weights(const std::filesystem::path& dir) {
  auto other = models::load_causal_lm(dir);
  copy_parameters(lm_.module(), other->module(), dir.string());
}

}  // namespace mambavl::train
