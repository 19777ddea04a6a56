// Helpers shared by the CausalLM implementations.
#include "models/lm.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "common/error.h"

namespace mambavl::models {

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
