#include "cli_common.h"

#include <ATen/Parallel.h>

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
