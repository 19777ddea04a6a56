// Hugging Face `tokenizer.json` loader and encoder/decoder, matching the `tokenizers` library.
// Supported: models BPE (byte-level as GPT-2 / GPT-NeoX-20B, or char-level with unk / byte
// fallback) and WordLevel; normalizer NFC (or none); pre-tokenizers ByteLevel (GPT-2 split
// pattern, add_prefix_space, use_regex), Whitespace, WhitespaceSplit (or none); added tokens
// with their special / lstrip / rstrip / single_word / normalized flags; post-processors
// ByteLevel, TemplateProcessing (single sequence) (or none); decoders ByteLevel (or none: tokens
// joined by spaces). Anything else is a mambavl::Error naming the file and the field.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mambavl::io {

// The one place that states what a tokenizer.json may ask for; checked while it is read, before
// anything is allocated from it (errors name the file and the field). Real files: GPT-NeoX-20B
// has 50,254 vocabulary entries + 23 added tokens, ids 0..50276, no gaps; the largest
// vocabularies have about 256,000 tokens; normalizer Sequences nest one or two deep.
struct TokenizerLimits {
  static constexpr int64_t kMaxVocab = int64_t{1} << 24;  // token ids < 16,777,216
  // Ids are dense: a token id may exceed the number of entries (vocabulary + added tokens) by at
  // most this much, so the id tables stay proportional to the file.
  static constexpr int64_t kMaxIdGap = int64_t{1} << 16;
  static constexpr int kMaxNesting = 16;        // normalizer "Sequence" inside "Sequence"
  static constexpr size_t kMaxSequence = 1024;  // entries of one normalizer "Sequence"
};

class Tokenizer {
 public:
  // Reads `path` (a tokenizer.json). bos/eos/unk come from a sibling tokenizer_config.json when
  // there is one (bos_token / eos_token / unk_token), else unk from the model's unk_token.
  static Tokenizer from_file(const std::filesystem::path& path);
  // from_file(dir / "tokenizer.json") when that file exists, else nullopt.
  static std::optional<Tokenizer> find_in(const std::filesystem::path& dir);
  // Parses tokenizer.json text; `origin` names it in error messages.
  static Tokenizer from_json_string(std::string_view json, const std::string& origin);

  // Added tokens are always recognised in `text` (as Hugging Face's encode does);
  // add_special_tokens applies the post-processor's template (e.g. a BOS). Invalid UTF-8 is an
  // Error naming the byte offset.
  std::vector<int64_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Ids that are no token are skipped, as Hugging Face does; invalid UTF-8 produced by the
  // decoder becomes U+FFFD (one per maximal invalid subsequence).
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;

  std::string id_to_token(int64_t id) const;  // Error when `id` is no token
  std::optional<int64_t> token_to_id(std::string_view token) const;
  // One past the largest token id (model vocabulary and added tokens).
  int64_t vocab_size() const;
  std::optional<int64_t> bos_id() const;
  std::optional<int64_t> eos_id() const;
  std::optional<int64_t> unk_id() const;
  bool is_special(int64_t id) const;
  const std::string& origin() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace mambavl::io
