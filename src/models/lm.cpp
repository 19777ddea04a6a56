// Helpers shared by the CausalLM implementations.
#include "models/lm.h"

#include <ATen/ATen.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace mambavl::models {

void CausalLM::quantize_int8() {
  MVL_FAIL("int8 weights are not supported for ", arch(), " models yet (Mamba models have them)");
}

std::string read_quantization(const nlohmann::json& j, const std::string& file) {
  if (!j.contains("quantization_config") || j.at("quantization_config").is_null()) return "";
  const auto& q = j.at("quantization_config");
  MVL_CHECK(q.is_object(), file, ": quantization_config must be a JSON object");
  const auto m = q.find("quant_method");
  const std::string method = m != q.end() && m->is_string() ? m->get<std::string>() : "";
  MVL_CHECK(method == kInt8QuantMethod, file, ": quantization_config.quant_method '",
            printable(method), "' is not supported (mambavl reads its own int8 layout, \"",
            kInt8QuantMethod, "\"; make one with 'mambavl quantize' from floating-point weights)");
  return "int8";
}

nlohmann::json int8_quantization_config(const std::string& modules) {
  return {{"quant_method", kInt8QuantMethod},
          {"bits", 8},
          {"weights", "symmetric per output row: <name>.weight I8 [out, in] and <name>.weight_scale "
                      "F32 [out], weight = weight_scale[o] * q[o, i]"},
          {"modules", modules},
          {"activations", "quantised to int8 per 64-value block at run time (decode)"}};
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
