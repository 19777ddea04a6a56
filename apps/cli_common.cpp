#include "cli_common.h"

#include <ATen/Parallel.h>

#include <iostream>

#include "common/error.h"
#include "kernels/backend.h"
#include "models/registry.h"

namespace mambavl::cli {

void add_runtime_options(CLI::App& app, RuntimeOptions& o) {
  app.add_option("--threads", o.threads, "Intra-op threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
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
  auto m = models::load_causal_lm(dir);
  if (o.dtype == "bf16") m->to_dtype(at::kBFloat16);
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
    if (s[j] == '-') ++j;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
    MVL_CHECK(j > i && (j == s.size() || s[j] == ',' || s[j] == ' '),
              "--ids: expected comma-separated integers like 1,2,3; cannot read '", s.substr(i),
              "'");
    ids.push_back(std::stoll(s.substr(i, j - i)));
    i = j;
  }
  MVL_CHECK(!ids.empty(), "--ids: no token ids given");
  return ids;
}

}  // namespace mambavl::cli
