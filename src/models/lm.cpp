// Helpers shared by the CausalLM implementations.
#include "models/lm.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "common/error.h"

namespace mambavl::models {

void CausalLM::quantize_int8() {
  MVL_FAIL("int8 weights are not supported for ", arch(), " models yet (Mamba models have them)");
}

void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  if (from.empty() || !fs::exists(from) || (fs::exists(to) && fs::equivalent(from, to))) return;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}) {
    if (!fs::exists(from / f)) continue;
    const fs::path tmp = to / (std::string(".") + f + ".tmp");
    fs::copy_file(from / f, tmp, fs::copy_options::overwrite_existing);
    fs::rename(tmp, to / f);
  }
}

LayerStackCache::LayerStackCache(const void* owner_, int64_t batch, int64_t max_len_)
    : owner(owner_), bsz(batch), max_len(max_len_) {
  MVL_CHECK(batch > 0 && max_len_ > 0, "make_cache: batch and max_len must be > 0 (got ", batch,
            ", ", max_len_, ")");
}

LayerStackCache& LayerStackCache::check(LMCache* cache, const void* owner, int64_t batch,
                                        int64_t L) {
  auto* c = dynamic_cast<LayerStackCache*>(cache);
  MVL_CHECK(c && c->owner == owner, "cache was not made by this model");
  MVL_CHECK(c->bsz == batch, "cache is for batch ", c->bsz, " but input has batch ", batch);
  MVL_CHECK(L >= 0 && L <= c->max_len - c->len, "cache overflow: the cache was made for ",
            c->max_len, " tokens but ", c->len, " + ", L, " = ", c->len + L,
            " tokens were requested");
  return *c;
}

void check_token_ids(const at::Tensor& ids, int64_t vocab_size) {
  MVL_CHECK(ids.dim() == 2, "input ids must be [B, L], got ", ids.dim(), " dimensions");
  MVL_CHECK(ids.scalar_type() == at::kLong, "input ids must be int64");
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    MVL_CHECK(lo >= 0 && hi < vocab_size, "token id ", lo < 0 ? lo : hi,
              " is out of range for this model's vocabulary of ", vocab_size);
  }
}

}  // namespace mambavl::models
