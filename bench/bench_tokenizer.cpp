#include "bench_tokenizer.h"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/tokenizer.h"

namespace mambavl::bench {

namespace {

struct TokenizerBenchOptions {
  std::string tokenizer = (std::filesystem::path(MAMBAVL_SOURCE_DIR) / ".." / "shared" /
                           "tokenizers" / "gpt-neox-20b" / "tokenizer.json")
                              .lexically_normal()
                              .string();
  std::string text_file;
  double min_seconds = 2.0;
};

// Deterministic English-like text: common words, capitals, punctuation, numbers, paragraphs.
std::string generated_text(size_t bytes) {
  static const char* words[] = {
      "the",       "of",      "and",        "to",         "in",         "a",         "is",
      "that",      "for",     "it",         "as",         "was",        "with",      "be",
      "by",        "on",      "not",        "he",         "this",       "are",       "or",
      "his",       "from",    "at",         "which",      "but",        "have",      "an",
      "had",       "they",    "you",        "were",       "their",      "one",       "all",
      "we",        "can",     "her",        "has",        "there",      "been",      "if",
      "more",      "when",    "will",       "would",      "who",        "so",        "no",
      "model",     "state",   "space",      "sequence",   "attention",  "selective", "language",
      "vision",    "image",   "training",   "inference",  "parameters", "hardware",  "efficient",
      "recurrent", "scan",    "memory",     "throughput", "benchmark",  "tokenizer", "encoding",
      "people",    "history", "government", "important",  "question",   "different", "between",
      "however",   "because", "through",    "children",   "understand", "remember",  "everything"};
  const size_t nw = sizeof(words) / sizeof(words[0]);
  std::mt19937 rng(42);
  std::string s;
  s.reserve(bytes + 64);
  bool cap = true;
  while (s.size() < bytes) {
    size_t sentence = 5 + rng() % 20;
    for (size_t i = 0; i < sentence; ++i) {
      std::string w = words[rng() % nw];
      if (cap) w[0] = static_cast<char>(w[0] - 'a' + 'A');
      cap = false;
      if (rng() % 40 == 0) w = std::to_string(rng() % 10000);
      if (rng() % 60 == 0) w += "'s";
      s += w;
      if (i + 1 < sentence) s += rng() % 12 == 0 ? ", " : " ";
    }
    s += rng() % 8 == 0 ? "?" : ".";
    cap = true;
    s += rng() % 6 == 0 ? "\n\n" : " ";
  }
  return s;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MVL_CHECK(f, "bench tokenizer: cannot open --text-file ", path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void run(const TokenizerBenchOptions& o) {
  auto tok = io::Tokenizer::from_file(o.tokenizer);
  std::string text = o.text_file.empty() ? generated_text(5u << 20) : read_text(o.text_file);
  MVL_CHECK(!text.empty(), "bench tokenizer: the text is empty");
  // Encode line by line (paragraphs), as a data pipeline would; the first pass warms the cache.
  std::vector<std::string_view> parts;
  std::string_view all(text);
  for (size_t pos = 0; pos < all.size();) {
    size_t e = all.find('\n', pos);
    e = e == std::string_view::npos ? all.size() : e + 1;
    parts.push_back(all.substr(pos, e - pos));
    pos = e;
  }
  using clock = std::chrono::steady_clock;
  size_t tokens = 0, passes = 0, bytes = 0;
  double cold = 0;
  auto start = clock::now();
  double elapsed = 0;
  while (elapsed < o.min_seconds || passes < 2) {
    auto t0 = clock::now();
    for (auto p : parts) tokens += tok.encode(p).size();
    double dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (passes == 0) cold = dt;
    bytes += text.size();
    ++passes;
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  }
  std::cout << "tokenizer: " << o.tokenizer << "\n"
            << "text: " << (o.text_file.empty() ? "generated English-like" : o.text_file) << ", "
            << text.size() / 1e6 << " MB, " << tokens / passes << " tokens\n"
            << "first pass (cold cache): " << text.size() / 1e6 / cold << " MB/s\n"
            << "all " << passes << " passes: " << bytes / 1e6 / elapsed << " MB/s, "
            << tokens / elapsed << " tokens/s (one thread)\n";
}

}  // namespace

void add_tokenizer_bench(CLI::App& bench) {
  auto opts = std::make_shared<TokenizerBenchOptions>();
  CLI::App* sub = bench.add_subcommand("tokenizer", "Encoding speed of a tokenizer.json");
  sub->add_option("--tokenizer", opts->tokenizer, "tokenizer.json to load")->capture_default_str();
  sub->add_option("--text-file", opts->text_file,
                  "UTF-8 text to encode (default: ~5 MB of generated English-like text)");
  sub->add_option("--min-seconds", opts->min_seconds, "measure for at least this long")
      ->capture_default_str();
  sub->callback([opts] { run(*opts); });
}

}  // namespace mambavl::bench
