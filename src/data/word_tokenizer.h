// A word-level Hugging Face tokenizer built from texts (for the small built-in models trained on
// the synthetic scenes): model WordLevel, pre-tokenizer Whitespace (\w+|[^\w\s]+), no normalizer,
// no decoder (decoding joins tokens with spaces).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace mambavl::data {

// The Whitespace pre-tokens of `text` (\w+|[^\w\s]+). \w is [A-Za-z0-9_] plus every non-ASCII
// code point except Unicode spaces; exact for ASCII text, and make_wordlevel_tokenizer_json checks
// its result against io::Tokenizer anyway.
std::vector<std::string> whitespace_pretokens(const std::string& text);

// A WordLevel tokenizer.json document: `specials` (content, id) as added special tokens,
// `vocab` ({token: id}, the specials included), pre-tokenizer `pre_tokenizer` ("Whitespace" or
// "WhitespaceSplit"), no normalizer / post-processor / decoder, unknown words -> `unk`.
nlohmann::json wordlevel_tokenizer_document(
    const std::vector<std::pair<std::string, int64_t>>& specials, const nlohmann::json& vocab,
    const std::string& pre_tokenizer, const std::string& unk);

// tokenizer.json text. Ids: 0 "<|endoftext|>" (eos), 1 "<unk>" (unk), 2 "<pad>" (the three are
// added special tokens), then "0".."1000", "00".."99", then `extra` (e.g. "###", "&&"; each must be
// one pre-token: a run of word characters or a run of punctuation), then every other pre-token of
// `texts`, sorted (byte order), each once. Error if an extra token is not a single pre-token, or if
// some text would not encode without "<unk>" (names the text).
std::string make_wordlevel_tokenizer_json(const std::vector<std::string>& texts,
                                          const std::vector<std::string>& extra = {});
// tokenizer_config.json text: eos_token "<|endoftext|>", unk_token "<unk>", pad_token "<pad>",
// so io::Tokenizer::eos_id() (and transformers' AutoTokenizer) find them.
std::string wordlevel_tokenizer_config_json();
// Writes dir/tokenizer.json and dir/tokenizer_config.json, each atomically (creates dir).
void write_wordlevel_tokenizer(const std::filesystem::path& dir,
                               const std::vector<std::string>& texts,
                               const std::vector<std::string>& extra = {});

}  // namespace mambavl::data
