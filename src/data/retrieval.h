// The Shaking-Up synthetic retrieval task (SPEC §3): a sequence of N unique random content tokens
// and a query token (one of them); the answer is the query's position (0-based) in the sequence.
// N in [1, max_n] (the paper: 20..600); the query comes after the sequence or before it.
// Deterministic: example (seed, index, n) is the same on every machine (own integer RNG).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mambavl::data {

// Id layout of the retrieval LM vocabulary:
//   0                      "<pad>"  padding, also end-of-text
//   1                      "<sep>"  separator between the sequence and the query
//   2                      "<ans>"  the "answer:" marker; the model predicts the position after it
//   3 .. 3+max_n-1         "p0" .. "p{max_n-1}"   one token per position
//   3+max_n .. +content    "t0" .. "t{content-1}" content tokens
struct RetrievalVocab {
  int64_t max_n = 600, content = 1024;  // content >= max_n (N unique tokens must exist)
  int64_t pad_id() const { return 0; }
  int64_t sep_id() const { return 1; }
  int64_t answer_id() const { return 2; }
  int64_t position_id(int64_t pos) const;  // pos in [0, max_n); Error otherwise
  int64_t content_id(int64_t k) const;     // k in [0, content); Error otherwise
  int64_t vocab_size() const { return 3 + max_n + content; }
  bool is_content(int64_t id) const { return id >= 3 + max_n && id < vocab_size(); }
  bool is_position(int64_t id) const { return id >= 3 && id < 3 + max_n; }
  // Error (naming the field) unless 1 <= max_n <= content <= 1,000,000.
  void check() const;
  // A WordLevel tokenizer.json naming every id as above (pre-tokenizer WhitespaceSplit; the three
  // specials are added special tokens; unknown words map to "<pad>"), so
  // "t5 t17 <sep> t5 <ans>" encodes to the ids (Hugging Face `tokenizers` loads it too).
  std::string tokenizer_json() const;
  // tokenizer_config.json text: eos_token = pad_token = "<pad>".
  std::string tokenizer_config_json() const;
};

struct RetrievalExample {
  std::vector<int64_t> tokens;  // N unique content ids, in sequence order
  int64_t query = 0;            // a content id: tokens[answer]
  int64_t answer = 0;           // 0-based position of the query in tokens
  bool query_first = false;
  bool operator==(const RetrievalExample&) const = default;
};

// Example `index` of stream `seed` with N = n (in [1, v.max_n]): n distinct content tokens drawn
// uniformly, the answer position uniform in [0, n).
RetrievalExample make_retrieval_example(uint64_t seed, int64_t index, int64_t n, bool query_first,
                                        const RetrievalVocab& v);

// The model input. Query after: t_1 .. t_N <sep> q <ans>; query first: q <sep> t_1 .. t_N <ans>.
// The target is position_id(answer), predicted at the last input position.
std::vector<int64_t> retrieval_input_ids(const RetrievalExample& e, const RetrievalVocab& v);
int64_t retrieval_target_id(const RetrievalExample& e, const RetrievalVocab& v);

// JSONL row {"tokens": [...ids], "query": id, "answer": pos, "n": N, "query_first": bool}
// (one line, no newline) and back. Reading checks everything: types, n == tokens.size() in
// [1, max_n], tokens unique content ids, tokens[answer] == query; errors start with `where`.
std::string retrieval_to_json(const RetrievalExample& e);
RetrievalExample retrieval_from_json(const std::string& line, const RetrievalVocab& v,
                                     const std::string& where);
// A whole JSONL file (blank lines ignored); errors name file:line. Writing is atomic.
std::vector<RetrievalExample> read_retrieval_jsonl(const std::filesystem::path& path,
                                                   const RetrievalVocab& v);
void write_retrieval_jsonl(const std::filesystem::path& path,
                           const std::vector<RetrievalExample>& examples);

}  // namespace mambavl::data
