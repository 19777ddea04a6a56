// `mambavl bench vlm`, `bench train` and `bench lm` end to end on tiny shapes: each prints one
// table row per model with the sequence / token counts the run is defined by; bad options give one
// `error:` line naming the problem and exit code 1. No timing value is asserted (only that the
// timed columns are finite numbers).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.h"
#include "data/vl_sequence.h"
#include "models/presets.h"
#include "models/vlm.h"

using namespace mambavl;

namespace {

using testing_util::CliRun;
CliRun run(const std::string& args) { return testing_util::run_cli(args); }

void expect_error(const CliRun& r, std::initializer_list<std::string> parts) {
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  for (const auto& p : parts)
    EXPECT_NE(r.out.find(p), std::string::npos) << "missing '" << p << "' in: " << r.out;
}

// The whitespace-separated fields of the table row that starts with `name ` (empty: none, or
// more than one such row).
std::vector<std::string> row(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  std::string line;
  std::vector<std::string> found;
  int n = 0;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) != 0) continue;
    ++n;
    std::istringstream f(line);
    found.clear();
    for (std::string w; f >> w;) found.push_back(w);
  }
  return n == 1 ? found : std::vector<std::string>{};
}

// A table cell as a number ("45%" -> 45); NaN when it is not one.
double num(const std::string& cell) {
  std::string s = cell;
  if (!s.empty() && s.back() == '%') s.pop_back();
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    return used == s.size() ? v : NAN;
  } catch (...) {
    return NAN;
  }
}

// Image block of the tiny presets (grid from the model itself) + the 24-token VQA prompt.
int64_t expected_tiny_sequence(const std::string& preset) {
  models::VLM vlm(models::vlm_preset(preset, 1104), 0);
  data::ImageBlockFormat f;
  f.style = vlm.config().image_block;
  f.grid_h = vlm.grid()[0];
  f.grid_w = vlm.grid()[1];
  f.prefix = vlm.image_tokens() - f.grid_h * f.grid_w;
  return f.length() + 24;
}

TEST(CliBenchVlm, SmallPairPrintsOneRowPerModel) {
  const CliRun r = run("bench vlm --small --decode-tokens 2 --threads 1 --bound-repeats 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("read bandwidth"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fp32 GEMM"), std::string::npos) << r.out;
  for (const std::string name : {"mamba-vl-tiny", "pythia-vl-tiny"}) {
    const auto f = row(r.out, name);
    // model params image img-tokens seq enc conn prefill 1st %GEMM dec-t/s bound %BW peak
    ASSERT_EQ(f.size(), 14u) << name << " row missing or malformed in:\n" << r.out;
    models::VLM vlm(models::vlm_preset(name, 1104), 0);
    EXPECT_NEAR(num(f[1]), static_cast<double>(vlm.num_parameters()) / 1e6, 0.051) << r.out;
    EXPECT_EQ(num(f[2]), static_cast<double>(vlm.preprocess().size)) << r.out;
    EXPECT_EQ(num(f[3]), static_cast<double>(vlm.image_tokens())) << r.out;
    EXPECT_EQ(num(f[4]), static_cast<double>(expected_tiny_sequence(name))) << r.out;
    for (size_t i = 5; i < f.size(); ++i)
      EXPECT_TRUE(std::isfinite(num(f[i]))) << name << " column " << i << ": " << f[i];
  }
}

TEST(CliBenchVlm, BadPairsAreErrors) {
  expect_error(run("bench vlm --pairs mamba-vl-tiny"), {"--pairs", "is not A:B"});
  expect_error(run("bench vlm --pairs mamba-vl-tiny:no-such-vlm --vocab 1104"),
               {"unknown VLM preset 'no-such-vlm'", "pythia-vl-1b"});
}

TEST(CliBenchTrain, TinyModelsPrintTokensPerStep) {
  const CliRun r =
      run("bench train --models mamba-tiny,pythia-tiny,mamba-vl-tiny --steps 1 --batch 2 --seq 16 "
          "--threads 1 --bound-repeats 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("6PT"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("note:"), std::string::npos)
      << "the recount of the VLM's supervised tokens disagreed with the trainer:\n"
      << r.out;
  for (const std::string name : {"mamba-tiny", "pythia-tiny", "mamba-vl-tiny"}) {
    const auto f = row(r.out, name);
    // model params tok/step s/step tok/s GFLOP/s %GEMM loss
    ASSERT_EQ(f.size(), 8u) << name << " row missing or malformed in:\n" << r.out;
    if (name != "mamba-vl-tiny") EXPECT_EQ(num(f[2]), 2.0 * 16) << r.out;  // B x L
    EXPECT_GT(num(f[2]), 0) << r.out;
    for (size_t i = 3; i < 7; ++i)
      EXPECT_TRUE(std::isfinite(num(f[i]))) << name << " column " << i << ": " << f[i];
  }
}

TEST(CliBenchTrain, UnknownModelIsAnError) {
  expect_error(run("bench train --models mamba-tiny,no-such-model --steps 1"),
               {"--models", "unknown model 'no-such-model'", "vlm-tiny"});
}

}  // namespace

// `bench lm`: the decode bound counts the cache a step reads beside the weights. The "cache MB"
// column is the mean over the timed steps of the K/V written so far (attention) or the conv and
// SSM states (Mamba), for all rows of the batch.
TEST(CliBenchLm, DecodeBoundCountsTheCacheRead) {
  const CliRun r =
      run("bench lm --models pythia-tiny,mamba-tiny --contexts 512 --batches 1,2 --steps 4 "
          "--prefill-repeats 1 --bandwidth 10 --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  // The rows of `name` at context 512: batch -> cells.
  auto rows = [&](const std::string& name) {
    std::map<int, std::vector<std::string>> found;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::vector<std::string> cells;
      for (std::string w; f >> w;) cells.push_back(w);
      if (cells.size() == 11 && cells[0] == name && cells[1] == "512")
        found[static_cast<int>(num(cells[2]))] = cells;
    }
    return found;
  };
  auto pythia = models::make_preset("pythia-tiny", 0);
  // K and V of every layer, fp32, over positions 516 .. 520 (4 untimed steps after the prefill of
  // 512, then the 4 timed ones): the mean is 518 positions.
  const double kv_mb = 2.0 * pythia->num_layers() * pythia->hidden_size() * 4 * 518 / 1e6;
  // Mamba: conv state [d_inner, d_conv] and SSM state [d_inner, d_state] per layer, fp32.
  auto mamba = models::make_preset("mamba-tiny", 0);
  const int64_t d_inner = 2 * mamba->hidden_size();
  const double state_mb = mamba->num_layers() * d_inner * (4 + 16) * 4.0 / 1e6;
  for (auto [name, mb] : {std::pair{"pythia-tiny", kv_mb}, {"mamba-tiny", state_mb}}) {
    const auto found = rows(name);
    ASSERT_EQ(found.size(), 2u) << name << ":\n" << r.out;
    for (const auto& [batch, cells] : found) {
      EXPECT_NEAR(num(cells[9]), batch * mb, 0.006) << name << " batch " << batch << ":\n" << r.out;
      EXPECT_GT(num(cells[5]), 0) << "GEMM GF/s of " << name << ":\n" << r.out;
      EXPECT_TRUE(std::isfinite(num(cells[4])) && std::isfinite(num(cells[7]))) << r.out;
    }
  }
}

// `bench lm`: the prefill bound counts attention's q.k and p.v products beside the weights' FLOPs:
// 4 * heads * head_dim FLOPs per key, (context + 1) / 2 keys per query on average (causal).
TEST(CliBenchLm, PrefillBoundCountsAttentionProducts) {
  const CliRun r = run(
      "bench lm --models pythia-tiny,mamba-tiny --contexts 64,200 --steps 1 --prefill-repeats 1 "
      "--bandwidth 10 --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  auto pythia = models::make_preset("pythia-tiny", 0);
  for (const auto& [name, ctx] :
       {std::pair<std::string, int>{"pythia-tiny", 64}, {"pythia-tiny", 200}, {"mamba-tiny", 64}}) {
    // The line "<name> prefill FLOPs per token at context <ctx>: ..." (the name padded).
    const std::string key = "prefill FLOPs per token at context " + std::to_string(ctx) + ": ";
    std::string line;
    std::istringstream in(r.out);
    for (std::string l; std::getline(in, l);)
      if (l.rfind(name + " ", 0) == 0 && l.find(key) != std::string::npos) line = l;
    ASSERT_FALSE(line.empty()) << name << " " << key << "\n" << r.out;
    double total = 0, weights = 0, attention = 0;
    ASSERT_EQ(std::sscanf(line.c_str() + line.find(key) + key.size(),
                          "%lf M (weights %lf M + attention products %lf M)", &total, &weights,
                          &attention),
              3)
        << r.out;
    const double want = name == "mamba-tiny"
                            ? 0.0
                            : 2.0 * pythia->num_layers() * pythia->hidden_size() * (ctx + 1) / 1e6;
    EXPECT_NEAR(attention, want, 1e-3) << key;
    EXPECT_NEAR(total, weights + attention, 2e-3) << key;
    EXPECT_GT(weights, 0) << key;
  }
}

// `bench attention`: one row per length with both paths timed and their results compared.
TEST(CliBenchAttention, ComparesTheFusedKernelWithSdpa) {
  for (const std::string mode : {"", " --full"}) {
    const CliRun r =
        run("bench attention --lens 40,70 --repeats 1 --heads 2 --head-dim 16 --threads 1" + mode);
    ASSERT_EQ(r.code, 0) << r.out;
    int rows = 0;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) {
      std::istringstream f(line);
      std::vector<std::string> cells;
      for (std::string w; f >> w;) cells.push_back(w);
      if (cells.size() != 9 || (cells[0] != "40" && cells[0] != "70")) continue;
      ++rows;
      EXPECT_GT(num(cells[1]), 0) << line;  // fused ms
      EXPECT_GT(num(cells[4]), 0) << line;  // SDPA ms
      EXPECT_LT(num(cells[8]), 1e-4) << "the two paths disagree: " << line;
    }
    EXPECT_EQ(rows, 2) << r.out;
  }
  const CliRun bad = run("bench attention --head-dim 24");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("--head-dim must be a positive multiple of 16"), std::string::npos)
      << bad.out;
}
