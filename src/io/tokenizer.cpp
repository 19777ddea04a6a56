#include "io/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/error.h"
#include "io/unicode_tables.h"
#include "io/file.h"
#include "io/json_util.h"

namespace mambavl::io {

namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8

// A non-ASCII lead byte: sequence length (0 = invalid lead) and the allowed range of the second
// byte (excludes overlongs, surrogates and code points > U+10FFFF).
struct Utf8Lead {
  size_t len;
  unsigned char lo, hi;
};
inline Utf8Lead utf8_lead(unsigned char c) {
  using u8 = unsigned char;
  if (c >= 0xC2 && c <= 0xDF) return {2, 0x80, 0xBF};
  if (c >= 0xE0 && c <= 0xEF)
    return {3, static_cast<u8>(c == 0xE0 ? 0xA0 : 0x80), static_cast<u8>(c == 0xED ? 0x9F : 0xBF)};
  if (c >= 0xF0 && c <= 0xF4)
    return {4, static_cast<u8>(c == 0xF0 ? 0x90 : 0x80), static_cast<u8>(c == 0xF4 ? 0x8F : 0xBF)};
  return {0, 0x80, 0xBF};
}

// Index of the first invalid byte of `s`, or npos. Rejects overlongs, surrogates, > U+10FFFF.
size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    const auto [len, lo, hi] = utf8_lead(c);
    if (len == 0) return i;
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (i + k >= n || (p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

// Decodes one code point of valid UTF-8 at s[i]; advances i.
inline uint32_t next_cp(std::string_view s, size_t& i) {
  auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return c;
  }
  auto b = [&](size_t k) {
    return static_cast<uint32_t>(static_cast<unsigned char>(s[i + k]) & 0x3F);
  };
  uint32_t cp;
  if (c < 0xE0) {
    cp = ((c & 0x1Fu) << 6) | b(1);
    i += 2;
  } else if (c < 0xF0) {
    cp = ((c & 0x0Fu) << 12) | (b(1) << 6) | b(2);
    i += 3;
  } else {
    cp = ((c & 0x07u) << 18) | (b(1) << 12) | (b(2) << 6) | b(3);
    i += 4;
  }
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    const auto [len, lo, hi] = utf8_lead(c);
    size_t k = 1;  // bytes of a valid prefix consumed
    if (len) {
      if (i + 1 < n && p[i + 1] >= lo && p[i + 1] <= hi) {
        k = 2;
        while (k < len && i + k < n && (p[i + k] & 0xC0) == 0x80) ++k;
      }
    }
    if (len && k == len) {
      out.append(s.substr(i, len));
    } else {
      out += "\xEF\xBF\xBD";
    }
    i += k;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Unicode tables

template <class R>
const R* find_range(const R* table, size_t size, uint32_t cp) {
  const R* end = table + size;
  const R* it = std::upper_bound(table, end, cp, [](uint32_t c, const R& r) { return c < r.lo; });
  if (it == table) return nullptr;
  --it;
  return cp <= it->hi ? it : nullptr;
}

constexpr uint8_t kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3;

struct AsciiClasses {
  std::array<uint8_t, 128> gpt2{}, word{}, ws_space{}, split_space{};
  AsciiClasses() {
    for (uint32_t c = 0; c < 128; ++c) {
      auto* r = find_range(unicode::kGpt2Classes, unicode::kGpt2Classes_size, c);
      gpt2[c] = r ? static_cast<uint8_t>(r->value) : kOther;
      word[c] = find_range(unicode::kWordChars, unicode::kWordChars_size, c) != nullptr;
      ws_space[c] = find_range(unicode::kWhitespacePretokSpace,
                               unicode::kWhitespacePretokSpace_size, c) != nullptr;
      split_space[c] = find_range(unicode::kSplitSpace, unicode::kSplitSpace_size, c) != nullptr;
    }
  }
};
const AsciiClasses& ascii() {
  static const AsciiClasses a;
  return a;
}

inline uint8_t gpt2_class(uint32_t cp) {
  if (cp < 128) return ascii().gpt2[cp];
  auto* r = find_range(unicode::kGpt2Classes, unicode::kGpt2Classes_size, cp);
  return r ? static_cast<uint8_t>(r->value) : kOther;
}
inline bool is_word_char(uint32_t cp) {
  if (cp < 128) return ascii().word[cp];
  return find_range(unicode::kWordChars, unicode::kWordChars_size, cp) != nullptr;
}
inline bool is_ws_pretok_space(uint32_t cp) {
  if (cp < 128) return ascii().ws_space[cp];
  return find_range(unicode::kWhitespacePretokSpace, unicode::kWhitespacePretokSpace_size, cp) !=
         nullptr;
}
inline bool is_split_space(uint32_t cp) {
  if (cp < 128) return ascii().split_space[cp];
  return find_range(unicode::kSplitSpace, unicode::kSplitSpace_size, cp) != nullptr;
}

// ---------------------------------------------------------------------------------------------
// NFC

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint32_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  auto* r = find_range(unicode::kCombiningClass, unicode::kCombiningClass_size, cp);
  return r ? r->value : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* end = unicode::kDecompositions + unicode::kDecompositions_size;
  const auto* it =
      std::lower_bound(unicode::kDecompositions, end, cp,
                       [](const unicode::Decomposition& d, uint32_t c) { return d.cp < c; });
  if (it != end && it->cp == cp) {
    out.insert(out.end(), unicode::kDecompPool + it->offset,
               unicode::kDecompPool + it->offset + it->length);
  } else {
    out.push_back(cp);
  }
}

// The primary composite of (a, b), or 0.
uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* end = unicode::kCompositions + unicode::kCompositions_size;
  const auto* it =
      std::lower_bound(unicode::kCompositions, end, std::make_pair(a, b),
                       [](const unicode::Composition& c, std::pair<uint32_t, uint32_t> k) {
                         return std::make_pair(c.first, c.second) < k;
                       });
  if (it != end && it->first == a && it->second == b) return it->composite;
  return 0;
}

// NFC of valid UTF-8 `s`.
std::string nfc(std::string_view s) {
  bool maybe = false;
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp = next_cp(s, i);
    if (find_range(unicode::kNfcMaybe, unicode::kNfcMaybe_size, cp)) {
      maybe = true;
      break;
    }
  }
  if (!maybe) return std::string(s);
  std::vector<uint32_t> d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) decompose(next_cp(s, i), d);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  std::vector<uint32_t> cls(d.size());
  for (size_t i = 0; i < d.size(); ++i) cls[i] = combining_class(d[i]);
  for (size_t i = 1; i < d.size(); ++i) {
    for (size_t j = i; j > 0 && cls[j] != 0 && cls[j - 1] > cls[j]; --j) {
      std::swap(d[j], d[j - 1]);
      std::swap(cls[j], cls[j - 1]);
    }
  }
  // Canonical composition (UAX #15 reference algorithm).
  if (!d.empty()) {
    size_t starter_pos = 0, out = 1;
    uint32_t last_class = cls[0] ? 256 : 0;
    for (size_t i = 1; i < d.size(); ++i) {
      uint32_t ch = d[i], ch_class = cls[i];
      uint32_t composite = (last_class < ch_class || last_class == 0) && cls[starter_pos] == 0
                               ? compose_pair(d[starter_pos], ch)
                               : 0;
      if (composite) {
        d[starter_pos] = composite;
      } else {
        if (ch_class == 0) starter_pos = out;
        last_class = ch_class;
        cls[out] = ch_class;
        d[out++] = ch;
      }
    }
    d.resize(out);
  }
  std::string r;
  r.reserve(s.size() + 8);
  for (uint32_t cp : d) append_utf8(r, cp);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: each appends [begin, end) byte ranges of `s` to `out`.

using Spans = std::vector<std::pair<size_t, size_t>>;

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void split_gpt2(std::string_view s, Spans& out) {
  thread_local std::vector<uint32_t> cps;
  thread_local std::vector<uint8_t> cls;
  thread_local std::vector<size_t> off;
  cps.clear();
  cls.clear();
  off.clear();
  for (size_t i = 0; i < s.size();) {
    off.push_back(i);
    uint32_t cp = next_cp(s, i);
    cps.push_back(cp);
    cls.push_back(gpt2_class(cp));
  }
  const size_t n = cps.size();
  off.push_back(s.size());
  auto emit = [&](size_t a, size_t b) { out.emplace_back(off[a], off[b]); };
  size_t i = 0;
  while (i < n) {
    uint32_t c = cps[i];
    if (c == '\'' && i + 1 < n) {
      uint32_t d = cps[i + 1];
      if (d == 's' || d == 't' || d == 'm' || d == 'd') {
        emit(i, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        uint32_t e = cps[i + 2];
        if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) {
          emit(i, i + 3);
          i += 3;
          continue;
        }
      }
    }
    // ` ?X+` for X in L, N, other: the optional space, then a run of one class.
    size_t start = (c == ' ' && i + 1 < n && cls[i + 1] != kSpace) ? i + 1 : i;
    uint8_t k = cls[start];
    if (k != kSpace) {
      size_t j = start + 1;
      while (j < n && cls[j] == k) ++j;
      emit(i, j);
      i = j;
      continue;
    }
    // Whitespace: \s+(?!\S) leaves the last space of a run followed by a non-space; else \s+.
    size_t j = i + 1;
    while (j < n && cls[j] == kSpace) ++j;
    if (j < n && j - i >= 2) --j;
    emit(i, j);
    i = j;
  }
}

// \w+|[^\w\s]+
void split_whitespace(std::string_view s, Spans& out) {
  size_t i = 0;
  int cur = -1;  // 0 = word run, 1 = punctuation run
  size_t run_start = 0;
  while (i < s.size()) {
    size_t at = i;
    uint32_t cp = next_cp(s, i);
    int k = is_word_char(cp) ? 0 : is_ws_pretok_space(cp) ? 2 : 1;
    if (k != cur) {
      if (cur == 0 || cur == 1) out.emplace_back(run_start, at);
      cur = k;
      run_start = at;
    }
  }
  if (cur == 0 || cur == 1) out.emplace_back(run_start, s.size());
}

void split_whitespace_split(std::string_view s, Spans& out) {
  size_t i = 0, run_start = 0;
  bool in_word = false;
  while (i < s.size()) {
    size_t at = i;
    bool sp = is_split_space(next_cp(s, i));
    if (sp && in_word) out.emplace_back(run_start, at);
    if (!sp && !in_word) run_start = at;
    in_word = !sp;
  }
  if (in_word) out.emplace_back(run_start, s.size());
}

// GPT-2's bytes_to_unicode.
std::array<uint32_t, 256> byte_to_unicode() {
  std::array<uint32_t, 256> m{};
  std::array<bool, 256> direct{};
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) m[b] = direct[b] ? b : next++;
  return m;
}

// ---------------------------------------------------------------------------------------------
// Added tokens: a byte trie, leftmost-longest matching.

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = true;
};

class Trie {
 public:
  void add(std::string_view key, int32_t value) {
    int32_t node = 0;
    for (char ch : key) {
      auto c = static_cast<unsigned char>(ch);
      int32_t next = child(node, c);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        nodes_[node].children.emplace_back(c, next);
      }
      node = next;
    }
    if (nodes_[node].value < 0) nodes_[node].value = value;
    first_[static_cast<unsigned char>(key[0])] = true;
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // Leftmost-longest match at or after `from`: (start, end, value) or start == npos.
  std::tuple<size_t, size_t, int32_t> find(std::string_view s, size_t from) const {
    for (size_t i = from; i < s.size(); ++i) {
      if (!first_[static_cast<unsigned char>(s[i])]) continue;
      int32_t node = 0, best_val = -1;
      size_t best_end = 0;
      for (size_t j = i; j < s.size(); ++j) {
        node = child(node, static_cast<unsigned char>(s[j]));
        if (node < 0) break;
        if (nodes_[node].value >= 0) {
          best_val = nodes_[node].value;
          best_end = j + 1;
        }
      }
      if (best_val >= 0) return {i, best_end, best_val};
    }
    return {std::string_view::npos, 0, -1};
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t value = -1;
  };
  int32_t child(int32_t node, unsigned char c) const {
    for (auto& [k, v] : nodes_[node].children)
      if (k == c) return v;
    return -1;
  }
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_{};
  bool empty_ = true;
};

struct Piece {
  std::string_view text;
  int64_t token = -1;  // added-token id, or -1 for ordinary text
};

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  size_t k = i;
  uint8_t c = gpt2_class(next_cp(s, k));
  return c == kLetter || c == kNumber;
}
bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t k = 0;
  uint8_t c = gpt2_class(next_cp(s, k));
  return c == kLetter || c == kNumber;
}

// Splits `s` around the added tokens `trie` finds (Hugging Face AddedVocabulary semantics).
void split_added(std::string_view s, const Trie& trie, const std::vector<AddedToken>& tokens,
                 std::vector<Piece>& out) {
  if (trie.empty()) {
    if (!s.empty()) out.push_back({s, -1});
    return;
  }
  size_t pos = 0;      // where the automaton resumes
  size_t emitted = 0;  // end of the last emitted piece
  while (true) {
    auto [start, stop, idx] = trie.find(s, pos);
    if (start == std::string_view::npos) break;
    pos = stop;
    const AddedToken& t = tokens[idx];
    if (t.single_word && (ends_with_word(s.substr(0, start)) || starts_with_word(s.substr(stop))))
      continue;
    if (t.lstrip) {
      size_t ns = start;
      while (ns > emitted && is_split_space(static_cast<unsigned char>(s[ns - 1]))) --ns;
      // Multi-byte whitespace before the token.
      while (ns > emitted) {
        size_t k = ns - 1;
        while (k > emitted && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        size_t q = k;
        if (!is_split_space(next_cp(s, q))) break;
        ns = k;
      }
      start = ns;
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t q = stop;
        if (!is_split_space(next_cp(s, q))) break;
        stop = q;
      }
      pos = stop;
    }
    if (start > emitted) out.push_back({s.substr(emitted, start - emitted), -1});
    out.push_back({s.substr(start, stop - start), t.id});
    emitted = stop;
  }
  if (emitted < s.size()) out.push_back({s.substr(emitted), -1});
}

// ---------------------------------------------------------------------------------------------

std::string read_file(const std::filesystem::path& path) {
  return io::read_file(path, kMaxTokenizerBytes, "tokenizer");
}

struct PairHash {
  size_t operator()(uint64_t k) const { return std::hash<uint64_t>{}(k * 0x9E3779B97F4A7C15ull); }
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

// =============================================================================================

struct Tokenizer::Impl {
  std::string origin;
  enum class Model { BPE, WordLevel } model = Model::BPE;
  enum class Pre { None, ByteLevel, Whitespace, WhitespaceSplit } pre = Pre::None;
  enum class Dec { None, ByteLevel } dec = Dec::None;
  bool nfc = false;
  bool add_prefix_space = false, use_regex = true;

  std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>> vocab;
  std::vector<std::string> id_to_tok;  // model vocabulary and added tokens by id
  std::vector<uint8_t> has_tok;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>> added_by_content;
  std::unordered_set<int64_t> special_ids;
  Trie raw_trie, normalized_trie;

  // BPE
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>, PairHash> merges;  // -> rank, new id
  std::array<int32_t, 256> byte_id{};  // byte-level: token id of each byte's character, or -1
  std::optional<int64_t> unk;
  bool fuse_unk = false, byte_fallback = false;
  std::array<uint32_t, 256> b2u = byte_to_unicode();
  std::unordered_map<uint32_t, uint8_t> u2b;

  // Post-processor (TemplateProcessing, single sequence): ids before / after the sequence.
  std::vector<int64_t> template_prefix, template_suffix;

  std::optional<int64_t> bos, eos, unk_config;
  // The largest token id this file may use (TokenizerLimits: dense near its entry count).
  int64_t max_id = 0;
  void check_id(int64_t id, const std::string& field) const;

  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;
  static constexpr size_t kCacheCapacity = 100000, kCacheMaxWord = 256;

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    MVL_FAIL("tokenizer ", origin, ": ", field, ": ", what);
  }

  void load(const json& j);
  void load_model(const json& m);
  void load_added(const json& a);
  void load_normalizer(const json& n, const std::string& field, int depth = 0);
  void load_pre(const json& p);
  void load_post(const json& p);
  void load_decoder(const json& d);

  void encode_text(std::string_view text, std::vector<int64_t>& ids) const;
  void encode_word(std::string_view word, std::vector<int64_t>& ids) const;
  void bpe(const std::vector<int32_t>& symbols, std::vector<int32_t>& out) const;
};

namespace {

const json& get(const json& j, const char* key, const Tokenizer::Impl& t, const std::string& at) {
  auto it = j.find(key);
  if (it == j.end()) t.fail(at + "." + key, "missing");
  return *it;
}

bool get_bool(const json& j, const char* key, bool dflt, const Tokenizer::Impl& t,
              const std::string& at) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_boolean()) t.fail(at + "." + key, "expected a boolean");
  return it->get<bool>();
}

std::string type_of(const json& j, const Tokenizer::Impl& t, const std::string& at) {
  if (!j.is_object()) t.fail(at, "expected an object");
  const json& ty = get(j, "type", t, at);
  if (!ty.is_string()) t.fail(at + ".type", "expected a string");
  return ty.get<std::string>();
}

}  // namespace

void Tokenizer::Impl::check_id(int64_t id, const std::string& field) const {
  if (id < 0) fail(field, "expected a non-negative integer");
  if (id > max_id)
    fail(field, std::to_string(id) + " is over the limit of " + std::to_string(max_id) +
                    " (token ids are dense: at most the number of vocabulary entries and added "
                    "tokens + " +
                    std::to_string(TokenizerLimits::kMaxIdGap) + ", and below " +
                    std::to_string(TokenizerLimits::kMaxVocab) + ")");
}

void Tokenizer::Impl::load(const json& j) {
  if (!j.is_object()) fail("(top level)", "expected a JSON object");
  {
    // Every id is bounded by the number of entries the file holds, before any id table is sized.
    size_t entries = 0;
    if (auto m = j.find("model"); m != j.end() && m->is_object())
      if (auto v = m->find("vocab"); v != m->end() && v->is_object()) entries += v->size();
    if (auto a = j.find("added_tokens"); a != j.end() && a->is_array()) entries += a->size();
    max_id = std::min<int64_t>(TokenizerLimits::kMaxVocab - 1,
                               static_cast<int64_t>(entries) + TokenizerLimits::kMaxIdGap);
  }
  for (auto& b : byte_id) b = -1;
  for (int b = 0; b < 256; ++b) u2b[b2u[b]] = static_cast<uint8_t>(b);
  load_model(get(j, "model", *this, "(top level)"));
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) load_added(j["added_tokens"]);
  if (j.contains("normalizer")) load_normalizer(j["normalizer"], "normalizer");
  if (j.contains("pre_tokenizer")) load_pre(j["pre_tokenizer"]);
  if (j.contains("post_processor")) load_post(j["post_processor"]);
  if (j.contains("decoder")) load_decoder(j["decoder"]);
  if (pre == Pre::ByteLevel && model == Model::BPE) {
    for (int b = 0; b < 256; ++b) {
      std::string ch;
      append_utf8(ch, b2u[b]);
      auto it = vocab.find(ch);
      byte_id[b] = it == vocab.end() ? -1 : static_cast<int32_t>(it->second);
    }
  }
}

void Tokenizer::Impl::load_model(const json& m) {
  std::string type;
  if (m.is_object() && !m.contains("type")) {
    // Older files omit the type; infer it as the tokenizers library does.
    type = m.contains("merges") ? "BPE" : m.contains("vocab") ? "WordLevel" : "";
    if (type.empty()) fail("model.type", "missing and not inferable");
  } else {
    type = type_of(m, *this, "model");
  }
  if (type == "BPE") {
    model = Model::BPE;
  } else if (type == "WordLevel") {
    model = Model::WordLevel;
  } else {
    fail("model.type", "unsupported model type \"" + type + "\" (supported: BPE, WordLevel)");
  }
  const json& v = get(m, "vocab", *this, "model");
  if (!v.is_object()) fail("model.vocab", "expected an object {token: id}");
  for (auto& [tok, id] : v.items()) {
    if (!id.is_number_integer() || (id.is_number_unsigned() && id.get<uint64_t>() > INT64_MAX) ||
        id.get<int64_t>() < 0)
      fail("model.vocab", "id of \"" + tok + "\" is not a non-negative integer");
    int64_t i = id.get<int64_t>();
    check_id(i, "model.vocab: id of \"" + printable(tok) + "\"");
    vocab.emplace(tok, i);
    if (static_cast<size_t>(i) >= id_to_tok.size()) {
      id_to_tok.resize(i + 1);
      has_tok.resize(i + 1, 0);
    }
    id_to_tok[i] = tok;
    has_tok[i] = 1;
  }
  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    if (!m["unk_token"].is_string()) fail("model.unk_token", "expected a string");
    auto it = vocab.find(m["unk_token"].get<std::string>());
    // HF accepts an unk token missing from the vocabulary and fails when it is needed.
    if (it != vocab.end()) unk = it->second;
    if (model == Model::WordLevel && it == vocab.end())
      fail("model.unk_token",
           "\"" + m["unk_token"].get<std::string>() + "\" is not in the vocabulary");
  }
  if (model == Model::WordLevel) return;

  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() > 0)
    fail("model.dropout", "BPE dropout is not supported");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(k) && !m[k].is_null() && !(m[k].is_string() && m[k].get<std::string>().empty()))
      fail(std::string("model.") + k, "not supported");
  }
  fuse_unk = get_bool(m, "fuse_unk", false, *this, "model");
  byte_fallback = get_bool(m, "byte_fallback", false, *this, "model");
  const json& mg = get(m, "merges", *this, "model");
  if (!mg.is_array()) fail("model.merges", "expected an array");
  merges.reserve(mg.size() * 2);
  for (size_t r = 0; r < mg.size(); ++r) {
    std::string a, b;
    const json& e = mg[r];
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail("model.merges[" + std::to_string(r) + "]", "expected \"a b\", got \"" + s + "\"");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      fail("model.merges[" + std::to_string(r) + "]", "expected \"a b\" or [\"a\", \"b\"]");
    }
    auto ia = vocab.find(a), ib = vocab.find(b), ic = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || ic == vocab.end())
      fail("model.merges[" + std::to_string(r) + "]", "token \"" +
                                                          (ia == vocab.end()   ? a
                                                           : ib == vocab.end() ? b
                                                                               : a + b) +
                                                          "\" is not in the vocabulary");
    uint64_t key = (static_cast<uint64_t>(ia->second) << 32) | static_cast<uint64_t>(ib->second);
    merges[key] = {static_cast<int32_t>(r), static_cast<int32_t>(ic->second)};
  }
}

void Tokenizer::Impl::load_added(const json& a) {
  if (!a.is_array()) fail("added_tokens", "expected an array");
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string at = "added_tokens[" + std::to_string(i) + "]";
    const json& e = a[i];
    if (!e.is_object()) fail(at, "expected an object");
    AddedToken t;
    const json& id = get(e, "id", *this, at);
    const json& content = get(e, "content", *this, at);
    if (!id.is_number_integer() || (id.is_number_unsigned() && id.get<uint64_t>() > INT64_MAX) ||
        id.get<int64_t>() < 0)
      fail(at + ".id", "expected a non-negative integer");
    check_id(id.get<int64_t>(), at + ".id");
    if (!content.is_string() || content.get<std::string>().empty())
      fail(at + ".content", "expected a non-empty string");
    t.id = id.get<int64_t>();
    t.content = content.get<std::string>();
    MVL_CHECK(find_invalid_utf8(t.content) == std::string_view::npos, "tokenizer ", origin, ": ",
              at, ".content: invalid UTF-8");
    t.special = get_bool(e, "special", false, *this, at);
    t.lstrip = get_bool(e, "lstrip", false, *this, at);
    t.rstrip = get_bool(e, "rstrip", false, *this, at);
    t.single_word = get_bool(e, "single_word", false, *this, at);
    t.normalized = get_bool(e, "normalized", !t.special, *this, at);
    if (static_cast<size_t>(t.id) >= id_to_tok.size()) {
      id_to_tok.resize(t.id + 1);
      has_tok.resize(t.id + 1, 0);
    }
    id_to_tok[t.id] = t.content;
    has_tok[t.id] = 1;
    added_by_content[t.content] = t.id;
    if (t.special) special_ids.insert(t.id);
    added.push_back(std::move(t));
  }
}

void Tokenizer::Impl::load_normalizer(const json& n, const std::string& field, int depth) {
  if (n.is_null()) return;
  std::string type = type_of(n, *this, field);
  if (type == "NFC") {
    nfc = true;
  } else if (type == "Sequence") {
    if (depth >= TokenizerLimits::kMaxNesting)
      fail(field, "Sequence nested more than " + std::to_string(TokenizerLimits::kMaxNesting) +
                      " deep");
    const json& list = get(n, "normalizers", *this, field);
    if (!list.is_array()) fail(field + ".normalizers", "expected an array");
    if (list.size() > TokenizerLimits::kMaxSequence)
      fail(field + ".normalizers", std::to_string(list.size()) + " entries, over the limit of " +
                                       std::to_string(TokenizerLimits::kMaxSequence));
    for (size_t i = 0; i < list.size(); ++i)
      load_normalizer(list[i], field + ".normalizers[" + std::to_string(i) + "]", depth + 1);
  } else {
    fail(field + ".type", "unsupported normalizer \"" + type + "\" (supported: NFC)");
  }
}

void Tokenizer::Impl::load_pre(const json& p) {
  if (p.is_null()) return;
  std::string type = type_of(p, *this, "pre_tokenizer");
  if (type == "ByteLevel") {
    pre = Pre::ByteLevel;
    add_prefix_space = get_bool(p, "add_prefix_space", true, *this, "pre_tokenizer");
    use_regex = get_bool(p, "use_regex", true, *this, "pre_tokenizer");
  } else if (type == "Whitespace") {
    pre = Pre::Whitespace;
  } else if (type == "WhitespaceSplit") {
    pre = Pre::WhitespaceSplit;
  } else {
    fail("pre_tokenizer.type", "unsupported pre-tokenizer \"" + type +
                                   "\" (supported: ByteLevel, Whitespace, WhitespaceSplit)");
  }
}

void Tokenizer::Impl::load_post(const json& p) {
  if (p.is_null()) return;
  std::string type = type_of(p, *this, "post_processor");
  if (type == "ByteLevel") return;  // offsets only
  if (type != "TemplateProcessing")
    fail("post_processor.type",
         "unsupported post-processor \"" + type + "\" (supported: ByteLevel, TemplateProcessing)");
  const json& single = get(p, "single", *this, "post_processor");
  const json& specials = get(p, "special_tokens", *this, "post_processor");
  if (!single.is_array()) fail("post_processor.single", "expected an array");
  bool seen_seq = false;
  for (const json& item : single) {
    if (item.contains("Sequence")) {
      if (seen_seq) fail("post_processor.single", "more than one sequence");
      seen_seq = true;
    } else if (item.contains("SpecialToken")) {
      const json& st = get(item["SpecialToken"], "id", *this, "post_processor.single[]");
      if (!st.is_string() || !specials.contains(st.get<std::string>()))
        fail("post_processor.special_tokens", "no entry for " + st.dump());
      const json& ids = get(specials[st.get<std::string>()], "ids", *this,
                            "post_processor.special_tokens." + st.get<std::string>());
      auto& dst = seen_seq ? template_suffix : template_prefix;
      const std::string field = "post_processor.special_tokens." + st.get<std::string>() + ".ids";
      if (!ids.is_array()) fail(field, "expected an array of token ids");
      for (const json& i : ids) {
        if (!i.is_number_integer() || (i.is_number_unsigned() && i.get<uint64_t>() > INT64_MAX))
          fail(field, "expected non-negative integer token ids");
        const int64_t id = i.get<int64_t>();
        check_id(id, field);
        // Encode emits these ids: each must be a token (of the model's vocabulary or the added
        // tokens), or the ids would index past the embedding.
        if (static_cast<size_t>(id) >= has_tok.size() || !has_tok[static_cast<size_t>(id)])
          fail(field, std::to_string(id) +
                          " is not a token id of this tokenizer (its vocabulary and added tokens "
                          "have ids below " +
                          std::to_string(has_tok.size()) + ")");
        dst.push_back(id);
      }
    } else {
      fail("post_processor.single", "unknown item " + item.dump());
    }
  }
  if (!seen_seq) fail("post_processor.single", "no $A sequence");
}

void Tokenizer::Impl::load_decoder(const json& d) {
  if (d.is_null()) return;
  std::string type = type_of(d, *this, "decoder");
  if (type == "ByteLevel") {
    dec = Dec::ByteLevel;
  } else {
    fail("decoder.type", "unsupported decoder \"" + type + "\" (supported: ByteLevel)");
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding

void Tokenizer::Impl::bpe(const std::vector<int32_t>& symbols, std::vector<int32_t>& out) const {
  const size_t n = symbols.size();
  struct Sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Sym> sy(n);
  for (size_t i = 0; i < n; ++i)
    sy[i] = {symbols[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1,
             true};
  struct Cand {
    int32_t rank, pos, new_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> q;
  auto lookup = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    auto it = merges.find((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
    return it == merges.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < n; ++i)
    if (auto* m = lookup(sy[i].id, sy[i + 1].id))
      q.push({m->first, static_cast<int32_t>(i), m->second});
  while (!q.empty()) {
    Cand c = q.top();
    q.pop();
    Sym& left = sy[c.pos];
    if (!left.alive || left.next < 0) continue;
    Sym& right = sy[left.next];
    auto* m = lookup(left.id, right.id);
    if (!m || m->second != c.new_id) continue;
    left.id = c.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sy[right.next].prev = c.pos;
    if (left.prev >= 0)
      if (auto* pm = lookup(sy[left.prev].id, left.id)) q.push({pm->first, left.prev, pm->second});
    if (left.next >= 0)
      if (auto* nm = lookup(left.id, sy[left.next].id)) q.push({nm->first, c.pos, nm->second});
  }
  for (size_t i = 0; i < n; ++i)
    if (sy[i].alive) out.push_back(sy[i].id);
}

void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int64_t>& ids) const {
  if (word.empty()) return;
  if (model == Model::WordLevel) {
    auto it = vocab.find(word);
    if (it != vocab.end()) {
      ids.push_back(it->second);
    } else {
      MVL_CHECK(unk, "tokenizer ", origin, ": word \"", std::string(word),
                "\" is not in the vocabulary and the model has no unk_token");
      ids.push_back(*unk);
    }
    return;
  }
  const bool cacheable = word.size() <= kCacheMaxWord;
  if (cacheable) {
    std::shared_lock lock(cache_mutex);
    auto it = cache.find(word);
    if (it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  if (pre == Pre::ByteLevel) {
    for (char ch : word) {
      int32_t id = byte_id[static_cast<unsigned char>(ch)];
      if (id >= 0) symbols.push_back(id);  // no token for this byte: dropped, as HF does
    }
  } else {
    bool last_unk = false;
    std::string buf;
    for (size_t i = 0; i < word.size();) {
      size_t at = i;
      next_cp(word, i);
      std::string_view ch = word.substr(at, i - at);
      auto it = vocab.find(ch);
      if (it != vocab.end()) {
        symbols.push_back(static_cast<int32_t>(it->second));
        last_unk = false;
        continue;
      }
      if (byte_fallback) {
        bool all = true;
        std::vector<int32_t> bytes;
        for (char b : ch) {
          char name[8];
          std::snprintf(name, sizeof name, "<0x%02X>", static_cast<unsigned char>(b));
          auto bt = vocab.find(std::string_view(name));
          if (bt == vocab.end()) {
            all = false;
            break;
          }
          bytes.push_back(static_cast<int32_t>(bt->second));
        }
        if (all) {
          symbols.insert(symbols.end(), bytes.begin(), bytes.end());
          last_unk = false;
          continue;
        }
      }
      if (unk) {
        if (!(fuse_unk && last_unk)) symbols.push_back(static_cast<int32_t>(*unk));
        last_unk = true;
      }
    }
  }
  std::vector<int32_t> out;
  out.reserve(symbols.size());
  bpe(symbols, out);
  ids.insert(ids.end(), out.begin(), out.end());
  if (cacheable) {
    std::unique_lock lock(cache_mutex);
    if (cache.size() < kCacheCapacity) cache.emplace(std::string(word), std::move(out));
  }
}

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int64_t>& ids) const {
  std::vector<Piece> raw;
  split_added(text, raw_trie, added, raw);
  std::vector<Piece> pieces;
  std::vector<std::string> keep;  // storage of normalized text
  keep.reserve(raw.size());
  for (const Piece& p : raw) {
    if (p.token >= 0) {
      pieces.push_back(p);
      continue;
    }
    std::string_view s = p.text;
    if (nfc) {
      keep.push_back(io::nfc(s));
      s = keep.back();
    }
    split_added(s, normalized_trie, added, pieces);
  }
  Spans spans;
  std::string prefixed;
  for (const Piece& p : pieces) {
    if (p.token >= 0) {
      ids.push_back(p.token);
      continue;
    }
    std::string_view s = p.text;
    spans.clear();
    switch (pre) {
      case Pre::None:
        spans.emplace_back(0, s.size());
        break;
      case Pre::ByteLevel:
        if (add_prefix_space && s[0] != ' ') {
          prefixed = " ";
          prefixed += s;
          s = prefixed;
        }
        if (use_regex)
          split_gpt2(s, spans);
        else
          spans.emplace_back(0, s.size());
        break;
      case Pre::Whitespace:
        split_whitespace(s, spans);
        break;
      case Pre::WhitespaceSplit:
        split_whitespace_split(s, spans);
        break;
    }
    for (auto [a, b] : spans) encode_word(s.substr(a, b - a), ids);
  }
}

// =============================================================================================

Tokenizer Tokenizer::from_json_string(std::string_view text, const std::string& origin) {
  auto impl = std::make_shared<Impl>();
  impl->origin = origin;
  json j;
  try {
    // A real tokenizer.json nests about 6 deep (normalizer Sequences add 2 a level).
    j = parse_json_bounded(text.begin(), text.end(), 64, "tokenizer " + origin + ": ");
  } catch (const json::parse_error& e) {
    MVL_FAIL("tokenizer ", origin, ": malformed JSON: ", e.what());
  }
  try {
    impl->load(j);
  } catch (const json::exception& e) {
    MVL_FAIL("tokenizer ", origin, ": unexpected JSON content: ", e.what());
  }
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& t = impl->added[i];
    if (!t.normalized) {
      impl->raw_trie.add(t.content, static_cast<int32_t>(i));
    } else {
      impl->normalized_trie.add(impl->nfc ? nfc(t.content) : t.content, static_cast<int32_t>(i));
    }
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::filesystem::path& path) {
  Tokenizer tok = from_json_string(read_file(path), path.string());
  auto impl = std::const_pointer_cast<Impl>(tok.impl_);
  impl->bos.reset();
  impl->eos.reset();
  auto config = path.parent_path() / "tokenizer_config.json";
  if (regular_file_exists(config, "tokenizer config")) {
    json c;
    try {
      const std::string text = io::read_file(config, kMaxConfigBytes, "tokenizer config");
      c = parse_json_bounded(text.begin(), text.end(), 64,
                             "tokenizer config " + config.string() + ": ");
    } catch (const json::parse_error& e) {
      MVL_FAIL("tokenizer config ", config.string(), ": malformed JSON: ", e.what());
    }
    auto lookup = [&](const char* key) -> std::optional<int64_t> {
      if (!c.is_object() || !c.contains(key) || c[key].is_null()) return std::nullopt;
      const json& v = c[key];
      std::string content;
      if (v.is_string())
        content = v.get<std::string>();
      else if (v.is_object() && v.contains("content") && v["content"].is_string())
        content = v["content"].get<std::string>();
      else
        MVL_FAIL("tokenizer config ", config.string(), ": ", key, ": expected a string");
      auto id = tok.token_to_id(content);
      MVL_CHECK(id, "tokenizer config ", config.string(), ": ", key, " \"", content,
                "\" is not a token of ", path.string());
      return id;
    };
    impl->bos = lookup("bos_token");
    impl->eos = lookup("eos_token");
    if (auto u = lookup("unk_token")) impl->unk_config = u;
  }
  return tok;
}

std::optional<Tokenizer> Tokenizer::find_in(const std::filesystem::path& dir) {
  auto p = dir / "tokenizer.json";
  if (!regular_file_exists(p, "tokenizer")) return std::nullopt;  // a folder there: an error
  return from_file(p);
}

std::vector<int64_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  size_t bad = find_invalid_utf8(text);
  MVL_CHECK(bad == std::string_view::npos, "tokenizer ", impl_->origin,
            ": encode: invalid UTF-8 in text at byte offset ", bad);
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = impl_->template_prefix;
  impl_->encode_text(text, ids);
  if (add_special_tokens)
    ids.insert(ids.end(), impl_->template_suffix.begin(), impl_->template_suffix.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  const Impl& t = *impl_;
  std::string bytes;
  bool first = true;
  for (int64_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= t.has_tok.size() || !t.has_tok[id]) continue;
    if (skip_special_tokens && t.special_ids.count(id)) continue;
    const std::string& tok = t.id_to_tok[id];
    if (t.dec == Impl::Dec::ByteLevel) {
      std::string mapped;
      bool ok = true;
      for (size_t i = 0; i < tok.size();) {
        auto it = t.u2b.find(next_cp(tok, i));
        if (it == t.u2b.end()) {
          ok = false;
          break;
        }
        mapped += static_cast<char>(it->second);
      }
      bytes += ok ? mapped : tok;
    } else {
      if (!first) bytes += ' ';
      bytes += tok;
    }
    first = false;
  }
  return t.dec == Impl::Dec::ByteLevel ? utf8_lossy(bytes) : bytes;
}

std::string Tokenizer::id_to_token(int64_t id) const {
  MVL_CHECK(id >= 0 && static_cast<size_t>(id) < impl_->has_tok.size() && impl_->has_tok[id],
            "tokenizer ", impl_->origin, ": id ", id, " is not a token (vocabulary size ",
            vocab_size(), ")");
  return impl_->id_to_tok[id];
}

std::optional<int64_t> Tokenizer::token_to_id(std::string_view token) const {
  auto a = impl_->added_by_content.find(token);
  if (a != impl_->added_by_content.end()) return a->second;
  auto v = impl_->vocab.find(token);
  if (v != impl_->vocab.end()) return v->second;
  return std::nullopt;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->has_tok.size()); }
std::optional<int64_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int64_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<int64_t> Tokenizer::unk_id() const {
  return impl_->unk_config ? impl_->unk_config : impl_->unk;
}
bool Tokenizer::is_special(int64_t id) const { return impl_->special_ids.count(id) != 0; }
const std::string& Tokenizer::origin() const { return impl_->origin; }

}  // namespace mambavl::io
