#include "eval/vl_metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"

namespace mambavl::eval {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }
// Python's str.isspace() restricted to ASCII: what str.split() / str.strip() use.
bool is_py_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

// ----- coco_tokenize -----

// Punctuation that separates tokens and is dropped (PTB tokens that pycocoevalcap removes).
bool tok_drop(char c) { return c != 0 && std::strchr(".,?!:;\"`()[]{}", c) != nullptr; }
// Symbols that PTB makes tokens of their own (and pycocoevalcap keeps).
bool tok_split(char c) { return c == '$' || c == '%' || c == '#'; }
// A byte that belongs to a word (letters, digits, other symbols, UTF-8 bytes).
bool tok_word(char c) {
  return c != 0 && !is_py_space(c) && !tok_drop(c) && !tok_split(c) && c != '\'' && c != '-';
}

void tokenize_chunk(const std::string& w, std::vector<std::string>& out) {
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) out.push_back(std::move(cur));
    cur.clear();
  };
  const size_t n = w.size();
  size_t i = 0;
  while (i < n) {
    const char c = w[i];
    const char prev = i > 0 ? w[i - 1] : 0, next = i + 1 < n ? w[i + 1] : 0;
    if ((c == '.' || c == ',' || c == ':') && is_digit(prev) && is_digit(next)) {
      cur += c;
    } else if (c == '-') {
      if (tok_word(prev) && tok_word(next))
        cur += c;
      else
        flush();
    } else if (c == '\'') {
      size_t k = i + 1;
      while (k < n && is_alpha(w[k])) ++k;
      const std::string_view suffix(w.data() + i + 1, k - i - 1);
      const bool at_end = k == n || !tok_word(w[k]);
      if (at_end && !cur.empty() &&
          (suffix == "s" || suffix == "re" || suffix == "ve" || suffix == "ll" || suffix == "d" ||
           suffix == "m")) {
        flush();
        std::string clitic(1, '\'');
        clitic.append(suffix);
        out.push_back(std::move(clitic));
        i = k;
        continue;
      }
      if (at_end && suffix == "t" && cur.size() >= 2 && cur.back() == 'n') {
        cur.pop_back();
        flush();
        out.push_back("n't");
        i = k;
        continue;
      }
      if (is_alpha(prev) && is_alpha(next))
        cur += c;  // o'clock, ma'am
      else
        flush();
    } else if (tok_split(c)) {
      flush();
      out.push_back(std::string(1, c));
    } else if (tok_drop(c)) {
      flush();
    } else {
      cur += c;
    }
    ++i;
  }
  flush();
}

// ----- CIDEr-D -----

// One text as pycocoevalcap's counts2vec makes it: per n, the distinct n-grams in first-occurrence
// order with their tf-idf weight; the norms; the "length" (number of bigrams).
struct CiderVec {
  std::array<std::vector<std::pair<int32_t, double>>, 4> w;  // (n-gram id, weight)
  std::array<double, 4> norm{};
  int64_t length = 0;
};

struct NgramCounts {
  std::array<std::vector<std::pair<int32_t, int64_t>>, 4>
      c;  // (n-gram id, count), first-seen order
};

class NgramIndex {
 public:
  int32_t word(const std::string& s) {
    auto [it, fresh] = words_.try_emplace(s, int32_t(words_.size()));
    return it->second;
  }
  int32_t ngram(const int32_t* ids, int k) {
    std::string key(reinterpret_cast<const char*>(ids), sizeof(int32_t) * size_t(k));
    auto [it, fresh] = ngrams_.try_emplace(std::move(key), int32_t(ngrams_.size()));
    return it->second;
  }
  size_t size() const { return ngrams_.size(); }

 private:
  std::unordered_map<std::string, int32_t> words_, ngrams_;
};

NgramCounts count_ngrams(const std::vector<std::string>& tokens, NgramIndex& index) {
  std::vector<int32_t> ids;
  ids.reserve(tokens.size());
  for (const auto& t : tokens)
    if (!t.empty()) ids.push_back(index.word(t));  // as str.split(): no empty tokens
  NgramCounts out;
  std::unordered_map<int32_t, size_t> slot;
  for (int k = 1; k <= 4; ++k) {
    slot.clear();
    auto& v = out.c[size_t(k - 1)];
    for (size_t i = 0; i + size_t(k) <= ids.size(); ++i) {
      const int32_t g = index.ngram(ids.data() + i, k);
      auto [it, fresh] = slot.try_emplace(g, v.size());
      if (fresh)
        v.emplace_back(g, 1);
      else
        ++v[it->second].second;
    }
  }
  return out;
}

CiderVec counts_to_vec(const NgramCounts& cnt, const std::vector<double>& df, double ref_len) {
  CiderVec v;
  for (size_t n = 0; n < 4; ++n) {
    double sq = 0;
    for (const auto& [g, tf] : cnt.c[n]) {
      const double d = size_t(g) < df.size() ? df[size_t(g)] : 0.0;
      const double w = double(tf) * (ref_len - std::log(std::max(1.0, d)));
      v.w[n].emplace_back(g, w);
      sq += w * w;
      if (n == 1) v.length += tf;
    }
    v.norm[n] = std::sqrt(sq);
  }
  return v;
}

}  // namespace

std::vector<std::string> coco_tokenize(const std::string& text) {
  std::vector<std::string> out;
  std::string chunk;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || is_py_space(text[i])) {
      if (!chunk.empty()) tokenize_chunk(chunk, out);
      chunk.clear();
    } else {
      chunk += ascii_lower(text[i]);
    }
  }
  return out;
}

double cider_d_tokens(const std::vector<std::vector<std::vector<std::string>>>& refs,
                      const std::vector<std::vector<std::string>>& cands,
                      std::vector<double>* per_sample) {
  MVL_CHECK(refs.size() == cands.size(), "CIDEr-D: ", cands.size(), " candidates but ", refs.size(),
            " reference lists; give one candidate per sample");
  MVL_CHECK(!refs.empty(), "CIDEr-D: no samples to score");
  for (size_t i = 0; i < refs.size(); ++i)
    MVL_CHECK(!refs[i].empty(), "CIDEr-D: sample ", i,
              " has no reference; every sample needs at least one");
  constexpr double kSigma = 6.0;
  const size_t N = refs.size();
  NgramIndex index;
  std::vector<NgramCounts> cand_counts(N);
  std::vector<std::vector<NgramCounts>> ref_counts(N);
  for (size_t i = 0; i < N; ++i) {
    for (const auto& r : refs[i]) ref_counts[i].push_back(count_ngrams(r, index));
    cand_counts[i] = count_ngrams(cands[i], index);
  }
  // Document frequency: in how many samples' reference sets each n-gram occurs.
  std::vector<double> df(index.size(), 0.0);
  std::unordered_set<int32_t> seen;
  for (size_t i = 0; i < N; ++i) {
    seen.clear();
    for (const auto& rc : ref_counts[i])
      for (const auto& per_n : rc.c)
        for (const auto& [g, c] : per_n)
          if (seen.insert(g).second) df[size_t(g)] += 1.0;
  }
  const double ref_len = std::log(double(N));
  std::vector<double> scores(N);
  std::unordered_map<int32_t, double> ref_w;
  for (size_t i = 0; i < N; ++i) {
    const CiderVec hv = counts_to_vec(cand_counts[i], df, ref_len);
    std::array<double, 4> score{};
    for (const auto& rc : ref_counts[i]) {
      const CiderVec rv = counts_to_vec(rc, df, ref_len);
      const double delta = double(hv.length - rv.length);
      // pycocoevalcap: np.e ** (-(delta ** 2) / (2 * sigma ** 2))
      const double penalty = std::pow(2.718281828459045, -(delta * delta) / (2 * kSigma * kSigma));
      for (size_t n = 0; n < 4; ++n) {
        ref_w.clear();
        for (const auto& [g, w] : rv.w[n]) ref_w.emplace(g, w);
        double val = 0;
        for (const auto& [g, w] : hv.w[n]) {
          const auto it = ref_w.find(g);
          const double r = it == ref_w.end() ? 0.0 : it->second;
          val += std::min(w, r) * r;  // candidate weight clipped to the reference's
        }
        if (hv.norm[n] != 0 && rv.norm[n] != 0) val /= hv.norm[n] * rv.norm[n];
        score[n] += val * penalty;
      }
    }
    double avg = (((score[0] + score[1]) + score[2]) + score[3]) / 4.0;
    avg /= double(refs[i].size());
    scores[i] = avg * 10.0;
  }
  double sum = 0;
  for (double s : scores) sum += s;
  if (per_sample) *per_sample = scores;
  return sum / double(N);
}

double cider_d(const std::vector<std::vector<std::string>>& refs,
               const std::vector<std::string>& cands, std::vector<double>* per_sample) {
  MVL_CHECK(refs.size() == cands.size(), "CIDEr-D: ", cands.size(), " candidates but ", refs.size(),
            " reference lists; give one candidate per sample");
  std::vector<std::vector<std::vector<std::string>>> rt(refs.size());
  std::vector<std::vector<std::string>> ct(cands.size());
  for (size_t i = 0; i < refs.size(); ++i) {
    for (const auto& r : refs[i]) rt[i].push_back(coco_tokenize(r));
    ct[i] = coco_tokenize(cands[i]);
  }
  return cider_d_tokens(rt, ct, per_sample);
}

// ----- VQA -----
namespace {

// Official VQA evaluation (GT-Vision-Lab/VQA, vqaEval.py): self.punct.
constexpr std::string_view kVqaPunct = ";/[]\"{}()=+\\_-><@`,?!";

const std::unordered_map<std::string, std::string>& vqa_contractions() {
  // vqaEval.py's self.contractions, verbatim (including its oddities: the capitalised keys can
  // never match after lower-casing, and "somebody'd" maps to "somebodyd").
  static const std::unordered_map<std::string, std::string> m = {
      {"aint", "ain't"},
      {"arent", "aren't"},
      {"cant", "can't"},
      {"couldve", "could've"},
      {"couldnt", "couldn't"},
      {"couldn'tve", "couldn't've"},
      {"couldnt've", "couldn't've"},
      {"didnt", "didn't"},
      {"doesnt", "doesn't"},
      {"dont", "don't"},
      {"hadnt", "hadn't"},
      {"hadnt've", "hadn't've"},
      {"hadn'tve", "hadn't've"},
      {"hasnt", "hasn't"},
      {"havent", "haven't"},
      {"hed", "he'd"},
      {"hed've", "he'd've"},
      {"he'dve", "he'd've"},
      {"hes", "he's"},
      {"howd", "how'd"},
      {"howll", "how'll"},
      {"hows", "how's"},
      {"Id've", "I'd've"},
      {"I'dve", "I'd've"},
      {"Im", "I'm"},
      {"Ive", "I've"},
      {"isnt", "isn't"},
      {"itd", "it'd"},
      {"itd've", "it'd've"},
      {"it'dve", "it'd've"},
      {"itll", "it'll"},
      {"let's", "let's"},
      {"maam", "ma'am"},
      {"mightnt", "mightn't"},
      {"mightnt've", "mightn't've"},
      {"mightn'tve", "mightn't've"},
      {"mightve", "might've"},
      {"mustnt", "mustn't"},
      {"mustve", "must've"},
      {"neednt", "needn't"},
      {"notve", "not've"},
      {"oclock", "o'clock"},
      {"oughtnt", "oughtn't"},
      {"ow's'at", "'ow's'at"},
      {"'ows'at", "'ow's'at"},
      {"'ow'sat", "'ow's'at"},
      {"shant", "shan't"},
      {"shed've", "she'd've"},
      {"she'dve", "she'd've"},
      {"she's", "she's"},
      {"shouldve", "should've"},
      {"shouldnt", "shouldn't"},
      {"shouldnt've", "shouldn't've"},
      {"shouldn'tve", "shouldn't've"},
      {"somebody'd", "somebodyd"},
      {"somebodyd've", "somebody'd've"},
      {"somebody'dve", "somebody'd've"},
      {"somebodyll", "somebody'll"},
      {"somebodys", "somebody's"},
      {"someoned", "someone'd"},
      {"someoned've", "someone'd've"},
      {"someone'dve", "someone'd've"},
      {"someonell", "someone'll"},
      {"someones", "someone's"},
      {"somethingd", "something'd"},
      {"somethingd've", "something'd've"},
      {"something'dve", "something'd've"},
      {"somethingll", "something'll"},
      {"thats", "that's"},
      {"thered", "there'd"},
      {"thered've", "there'd've"},
      {"there'dve", "there'd've"},
      {"therere", "there're"},
      {"theres", "there's"},
      {"theyd", "they'd"},
      {"theyd've", "they'd've"},
      {"they'dve", "they'd've"},
      {"theyll", "they'll"},
      {"theyre", "they're"},
      {"theyve", "they've"},
      {"twas", "'twas"},
      {"wasnt", "wasn't"},
      {"wed've", "we'd've"},
      {"we'dve", "we'd've"},
      {"weve", "we've"},
      {"werent", "weren't"},
      {"whatll", "what'll"},
      {"whatre", "what're"},
      {"whats", "what's"},
      {"whatve", "what've"},
      {"whens", "when's"},
      {"whered", "where'd"},
      {"wheres", "where's"},
      {"whereve", "where've"},
      {"whod", "who'd"},
      {"whod've", "who'd've"},
      {"who'dve", "who'd've"},
      {"wholl", "who'll"},
      {"whos", "who's"},
      {"whove", "who've"},
      {"whyll", "why'll"},
      {"whyre", "why're"},
      {"whys", "why's"},
      {"wont", "won't"},
      {"wouldve", "would've"},
      {"wouldnt", "wouldn't"},
      {"wouldnt've", "wouldn't've"},
      {"wouldn'tve", "wouldn't've"},
      {"yall", "y'all"},
      {"yall'll", "y'all'll"},
      {"y'allll", "y'all'll"},
      {"yall'd've", "y'all'd've"},
      {"y'alld've", "y'all'd've"},
      {"y'all'dve", "y'all'd've"},
      {"youd", "you'd"},
      {"youd've", "you'd've"},
      {"you'dve", "you'd've"},
      {"youll", "you'll"},
      {"youre", "you're"},
      {"youve", "you've"},
  };
  return m;
}

// vqaEval.py processPunctuation.
std::string vqa_process_punctuation(const std::string& in) {
  // commaStrip = (\d)(\,)(\d), searched in the input text.
  bool digit_comma_digit = false;
  for (size_t i = 1; i + 1 < in.size(); ++i)
    if (in[i] == ',' && is_digit(in[i - 1]) && is_digit(in[i + 1])) digit_comma_digit = true;
  std::string out = in;
  for (const char p : kVqaPunct) {
    const bool spaced = in.find(std::string{p, ' '}) != std::string::npos ||
                        in.find(std::string{' ', p}) != std::string::npos;
    std::string next;
    next.reserve(out.size());
    for (const char c : out) {
      if (c != p)
        next += c;
      else if (!(spaced || digit_comma_digit))
        next += ' ';
    }
    out.swap(next);
  }
  // periodStrip = (?!<=\d)(\.)(?!\d): every '.' not followed by a digit (the (?!<=\d) part is a
  // typo for a lookbehind and never excludes anything); sub(..., re.UNICODE) makes count = 32.
  std::string res;
  res.reserve(out.size());
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '.' && removed < 32 && !(i + 1 < out.size() && is_digit(out[i + 1]))) {
      ++removed;
      continue;
    }
    res += out[i];
  }
  return res;
}

std::vector<std::string> py_split(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char c : s) {
    if (is_py_space(c)) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

// vqaEval.py processDigitArticle.
std::string vqa_process_digit_article(const std::string& in) {
  static const std::unordered_map<std::string, std::string> manual = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"},   {"two", "2"},   {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
  std::string lower = in;
  for (char& c : lower) c = ascii_lower(c);
  std::vector<std::string> words;
  for (auto& w : py_split(lower)) {
    if (auto it = manual.find(w); it != manual.end()) w = it->second;
    if (w == "a" || w == "an" || w == "the") continue;
    words.push_back(std::move(w));
  }
  const auto& contr = vqa_contractions();
  for (auto& w : words)
    if (auto it = contr.find(w); it != contr.end()) w = it->second;
  return join(words, " ");
}

}  // namespace

std::string vqa_normalize(const std::string& answer) {
  std::string s = answer;
  for (char& c : s)
    if (c == '\n' || c == '\t') c = ' ';
  size_t b = 0, e = s.size();
  while (b < e && is_py_space(s[b])) ++b;
  while (e > b && is_py_space(s[e - 1])) --e;
  return vqa_process_digit_article(vqa_process_punctuation(s.substr(b, e - b)));
}

bool vqa_exact_match(const std::string& prediction, const std::vector<std::string>& answers) {
  const std::string p = vqa_normalize(prediction);
  for (const auto& a : answers)
    if (vqa_normalize(a) == p) return true;
  return false;
}

// ----- Grounding -----
namespace {

// Parses one number of a box group (whitespace already removed); nullopt unless the whole of s
// is [+-](digits[.digits*] | .digits)([eE][+-]digits) and finite.
std::optional<double> parse_box_number(std::string_view s) {
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  const size_t start = i;
  size_t int_digits = 0, frac_digits = 0;
  while (i < s.size() && is_digit(s[i])) ++i, ++int_digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i])) ++i, ++frac_digits;
  }
  if (int_digits + frac_digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    size_t exp_digits = 0;
    while (i < s.size() && is_digit(s[i])) ++i, ++exp_digits;
    if (exp_digits == 0) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  double v = 0;
  const auto r = std::from_chars(s.data() + start, s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return neg ? -v : v;
}

// The inside of one "[...]" group: exactly 4 comma-separated numbers.
std::optional<std::array<double, 4>> parse_box_group(std::string_view inside) {
  std::string compact;
  compact.reserve(inside.size());
  for (const char c : inside)
    if (!is_py_space(c)) compact += c;
  std::array<double, 4> box{};
  size_t field = 0, pos = 0;
  while (true) {
    const size_t comma = compact.find(',', pos);
    const std::string_view part = std::string_view(compact).substr(
        pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (field >= 4) return std::nullopt;
    const auto v = parse_box_number(part);
    if (!v) return std::nullopt;
    box[field++] = *v;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (field != 4) return std::nullopt;
  return box;
}

}  // namespace

std::optional<std::array<double, 4>> parse_box(const std::string& text) {
  size_t i = text.find('[');
  while (i != std::string::npos) {
    size_t j = i + 1;
    while (j < text.size() && text[j] != ']' && text[j] != '[') ++j;
    if (j == text.size()) return std::nullopt;  // no ']' after this '[': none later either
    if (text[j] == ']') {
      if (auto box = parse_box_group(std::string_view(text).substr(i + 1, j - i - 1))) {
        auto& b = *box;
        if (b[0] > b[2]) std::swap(b[0], b[2]);
        if (b[1] > b[3]) std::swap(b[1], b[3]);
        return box;
      }
      i = text.find('[', j + 1);
    } else {
      i = j;  // a nested '[' starts a new candidate group
    }
  }
  return std::nullopt;
}

double box_iou(const std::array<double, 4>& a, const std::array<double, 4>& b) {
  for (int k = 0; k < 4; ++k)
    if (!std::isfinite(a[size_t(k)]) || !std::isfinite(b[size_t(k)])) return 0.0;
  const double ax1 = std::min(a[0], a[2]), ax2 = std::max(a[0], a[2]);
  const double ay1 = std::min(a[1], a[3]), ay2 = std::max(a[1], a[3]);
  const double bx1 = std::min(b[0], b[2]), bx2 = std::max(b[0], b[2]);
  const double by1 = std::min(b[1], b[3]), by2 = std::max(b[1], b[3]);
  const double iw = std::max(0.0, std::min(ax2, bx2) - std::max(ax1, bx1));
  const double ih = std::max(0.0, std::min(ay2, by2) - std::max(ay1, by1));
  const double inter = iw * ih;
  const double uni = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter;
  if (!(uni > 0) || !std::isfinite(uni)) return 0.0;
  return inter / uni;
}

GroundingScore grounding_accuracy(const std::vector<std::string>& predictions,
                                  const std::vector<std::array<double, 4>>& truth) {
  MVL_CHECK(predictions.size() == truth.size(), "grounding accuracy: ", predictions.size(),
            " predictions but ", truth.size(), " true boxes; give one prediction per sample");
  GroundingScore s;
  s.total = int64_t(truth.size());
  for (size_t i = 0; i < truth.size(); ++i) {
    const auto box = parse_box(predictions[i]);
    if (!box)
      ++s.unparseable;
    else if (box_iou(*box, truth[i]) > 0.5)
      ++s.correct;
  }
  s.accuracy = s.total ? double(s.correct) / double(s.total) : 0.0;
  return s;
}

// ----- Retrieval -----
namespace {
constexpr int64_t kMaxRetrievalN = int64_t(1) << 24;

std::string shortest(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}
}  // namespace

std::string RetrievalScore::per_position_csv() const {
  std::string out = "position,correct,total,accuracy\n";
  for (size_t p = 0; p < pos_total.size(); ++p) {
    out += std::to_string(p) + "," + std::to_string(pos_correct[p]) + "," +
           std::to_string(pos_total[p]) + "," +
           (pos_total[p] ? shortest(double(pos_correct[p]) / double(pos_total[p])) : "nan") + "\n";
  }
  return out;
}

nlohmann::json RetrievalScore::to_json() const {
  nlohmann::json acc = nlohmann::json::array();
  for (size_t p = 0; p < pos_total.size(); ++p)
    acc.push_back(pos_total[p] ? nlohmann::json(double(pos_correct[p]) / double(pos_total[p]))
                               : nlohmann::json(nullptr));
  return {{"accuracy", accuracy},      {"correct", correct},         {"total", total},
          {"max_n", pos_total.size()}, {"pos_correct", pos_correct}, {"pos_total", pos_total},
          {"pos_accuracy", acc}};
}

RetrievalScore retrieval_accuracy(const std::vector<int64_t>& predicted_pos,
                                  const std::vector<int64_t>& true_pos, int64_t max_n) {
  MVL_CHECK(predicted_pos.size() == true_pos.size(), "retrieval accuracy: ", predicted_pos.size(),
            " predictions but ", true_pos.size(), " answers; give one prediction per sample");
  MVL_CHECK(max_n >= 1 && max_n <= kMaxRetrievalN, "retrieval accuracy: max_n ", max_n,
            " is out of range [1, ", kMaxRetrievalN, "]");
  RetrievalScore s;
  s.pos_correct.assign(size_t(max_n), 0);
  s.pos_total.assign(size_t(max_n), 0);
  for (size_t i = 0; i < true_pos.size(); ++i) {
    const int64_t t = true_pos[i];
    MVL_CHECK(t >= 0 && t < max_n, "retrieval accuracy: sample ", i, " has answer position ", t,
              ", outside [0, ", max_n, ")");
    ++s.pos_total[size_t(t)];
    ++s.total;
    if (predicted_pos[i] == t) {
      ++s.pos_correct[size_t(t)];
      ++s.correct;
    }
  }
  s.accuracy = s.total ? double(s.correct) / double(s.total) : 0.0;
  return s;
}

}  // namespace mambavl::eval
