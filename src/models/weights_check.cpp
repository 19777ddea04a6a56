// Config vs safetensors header, before anything is allocated (weights_check.h).
#include "models/weights_check.h"

#include <algorithm>
#include <cstdio>

#include "common/error.h"
#include "common/shape.h"
#include "io/checkpoint.h"

namespace mambavl::models {

void ExpectedWeights::append(const ExpectedWeights& part, const std::string& key_prefix) {
  for (ExpectedTensor t : part.tensors) {
    for (auto& k : t.keys) k = key_prefix + k;
    tensors.push_back(std::move(t));
  }
  for (ExpectedLayers l : part.layers) {
    for (auto& p : l.prefixes) p = key_prefix + p;
    layers.push_back(std::move(l));
  }
  num_parameters += part.num_parameters;
}

namespace {

std::string dims_str(const std::vector<ExpectedDim>& d) {
  std::vector<int64_t> s;
  for (const auto& x : d) s.push_back(x.size);
  return shape_str(s);
}

// 1 + the highest layer index under `prefix` ("p.<digits>." ...) among the sorted `names`.
int64_t layers_under(const std::vector<std::string>& names, const std::string& prefix) {
  int64_t n = 0;
  for (auto it = std::lower_bound(names.begin(), names.end(), prefix);
       it != names.end() && it->compare(0, prefix.size(), prefix) == 0; ++it) {
    int64_t idx = 0;
    size_t i = prefix.size(), digits = 0;
    while (i < it->size() && (*it)[i] >= '0' && (*it)[i] <= '9' && digits < 9)
      idx = idx * 10 + ((*it)[i++] - '0'), ++digits;
    if (digits == 0 || i >= it->size() || (*it)[i] != '.') continue;  // not "<index>."
    n = std::max(n, idx + 1);
  }
  return n;
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

void check_weights_match_config(const ExpectedWeights& w, const io::CheckpointFolder& ckpt,
                                const std::string& config_file) {
  // 1. Shapes of the listed tensors the checkpoint has.
  for (const auto& t : w.tensors) {
    const auto key = std::find_if(t.keys.begin(), t.keys.end(),
                                  [&](const std::string& k) { return ckpt.contains(k); });
    if (key == t.keys.end()) continue;  // load_module names every missing tensor
    const std::vector<int64_t> have = ckpt.shape(*key);
    size_t bad = 0;
    while (bad < t.dims.size() && bad < have.size() && have[bad] == t.dims[bad].size) ++bad;
    if (bad == t.dims.size() && have.size() == t.dims.size()) continue;
    // The first dimension that differs decides which field is named (a rank mismatch: the first
    // dimension set by a field).
    if (bad >= t.dims.size()) bad = 0;
    while (bad < t.dims.size() && t.dims[bad].field.empty()) ++bad;
    const ExpectedDim* d = bad < t.dims.size() ? &t.dims[bad] : nullptr;
    MVL_FAIL(config_file, ": ", d ? d->field : std::string("the config"),
             " does not match the weights (shape mismatch): tensor '", *key, "' in ",
             ckpt.file_of(*key).string(), " has shape ", shape_str(have),
             " but the config implies ", dims_str(t.dims),
             d ? " (dimension " + std::to_string(bad) + " = " +
                     (d->expr.empty() ? d->field : d->expr) + " = " + std::to_string(d->size) + ")"
               : std::string());
  }
  // 2. Layer counts.
  const std::vector<std::string> names = ckpt.names();  // sorted
  for (const auto& l : w.layers) {
    int64_t have = 0;
    for (const auto& p : l.prefixes) have = std::max(have, layers_under(names, p));
    MVL_CHECK(l.count <= have, config_file, ": ", l.field, " = ", l.count,
              " does not match the weights: ", ckpt.dir().string(), " has ",
              have == 0 ? std::string("no layers") : "layers 0.." + std::to_string(have - 1), " ('",
              l.prefixes.front(), "<i>.*'), so layers ", have, "..", l.count - 1, " are missing");
  }
  // 3. The parameter count against the values the checkpoint holds (each one is backed by at
  // least one byte of the file, so this bounds what building the model allocates).
  double values = 0;
  for (const auto& n : names) {
    double v = 1;
    for (int64_t s : ckpt.shape(n)) v *= static_cast<double>(s);
    values += v;
  }
  MVL_CHECK(w.num_parameters <= 2 * values + double(1 << 20), config_file,
            ": the config describes a model of ", num(w.num_parameters), " parameters but ",
            ckpt.dir().string(), " holds only ", num(values),
            " values: the sizes in the config do not match the weights");
}

}  // namespace mambavl::models
