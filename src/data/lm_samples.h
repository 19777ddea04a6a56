// Language-model training samples: token ids plus per-position targets (answer-only supervision
// for tasks such as retrieval, every token for plain text), and right-padded batches of them.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/retrieval.h"
#include "data/vl_data.h"

namespace mambavl::data {

struct LMSample {
  std::vector<int64_t> ids;     // [L]
  std::vector<int64_t> labels;  // [L]: target of position t - 1, or -100 (HF convention)
};

class LMSampleSource {
 public:
  virtual ~LMSampleSource() = default;
  virtual int64_t size() const = 0;
  virtual LMSample sample(int64_t i) const = 0;
};

// Plain text: chunk i of a TextDataset, every next token supervised.
class TextSamples : public LMSampleSource {
 public:
  explicit TextSamples(std::shared_ptr<const TextDataset> ds) : ds_(std::move(ds)) {}
  int64_t size() const override { return ds_->size(); }
  LMSample sample(int64_t i) const override;

 private:
  std::shared_ptr<const TextDataset> ds_;
};

// The retrieval task: retrieval_input_ids(e) followed by the answer's position token, which is the
// only supervised token.
class RetrievalSamples : public LMSampleSource {
 public:
  RetrievalSamples(std::vector<RetrievalExample> examples, RetrievalVocab vocab)
      : ex_(std::move(examples)), vocab_(vocab) {}
  // `n` generated examples (make_retrieval_example(seed, i, lengths[i % lengths.size()], ...));
  // query order "after" | "before" | "both" (alternating).
  static RetrievalSamples generate(int64_t n, uint64_t seed, const std::vector<int64_t>& lengths,
                                   const std::string& query, RetrievalVocab vocab);
  int64_t size() const override { return static_cast<int64_t>(ex_.size()); }
  LMSample sample(int64_t i) const override;
  const RetrievalExample& example(int64_t i) const { return ex_.at(static_cast<size_t>(i)); }
  const RetrievalVocab& vocab() const { return vocab_; }

 private:
  std::vector<RetrievalExample> ex_;
  RetrievalVocab vocab_;
};

// Right-pads samples into ids [B, L] (pad_id) and labels [B, L] (-100).
struct LMBatch {
  at::Tensor ids, labels;
};
LMBatch make_lm_batch(const std::vector<LMSample>& samples, int64_t pad_id);

}  // namespace mambavl::data
