#include "eval/classification.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <numeric>
#include <optional>

#include "common/error.h"
#include "common/progress.h"

namespace mambavl::eval {

at::Tensor topk(const at::Tensor& logits, int64_t k) {
  MVL_CHECK(logits.dim() == 2, "topk: logits must be [batch, classes], got ", logits.sizes());
  MVL_CHECK(k >= 1, "topk: k must be >= 1, got ", k);
  k = std::min<int64_t>(k, logits.size(1));
  return std::get<1>(logits.detach()
                         .to(at::kFloat)
                         .topk(k, /*dim=*/1, /*largest=*/true,
                               /*sorted=*/true));
}

int64_t topk_correct(const at::Tensor& logits, const at::Tensor& labels, int64_t k) {
  MVL_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0),
            "topk_correct: labels must be [batch] matching logits ", logits.sizes(), ", got ",
            labels.sizes());
  const at::Tensor idx = eval::topk(logits, k);
  return idx.eq(labels.to(at::kLong).unsqueeze(1)).any(1).sum().item<int64_t>();
}

ClassificationMetrics evaluate_classifier(models::ImageClassifier& clf,
                                          const data::ImageDataset& ds,
                                          const io::ImagePreprocess& pp, const EvalOptions& opt) {
  MVL_CHECK(opt.batch >= 1, "evaluate_classifier: batch must be >= 1, got ", opt.batch);
  const int64_t n = ds.size();
  // The input tensor of one batch (size from the model's config), before anything is read.
  pp.check_batch(std::min(opt.batch, std::max<int64_t>(n, 1)), "evaluation batch (--batch)");
  const int64_t num_classes = clf.num_classes();
  torch::nn::Module& m = clf.module();
  const bool was_training = m.is_training();
  m.eval();
  at::NoGradGuard no_grad;
  std::optional<ProgressBar> bar;
  if (opt.progress) {
    ProgressBar::Options po;
    po.unit = "img";
    bar.emplace("eval", n, po);
  }
  ClassificationMetrics r;
  int64_t c1 = 0, c5 = 0;
  double loss_sum = 0;
  try {
    for (int64_t start = 0; start < n; start += opt.batch) {
      std::vector<int64_t> idx(std::min(opt.batch, n - start));
      std::iota(idx.begin(), idx.end(), start);
      data::Batch b = data::make_batch(ds, idx, pp, nullptr, 0);
      for (int64_t i : idx) {
        const int64_t y = ds.label(i);
        MVL_CHECK(y >= 0 && y < num_classes, ds.name(i), ": label ", y, " is outside the model's ",
                  num_classes, " classes");
      }
      const at::Tensor logits = clf.forward(b.images).to(at::kFloat);
      const at::Tensor labels = b.labels.to(at::kLong);
      loss_sum += at::cross_entropy_loss(logits, labels, {}, at::Reduction::Sum).item<double>();
      c1 += topk_correct(logits, labels, 1);
      c5 += topk_correct(logits, labels, 5);
      r.count += static_cast<int64_t>(idx.size());
      if (bar) bar->advance(static_cast<int64_t>(idx.size()));
      if (opt.on_batch) opt.on_batch(r.count, n);
    }
  } catch (...) {
    if (was_training) m.train();
    throw;
  }
  if (bar) bar->finish();
  if (was_training) m.train();
  if (r.count > 0) {
    r.top1 = static_cast<double>(c1) / r.count;
    r.top5 = static_cast<double>(c5) / r.count;
    r.loss = loss_sum / r.count;
  }
  return r;
}

}  // namespace mambavl::eval
