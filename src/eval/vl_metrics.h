// Vision-language evaluation metrics (SPEC §4): captioning CIDEr-D, VQA exact match after the
// VQAv2 answer normalisation, grounding accuracy (IoU > 0.5 between a box parsed from generated
// text and the true box) and retrieval accuracy overall and per answer position.
// Pure CPU code on strings and numbers; no LibTorch.
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace mambavl::eval {

// ---------------------------------------------------------------------------------------------
// Captioning
// ---------------------------------------------------------------------------------------------

// Caption tokenisation standing in for pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1,
// `-lowerCase`, then the tokens . , ? ! : ; ' '' ` `` - -- ... and brackets are dropped), which
// needs Java. Rules, applied to each whitespace-separated chunk of the ASCII-lower-cased text:
//  * . , ? ! : ; " ` ( ) [ ] { } separate tokens and are dropped, except . , : between two
//    digits ("3.5", "1,000", "10:30" stay one token);
//  * '-' between two word characters stays ("black-and-white", "t-shirt"); other hyphens drop;
//  * clitics split off as PTB does: "dog's" -> "dog" "'s" ('s 're 've 'll 'd 'm),
//    "don't" -> "do" "n't", "can't" -> "ca" "n't"; an apostrophe between two letters otherwise
//    stays ("o'clock"); any other apostrophe drops;
//  * $ % # become tokens of their own ("50%" -> "50" "%");
//  * every other byte (letters, digits, / * & + = ..., UTF-8 sequences) is part of a word.
// Known differences from CoreNLP 3.4.1 (rare in captions): abbreviations keep their periods there
// ("u.s.", "mr."), ".5" stays a number there, "/" and "*" may be escaped there ("\/"), "cannot"
// -> "can" "not" and similar splits there, non-ASCII quotes and letters are not normalised or
// lower-cased here.
std::vector<std::string> coco_tokenize(const std::string& text);

// CIDEr-D exactly as pycocoevalcap 1.2's `Cider` scorer: n-grams n = 1..4; tf-idf vectors with
// document frequencies counted over the references of the evaluated set (an n-gram counts once
// per sample) and idf = log(#samples) - log(max(1, df)); per reference the cosine similarity of
// candidate and reference with the candidate's weights clipped to the reference's, times the
// Gaussian length penalty exp(-(len_c - len_r)^2 / (2 * 6^2)); averaged over n and over the
// references, times 10. As in pycocoevalcap, "length" is the number of bigrams (words - 1, and 0
// for an empty or one-word text). Texts are tokenised by `coco_tokenize` first.
// refs[i] = references of sample i (>= 1 each), cands[i] = the prediction for sample i; sizes must
// agree and be >= 1 (mambavl::Error otherwise). Returns the corpus score (the mean over samples);
// per_sample (optional) receives each sample's score. A single-sample set scores 0 (idf is 0).
double cider_d(const std::vector<std::vector<std::string>>& refs,
               const std::vector<std::string>& cands, std::vector<double>* per_sample = nullptr);

// Same on already tokenised texts (tokens are used as given).
double cider_d_tokens(const std::vector<std::vector<std::vector<std::string>>>& refs,
                      const std::vector<std::vector<std::string>>& cands,
                      std::vector<double>* per_sample = nullptr);

// ---------------------------------------------------------------------------------------------
// VQA
// ---------------------------------------------------------------------------------------------

// VQAv2 answer normalisation as the official evaluation (GT-Vision-Lab/VQA,
// PythonEvaluationTools/vqaEvaluation/vqaEval.py): newline / tab -> space and strip;
// processPunctuation (each of ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? ! is deleted when the
// text has it next to a space or contains digit,digit anywhere, else replaced by a space; then
// every '.' not followed by a digit is deleted, at most 32 of them, as the official code passes
// re.UNICODE (= 32) as the count); processDigitArticle (lower case, split on whitespace, number
// words none/zero..ten -> digits, articles a/an/the dropped, the official contraction table
// "dont" -> "don't" etc., joined by single spaces). ASCII only: non-ASCII bytes pass unchanged.
std::string vqa_normalize(const std::string& answer);

// True when vqa_normalize(prediction) equals vqa_normalize(a) for any reference answer a.
// (The official code normalises ground-truth answers only with processPunctuation and scores
// min(1, matches / 3) over 10 annotators; this is the exact-match variant of SPEC §4.)
bool vqa_exact_match(const std::string& prediction, const std::vector<std::string>& answers);

// ---------------------------------------------------------------------------------------------
// Grounding
// ---------------------------------------------------------------------------------------------

// Finds the first "[a, b, c, d]" in generated text that holds exactly 4 numbers separated by
// commas. Whitespace may appear anywhere, also inside numbers as a word-level decoder writes them
// ("[ 0 . 12 , 0 . 3 , 1 , - 0 . 5 ]"). A number is [+-]digits[.digits] or [+-].digits with an
// optional exponent; values are returned as written (no clamping), must be finite, and x1 > x2 or
// y1 > y2 are swapped. A bracket group that is not such a box is skipped ("[image] at [1,2,3,4]"
// gives the second); a '[' inside a group ends it ("[[1,2,3,4]]" gives the inner one).
// nullopt when there is no such group. Linear time in the text length.
std::optional<std::array<double, 4>> parse_box(const std::string& text);

// Intersection over union of two boxes [x1, y1, x2, y2] (corners in any order); 0 when the union
// has no area or a value is not finite.
double box_iou(const std::array<double, 4>& a, const std::array<double, 4>& b);

struct GroundingScore {
  double accuracy = 0;  // correct / total (0 when total is 0)
  int64_t correct = 0, total = 0, unparseable = 0;
};
// Accuracy at IoU > 0.5 between parse_box(predictions[i]) and truth[i]; an unparseable prediction
// counts as wrong and is counted in `unparseable`. Sizes must agree.
GroundingScore grounding_accuracy(const std::vector<std::string>& predictions,
                                  const std::vector<std::array<double, 4>>& truth);

// ---------------------------------------------------------------------------------------------
// Synthetic retrieval
// ---------------------------------------------------------------------------------------------

struct RetrievalScore {
  double accuracy = 0;  // correct / total (0 when total is 0)
  int64_t correct = 0, total = 0;
  std::vector<int64_t> pos_correct, pos_total;  // [max_n], indexed by the true (0-based) position
  // "position,correct,total,accuracy" header, then one row per position 0..max_n-1; accuracy
  // is written with round-trip precision, "nan" where a position has no sample.
  std::string per_position_csv() const;
  // {"accuracy", "correct", "total", "max_n", "pos_correct": [...], "pos_total": [...],
  //  "pos_accuracy": [... (null where a position has no sample)]}.
  nlohmann::json to_json() const;
};
// predicted_pos[i] is compared with true_pos[i] (any value is allowed for a prediction, e.g. -1
// for an unparseable answer, and counts as wrong unless equal); true positions must lie in
// [0, max_n) and sizes must agree (mambavl::Error otherwise).
RetrievalScore retrieval_accuracy(const std::vector<int64_t>& predicted_pos,
                                  const std::vector<int64_t>& true_pos, int64_t max_n);

}  // namespace mambavl::eval
