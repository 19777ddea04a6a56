// Image-classification metrics: top-k indices, top-1 / top-5 accuracy and mean cross entropy of
// an ImageClassifier over an ImageDataset (the MambaOut experiment, SPEC §4.5).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "data/image_dataset.h"
#include "io/image.h"
#include "models/vision.h"

namespace mambavl::eval {

// logits [B, C] -> [B, min(k, C)] int64 class indices, best first.
at::Tensor topk(const at::Tensor& logits, int64_t k);
// How many rows of `logits` [B, C] have their label [B] among the top min(k, C) classes.
int64_t topk_correct(const at::Tensor& logits, const at::Tensor& labels, int64_t k);

struct ClassificationMetrics {
  double top1 = 0, top5 = 0;  // fractions in [0, 1]; top-5 is top-min(5, C)
  double loss = 0;            // mean cross entropy (no label smoothing)
  int64_t count = 0;
};

struct EvalOptions {
  int64_t batch = 64;
  bool progress = false;  // a progress bar on stderr
  std::function<void(int64_t done, int64_t total)> on_batch;
};

// Runs the classifier in eval mode with no gradients over every item of `ds`, preprocessed with
// `pp` (the module's training mode is restored afterwards). Labels must be < num_classes.
ClassificationMetrics evaluate_classifier(models::ImageClassifier& clf,
                                          const data::ImageDataset& ds,
                                          const io::ImagePreprocess& pp,
                                          const EvalOptions& opt = {});
inline ClassificationMetrics evaluate_classifier(models::ImageClassifier& clf,
                                                 const data::ImageDataset& ds,
                                                 const io::ImagePreprocess& pp, int64_t batch) {
  EvalOptions o;
  o.batch = batch;
  return evaluate_classifier(clf, ds, pp, o);
}

}  // namespace mambavl::eval
