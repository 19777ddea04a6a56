#include "cli/cli_common.h"

#include <ATen/Parallel.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "common/error.h"
#include "common/parse.h"
#include "kernels/backend.h"
#include "models/registry.h"

namespace mambavl::cli {

namespace {
// The option's text as a number, or an error message (CLI11 prefixes the option's name).
std::string check_number(const std::string& text, double min, bool strict) {
  const char* b = text.c_str();
  char* e = nullptr;
  errno = 0;
  const double v = std::strtod(b, &e);
  const std::string shown = printable(text.substr(0, 40)) + (text.size() > 40 ? "..." : "");
  if (e == b || *e != '\0' || std::isnan(v)) return "'" + shown + "' is not a number";
  if (strict ? !(v > min) : !(v >= min))
    return std::string("must be ") + (strict ? "> " : ">= ") + "0, got " + shown;
  return "";
}
}  // namespace

const CLI::Validator NonNegative(
    [](std::string& s) { return check_number(s, 0, /*strict=*/false); }, "NUMBER >= 0",
    "NONNEGATIVE");
const CLI::Validator Positive([](std::string& s) { return check_number(s, 0, /*strict=*/true); },
                              "NUMBER > 0", "POSITIVE");

CLI::Validator IntRange(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        try {
          parse_int64(s, "value", lo, hi);
        } catch (const Error&) {
          const std::string shown = printable(s.substr(0, 40)) + (s.size() > 40 ? "..." : "");
          return "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi) +
                 ", got " + shown;
        }
        return "";
      },
      "INT in [" + std::to_string(lo) + " - " + std::to_string(hi) + "]", "INTRANGE");
}

CLI::Option* add_threads_option(CLI::App& app, int& threads, const std::string& help) {
  return app.add_option("--threads", threads, help)->check(IntRange(0, kMaxThreads));
}

void add_runtime_options(CLI::App& app, RuntimeOptions& o, bool int8) {
  add_threads_option(app, o.threads);
  if (int8)
    app.add_option("--dtype", o.dtype,
                   "Weights: f32, bf16, or int8 (Mamba / GPT-NeoX: the projections and the head in "
                   "int8 with per-row scales, quantised at load unless the folder is already int8; "
                   "SSM state stays f32)")
        ->check(CLI::IsMember({"f32", "bf16", "int8"}));
  else
    app.add_option("--dtype", o.dtype,
                   "Compute dtype of the weights: f32 or bf16 (SSM state stays f32)")
        ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--kernels", o.kernels, "Kernel backend: auto, fused or reference (for checking)")
      ->check(CLI::IsMember({"auto", "fused", "reference"}));
}

void apply_runtime_options(const RuntimeOptions& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  kernels::set_default_backend(kernels::parse_backend(o.kernels));
}

std::unique_ptr<models::CausalLM> load_model(const std::string& dir, const RuntimeOptions& o) {
  // bf16 loads straight into bf16; f32 (and int8, quantised from f32 tensor by tensor) maps an
  // f32 folder's weights instead of copying them.
  auto m = models::load_causal_lm(dir, o.dtype == "bf16" ? at::kBFloat16 : at::kFloat);
  if (o.dtype == "int8") m->quantize_int8();
  return m;
}

void TextStreamer::push(int64_t id) {
  ids_.push_back(id);
  std::string text = tok_.decode(ids_, /*skip_special_tokens=*/true);
  static const std::string kRepl = "\xEF\xBF\xBD";
  if (text.size() >= kRepl.size() &&
      text.compare(text.size() - kRepl.size(), kRepl.size(), kRepl) == 0)
    return;
  flush_text(text);
}

void TextStreamer::finish() { flush_text(tok_.decode(ids_, /*skip_special_tokens=*/true)); }

void TextStreamer::flush_text(const std::string& text) {
  if (text.size() > printed_ && text.compare(0, printed_, text, 0, printed_) == 0) {
    std::cout << text.substr(printed_) << std::flush;
    printed_ = text.size();
  }
}

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',')) ++i;
    if (i >= s.size()) break;
    size_t j = i;
    while (j < s.size() && s[j] != ',' && s[j] != ' ') ++j;
    // Token ids are non-negative; the model checks them against its vocabulary.
    ids.push_back(parse_int64(std::string_view(s).substr(i, j - i), "--ids", 0));
    i = j;
  }
  MVL_CHECK(!ids.empty(), "--ids: no token ids given");
  return ids;
}

}  // namespace mambavl::cli
