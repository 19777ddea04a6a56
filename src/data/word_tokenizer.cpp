#include "data/word_tokenizer.h"

#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"

namespace mambavl::data {

using nlohmann::json;

namespace {

// 0 = word character, 1 = punctuation (neither word nor space), 2 = space.
int char_class(const std::string& s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    if (std::isalnum(c) || c == '_') return 0;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return 2;
    return 1;
  }
  // A UTF-8 sequence: decode the code point (invalid bytes count as one word character each).
  size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  if (i + len > s.size()) len = 1;
  uint32_t cp = len == 1 ? c : c & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  const bool space = cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
                     cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
  return space ? 2 : 0;
}

}  // namespace

std::vector<std::string> whitespace_pretokens(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0, start = 0;
  int cur = 2;
  while (i < text.size()) {
    const size_t at = i;
    const int k = char_class(text, i);
    if (k != cur) {
      if (cur != 2) out.push_back(text.substr(start, at - start));
      cur = k;
      start = at;
    }
  }
  if (cur != 2) out.push_back(text.substr(start));
  return out;
}

json wordlevel_tokenizer_document(const std::vector<std::pair<std::string, int64_t>>& specials,
                                  const json& vocab, const std::string& pre_tokenizer,
                                  const std::string& unk) {
  json added = json::array();
  for (const auto& [content, id] : specials)
    added.push_back({{"id", id},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", pre_tokenizer}}},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "WordLevel"}, {"vocab", vocab}, {"unk_token", unk}}}};
}

std::string make_wordlevel_tokenizer_json(const std::vector<std::string>& texts,
                                          const std::vector<std::string>& extra) {
  static const char* kSpecials[3] = {"<|endoftext|>", "<unk>", "<pad>"};
  json vocab = json::object();
  int64_t next = 0;
  auto add = [&](const std::string& tok) {
    if (!vocab.contains(tok)) vocab[tok] = next++;
  };
  for (const char* s : kSpecials) add(s);
  for (int v = 0; v <= 1000; ++v) add(std::to_string(v));
  for (int v = 0; v <= 99; ++v) add(std::string(v < 10 ? 1 : 0, '0').append(std::to_string(v)));
  for (const auto& e : extra) {
    const auto pieces = whitespace_pretokens(e);
    MVL_CHECK(pieces.size() == 1 && pieces[0] == e, "word tokenizer: extra token \"", e,
              "\" is not one Whitespace pre-token (a run of letters/digits/_ or a run of "
              "punctuation without spaces), so it could never be produced");
    add(e);
  }
  std::set<std::string> words;
  for (const auto& t : texts)
    for (auto& w : whitespace_pretokens(t)) words.insert(std::move(w));
  for (const auto& w : words) add(w);

  json j = wordlevel_tokenizer_document({{kSpecials[0], 0}, {kSpecials[1], 1}, {kSpecials[2], 2}},
                                        vocab, "Whitespace", "<unk>");
  std::string out = j.dump(2) + "\n";

  // Self-check with the real tokenizer: every text encodes without <unk>.
  const io::Tokenizer tok = io::Tokenizer::from_json_string(out, "generated word-level tokenizer");
  for (const auto& t : texts) {
    if (t.find("<unk>") != std::string::npos) continue;  // a literal <unk> is no failure
    for (int64_t id : tok.encode(t))
      MVL_CHECK(id != 1, "word tokenizer: the text \"", t.substr(0, 200),
                "\" does not encode without <unk> (a non-ASCII character class this builder "
                "misjudges?)");
  }
  return out;
}

std::string wordlevel_tokenizer_config_json() {
  json j = {{"eos_token", "<|endoftext|>"},
            {"unk_token", "<unk>"},
            {"pad_token", "<pad>"},
            {"tokenizer_class", "PreTrainedTokenizerFast"}};
  return j.dump(2) + "\n";
}

void write_wordlevel_tokenizer(const std::filesystem::path& dir,
                               const std::vector<std::string>& texts,
                               const std::vector<std::string>& extra) {
  const std::string tj = make_wordlevel_tokenizer_json(texts, extra);
  std::filesystem::create_directories(dir);
  io::write_text_file_atomic(dir / "tokenizer.json", tj);
  io::write_text_file_atomic(dir / "tokenizer_config.json", wordlevel_tokenizer_config_json());
}

}  // namespace mambavl::data
