// Vision-language data: synthetic scenes (determinism, unambiguous texts, tight boxes), the
// retrieval task, the word-level tokenizer, and the LLaVA JSON / grounding JSONL / text readers
// with every kind of bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.h"
#include "data/retrieval.h"
#include "data/scenes.h"
#include "data/vl_data.h"
#include "data/word_tokenizer.h"
#include "io/image.h"
#include "io/tokenizer.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::data;
namespace fs = std::filesystem;
using testing_util::expect_error;

namespace {

std::vector<std::string> words_of(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

// Objects matched by "the [size] [colour] shape|object".
std::vector<size_t> matches(const std::vector<SceneObject>& objs, const std::string& phrase) {
  auto w = words_of(phrase);
  EXPECT_GE(w.size(), 2u) << phrase;
  EXPECT_EQ(w[0], "the") << phrase;
  std::string size, colour, shape;
  for (size_t k = 1; k < w.size(); ++k) {
    const std::string& x = w[k];
    if (x == "small" || x == "large")
      size = x;
    else if (std::count(scene_colours().begin(), scene_colours().end(), x))
      colour = x;
    else if (std::count(scene_shapes().begin(), scene_shapes().end(), x))
      shape = x;
    else
      EXPECT_EQ(x, "object") << phrase;
  }
  std::vector<size_t> m;
  for (size_t i = 0; i < objs.size(); ++i)
    if ((size.empty() || objs[i].size == size) && (colour.empty() || objs[i].colour == colour) &&
        (shape.empty() || objs[i].shape == shape))
      m.push_back(i);
  return m;
}

size_t unique_match(const std::vector<SceneObject>& objs, const std::string& phrase) {
  auto m = matches(objs, phrase);
  EXPECT_EQ(m.size(), 1u) << "\"" << phrase << "\" is not unique";
  return m.empty() ? 0 : m[0];
}

double cx(const SceneObject& o) { return (o.box[0] + o.box[2]) / 2; }
double cy(const SceneObject& o) { return (o.box[1] + o.box[3]) / 2; }

// Recomputes the answer of a scene VQA question from the objects; "" if the question is of no
// known form. Also checks that every description is unique.
std::string answer_of(const std::vector<SceneObject>& objs, const std::string& q,
                      std::string* kind) {
  auto strip = [&](const std::string& pre) {
    return q.substr(pre.size(), q.size() - pre.size() - 1);
  };
  EXPECT_EQ(q.back(), '?') << q;
  for (const char* attr : {"colour", "shape", "size"}) {
    const std::string pre = std::string("what ") + attr + " is ";
    if (starts_with(q, pre)) {
      *kind = attr;
      const auto& o = objs[unique_match(objs, strip(pre))];
      return std::string(attr) == "colour"  ? o.colour
             : std::string(attr) == "shape" ? o.shape
                                            : o.size;
    }
  }
  if (starts_with(q, "how many ")) {
    *kind = "count";
    auto w = words_of(q);
    int64_t c = 0;
    if (w[2] == "objects") {
      c = static_cast<int64_t>(objs.size());
    } else if (w[3] == "objects") {
      for (const auto& o : objs) c += o.colour == w[2];
    } else {
      for (const auto& o : objs) c += (o.shape == "cross" ? "crosses" : o.shape + "s") == w[2];
    }
    return std::to_string(c);
  }
  if (starts_with(q, "is there a ")) {
    *kind = "exists";
    auto w = words_of(strip("is there a "));
    bool present = false;
    for (const auto& o : objs) present = present || (o.colour == w[0] && o.shape == w[1]);
    return present ? "yes" : "no";
  }
  if (starts_with(q, "where is ")) {
    *kind = "where";
    const std::string body = strip("where is ");
    const size_t at = body.find(" relative to ");
    const auto& a = objs[unique_match(objs, body.substr(0, at))];
    const auto& b = objs[unique_match(objs, body.substr(at + 13))];
    const double dx = cx(b) - cx(a), dy = cy(b) - cy(a);
    EXPECT_TRUE(std::abs(dx) >= 2 * std::abs(dy) || std::abs(dy) >= 2 * std::abs(dx)) << q;
    return std::abs(dx) > std::abs(dy) ? (dx > 0 ? "left" : "right") : (dy > 0 ? "above" : "below");
  }
  if (starts_with(q, "is ")) {
    const std::string body = strip("is ");
    for (const char* rel : {" left of ", " right of ", " above ", " below "}) {
      const size_t at = body.find(rel);
      if (at == std::string::npos) continue;
      *kind = "relation";
      const auto& a = objs[unique_match(objs, body.substr(0, at))];
      const auto& b = objs[unique_match(objs, body.substr(at + std::string(rel).size()))];
      const double dx = cx(b) - cx(a), dy = cy(b) - cy(a);
      const std::string r = rel;
      const bool horiz = r == " left of " || r == " right of ";
      EXPECT_GE(std::abs(horiz ? dx : dy), 1.0 / 8 - 1e-9) << "too close to call: " << q;
      const bool yes = r == " left of "    ? dx > 0
                       : r == " right of " ? dx < 0
                       : r == " above "    ? dy > 0
                                           : dy < 0;
      return yes ? "yes" : "no";
    }
  }
  return "";
}

SceneOptions opts(bool clutter, int64_t size = 64, int64_t lo = 1, int64_t hi = 3) {
  SceneOptions o;
  o.clutter = clutter;
  o.image_size = size;
  o.min_objects = lo;
  o.max_objects = hi;
  return o;
}

}  // namespace

// ---------------------------------------------------------------- scenes

TEST(Scenes, DeterministicAndSeedDependent) {
  const SceneOptions o = opts(true);
  int differ = 0;
  for (int64_t i = 0; i < 20; ++i) {
    const Scene a = render_scene(11, i, o), b = render_scene(11, i, o);
    EXPECT_EQ(a.image.pixels, b.image.pixels);
    ASSERT_EQ(a.objects.size(), b.objects.size());
    for (size_t k = 0; k < a.objects.size(); ++k) {
      EXPECT_EQ(a.objects[k].shape, b.objects[k].shape);
      EXPECT_EQ(a.objects[k].box, b.objects[k].box);
    }
    EXPECT_EQ(scene_example(11, i, o), scene_example(11, i, o));
    const Scene c = render_scene(12, i, o);
    differ += c.image.pixels != a.image.pixels;
    // objects() is the layout of render_scene without drawing.
    const auto objs = scene_objects(11, i, o);
    ASSERT_EQ(objs.size(), a.objects.size());
    for (size_t k = 0; k < objs.size(); ++k) EXPECT_EQ(objs[k].box, a.objects[k].box);
  }
  EXPECT_EQ(differ, 20);
  // Different indices differ too.
  EXPECT_NE(render_scene(11, 0, o).image.pixels, render_scene(11, 1, o).image.pixels);
  // Pinned (values this generator produced when it was written): the pixel hash and texts of one
  // scene, so a change of the generator or a platform difference is noticed (the data must be
  // identical on every machine and across versions).
  const Scene s = render_scene(3, 5, opts(false));
  const VLExample e = scene_example(3, 5, opts(false));
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the pixels
  for (uint8_t p : s.image.pixels) h = (h ^ p) * 1099511628211ull;
  EXPECT_EQ(h, 11883957662762104461ull);
  EXPECT_EQ(e.question + " -> " + e.answers[0],
            "the small magenta cross -> [0.78,0.45,0.98,0.66].");
  EXPECT_EQ(e.id, "scene_000005");
  EXPECT_EQ(e.task, "grounding");  // 5 % 3 == 2
}

TEST(Scenes, ObjectsDistinctAndSeparate) {
  for (bool clutter : {false, true})
    for (int64_t size : {16, 32, 64, 100})
      for (int64_t i = 0; i < 60; ++i) {
        const auto o = opts(clutter, size, 1, size >= 64 ? 8 : 3);
        const Scene s = render_scene(1, i, o);
        ASSERT_EQ(s.image.width, size);
        ASSERT_EQ(s.image.height, size);
        ASSERT_EQ(s.image.pixels.size(), static_cast<size_t>(size * size * 3));
        ASSERT_GE(s.objects.size(), 1u);
        ASSERT_LE(s.objects.size(), static_cast<size_t>(o.max_objects));
        for (size_t a = 0; a < s.objects.size(); ++a) {
          const auto& A = s.objects[a];
          for (double v : A.box) EXPECT_TRUE(v >= 0 && v <= 1);
          EXPECT_LT(A.box[0], A.box[2]);
          EXPECT_LT(A.box[1], A.box[3]);
          for (size_t b = a + 1; b < s.objects.size(); ++b) {
            const auto& B = s.objects[b];
            EXPECT_FALSE(A.shape == B.shape && A.colour == B.colour && A.size == B.size);
            const bool apart = A.box[2] <= B.box[0] || B.box[2] <= A.box[0] ||
                               A.box[3] <= B.box[1] || B.box[3] <= A.box[1];
            EXPECT_TRUE(apart) << "objects overlap in scene " << i;
          }
        }
      }
  // Several counts occur with max_objects 3.
  std::set<size_t> counts;
  for (int64_t i = 0; i < 50; ++i) counts.insert(scene_objects(2, i, opts(false)).size());
  EXPECT_EQ(counts, (std::set<size_t>{1, 2, 3}));
}

// Every pixel drawn in an object colour lies in the box of an object of that colour, and each box
// edge touches a pixel of its object: the boxes are exactly the drawn extents.
TEST(Scenes, BoxesAreTight) {
  for (bool clutter : {false, true})
    for (int64_t i = 0; i < 80; ++i) {
      const auto o = opts(clutter, 64, 1, 5);
      const Scene s = render_scene(9, i, o);
      const int64_t S = s.image.width;
      auto colour_at = [&](int64_t x, int64_t y) -> std::string {
        const uint8_t* p = &s.image.pixels[static_cast<size_t>((y * S + x) * 3)];
        for (const auto& c : scene_colours()) {
          const auto rgb = scene_colour_rgb(c);
          int d = 0;
          for (int k = 0; k < 3; ++k) d = std::max(d, std::abs(int(p[k]) - int(rgb[k])));
          if (d <= 30) return c;
        }
        return "";
      };
      struct PixBox {
        int64_t x0, y0, x1, y1;
      };
      std::vector<PixBox> pb;
      for (const auto& ob : s.objects)
        pb.push_back({std::lround(ob.box[0] * S), std::lround(ob.box[1] * S),
                      std::lround(ob.box[2] * S) - 1, std::lround(ob.box[3] * S) - 1});
      std::vector<std::array<int, 4>> edge_hits(s.objects.size(), {0, 0, 0, 0});
      for (int64_t y = 0; y < S; ++y)
        for (int64_t x = 0; x < S; ++x) {
          const std::string c = colour_at(x, y);
          if (c.empty()) continue;
          bool covered = false;
          for (size_t k = 0; k < s.objects.size(); ++k) {
            const auto& b = pb[k];
            if (s.objects[k].colour != c || x < b.x0 || x > b.x1 || y < b.y0 || y > b.y1) continue;
            covered = true;
            edge_hits[k][0] += x == b.x0;
            edge_hits[k][1] += y == b.y0;
            edge_hits[k][2] += x == b.x1;
            edge_hits[k][3] += y == b.y1;
          }
          EXPECT_TRUE(covered) << "scene " << i << ": " << c << " pixel (" << x << ", " << y
                               << ") outside every " << c << " box";
        }
      for (size_t k = 0; k < s.objects.size(); ++k)
        for (int e = 0; e < 4; ++e)
          EXPECT_GT(edge_hits[k][e], 0)
              << "scene " << i << " object " << k << " edge " << e << " is not tight";
    }
}

TEST(Scenes, GroundingPhraseUniqueAndBoxMatches) {
  SceneOptions o = opts(true, 64, 1, 6);
  o.tasks = {"grounding"};
  for (int64_t i = 0; i < 200; ++i) {
    const VLExample e = scene_example(4, i, o);
    const auto objs = scene_objects(4, i, o);
    ASSERT_EQ(e.task, "grounding");
    ASSERT_TRUE(e.box);
    const size_t k = unique_match(objs, e.question);
    EXPECT_EQ(words_of(e.question).size(), 4u) << e.question;  // the size colour shape
    EXPECT_EQ(*e.box, objs[k].box);
    ASSERT_EQ(e.answers.size(), 1u);
    EXPECT_EQ(e.answers[0], format_box(*e.box) + ".");
    EXPECT_EQ(e.num_images, 1);
    EXPECT_TRUE(e.turns.empty());
  }
}

TEST(Scenes, VqaAnswersFollowFromTheObjects) {
  SceneOptions o = opts(false, 64, 1, 5);
  o.tasks = {"vqa"};
  std::map<std::string, std::set<std::string>> answers_by_kind;
  for (int64_t i = 0; i < 600; ++i) {
    const VLExample e = scene_example(21, i, o);
    const auto objs = scene_objects(21, i, o);
    ASSERT_EQ(e.task, "vqa");
    ASSERT_EQ(e.answers.size(), 1u);
    EXPECT_EQ(words_of(e.answers[0]).size(), 1u) << e.answers[0];
    std::string kind;
    const std::string want = answer_of(objs, e.question, &kind);
    ASSERT_FALSE(want.empty()) << "unknown question form: " << e.question;
    EXPECT_EQ(e.answers[0], want) << e.question;
    answers_by_kind[kind].insert(e.answers[0]);
  }
  for (const char* k : {"colour", "shape", "size", "count", "relation", "where", "exists"})
    EXPECT_TRUE(answers_by_kind.count(k)) << "no " << k << " question in 600 examples";
  EXPECT_EQ(answers_by_kind["relation"], (std::set<std::string>{"no", "yes"}));
  EXPECT_EQ(answers_by_kind["exists"], (std::set<std::string>{"no", "yes"}));
  EXPECT_EQ(answers_by_kind["where"], (std::set<std::string>{"above", "below", "left", "right"}));
}

TEST(Scenes, CaptionsHaveSeveralReferencesNamingEveryObject) {
  SceneOptions o = opts(false, 64, 1, 4);
  o.tasks = {"caption"};
  for (int64_t i = 0; i < 100; ++i) {
    const VLExample e = scene_example(8, i, o);
    const auto objs = scene_objects(8, i, o);
    EXPECT_EQ(e.question, "");
    ASSERT_GE(e.answers.size(), 4u);
    EXPECT_EQ(std::set<std::string>(e.answers.begin(), e.answers.end()).size(), e.answers.size());
    for (const auto& a : e.answers) EXPECT_EQ(a.back(), '.') << a;
    for (const auto& ob : objs)
      EXPECT_NE(e.answers[0].find("a " + ob.size + " " + ob.colour + " " + ob.shape),
                std::string::npos)
          << e.answers[0];
    if (objs.size() == 2) {
      // "X <rel> Y." with the relation along the dominant axis.
      const auto& a0 = e.answers[0];
      EXPECT_TRUE(
          a0.find(" left of ") != std::string::npos || a0.find(" right of ") != std::string::npos ||
          a0.find(" above ") != std::string::npos || a0.find(" below ") != std::string::npos)
          << a0;
    }
  }
}

TEST(Scenes, DatasetCyclesTasksAndChecksOptions) {
  SceneOptions o;
  o.tasks = {"vqa", "caption"};
  SceneDataset ds(5, 3, o);
  EXPECT_EQ(ds.size(), 5);
  EXPECT_EQ(ds.example(0).task, "vqa");
  EXPECT_EQ(ds.example(1).task, "caption");
  EXPECT_EQ(ds.example(4).task, "vqa");
  EXPECT_EQ(ds.name(4), "scenes#4");
  const auto imgs = ds.images(2);
  ASSERT_EQ(imgs.size(), 1u);
  EXPECT_EQ(imgs[0].pixels, render_scene(3, 2, o).image.pixels);
  expect_error([&] { ds.example(5); }, {"index 5"});
  expect_error([] { SceneDataset(0, 1); }, {"positive"});
  SceneOptions bad;
  bad.tasks = {"caption", "poem"};
  expect_error([&] { SceneDataset(3, 1, bad); }, {"unknown task", "poem"});
  bad = SceneOptions{};
  bad.min_objects = 4;
  expect_error([&] { SceneDataset(3, 1, bad); }, {"min_objects"});
  bad = SceneOptions{};
  bad.max_objects = 9;
  expect_error([&] { SceneDataset(3, 1, bad); }, {"max_objects"});
  bad = SceneOptions{};
  bad.image_size = 8;
  expect_error([&] { SceneDataset(3, 1, bad); }, {"image_size"});
}

TEST(VlData, FormatBox) {
  EXPECT_EQ(format_box({0.123, 0.346, 0.5, 0.999}), "[0.12,0.35,0.50,1.00]");
  EXPECT_EQ(format_box({-0.2, 1.7, 0, NAN}), "[0.00,1.00,0.00,0.00]");
  EXPECT_EQ(count_image_markers("<image>\na <image><image>"), 3);
  EXPECT_EQ(task_prompt("vqa", "q?"),
            "Answer the question using a single word or phrase.\nQuestion: q?\nAnswer: ");
  EXPECT_EQ(task_prompt("caption", ""), "Provide a one-sentence caption for the provided image.\n");
  EXPECT_EQ(task_prompt("grounding", "the red circle"),
            "Locate the region that is described by:\nthe red circle\n");
  expect_error([] { task_prompt("poem", ""); }, {"poem"});
}

// ---------------------------------------------------------------- word tokenizer

TEST(WordTokenizer, EverySceneTextEncodesWithoutUnk) {
  const std::string tj = make_wordlevel_tokenizer_json(scene_texts_for_vocabulary(), {"###", "&&"});
  const io::Tokenizer tok = io::Tokenizer::from_json_string(tj, "test");
  const int64_t unk = *tok.token_to_id("<unk>");
  SceneOptions o = opts(true, 64, 1, 8);
  int64_t checked = 0;
  for (int64_t i = 0; i < 900; ++i) {
    const VLExample e = scene_example(17, i, o);
    std::vector<std::string> texts = e.answers;
    texts.push_back("<image>\n" + task_prompt(e.task, e.question));
    for (const auto& t : texts) {
      const auto ids = tok.encode(t);
      for (int64_t id : ids) ASSERT_NE(id, unk) << "<unk> in: " << t;
      // Word-level round trip: decoding gives the pre-tokens joined by spaces.
      EXPECT_EQ(tok.decode(ids), join(whitespace_pretokens(t), " ")) << t;
      ++checked;
    }
  }
  EXPECT_GT(checked, 1800);
  for (const char* s : {"###", "&&", "<|endoftext|>", "<pad>"}) {
    const auto ids = tok.encode(s);
    ASSERT_EQ(ids.size(), 1u) << s;
    EXPECT_EQ(tok.id_to_token(ids[0]), s);
  }
  // Numbers 0..1000 and 00..99 are single tokens.
  for (const char* s : {"0", "7", "42", "1000", "05", "00"})
    EXPECT_EQ(tok.encode(s).size(), 1u) << s;
  EXPECT_EQ(tok.encode("1001").size(), 1u);  // not in the vocabulary: one <unk>
  EXPECT_EQ(tok.encode("1001")[0], unk);
}

TEST(WordTokenizer, WrittenFilesGiveEosAndDeterministicIds) {
  const fs::path dir = fs::temp_directory_path() / ("mvl_wordtok_" + std::to_string(getpid()));
  fs::remove_all(dir);
  write_wordlevel_tokenizer(dir, {"b a c.", "a, b"}, {"&&"});
  const io::Tokenizer tok = io::Tokenizer::from_file(dir / "tokenizer.json");
  EXPECT_EQ(tok.eos_id(), 0);
  EXPECT_EQ(tok.unk_id(), 1);
  EXPECT_EQ(tok.token_to_id("<pad>"), 2);
  // Specials, 0..1000 (1001 ids), 00..09 (the new ones of 00..99), extras, then the sorted words.
  EXPECT_EQ(tok.token_to_id("0"), 3);
  EXPECT_EQ(tok.token_to_id("00"), 3 + 1001);
  EXPECT_EQ(tok.token_to_id("99"), 3 + 99);
  EXPECT_EQ(tok.token_to_id("&&"), 3 + 1001 + 10);
  EXPECT_EQ(tok.token_to_id(","), 3 + 1001 + 10 + 1);
  EXPECT_EQ(tok.vocab_size(), 3 + 1001 + 10 + 1 + 5);  // , . a b c
  EXPECT_EQ(make_wordlevel_tokenizer_json({"a, b", "b a c."}, {"&&"}),
            make_wordlevel_tokenizer_json({"b a c.", "a, b"}, {"&&"}));
  fs::remove_all(dir);
  expect_error([] { make_wordlevel_tokenizer_json({"a"}, {"a b"}); }, {"\"a b\"", "pre-token"});
  expect_error([] { make_wordlevel_tokenizer_json({"a"}, {"#a"}); }, {"\"#a\""});
  EXPECT_EQ(whitespace_pretokens("Hi, you?\nQuestion: x_1 [0.12,0.5]."),
            (std::vector<std::string>{"Hi", ",", "you", "?", "Question", ":", "x_1", "[", "0", ".",
                                      "12", ",", "0", ".", "5", "]."}));
}

// ---------------------------------------------------------------- retrieval

TEST(Retrieval, TokensUniqueAnswerCorrectBothOrders) {
  RetrievalVocab v;
  for (int64_t n : {1, 2, 20, 100, 600})
    for (bool first : {false, true})
      for (int64_t i = 0; i < 10; ++i) {
        const auto e = make_retrieval_example(5, i, n, first, v);
        ASSERT_EQ(static_cast<int64_t>(e.tokens.size()), n);
        EXPECT_EQ(std::set<int64_t>(e.tokens.begin(), e.tokens.end()).size(), e.tokens.size());
        for (int64_t t : e.tokens) EXPECT_TRUE(v.is_content(t)) << t;
        ASSERT_TRUE(e.answer >= 0 && e.answer < n);
        EXPECT_EQ(e.tokens[static_cast<size_t>(e.answer)], e.query);
        EXPECT_EQ(e.query_first, first);
        const auto ids = retrieval_input_ids(e, v);
        ASSERT_EQ(static_cast<int64_t>(ids.size()), n + 3);
        EXPECT_EQ(ids.back(), v.answer_id());
        if (first) {
          EXPECT_EQ(ids[0], e.query);
          EXPECT_EQ(ids[1], v.sep_id());
          EXPECT_TRUE(std::equal(e.tokens.begin(), e.tokens.end(), ids.begin() + 2));
        } else {
          EXPECT_TRUE(std::equal(e.tokens.begin(), e.tokens.end(), ids.begin()));
          EXPECT_EQ(ids[static_cast<size_t>(n)], v.sep_id());
          EXPECT_EQ(ids[static_cast<size_t>(n + 1)], e.query);
        }
        // The query token's position in the sequence part is the answer.
        const auto it = std::find(e.tokens.begin(), e.tokens.end(), e.query);
        EXPECT_EQ(it - e.tokens.begin(), e.answer);
        EXPECT_EQ(retrieval_target_id(e, v), v.position_id(e.answer));
        EXPECT_EQ(make_retrieval_example(5, i, n, first, v), e);  // deterministic
      }
  EXPECT_NE(make_retrieval_example(5, 0, 20, false, v).tokens,
            make_retrieval_example(6, 0, 20, false, v).tokens);
  EXPECT_NE(make_retrieval_example(5, 0, 20, false, v).tokens,
            make_retrieval_example(5, 1, 20, false, v).tokens);
  // Every answer position occurs.
  std::vector<int> hits(20, 0);
  for (int64_t i = 0; i < 1000; ++i)
    ++hits[static_cast<size_t>(make_retrieval_example(1, i, 20, false, v).answer)];
  for (int h : hits) EXPECT_GT(h, 20);
  expect_error([&] { make_retrieval_example(1, 0, 601, false, v); },
               {"N must be in [1, max_n = 600]"});
  expect_error([&] { make_retrieval_example(1, 0, 0, false, v); }, {"N must be"});
  RetrievalVocab bad;
  bad.content = 10;
  expect_error([&] { make_retrieval_example(1, 0, 5, false, bad); }, {"content"});
}

TEST(Retrieval, VocabularyAndTokenizer) {
  RetrievalVocab v;
  v.max_n = 30;
  v.content = 50;
  EXPECT_EQ(v.vocab_size(), 83);
  EXPECT_EQ(v.position_id(0), 3);
  EXPECT_EQ(v.content_id(0), 33);
  EXPECT_EQ(v.content_id(49), 82);
  expect_error([&] { v.position_id(30); }, {"position 30"});
  const fs::path dir = fs::temp_directory_path() / ("mvl_rtok_" + std::to_string(getpid()));
  fs::create_directories(dir);
  {
    std::ofstream(dir / "tokenizer.json") << v.tokenizer_json();
    std::ofstream(dir / "tokenizer_config.json") << v.tokenizer_config_json();
  }
  const io::Tokenizer tok = io::Tokenizer::from_file(dir / "tokenizer.json");
  fs::remove_all(dir);
  EXPECT_EQ(tok.vocab_size(), v.vocab_size());
  EXPECT_EQ(tok.eos_id(), v.pad_id());
  EXPECT_EQ(tok.encode("t5 t17 <sep> t5 <ans>"),
            (std::vector<int64_t>{v.content_id(5), v.content_id(17), v.sep_id(), v.content_id(5),
                                  v.answer_id()}));
  EXPECT_EQ(tok.id_to_token(v.position_id(29)), "p29");
  const auto e = make_retrieval_example(2, 3, 10, true, v);
  EXPECT_EQ(tok.encode(tok.decode(retrieval_input_ids(e, v))), retrieval_input_ids(e, v));
}

TEST(Retrieval, JsonlRoundTripAndErrors) {
  RetrievalVocab v;
  const fs::path dir = fs::temp_directory_path() / ("mvl_rjsonl_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<RetrievalExample> ex;
  for (int64_t i = 0; i < 6; ++i) ex.push_back(make_retrieval_example(9, i, 5 + i, i % 2, v));
  write_retrieval_jsonl(dir / "r.jsonl", ex);
  EXPECT_EQ(read_retrieval_jsonl(dir / "r.jsonl", v), ex);
  const std::string good = retrieval_to_json(ex[0]);
  auto bad_file = [&](const std::string& second_line) {
    std::ofstream(dir / "bad.jsonl") << good << "\n" << second_line << "\n";
    return dir / "bad.jsonl";
  };
  auto expect_bad = [&](const std::string& line, std::initializer_list<std::string> parts) {
    const fs::path p = bad_file(line);
    std::vector<std::string> all{p.string() + ":2:"};
    all.insert(all.end(), parts.begin(), parts.end());
    try {
      read_retrieval_jsonl(p, v);
      ADD_FAILURE() << "no error for " << line;
    } catch (const Error& e) {
      for (const auto& s : all)
        EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
    }
  };
  const int64_t t0 = v.content_id(0), t1 = v.content_id(1);
  auto row = [&](const std::string& tokens, const std::string& rest) {
    return "{\"tokens\": " + tokens + ", " + rest + "}";
  };
  const std::string two = "[" + std::to_string(t0) + "," + std::to_string(t1) + "]";
  expect_bad("{\"tokens\": [1, 2", {"invalid JSON"});
  expect_bad("[1, 2]", {"expected a JSON object"});
  expect_bad(row(two, "\"query\": " + std::to_string(t0) + ", \"answer\": 0, \"n\": 2"),
             {"missing \"query_first\""});
  expect_bad(row(two, "\"query\": " + std::to_string(t0) +
                          ", \"answer\": \"0\", \"n\": 2, \"query_first\": false"),
             {"\"answer\" must be an integer"});
  expect_bad(row(two, "\"query\": " + std::to_string(t0) +
                          ", \"answer\": 1, \"n\": 2, \"query_first\": false"),
             {"tokens[1]"});
  expect_bad(row(two, "\"query\": " + std::to_string(t0) +
                          ", \"answer\": 0, \"n\": 3, \"query_first\": false"),
             {"\"n\" = 3 but \"tokens\" has 2"});
  expect_bad(
      row("[" + std::to_string(t0) + "," + std::to_string(t0) + "]",
          "\"query\": " + std::to_string(t0) + ", \"answer\": 0, \"n\": 2, \"query_first\": false"),
      {"repeats"});
  expect_bad(row("[1, 2]", "\"query\": 1, \"answer\": 0, \"n\": 2, \"query_first\": false"),
             {"not a content token"});
  expect_bad(row(two, "\"query\": " + std::to_string(t0) +
                          ", \"answer\": 0, \"n\": 2, \"query_first\": 1"),
             {"query_first"});
  fs::remove_all(dir);
  expect_error([&] { read_retrieval_jsonl(dir / "none.jsonl", v); }, {"none.jsonl", "not found"});
}

// ---------------------------------------------------------------- readers

namespace {

class VlReaders : public testing_util::TempDirTest {
 protected:
  VlReaders() : TempDirTest("mambavl_vlreaders_") {}
  void SetUp() override {
    TempDirTest::SetUp();
    fs::create_directories(dir / "img");
    io::Image a;
    a.width = 4;
    a.height = 2;
    a.pixels.assign(4 * 2 * 3, 0);
    a.pixels[0] = 255;
    io::save_png(dir / "img" / "a.png", a);
    io::Image b = a;
    b.width = 2;
    b.height = 4;
    b.pixels[1] = 200;
    io::save_png(dir / "img" / "b.png", b);
  }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
    return dir / name;
  }
};

const char* kConv1 =
    R"("conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A dot."}])";

}  // namespace

TEST_F(VlReaders, LlavaMultiTurnTextOnlyMultiImageAndStructured) {
  const auto p = write("data.json", std::string(R"([
  {"id": "m", "image": "img/a.png", "conversations": [
     {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A dot."},
     {"from": "human", "value": "Where?"}, {"from": "gpt", "value": "Top left."}]},
  {"id": 7, "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
  {"image": ["img/a.png", "img/b.png"], "conversations": [
     {"from": "human", "value": "<image> and <image>: same?"}, {"from": "gpt", "value": "No."}]},
  {"id": "v", "image": "img/a.png", "task": "vqa", "question": "what colour?", "answers": ["red", "crimson"], )") +
                                        kConv1 + R"(},
  {"id": "g", "image": "img/b.png", "task": "grounding", "question": "the dot", "box": [0, 0, 0.5, 0.25], )" +
                                        kConv1 + R"(},
  {"id": "c", "image": "img/a.png", "task": "caption", )" +
                                        kConv1 + R"(}
])");
  LlavaJsonDataset ds(p);
  ASSERT_EQ(ds.size(), 6);
  EXPECT_EQ(ds.skipped_missing(), 0);
  const VLExample m = ds.example(0);
  EXPECT_EQ(m.id, "m");
  EXPECT_EQ(m.task, "chat");
  ASSERT_EQ(m.turns.size(), 2u);
  EXPECT_EQ(m.turns[0], (Turn{"<image>\nWhat is it?", "A dot."}));
  EXPECT_EQ(m.turns[1], (Turn{"Where?", "Top left."}));
  EXPECT_EQ(m.answers, std::vector<std::string>{"Top left."});
  EXPECT_EQ(m.num_images, 1);
  const auto imgs = ds.images(0);
  ASSERT_EQ(imgs.size(), 1u);
  EXPECT_EQ(imgs[0].width, 4);
  EXPECT_EQ(imgs[0].pixels[0], 255);
  EXPECT_EQ(ds.name(0), p.string() + " row 0");

  const VLExample t = ds.example(1);
  EXPECT_EQ(t.id, "7");
  EXPECT_EQ(t.num_images, 0);
  EXPECT_TRUE(ds.images(1).empty());

  const VLExample mi = ds.example(2);
  EXPECT_EQ(mi.id, "2");  // the row number
  EXPECT_EQ(mi.num_images, 2);
  const auto two = ds.images(2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].width, 2);
  EXPECT_EQ(two[1].pixels[1], 200);

  const VLExample v = ds.example(3);
  EXPECT_EQ(v.task, "vqa");
  EXPECT_EQ(v.question, "what colour?");
  EXPECT_EQ(v.answers, (std::vector<std::string>{"red", "crimson"}));
  EXPECT_TRUE(v.turns.empty());
  EXPECT_FALSE(v.box);

  const VLExample g = ds.example(4);
  EXPECT_EQ(g.task, "grounding");
  ASSERT_TRUE(g.box);
  EXPECT_EQ(*g.box, (std::array<double, 4>{0, 0, 0.5, 0.25}));
  EXPECT_EQ(g.answers, std::vector<std::string>{"[0.00,0.00,0.50,0.25]."});

  const VLExample c = ds.example(5);
  EXPECT_EQ(c.task, "caption");
  EXPECT_EQ(c.answers, std::vector<std::string>{"A dot."});
  expect_error([&] { ds.example(6); }, {"index 6"});

  // Another image root.
  fs::create_directories(dir / "sub");
  fs::copy_file(p, dir / "sub" / "data.json");
  LlavaJsonDataset moved(dir / "sub" / "data.json", dir);
  EXPECT_EQ(moved.images(2).size(), 2u);
  EXPECT_EQ(moved.image_paths(0)[0], dir / "img/a.png");
}

TEST_F(VlReaders, LlavaMissingImageFailOrSkip) {
  const auto p = write("data.json", std::string(R"([
  {"id": "ok", "image": "img/a.png", )") +
                                        kConv1 + R"(},
  {"id": "gone", "image": "img/nope.png", )" +
                                        kConv1 + R"(},
  {"id": "gone2", "image": ["img/a.png", "img/nope2.png"], "conversations": [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "x"}]},
  {"id": "ok2", "image": "img/b.png", )" +
                                        kConv1 + R"(}
])");
  expect_error([&] { LlavaJsonDataset ds(p); }, {"row 1", "nope.png", "does not exist", "skip"});
  testing::internal::CaptureStderr();
  LlavaJsonDataset ds(p, {}, MissingImage::Skip);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.skipped_missing(), 2);
  EXPECT_NE(err.find("skipped 2 row(s)"), std::string::npos) << err;
  EXPECT_EQ(ds.example(1).id, "ok2");
  EXPECT_EQ(ds.name(1), p.string() + " row 3");
  EXPECT_EQ(parse_missing_image("skip"), MissingImage::Skip);
  expect_error([] { parse_missing_image("ignore"); }, {"\"ignore\""});
  // A file removed after loading: images() names the row and the file.
  fs::remove(dir / "img" / "b.png");
  expect_error([&] { ds.images(1); }, {"row 3", "b.png"});
}

TEST_F(VlReaders, LlavaBadInput) {
  auto bad = [&](const std::string& rows, std::initializer_list<std::string> parts) {
    const auto p = write("bad.json", rows);
    expect_error([&] { LlavaJsonDataset ds(p); }, parts);
  };
  const std::string conv = kConv1;
  bad("[\n {\"id\": 1,\n  \"image\": \"img/a.png\" \"conversations\": []}\n]",
      {"bad.json:3:", "invalid JSON"});
  bad("{\"id\": 1}", {"bad.json", "expected a JSON array"});
  bad("[{\"image\": \"img/a.png\"}]", {"row 0", "missing \"conversations\""});
  bad("[{\"image\": \"img/a.png\", \"conversations\": {}}]", {"row 0", "must be an array"});
  bad("[1]", {"row 0", "expected an object"});
  bad("[{\"image\": 5, " + conv + "}]", {"row 0", "\"image\" must be a file name"});
  bad("[{\"image\": [\"img/a.png\", 3], " + conv + "}]", {"\"image\"[1]"});
  // <image> count mismatch, both ways.
  bad("[{\"image\": [\"img/a.png\", \"img/b.png\"], " + conv + "}]",
      {"row 0", "1 \"<image>\" marker(s)", "2 image(s)"});
  bad(R"([{"conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "x"}]}])",
      {"1 \"<image>\" marker(s)", "0 image(s)"});
  // Roles.
  bad(R"([{"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]}])",
      {"row 0", "alternate"});
  bad(R"([{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}])",
      {"conversations[1]", "alternate"});
  bad(R"([{"conversations": [{"from": "human", "value": "a"}]}])", {"1 turns", "pairs"});
  bad(R"([{"conversations": [{"from": "robot", "value": "a"}, {"from": "gpt", "value": "b"}]}])",
      {"unknown role \"robot\""});
  bad(R"([{"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "b"}]}])",
      {"conversations[0]", "\"value\" must be a string"});
  bad(R"([{"conversations": [{"value": "a"}, {"from": "gpt", "value": "b"}]}])",
      {"\"from\"", "missing"});
  bad(R"([{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "<image>"}]}])",
      {"gpt turn contains"});
  // Structured fields.
  bad("[{\"image\": \"img/a.png\", \"task\": \"poem\", " + conv + "}]",
      {"unknown \"task\" \"poem\""});
  bad("[{\"image\": \"img/a.png\", \"task\": 3, " + conv + "}]", {"\"task\" must be a string"});
  bad("[{\"image\": \"img/a.png\", \"task\": \"vqa\", \"answers\": \"red\", " + conv + "}]",
      {"\"answers\" must be a non-empty array"});
  bad("[{\"image\": \"img/a.png\", \"task\": \"vqa\", \"answers\": [\"a\", 2], " + conv + "}]",
      {"\"answers\"[1]"});
  bad("[{\"image\": \"img/a.png\", \"task\": \"vqa\", \"question\": [], " + conv + "}]",
      {"\"question\" must be a string"});
  bad("[{\"image\": \"img/a.png\", \"task\": \"grounding\", " + conv + "}]", {"needs \"box\""});
  bad("[{\"image\": \"img/a.png\", \"task\": \"grounding\", \"box\": [0, 0, 2, 1], " + conv + "}]",
      {"\"box\"[2]", "outside [0, 1]"});
  bad("[{\"image\": \"img/a.png\", \"task\": \"grounding\", \"box\": [0.5, 0, 0.2, 1], " + conv +
          "}]",
      {"inverted"});
  bad("[{\"image\": \"img/a.png\", \"task\": \"grounding\", \"box\": [0, 0, 1], " + conv + "}]",
      {"array of 4 numbers"});
  bad("[{\"image\": \"img/a.png\", \"task\": \"vqa\", \"box\": [0, 0, 1, 1], " + conv + "}]",
      {"only allowed with task \"grounding\""});
  bad("[{\"image\": \"img/a.png\", \"answers\": [\"x\"], " + conv + "}]", {"needs \"task\""});
  bad("[{\"id\": [1], \"image\": \"img/a.png\", " + conv + "}]",
      {"\"id\" must be a string or an integer"});
  expect_error([&] { LlavaJsonDataset ds(dir / "none.json"); }, {"none.json"});
}

TEST_F(VlReaders, GroundingJsonl) {
  const auto p = write(
      "g.jsonl",
      "{\"id\": \"r1\", \"image\": \"img/a.png\", \"phrase\": \"the dot\", "
      "\"bbox\": [1, 0, 2, 1], \"width\": 4, \"height\": 2}\n"
      "\n"
      "{\"image\": \"img/b.png\", \"sentence\": \"left part\", \"bbox\": [0, 1, 1, 2]}\n"
      "{\"id\": 9, \"image\": \"img/a.png\", \"phrase\": \"all\", \"box\": [0, 0, 1, 1]}\r\n");
  GroundingJsonlDataset ds(p);
  ASSERT_EQ(ds.size(), 3);
  const auto a = ds.example(0);
  EXPECT_EQ(a.id, "r1");
  EXPECT_EQ(a.task, "grounding");
  EXPECT_EQ(a.question, "the dot");
  EXPECT_EQ(*a.box, (std::array<double, 4>{0.25, 0, 0.75, 0.5}));
  EXPECT_EQ(a.answers, std::vector<std::string>{"[0.25,0.00,0.75,0.50]."});
  EXPECT_EQ(a.num_images, 1);
  // Size from the PNG header (2 x 4).
  const auto b = ds.example(1);
  EXPECT_EQ(b.id, "line 3");
  EXPECT_EQ(b.question, "left part");
  EXPECT_EQ(*b.box, (std::array<double, 4>{0, 0.25, 0.5, 0.75}));
  EXPECT_EQ(ds.name(1), p.string() + ":3");
  EXPECT_EQ(ds.example(2).id, "9");
  EXPECT_EQ(ds.images(1)[0].height, 4);

  auto bad = [&](const std::string& line, std::initializer_list<std::string> parts) {
    const auto q = write(
        "bad.jsonl",
        "{\"image\": \"img/a.png\", \"phrase\": \"x\", \"box\": [0, 0, 1, 1]}\n\n" + line + "\n");
    std::vector<std::string> all{q.string() + ":3:"};
    try {
      GroundingJsonlDataset d(q);
      ADD_FAILURE() << "no error for " << line;
    } catch (const Error& e) {
      for (const auto& s : all)
        EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
      for (const auto& s : parts)
        EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
    }
  };
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\"", {"invalid JSON"});
  bad("[]", {"expected a JSON object"});
  bad("{\"phrase\": \"x\", \"box\": [0, 0, 1, 1]}", {"\"image\"", "missing"});
  bad("{\"image\": \"img/a.png\", \"box\": [0, 0, 1, 1]}", {"missing \"phrase\""});
  bad("{\"image\": \"img/a.png\", \"phrase\": 3, \"box\": [0, 0, 1, 1]}", {"non-empty string"});
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\"}", {"missing the box"});
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\", \"box\": [0, 0, 1, 1], \"bbox\": [0, 0, 1, "
      "1]}",
      {"both"});
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\", \"bbox\": [0, 0, 9, 1]}",
      {"outside the 4 x 2 image"});
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\", \"bbox\": [0, 0, 0, 1]}", {"no area"});
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\", \"bbox\": [0, \"0\", 1, 1]}", {"\"bbox\"[1]"});
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\", \"bbox\": [0, 0, 1, 1], \"width\": 4}",
      {"\"width\" and \"height\""});
  bad("{\"image\": \"img/a.png\", \"phrase\": \"x\", \"box\": [0, 0, 1.5, 1]}", {"outside [0, 1]"});
  bad("{\"image\": \"img/nope.png\", \"phrase\": \"x\", \"box\": [0, 0, 1, 1]}",
      {"nope.png", "does not exist"});
  // Skip: counted.
  const auto q = write("skip.jsonl",
                       "{\"image\": \"img/nope.png\", \"phrase\": \"x\", \"box\": [0, 0, 1, 1]}\n"
                       "{\"image\": \"img/a.png\", \"phrase\": \"y\", \"box\": [0, 0, 1, 1]}\n");
  testing::internal::CaptureStderr();
  GroundingJsonlDataset s(q, {}, MissingImage::Skip);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("skipped 1 row(s)"), std::string::npos);
  EXPECT_EQ(s.size(), 1);
  EXPECT_EQ(s.skipped_missing(), 1);
  EXPECT_EQ(s.example(0).question, "y");
  // A header that is no image.
  write("img/fake.png", "not a png");
  bad("{\"image\": \"img/fake.png\", \"phrase\": \"x\", \"bbox\": [0, 0, 1, 1]}",
      {"cannot read the size"});
}

TEST_F(VlReaders, TextDatasetChunks) {
  write_wordlevel_tokenizer(dir / "tok", {"a b c d e f g"});
  const io::Tokenizer tok = io::Tokenizer::from_file(dir / "tok" / "tokenizer.json");
  const auto f1 = write("1.txt", "a b c d e");  // 5 ids + eos
  const auto f2 = write("2.txt", "f g");        // 2 ids + eos
  TextDataset ds({f1, f2}, tok, 3);             // 9 ids -> 2 chunks of 4
  EXPECT_EQ(ds.num_tokens(), 9);
  ASSERT_EQ(ds.size(), 2);
  const int64_t eos = *tok.eos_id();
  auto id = [&](const char* w) { return *tok.token_to_id(w); };
  EXPECT_EQ(ds.chunk(0), (std::vector<int64_t>{id("a"), id("b"), id("c"), id("d")}));
  EXPECT_EQ(ds.chunk(1), (std::vector<int64_t>{id("e"), eos, id("f"), id("g")}));
  expect_error([&] { ds.chunk(2); }, {"index 2"});
  expect_error([&] { TextDataset({f2}, tok, 3); }, {"3 tokens", "seq_len + 1 = 4"});
  expect_error([&] { TextDataset({f1, dir / "none.txt"}, tok, 3); }, {"none.txt"});
  expect_error([&] { TextDataset({}, tok, 3); }, {"no files"});
  expect_error([&] { TextDataset({f1}, tok, 0); }, {"seq_len"});
  const auto bad = write("bad.txt", std::string("a \xff b"));
  expect_error([&] { TextDataset({bad}, tok, 1); }, {"bad.txt"});
}
