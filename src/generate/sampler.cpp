#include "generate/sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"

namespace mambavl::generate {

Sampler::Sampler(const SamplingOptions& opt) : opt_(opt), rng_(opt.seed) {
  if (!opt.greedy) {
    MVL_CHECK(opt.temperature > 0 && std::isfinite(opt.temperature),
              "--temperature must be > 0 (use --greedy for argmax), got ", opt.temperature);
    MVL_CHECK(opt.top_k >= 0, "--top-k must be >= 0 (0 = off), got ", opt.top_k);
    MVL_CHECK(opt.top_p > 0 && opt.top_p <= 1, "--top-p must be in (0, 1], got ", opt.top_p);
  }
}

int64_t Sampler::sample(const at::Tensor& logits) {
  at::Tensor l = logits.to(at::kCPU, at::kFloat).contiguous().view({-1});  // [V]
  const int64_t V = l.numel();
  MVL_CHECK(V > 0, "sampler: empty logits");
  const float* p = l.data_ptr<float>();
  if (opt_.greedy) return static_cast<int64_t>(std::max_element(p, p + V) - p);

  // Candidates sorted by logit (descending), truncated by top-k.
  idx_.resize(V);
  std::iota(idx_.begin(), idx_.end(), 0);
  int64_t k = (opt_.top_k > 0 && opt_.top_k < V) ? opt_.top_k : V;
  auto by_logit = [p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); };
  if (k < V || opt_.top_p < 1.0) {
    if (k < V) {
      std::partial_sort(idx_.begin(), idx_.begin() + k, idx_.end(), by_logit);
    } else {
      std::sort(idx_.begin(), idx_.end(), by_logit);
    }
  }
  // Softmax over the k candidates at the temperature.
  buf_.resize(k);
  float mx = -INFINITY;
  for (int64_t i = 0; i < k; ++i) mx = std::max(mx, p[idx_[i]]);
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    buf_[i] = std::exp((p[idx_[i]] - mx) / static_cast<float>(opt_.temperature));
    sum += buf_[i];
  }
  // Nucleus: smallest prefix (in sorted order) whose mass reaches top_p.
  int64_t n = k;
  if (opt_.top_p < 1.0) {
    double acc = 0;
    for (int64_t i = 0; i < k; ++i) {
      acc += buf_[i] / sum;
      if (acc >= opt_.top_p) {
        n = i + 1;
        break;
      }
    }
    sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += buf_[i];
  }
  std::uniform_real_distribution<double> u(0.0, sum);
  double r = u(rng_), acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc += buf_[i];
    if (r < acc) return idx_[i];
  }
  return idx_[n - 1];
}

}  // namespace mambavl::generate
