// Tokenizer: exact agreement with Hugging Face `tokenizers` on the real GPT-NeoX-20B tokenizer
// (from the shared folder) and on the fixtures made by dev/make_tokenizer_fixtures.py.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/tokenizer.h"

using mambavl::Error;
using mambavl::io::Tokenizer;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path fixtures() { return fs::path(MAMBAVL_FIXTURES_DIR) / "tokenizer"; }

// The shared folder: MAMBAVL_SHARED_DIR from the environment (e.g. for a worktree), else the one
// next to the repository.
fs::path shared_dir() {
  if (const char* env = std::getenv("MAMBAVL_SHARED_DIR"); env && *env) return env;
  return MAMBAVL_SHARED_DIR;
}
fs::path neox_dir() { return shared_dir() / "tokenizers" / "gpt-neox-20b"; }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f) << "cannot open " << p;
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}
json load_json(const fs::path& p) { return json::parse(slurp(p)); }

std::string show(const std::vector<int64_t>& v) { return "[" + mambavl::join(v) + "]"; }

#define SKIP_WITHOUT_NEOX()                                                            \
  if (!fs::exists(neox_dir() / "tokenizer.json"))                                      \
  GTEST_SKIP() << "shared GPT-NeoX-20B tokenizer not found at " << neox_dir().string() \
               << " (set MAMBAVL_SHARED_DIR to the shared folder); skipping"

// Compares `tok` with expected-<name>.json over texts.json. Returns the number of texts checked.
void check_against_expected(const Tokenizer& tok, const std::string& name) {
  json texts = load_json(fixtures() / "texts.json");
  json exp = load_json(fixtures() / ("expected-" + name + ".json"));
  ASSERT_EQ(texts.size(), exp["encode"].size());
  ASSERT_GE(texts.size(), 80u);
  int mismatches = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i].get<std::string>();
    const json& e = exp["encode"][i];
    auto want = e["ids"].get<std::vector<int64_t>>();
    auto got = tok.encode(text);
    EXPECT_EQ(got, want) << name << " text " << i << " " << json(text).dump() << "\n got  "
                         << show(got) << "\n want " << show(want);
    auto got_sp = tok.encode(text, /*add_special_tokens=*/true);
    EXPECT_EQ(got_sp, e["ids_with_special"].get<std::vector<int64_t>>())
        << name << " text " << i << " with special tokens";
    EXPECT_EQ(tok.decode(want), e["decoded"].get<std::string>()) << name << " decode text " << i;
    EXPECT_EQ(tok.decode(want, /*skip_special_tokens=*/true),
              e["decoded_skip_special"].get<std::string>())
        << name << " decode (skip special) text " << i;
    mismatches += got != want;
  }
  EXPECT_EQ(mismatches, 0) << name;
  ASSERT_GE(exp["decode"].size(), 10u);
  for (const json& d : exp["decode"]) {
    auto ids = d["ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(tok.decode(ids), d["text"].get<std::string>()) << name << " decode " << show(ids);
    EXPECT_EQ(tok.decode(ids, true), d["text_skip_special"].get<std::string>())
        << name << " decode (skip special) " << show(ids);
  }
}

// Writes `content` to a fresh temporary tokenizer.json and returns its path.
fs::path write_temp(const std::string& name, const std::string& content) {
  fs::path dir = fs::temp_directory_path() / ("mambavl_tok_test_" + name);
  fs::create_directories(dir);
  fs::path p = dir / "tokenizer.json";
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

// Expects from_file(path) to throw an Error whose message contains every part of `needles`.
void expect_load_error(const fs::path& p, const std::vector<std::string>& needles) {
  try {
    Tokenizer::from_file(p);
    FAIL() << "no error loading " << p;
  } catch (const Error& e) {
    std::string m = e.what();
    for (const auto& n : needles)
      EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
  }
}

json small_bpe_json() { return load_json(fixtures() / "bpe-small" / "tokenizer.json"); }

}  // namespace

// --- the real GPT-NeoX-20B tokenizer --------------------------------------------------------

TEST(TokenizerNeox, SharedTestFilesExact) {
  SKIP_WITHOUT_NEOX();
  Tokenizer tok = Tokenizer::from_file(neox_dir() / "tokenizer.json");
  const std::string inp = slurp(neox_dir() / "test.inp");
  std::istringstream out(slurp(neox_dir() / "test.out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  size_t pos = 0, n = 0, exact = 0;
  std::string line;
  while (true) {
    size_t e = inp.find(sep, pos);
    if (e == std::string::npos) break;
    std::string text = inp.substr(pos, e - pos);
    pos = e + sep.size();
    ASSERT_TRUE(std::getline(out, line)) << "test.out has fewer lines than test.inp";
    std::vector<int64_t> want;
    std::istringstream ls(line);
    for (int64_t id; ls >> id;) want.push_back(id);
    auto got = tok.encode(text);
    EXPECT_EQ(got, want) << "text " << n << " " << json(text).dump();
    EXPECT_EQ(tok.decode(got), text) << "round trip of text " << n;
    exact += got == want;
    ++n;
  }
  EXPECT_EQ(n, 46u);
  EXPECT_EQ(exact, n);
}

TEST(TokenizerNeox, FixtureTextsExact) {
  SKIP_WITHOUT_NEOX();
  check_against_expected(Tokenizer::from_file(neox_dir() / "tokenizer.json"), "neox");
}

TEST(TokenizerNeox, VocabularyAndSpecialIds) {
  SKIP_WITHOUT_NEOX();
  auto found = Tokenizer::find_in(neox_dir());
  ASSERT_TRUE(found.has_value());
  const Tokenizer& tok = *found;
  EXPECT_EQ(tok.vocab_size(), 50277);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 0);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.token_to_id("<|endoftext|>"), 0);
  EXPECT_EQ(tok.token_to_id("###"), 4118);
  EXPECT_EQ(tok.token_to_id("&&"), 10494);
  EXPECT_EQ(tok.token_to_id("no such token"), std::nullopt);
  EXPECT_EQ(tok.id_to_token(12092), "Hello");
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_FALSE(tok.is_special(50254));
  EXPECT_THROW(tok.id_to_token(50277), Error);
  EXPECT_THROW(tok.id_to_token(-1), Error);
  EXPECT_EQ(tok.encode("Hello world"), (std::vector<int64_t>{12092, 1533}));
  EXPECT_EQ(tok.encode("Hello world", true), (std::vector<int64_t>{12092, 1533}));  // no BOS
  EXPECT_EQ(tok.encode("    Hello"), (std::vector<int64_t>{50274, 12092}));
  EXPECT_EQ(tok.encode("a" + std::string(25, ' ') + "b"), (std::vector<int64_t>{66, 50254, 270}));
  // Padding ids of the models' embedding tables are no tokens: skipped by decode.
  EXPECT_EQ(tok.decode({12092, 50277, 50300, 1533}), "Hello world");
}

// --- fixtures made with `tokenizers` --------------------------------------------------------

class TokenizerFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerFixture, MatchesHuggingFace) {
  Tokenizer tok = Tokenizer::from_file(fixtures() / GetParam() / "tokenizer.json");
  check_against_expected(tok, GetParam());
}

INSTANTIATE_TEST_SUITE_P(All, TokenizerFixture,
                         ::testing::Values("bpe-small", "bpe-prefix", "wordlevel",
                                           "wordlevel-split"));

TEST(Tokenizer, MergesStringFormEqualsArrayForm) {
  json j = small_bpe_json();
  ASSERT_TRUE(j["model"]["merges"][0].is_array()) << "fixture should use the array form";
  json s = j;
  for (auto& m : s["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  Tokenizer a = Tokenizer::from_json_string(j.dump(), "array form");
  Tokenizer b = Tokenizer::from_json_string(s.dump(), "string form");
  for (const json& t : load_json(fixtures() / "texts.json"))
    EXPECT_EQ(a.encode(t.get<std::string>()), b.encode(t.get<std::string>()));
}

TEST(Tokenizer, WordLevelTemplateAndUnk) {
  Tokenizer tok = Tokenizer::from_file(fixtures() / "wordlevel" / "tokenizer.json");
  auto bos = tok.token_to_id("[BOS]"), eos = tok.token_to_id("[EOS]"),
       unk = tok.token_to_id("[UNK]");
  ASSERT_TRUE(bos && eos && unk);
  EXPECT_EQ(tok.unk_id(), unk);
  auto ids = tok.encode("the zzzzqqq", true);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], *bos);
  EXPECT_EQ(ids[1], *tok.token_to_id("the"));
  EXPECT_EQ(ids[2], *unk);
  EXPECT_EQ(ids[3], *eos);
  EXPECT_EQ(tok.decode(ids, true), "the");
}

TEST(Tokenizer, FindInMissingDirectoryIsEmpty) {
  EXPECT_FALSE(Tokenizer::find_in(fixtures() / "no-such-dir").has_value());
  EXPECT_TRUE(Tokenizer::find_in(fixtures() / "bpe-small").has_value());
}

TEST(Tokenizer, CopiesShareStateAndAreThreadSafeToUse) {
  Tokenizer a = Tokenizer::from_file(fixtures() / "bpe-small" / "tokenizer.json");
  Tokenizer b = a;
  EXPECT_EQ(a.encode("Hello world, again"), b.encode("Hello world, again"));
  EXPECT_EQ(b.vocab_size(), 2006);
}

// --- errors ---------------------------------------------------------------------------------

TEST(TokenizerErrors, UnknownModelType) {
  json j = small_bpe_json();
  j["model"]["type"] = "Unigram";
  auto p = write_temp("unknown_model", j.dump());
  expect_load_error(p, {p.string(), "model.type", "Unigram"});
}

TEST(TokenizerErrors, MissingMerges) {
  json j = small_bpe_json();
  j["model"].erase("merges");
  auto p = write_temp("missing_merges", j.dump());
  expect_load_error(p, {p.string(), "model.merges", "missing"});
}

TEST(TokenizerErrors, MissingVocab) {
  json j = small_bpe_json();
  j["model"].erase("vocab");
  auto p = write_temp("missing_vocab", j.dump());
  expect_load_error(p, {p.string(), "model.vocab", "missing"});
}

TEST(TokenizerErrors, MergeOutsideVocabulary) {
  json j = small_bpe_json();
  j["model"]["merges"].push_back(json::array({"qqqq", "zzzz"}));
  auto p = write_temp("bad_merge", j.dump());
  expect_load_error(p, {p.string(), "model.merges[", "qqqq"});
}

TEST(TokenizerErrors, MalformedJson) {
  std::string text = small_bpe_json().dump();
  auto p = write_temp("malformed", text.substr(0, text.size() / 2));
  expect_load_error(p, {p.string(), "malformed JSON"});
}

TEST(TokenizerErrors, UnsupportedNormalizerAndPreTokenizer) {
  json j = small_bpe_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  auto p = write_temp("bad_normalizer", j.dump());
  expect_load_error(p, {p.string(), "normalizer", "Lowercase"});
  j = small_bpe_json();
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  p = write_temp("bad_pretok", j.dump());
  expect_load_error(p, {p.string(), "pre_tokenizer", "Metaspace"});
}

TEST(TokenizerErrors, MissingFile) {
  expect_load_error(fixtures() / "no-such-dir" / "tokenizer.json", {"no-such-dir", "not found"});
}

TEST(TokenizerErrors, InvalidUtf8NamesOffset) {
  Tokenizer tok = Tokenizer::from_file(fixtures() / "bpe-small" / "tokenizer.json");
  const std::vector<std::pair<std::string, size_t>> cases = {
      {std::string("abc\xff"), 3},          {std::string("h\xc3"), 1},
      {std::string("ok \xe2\x82 x"), 3},    {std::string("\xc0\xaf"), 0},           // overlong
      {std::string("ab\xed\xa0\x80"), 2},   {std::string("x\xf4\x90\x80\x80"), 1},  // > U+10FFFF
      {std::string("caf\xc3\xa9 \x80"), 6},
  };
  for (const auto& [text, offset] : cases) {
    try {
      tok.encode(text);
      ADD_FAILURE() << "no error for the text with the bad byte at " << offset;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("invalid UTF-8"), std::string::npos) << m;
      EXPECT_NE(m.find("byte offset " + std::to_string(offset)), std::string::npos) << m;
      EXPECT_NE(m.find("bpe-small"), std::string::npos) << m;
    }
  }
}
