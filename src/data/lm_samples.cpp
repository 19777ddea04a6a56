#include "data/lm_samples.h"

#include <ATen/ATen.h>

#include "common/error.h"

namespace mambavl::data {

LMSample TextSamples::sample(int64_t i) const {
  LMSample s;
  s.ids = ds_->chunk(i);
  s.labels = s.ids;
  s.labels[0] = -100;  // nothing predicts the first token
  return s;
}

RetrievalSamples RetrievalSamples::generate(int64_t n, uint64_t seed,
                                            const std::vector<int64_t>& lengths,
                                            const std::string& query, RetrievalVocab vocab) {
  MVL_CHECK(n > 0, "retrieval: the number of examples must be > 0");
  MVL_CHECK(!lengths.empty(), "retrieval: no sequence lengths given");
  MVL_CHECK(query == "after" || query == "before" || query == "both",
            "retrieval: query must be 'after', 'before' or 'both', not '", query, "'");
  vocab.check();
  std::vector<RetrievalExample> ex;
  ex.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = lengths[static_cast<size_t>(i) % lengths.size()];
    const bool first = query == "before" || (query == "both" && (i / lengths.size()) % 2 == 1);
    ex.push_back(make_retrieval_example(seed, i, len, first, vocab));
  }
  return RetrievalSamples(std::move(ex), vocab);
}

LMSample RetrievalSamples::sample(int64_t i) const {
  const RetrievalExample& e = example(i);
  LMSample s;
  s.ids = retrieval_input_ids(e, vocab_);
  s.labels.assign(s.ids.size(), -100);
  const int64_t t = retrieval_target_id(e, vocab_);
  s.ids.push_back(t);
  s.labels.push_back(t);
  return s;
}

LMBatch make_lm_batch(const std::vector<LMSample>& samples, int64_t pad_id) {
  MVL_CHECK(!samples.empty(), "make_lm_batch: no samples");
  int64_t L = 0;
  for (const auto& s : samples) {
    MVL_CHECK(s.ids.size() == s.labels.size(), "make_lm_batch: ids and labels differ in length");
    L = std::max<int64_t>(L, static_cast<int64_t>(s.ids.size()));
  }
  const int64_t B = static_cast<int64_t>(samples.size());
  LMBatch b{at::full({B, L}, pad_id, at::kLong), at::full({B, L}, -100, at::kLong)};
  auto ids = b.ids.accessor<int64_t, 2>();
  auto lab = b.labels.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B; ++i)
    for (size_t t = 0; t < samples[i].ids.size(); ++t) {
      ids[i][t] = samples[i].ids[t];
      lab[i][t] = samples[i].labels[t];
    }
  return b;
}

}  // namespace mambavl::data
