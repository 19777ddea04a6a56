// The causal language-model interface every backbone implements (Mamba, GPT-NeoX, hybrid), so
// that generation, perplexity, training and the VLM wrapper are written once.
#pragma once
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "models/mixer.h"

namespace torch::nn {
class Module;
}

namespace mambavl::models {

// int8 weights (docs/quantization.md): config.json's quantization_config.quant_method.
inline constexpr const char* kInt8QuantMethod = "mambavl_int8";
// "int8" when config.json `j` (read from `file`) has our quantization_config, "" when it has none;
// any other quantization_config is an error naming the file and the method.
std::string read_quantization(const nlohmann::json& j, const std::string& file);
// The quantization_config written for int8 weights; `modules` says which matrices are int8.
nlohmann::json int8_quantization_config(const std::string& modules);

// Per-sequence decoding state (Mamba: conv + SSM states per layer, constant in the length;
// attention: a KV cache that grows as tokens are written, up to the cache's max_len).
// `length()` tokens have been consumed so far.
class LMCache {
 public:
  virtual ~LMCache() = default;
  virtual int64_t length() const = 0;
  virtual int64_t batch() const = 0;
};

// The cache of a stack of layers (one LayerCache per layer), used by every backbone.
class LayerStackCache : public LMCache {
 public:
  LayerStackCache(const void* owner, int64_t batch, int64_t max_len);
  int64_t length() const override { return len; }
  int64_t batch() const override { return bsz; }
  // `cache` as a LayerStackCache made by `owner`, after checking its batch and that L more tokens
  // fit (mambavl::Error otherwise).
  static LayerStackCache& check(LMCache* cache, const void* owner, int64_t batch, int64_t L);
  std::vector<std::unique_ptr<LayerCache>> layers;
  const void* owner;
  int64_t len = 0, bsz, max_len;
  // Left padding of a batched prefill of prompts of different lengths (right-aligned): row b's
  // first left_pad[b] positions are padding that no real position sees (attention masks them as
  // keys in the prefill and every later step; Mamba zeroes its conv and SSM inputs there) and row
  // b's rotary positions count from its first real token, so every row computes what it would
  // alone. Set before the prefill (the first forward with this cache, which must cover every pad
  // position); empty = no padding (the unpadded fast paths are used).
  std::vector<int64_t> left_pad;
  // A backbone's fused-decode scratch (buffers, fp32 copies of small weights), made on first use.
  std::unique_ptr<LayerCache> decode_state;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  virtual std::string arch() const = 0;    // "mamba", "gpt_neox", "hybrid"
  virtual int64_t vocab_size() const = 0;  // rows of the output logits (padded vocabulary)
  virtual int64_t hidden_size() const = 0;
  virtual int64_t num_layers() const = 0;

  // ids [B, L] int64 -> [B, L, hidden] input embeddings (the VLM overwrites image positions).
  virtual at::Tensor embed(const at::Tensor& ids) = 0;
  // embeds [B, L, hidden] -> final hidden states [B, L, hidden] after the final norm, in the
  // compute dtype. With a cache: continues from the cache's state (prefill when it is empty, then
  // one or more steps) and advances it by L.
  virtual at::Tensor forward_hidden(const at::Tensor& embeds, LMCache* cache = nullptr) = 0;
  // hidden [..., hidden] -> logits [..., V] fp32 (the LM head).
  virtual at::Tensor logits(const at::Tensor& hidden) = 0;

  // embeds -> logits [B, L, V] fp32, or [B, 1, V] for the last position only (a prefill for
  // generation skips the head elsewhere).
  virtual at::Tensor forward_embeds(const at::Tensor& embeds, LMCache* cache = nullptr,
                                    bool last_only = false) {
    at::Tensor h = forward_hidden(embeds, cache);
    if (last_only) h = h.narrow(1, h.size(1) - 1, 1);
    return logits(h);
  }
  at::Tensor forward(const at::Tensor& ids, LMCache* cache = nullptr, bool last_only = false) {
    return forward_embeds(embed(ids), cache, last_only);
  }
  // A cache for `batch` sequences of up to `max_len` tokens in total. Nothing is sized by max_len
  // up front: attention KV caches start at min(max_len, KVCache::kInitialCapacity) positions and
  // grow geometrically as tokens are written; Mamba states do not depend on it.
  virtual std::unique_ptr<LMCache> make_cache(int64_t batch, int64_t max_len) = 0;
  // Most tokens (prompt + generated) one sequence may have: the position range the model was
  // configured for (GPT-NeoX: max_position_embeddings); 0 = no limit (Mamba, hybrid stacks).
  // Generation refuses prompt + max_new_tokens beyond it.
  virtual int64_t max_context() const { return 0; }
  // Where max_context() comes from, for messages, e.g. "max_position_embeddings in D/config.json":
  // what set_context_source named, else the model's own description.
  std::string max_context_source() const {
    return context_source_.empty() ? own_context_source() : context_source_;
  }
  // Names the config entry of max_context() for messages when the model is part of a larger
  // folder (a VLM's language model: "text_config.max_position_embeddings in D/config.json").
  void set_context_source(std::string s) { context_source_ = std::move(s); }

  virtual torch::nn::Module& module() = 0;
  // Casts the weights to the compute dtype (kFloat or kBFloat16; SSM parameters A_log / D and
  // normalisation statistics stay fp32). Error for other dtypes.
  virtual void to_dtype(at::ScalarType dtype) = 0;
  virtual at::ScalarType dtype() const = 0;
  // int8 weights for inference (per-row symmetric; which matrices: the backbone's documentation).
  // Error for backbones without it.
  virtual void quantize_int8();
  // Weights + config.json (+ the tokenizer files when the model was loaded from a folder with
  // them) to `dir`, in the same Hugging Face format it loads. Atomic per file.
  virtual void save(const std::filesystem::path& dir) const = 0;

 protected:
  // The model's own description of where max_context() comes from.
  virtual std::string own_context_source() const { return "the model's config"; }

 private:
  std::string context_source_;
};

// Copies the tokenizer files (tokenizer.json, tokenizer_config.json, special_tokens_map.json) that
// exist in `from` to `to`, each atomically (temp file + rename); nothing when `from` is empty,
// missing, or the same folder as `to`.
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

// Validates input ids for embed(): [B, L] int64, every id in [0, vocab_size) (mambavl::Error).
void check_token_ids(const at::Tensor& ids, int64_t vocab_size);

}  // namespace mambavl::models
