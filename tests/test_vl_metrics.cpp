// Vision-language metrics (src/eval/vl_metrics.h): CIDEr-D against pycocoevalcap's golden numbers
// (tests/fixtures/metrics/cider.json, dev/make_cider_fixtures.py), VQA answer normalisation as
// the official VQAv2 evaluation's rules, box parsing, IoU, grounding and retrieval accuracy.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "eval/vl_metrics.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::eval;
using mambavl::testing_util::expect_error;
using Box = std::array<double, 4>;

namespace {

nlohmann::json load_cider_fixture() {
  const std::string path = std::string(MAMBAVL_FIXTURES_DIR) + "/metrics/cider.json";
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return nlohmann::json::parse(f);
}

::testing::AssertionResult rel_close(double a, double b, double rel = 1e-9, double abs = 1e-12) {
  if (std::fabs(a - b) <= abs + rel * std::fabs(b)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << a << " vs " << b << " (diff " << (a - b) << ")";
}

}  // namespace

// ---------------------------------------------------------------- CIDEr-D

TEST(Cider, MatchesPycocoevalcapGolden) {
  const auto doc = load_cider_fixture();
  ASSERT_GE(doc["sets"]["main"]["cands"].size(), 30u);
  for (const auto& [name, set] : doc["sets"].items()) {
    SCOPED_TRACE(name);
    const auto refs = set["refs"].get<std::vector<std::vector<std::string>>>();
    const auto cands = set["cands"].get<std::vector<std::string>>();
    const auto want = set["per_sample"].get<std::vector<double>>();
    std::vector<double> got;
    const double corpus = cider_d(refs, cands, &got);
    EXPECT_TRUE(rel_close(corpus, set["corpus"].get<double>()));
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_TRUE(rel_close(got[i], want[i])) << "sample " << i;
  }
}

TEST(Cider, GoldenCoversTheEdgeCases) {
  // The fixture must exercise what the brief lists; these are facts of pycocoevalcap's numbers.
  const auto doc = load_cider_fixture();
  const auto& main = doc["sets"]["main"];
  const auto per = main["per_sample"].get<std::vector<double>>();
  EXPECT_DOUBLE_EQ(per[2], 10.0);  // candidate identical to its only reference
  EXPECT_EQ(per[5], 0.0);          // empty candidate
  EXPECT_EQ(per[6], 0.0);          // "..." (empty after tokenising)
  EXPECT_EQ(doc["sets"]["single"]["corpus"].get<double>(), 0.0);  // one sample: idf 0
}

TEST(Cider, TokenizerAgreesWithTheFixtureScript) {
  // Consistency of the C++ tokenizer and the script's copy (the golden scores depend on it).
  const auto doc = load_cider_fixture();
  for (const auto& [name, set] : doc["sets"].items()) {
    for (size_t i = 0; i < set["cands"].size(); ++i) {
      EXPECT_EQ(coco_tokenize(set["cands"][i].get<std::string>()),
                set["tokens"][i]["cand"].get<std::vector<std::string>>());
      for (size_t r = 0; r < set["refs"][i].size(); ++r)
        EXPECT_EQ(coco_tokenize(set["refs"][i][r].get<std::string>()),
                  set["tokens"][i]["refs"][r].get<std::vector<std::string>>());
    }
  }
}

TEST(Cider, TokenVersionEqualsTextVersion) {
  const auto doc = load_cider_fixture();
  const auto& set = doc["sets"]["main"];
  std::vector<std::vector<std::vector<std::string>>> rt;
  std::vector<std::vector<std::string>> ct;
  for (size_t i = 0; i < set["cands"].size(); ++i) {
    rt.push_back(set["tokens"][i]["refs"].get<std::vector<std::vector<std::string>>>());
    ct.push_back(set["tokens"][i]["cand"].get<std::vector<std::string>>());
  }
  std::vector<double> a, b;
  const double ca = cider_d_tokens(rt, ct, &a);
  const double cb = cider_d(set["refs"].get<std::vector<std::vector<std::string>>>(),
                            set["cands"].get<std::vector<std::string>>(), &b);
  EXPECT_EQ(ca, cb);
  EXPECT_EQ(a, b);
}

TEST(Cider, SampleOrderDoesNotMatter) {
  const auto doc = load_cider_fixture();
  const auto& set = doc["sets"]["main"];
  auto refs = set["refs"].get<std::vector<std::vector<std::string>>>();
  auto cands = set["cands"].get<std::vector<std::string>>();
  std::vector<double> fwd, rev;
  const double c1 = cider_d(refs, cands, &fwd);
  std::reverse(refs.begin(), refs.end());
  std::reverse(cands.begin(), cands.end());
  const double c2 = cider_d(refs, cands, &rev);
  EXPECT_TRUE(rel_close(c1, c2, 1e-12));
  for (size_t i = 0; i < fwd.size(); ++i)
    EXPECT_TRUE(rel_close(fwd[i], rev[rev.size() - 1 - i], 1e-12));
}

TEST(Cider, BadInputIsAnError) {
  expect_error([] { cider_d({{"a b"}}, {"a", "b"}); }, {"2 candidates", "1 reference"});
  expect_error([] { cider_d({{"a b"}, {}}, {"a", "b"}); }, {"sample 1", "no reference"});
  expect_error([] { cider_d({}, {}); }, {"no samples"});
}

TEST(CocoTokenize, PtbLikeRules) {
  using V = std::vector<std::string>;
  // Expected tokens are PTB's for these inputs (clitics, number punctuation, hyphens) followed by
  // pycocoevalcap's punctuation removal; the last two rows are documented differences.
  EXPECT_EQ(coco_tokenize("A Man's hat."), (V{"a", "man", "'s", "hat"}));
  EXPECT_EQ(coco_tokenize("Don't, can't!"), (V{"do", "n't", "ca", "n't"}));
  EXPECT_EQ(coco_tokenize("they're here; we'll see (maybe)"),
            (V{"they", "'re", "here", "we", "'ll", "see", "maybe"}));
  EXPECT_EQ(coco_tokenize("3.5 kg, 1,000 cats at 10:30."),
            (V{"3.5", "kg", "1,000", "cats", "at", "10:30"}));
  EXPECT_EQ(coco_tokenize("a black-and-white dog -- running - fast"),
            (V{"a", "black-and-white", "dog", "running", "fast"}));
  EXPECT_EQ(coco_tokenize("\"quoted\" `word' 'tis dogs'"), (V{"quoted", "word", "tis", "dogs"}));
  EXPECT_EQ(coco_tokenize("$5 for 50% #1"), (V{"$", "5", "for", "50", "%", "#", "1"}));
  EXPECT_EQ(coco_tokenize("o'clock ... what?!"), (V{"o'clock", "what"}));
  EXPECT_EQ(coco_tokenize("  \t\n "), V{});
  EXPECT_EQ(coco_tokenize("Café AND/OR"), (V{"café", "and/or"}));  // ASCII-only lower case
  EXPECT_EQ(coco_tokenize("U.S. flag"), (V{"u", "s", "flag"}));    // PTB keeps "u.s."
}

// ---------------------------------------------------------------- VQA

TEST(VqaNormalize, OfficialRules) {
  // Each row follows from GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py
  // (processPunctuation, then processDigitArticle); the comment names the rule.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"yes", "yes"},
      {"Yes", "yes"},                          // lower()
      {"yes.", "yes"},                         // periodStrip: '.' not followed by a digit
      {"  Yes  \n", "yes"},                    // \n -> ' ', strip()
      {"tab\there", "tab here"},               // \t -> ' '
      {"two", "2"},                            // manualMap
      {"two dogs", "2 dogs"},                  // manualMap per word
      {"Two Dogs.", "2 dogs"},                 //
      {"none", "0"},                           // manualMap: none -> 0
      {"zero", "0"},                           //
      {"ten", "10"},                           //
      {"eleven", "eleven"},                    // not in manualMap
      {"one two three", "1 2 3"},              //
      {"the dog", "dog"},                      // articles
      {"a dog", "dog"},                        //
      {"an apple", "apple"},                   //
      {"The", ""},                             //
      {"the a an", ""},                        //
      {"dont", "don't"},                       // contractions table
      {"isnt", "isn't"},                       //
      {"yall", "y'all"},                       //
      {"somebody'd", "somebodyd"},             // the table's own oddity, kept
      {"Im", "im"},                            // capitalised keys never match after lower()
      {"it's", "it's"},                        // "'" is not in punct
      {"Let's", "let's"},                      //
      {"it's.", "it's"},                       //
      {"3.5", "3.5"},                          // '.' followed by a digit stays
      {"3.5.", "3.5"},                         //
      {"5.", "5"},                             //
      {".5", ".5"},                            //
      {"a.b", "ab"},                           // '.' deleted, not replaced
      {"many....", "many"},                    //
      {"1,000", "1000"},                       // digit,digit present: punct deleted
      {"2,3", "23"},                           //
      {"2, 3", "2 3"},                         // ", " present: ',' deleted
      {"red,white", "red white"},              // no space next to ',': replaced by ' '
      {"red, white", "red white"},             //
      {"black-and-white", "black and white"},  // '-' replaced by ' '
      {"black - white", "black white"},        // " -" present: deleted
      {"e-mail 1,2", "email 12"},              // digit,digit anywhere: every punct deleted
      {"t-shirt", "t shirt"},                  //
      {"yes!", "yes"},                         //
      {"what?", "what"},                       //
      {"(left)", "left"},                      //
      {"left/right", "left right"},            //
      {"@home", "home"},                       //
      {"x_y", "x y"},                          //
      {"yes   no", "yes no"},                  // split() folds whitespace
      {"café", "café"},                        // non-ASCII passes
      {"red: blue", "red: blue"},              // ':' is not in punct
      {"", ""},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(vqa_normalize(in), want) << "input: " << in;
  // re.UNICODE passed as sub()'s count: at most 32 periods are deleted.
  EXPECT_EQ(vqa_normalize("x" + std::string(40, '.')), "x" + std::string(8, '.'));
}

TEST(VqaNormalize, ExactMatch) {
  EXPECT_TRUE(vqa_exact_match("Two", {"2"}));
  EXPECT_TRUE(vqa_exact_match("2 dogs", {"two dogs"}));
  EXPECT_TRUE(vqa_exact_match("dog.", {"cat", "the dog"}));
  EXPECT_TRUE(vqa_exact_match("Yes", {"yes"}));
  EXPECT_FALSE(vqa_exact_match("dog", {"cat"}));
  EXPECT_FALSE(vqa_exact_match("dogs", {"dog"}));
  EXPECT_FALSE(vqa_exact_match("dog", {}));
  EXPECT_TRUE(vqa_exact_match("", {"the"}));  // both normalise to ""
}

// ---------------------------------------------------------------- boxes

TEST(ParseBox, AcceptsTolerantForms) {
  const std::vector<std::pair<std::string, Box>> cases = {
      {"[0.1, 0.2, 0.3, 0.4]", {0.1, 0.2, 0.3, 0.4}},
      {"[0.1,0.2,0.3,0.4].", {0.1, 0.2, 0.3, 0.4}},
      {"The box is [ 0 . 12 , 0 . 3 , 0 . 5 , 0 . 9 ] .", {0.12, 0.3, 0.5, 0.9}},
      {"[1, 2, 3, 4]", {1, 2, 3, 4}},
      {"[-0.5, - 1, +2, 3e1]", {-0.5, -1, 2, 30}},
      {"[0.5, 0.6, 0.1, 0.2]", {0.1, 0.2, 0.5, 0.6}},  // swapped corners
      {"[5.,.5,1,2]", {1, 0.5, 5, 2}},
      {"[image] then [1,2,3,4]", {1, 2, 3, 4}},  // a non-box group is skipped
      {"[[1,2,3,4]]", {1, 2, 3, 4}},             // nested: the inner group
      {"[1,2,3,4][5,6,7,8]", {1, 2, 3, 4}},      // the first
      {"[1,2,3,4\n]", {1, 2, 3, 4}},
      {"[ 1 0 , 2 , 3 , 4 ]", {3, 2, 10, 4}},  // spaces inside a number are removed
      {"[99999999999999999999, 0, 1, 1]", {1, 0, 1e20, 1}},
      {"[1e308, 0, 1e308, 1]", {1e308, 0, 1e308, 1}},
      {"[0.25, 0.5, 0.75, 1.0] and [9, 9, 9, 9]", {0.25, 0.5, 0.75, 1.0}},
  };
  for (const auto& [text, want] : cases) {
    const auto got = parse_box(text);
    ASSERT_TRUE(got.has_value()) << text;
    for (size_t k = 0; k < 4; ++k) EXPECT_DOUBLE_EQ((*got)[k], want[k]) << text << " #" << k;
  }
}

TEST(ParseBox, RejectsHostileForms) {
  const std::vector<std::string> bad = {
      "",
      "no box here",
      "0.1, 0.2, 0.3, 0.4",
      "[0.1, 0.2, 0.3]",
      "[0.1, 0.2, 0.3, 0.4, 0.5]",
      "[0.1, 0.2, , 0.4]",
      "[0.1, 0.2, 0.3, 0.4,]",
      "[a, b, c, d]",
      "[0.1, 0.2, 0.3, 0.4",
      "0.1, 0.2, 0.3, 0.4]",
      "[1, [2], 3, 4]",
      "[1e400, 0, 1, 1]",
      "[nan, 0, 1, 1]",
      "[inf, 0, 1, 1]",
      "[0x10, 0, 1, 1]",
      "[1.2.3, 0, 1, 1]",
      "[., 0, 1, 1]",
      "[1e, 0, 1, 1]",
      "[--1, 0, 1, 1]",
      "[1 2 3 4]",
      "[",
      "]",
      "[]",
      "][1,2,3,4",
      std::string("[1,2,\0,4]", 9),
      std::string(100000, '['),
      std::string(50000, '[') + std::string(50000, ']'),
  };
  for (const auto& text : bad) EXPECT_FALSE(parse_box(text).has_value()) << text.substr(0, 40);
}

TEST(ParseBox, LongHostileTextStaysLinear) {
  std::string text;
  for (int i = 0; i < 100000; ++i) text += "[1,";
  text += "[0, 0, 1, 1]";
  const auto box = parse_box(text);
  ASSERT_TRUE(box.has_value());
  EXPECT_EQ(*box, (Box{0, 0, 1, 1}));
}

TEST(BoxIou, Values) {
  EXPECT_DOUBLE_EQ(box_iou({0, 0, 1, 1}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(box_iou({0, 0, 1, 1}, {2, 2, 3, 3}), 0.0);
  EXPECT_DOUBLE_EQ(box_iou({0, 0, 2, 2}, {1, 0, 3, 2}), 2.0 / 6.0);
  EXPECT_DOUBLE_EQ(box_iou({0, 0, 4, 4}, {1, 1, 3, 3}), 4.0 / 16.0);
  EXPECT_DOUBLE_EQ(box_iou({0, 0, 1, 1}, {1, 0, 2, 1}), 0.0);  // touching edges
  EXPECT_DOUBLE_EQ(box_iou({0, 0, 0, 0}, {0, 0, 0, 0}), 0.0);  // no area
  EXPECT_DOUBLE_EQ(box_iou({2, 2, 0, 0}, {1, 0, 3, 2}), box_iou({0, 0, 2, 2}, {1, 0, 3, 2}));
  EXPECT_DOUBLE_EQ(box_iou({0, 0, NAN, 1}, {0, 0, 1, 1}), 0.0);
  EXPECT_DOUBLE_EQ(box_iou({0, 0, INFINITY, 1}, {0, 0, 1, 1}), 0.0);
}

TEST(Grounding, AccuracyAndUnparseable) {
  const std::vector<std::string> pred = {"[0, 0, 1, 1]", "garbage", "[0, 0, 0.5, 1]",
                                         "a box [0, 0, 0.6, 1].", "[0,0,1,1"};
  const std::vector<Box> truth(5, Box{0, 0, 1, 1});
  const auto s = grounding_accuracy(pred, truth);
  EXPECT_EQ(s.total, 5);
  EXPECT_EQ(s.correct, 2);  // IoU 1 and 0.6; IoU exactly 0.5 is not > 0.5
  EXPECT_EQ(s.unparseable, 2);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.4);
  EXPECT_EQ(grounding_accuracy({}, {}).accuracy, 0.0);
  expect_error([] { grounding_accuracy({"[0,0,1,1]"}, {}); }, {"1 predictions", "0 true boxes"});
}

// ---------------------------------------------------------------- retrieval

TEST(Retrieval, OverallAndPerPosition) {
  const auto s = retrieval_accuracy({0, 1, 2, 2, -1}, {0, 1, 1, 2, 2}, 4);
  EXPECT_EQ(s.total, 5);
  EXPECT_EQ(s.correct, 3);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.6);
  // Element-wise on purpose: GCC 12.2 with -march=native on an AVX-512 machine miscompiles the
  // temporary std::vector<int64_t>{1, 1, 1, 0} into {1, 1, 1, 1} (SLP vectorisation builds it
  // with one broadcast; -fno-tree-slp-vectorize or -mno-avx512f avoid it).
  ASSERT_EQ(s.pos_total.size(), 4u);
  ASSERT_EQ(s.pos_correct.size(), 4u);
  const int64_t want_total[] = {1, 2, 2, 0}, want_correct[] = {1, 1, 1, 0};
  for (size_t p = 0; p < 4; ++p) {
    EXPECT_EQ(s.pos_total[p], want_total[p]) << p;
    EXPECT_EQ(s.pos_correct[p], want_correct[p]) << p;
  }
  EXPECT_EQ(s.per_position_csv(),
            "position,correct,total,accuracy\n0,1,1,1\n1,1,2,0.5\n2,1,2,0.5\n3,0,0,nan\n");
  const auto j = s.to_json();
  EXPECT_EQ(j["total"], 5);
  EXPECT_EQ(j["correct"], 3);
  EXPECT_EQ(j["max_n"], 4);
  EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), 0.6);
  ASSERT_EQ(j["pos_total"].size(), 4u);
  EXPECT_EQ(j["pos_total"][1], 2);
  EXPECT_EQ(j["pos_correct"][3], 0);
  EXPECT_TRUE(j["pos_accuracy"][3].is_null());
  EXPECT_DOUBLE_EQ(j["pos_accuracy"][1].get<double>(), 0.5);
}

TEST(Retrieval, BadInputIsAnError) {
  expect_error([] { retrieval_accuracy({0}, {5}, 4); }, {"sample 0", "position 5", "[0, 4)"});
  expect_error([] { retrieval_accuracy({0}, {-1}, 4); }, {"position -1"});
  expect_error([] { retrieval_accuracy({0, 1}, {0}, 4); }, {"2 predictions", "1 answers"});
  expect_error([] { retrieval_accuracy({}, {}, 0); }, {"max_n 0"});
  expect_error([] { retrieval_accuracy({}, {}, int64_t(1) << 40); }, {"max_n"});
}
