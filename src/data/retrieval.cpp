#include "data/retrieval.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_set>

#include "common/error.h"
#include "data/synth_draw.h"
#include "data/word_tokenizer.h"
#include "io/atomic_file.h"
#include "io/file.h"
#include "io/json_util.h"

namespace mambavl::data {

using nlohmann::json;

int64_t RetrievalVocab::position_id(int64_t pos) const {
  MVL_CHECK(pos >= 0 && pos < max_n, "retrieval: position ", pos, " outside [0, ", max_n, ")");
  return 3 + pos;
}

int64_t RetrievalVocab::content_id(int64_t k) const {
  MVL_CHECK(k >= 0 && k < content, "retrieval: content token ", k, " outside [0, ", content, ")");
  return 3 + max_n + k;
}

void RetrievalVocab::check() const {
  MVL_CHECK(max_n >= 1 && max_n <= 1000000, "retrieval: max_n must be in [1, 1000000], got ",
            max_n);
  MVL_CHECK(content >= max_n && content <= 1000000, "retrieval: content (", content,
            ") must be in [max_n = ", max_n, ", 1000000]: N unique content tokens must exist");
}

std::string RetrievalVocab::tokenizer_json() const {
  check();
  json vocab = json::object();
  vocab["<pad>"] = pad_id();
  vocab["<sep>"] = sep_id();
  vocab["<ans>"] = answer_id();
  for (int64_t p = 0; p < max_n; ++p)
    vocab[std::string(1, 'p').append(std::to_string(p))] = position_id(p);
  for (int64_t k = 0; k < content; ++k)
    vocab[std::string(1, 't').append(std::to_string(k))] = content_id(k);
  json j = wordlevel_tokenizer_document(
      {{"<pad>", pad_id()}, {"<sep>", sep_id()}, {"<ans>", answer_id()}}, vocab, "WhitespaceSplit",
      "<pad>");
  return j.dump(2) + "\n";
}

std::string RetrievalVocab::tokenizer_config_json() const {
  json j = {{"eos_token", "<pad>"},
            {"pad_token", "<pad>"},
            {"unk_token", "<pad>"},
            {"model_max_length", 2 * max_n + 4},
            {"tokenizer_class", "PreTrainedTokenizerFast"}};
  return j.dump(2) + "\n";
}

RetrievalExample make_retrieval_example(uint64_t seed, int64_t index, int64_t n, bool query_first,
                                        const RetrievalVocab& v) {
  v.check();
  MVL_CHECK(n >= 1 && n <= v.max_n, "retrieval: N must be in [1, max_n = ", v.max_n, "], got ", n);
  MVL_CHECK(index >= 0, "retrieval: negative example index ", index);
  synth::Stream rng(synth::mix64(seed) + 0x7E7219A1C4F5D3B1ull, static_cast<uint64_t>(index));
  // Partial Fisher-Yates over the content indices: n distinct tokens in random order.
  std::vector<int64_t> pool(static_cast<size_t>(v.content));
  for (int64_t k = 0; k < v.content; ++k) pool[static_cast<size_t>(k)] = k;
  RetrievalExample e;
  e.query_first = query_first;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = rng.range(i, v.content - 1);
    std::swap(pool[static_cast<size_t>(i)], pool[static_cast<size_t>(j)]);
    e.tokens.push_back(v.content_id(pool[static_cast<size_t>(i)]));
  }
  e.answer = rng.range(0, n - 1);
  e.query = e.tokens[static_cast<size_t>(e.answer)];
  return e;
}

std::vector<int64_t> retrieval_input_ids(const RetrievalExample& e, const RetrievalVocab& v) {
  std::vector<int64_t> ids;
  ids.reserve(e.tokens.size() + 3);
  if (e.query_first) {
    ids.push_back(e.query);
    ids.push_back(v.sep_id());
    ids.insert(ids.end(), e.tokens.begin(), e.tokens.end());
  } else {
    ids.insert(ids.end(), e.tokens.begin(), e.tokens.end());
    ids.push_back(v.sep_id());
    ids.push_back(e.query);
  }
  ids.push_back(v.answer_id());
  return ids;
}

int64_t retrieval_target_id(const RetrievalExample& e, const RetrievalVocab& v) {
  return v.position_id(e.answer);
}

std::string retrieval_to_json(const RetrievalExample& e) {
  const nlohmann::ordered_json j = {{"tokens", e.tokens},
                                    {"query", e.query},
                                    {"answer", e.answer},
                                    {"n", e.tokens.size()},
                                    {"query_first", e.query_first}};
  return j.dump();
}

RetrievalExample retrieval_from_json(const std::string& line, const RetrievalVocab& v,
                                     const std::string& where) {
  const std::string at = where + ": ";
  json j;
  try {
    j = io::parse_json_bounded(line.begin(), line.end(), 8, at);
  } catch (const json::parse_error& e) {
    MVL_FAIL(at, "invalid JSON at column ", e.byte, ": ", e.what());
  }
  MVL_CHECK(j.is_object(), at,
            "expected a JSON object {\"tokens\", \"query\", \"answer\", \"n\", "
            "\"query_first\"}");
  for (const char* k : {"tokens", "query", "answer", "n", "query_first"})
    MVL_CHECK(j.contains(k), at, "missing \"", k, "\"");
  const json& t = j["tokens"];
  MVL_CHECK(t.is_array(), at, "\"tokens\" must be an array of token ids");
  for (const char* k : {"query", "answer", "n"})
    MVL_CHECK(j[k].is_number_integer(), at, "\"", k, "\" must be an integer, got ", j[k].dump());
  MVL_CHECK(j["query_first"].is_boolean(), at, "\"query_first\" must be true or false, got ",
            j["query_first"].dump());
  RetrievalExample e;
  const int64_t n = j["n"].get<int64_t>();
  MVL_CHECK(n >= 1 && n <= v.max_n, at, "\"n\" = ", n, " is outside [1, ", v.max_n, "]");
  MVL_CHECK(static_cast<int64_t>(t.size()) == n, at, "\"n\" = ", n, " but \"tokens\" has ",
            t.size(), " entries");
  std::unordered_set<int64_t> seen;
  for (size_t k = 0; k < t.size(); ++k) {
    MVL_CHECK(t[k].is_number_integer(), at, "\"tokens\"[", k, "] must be an integer id, got ",
              t[k].dump());
    const int64_t id = t[k].get<int64_t>();
    MVL_CHECK(v.is_content(id), at, "\"tokens\"[", k, "] = ", id, " is not a content token id (",
              3 + v.max_n, " .. ", v.vocab_size() - 1, ")");
    MVL_CHECK(seen.insert(id).second, at, "\"tokens\"[", k, "] = ", id,
              " repeats an earlier token (the tokens must be unique)");
    e.tokens.push_back(id);
  }
  e.query = j["query"].get<int64_t>();
  e.answer = j["answer"].get<int64_t>();
  e.query_first = j["query_first"].get<bool>();
  MVL_CHECK(e.answer >= 0 && e.answer < n, at, "\"answer\" = ", e.answer, " is outside [0, ", n,
            ")");
  MVL_CHECK(e.tokens[static_cast<size_t>(e.answer)] == e.query, at, "\"query\" = ", e.query,
            " but tokens[", e.answer, "] = ", e.tokens[static_cast<size_t>(e.answer)]);
  return e;
}

std::vector<RetrievalExample> read_retrieval_jsonl(const std::filesystem::path& path,
                                                   const RetrievalVocab& v) {
  v.check();
  std::istringstream f(io::read_file(path, io::kMaxTextBytes, "dataset"));
  std::vector<RetrievalExample> out;
  std::string line;
  int64_t no = 0;
  while (std::getline(f, line)) {
    ++no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    out.push_back(retrieval_from_json(line, v, path.string() + ":" + std::to_string(no)));
  }
  MVL_CHECK(!f.bad(), path.string(), ": read error");
  return out;
}

void write_retrieval_jsonl(const std::filesystem::path& path,
                           const std::vector<RetrievalExample>& examples) {
  io::AtomicFileWriter w(path);
  std::string buf;
  for (const auto& e : examples) {
    buf += retrieval_to_json(e);
    buf += '\n';
    if (buf.size() > (1 << 20)) {
      w.write(buf.data(), buf.size());
      buf.clear();
    }
  }
  w.write(buf.data(), buf.size());
  w.commit();
}

}  // namespace mambavl::data
