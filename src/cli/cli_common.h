// Options and helpers shared by the CLI subcommands.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "models/lm.h"

namespace mambavl::cli {

struct RuntimeOptions {
  int threads = 0;            // 0 = LibTorch's default (all cores)
  std::string dtype = "f32";  // f32 | bf16 | int8 (language models)
  std::string kernels = "auto";
};

// Option validators with short messages ("--top-k: must be >= 0, got -3"); CLI11's own
// NonNegativeNumber / PositiveNumber print a 309-digit upper bound. They check the text before
// CLI11 converts it to the option's type (which then reports overflow of that type).
extern const CLI::Validator NonNegative;
extern const CLI::Validator Positive;
// Integer range [lo, hi] with the bounds in the message.
CLI::Validator IntRange(int64_t lo, int64_t hi);

// Upper bound of --threads: more threads than this only thrash (and creating 100000 OpenMP
// threads takes minutes).
inline constexpr int kMaxThreads = 1024;
// Adds `--threads N` (0 = all cores, at most kMaxThreads) to a subcommand.
CLI::Option* add_threads_option(CLI::App& app, int& threads,
                                const std::string& help = "Intra-op threads (default: all cores)");

// Adds --threads, --dtype, --kernels to a subcommand; `int8` also offers --dtype int8 (language
// models: CausalLM::quantize_int8 after loading).
void add_runtime_options(CLI::App& app, RuntimeOptions& o, bool int8 = false);
// Applies --threads / --kernels (call at the start of a subcommand's callback).
void apply_runtime_options(const RuntimeOptions& o);
// Loads a model folder and casts it to --dtype (int8: quantised, unless the folder already is).
std::unique_ptr<models::CausalLM> load_model(const std::string& dir, const RuntimeOptions& o);
// Prints generated text to stdout as it is produced. Bytes of a character split across tokens
// are held back until the character is complete (the decoder shows them as U+FFFD until then).
class TextStreamer {
 public:
  explicit TextStreamer(const io::Tokenizer& tok) : tok_(tok) {}
  void push(int64_t id);
  void finish();

 private:
  void flush_text(const std::string& text);
  const io::Tokenizer& tok_;
  std::vector<int64_t> ids_;
  size_t printed_ = 0;
};

// "1,2, 3" -> {1, 2, 3}; mambavl::Error on anything else.
std::vector<int64_t> parse_ids(const std::string& s);

}  // namespace mambavl::cli
