// Helpers shared by the CausalLM implementations.
#include "models/lm.h"

#include <filesystem>

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

}  // namespace mambavl::models
