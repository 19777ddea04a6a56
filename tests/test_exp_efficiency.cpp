// `experiment efficiency` at micro scale: the results folder's structure (scaling rows for every
// variant x metric x length x repeat, finite fits, metrics, plots, CSV files). No timing
// assertions: only that every measurement is a finite, non-negative number.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "experiments/experiment.h"

using namespace mambavl::experiments;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("mambavl_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  EXPECT_TRUE(f.good()) << p;
  return nlohmann::json::parse(f);
}

const std::vector<std::string> kVariants = {"mamba", "pythia", "hybrid"};
const std::vector<std::string> kMetrics = {"prefill_ms", "prefill_peak_mb", "decode_ms_per_token"};
const std::vector<int64_t> kMicroLengths = {32, 64, 128, 256};

}  // namespace

TEST(ExperimentEfficiency, MicroScaleWritesCompleteResults) {
  ExperimentOptions opt;
  opt.out = temp_dir("efficiency");
  opt.scale = "micro";
  opt.seeds = 2;
  opt.threads = 1;
  opt.progress = false;
  prepare_output("efficiency", opt);
  run_efficiency(opt);

  const nlohmann::json r = read_json(opt.out / "results.json");
  EXPECT_EQ(r.at("experiment"), "efficiency");
  EXPECT_EQ(r.at("scale"), "micro");
  const auto& tables = r.at("tables");

  // scaling: every variant x metric x length x repeat exactly once, finite and >= 0.
  std::map<std::tuple<std::string, std::string, int64_t, int>, int> seen;
  for (const auto& row : tables.at("scaling")) {
    const double v = row.at("value").get<double>();
    EXPECT_TRUE(std::isfinite(v) && v >= 0) << row.dump();
    ++seen[{row.at("variant").get<std::string>(), row.at("metric").get<std::string>(),
            row.at("x").get<int64_t>(), row.at("seed").get<int>()}];
  }
  EXPECT_EQ(seen.size(), kVariants.size() * kMetrics.size() * kMicroLengths.size() * 2);
  for (const auto& v : kVariants)
    for (const auto& m : kMetrics)
      for (int64_t L : kMicroLengths)
        for (int s = 0; s < 2; ++s)
          EXPECT_EQ((seen[{v, m, L, s}]), 1) << v << " " << m << " " << L << " seed " << s;
  // Prefill and decode take some time; the prefill at the longest length is not free.
  for (const auto& row : tables.at("scaling"))
    if (row.at("metric") != "prefill_peak_mb") EXPECT_GT(row.at("value").get<double>(), 0);

  // fits: both ranges for every variant x metric, finite exponents, fitted over the lengths.
  std::set<std::tuple<std::string, std::string, std::string>> fits;
  for (const auto& f : tables.at("fits")) {
    fits.insert({f.at("variant").get<std::string>(), f.at("metric").get<std::string>(),
                 f.at("range").get<std::string>()});
    EXPECT_TRUE(std::isfinite(f.at("exponent").get<double>())) << f.dump();
    EXPECT_TRUE(std::isfinite(f.at("coefficient").get<double>())) << f.dump();
    EXPECT_GE(f.at("x_min").get<double>(), 32);
    EXPECT_LE(f.at("x_max").get<double>(), 256);
  }
  for (const auto& v : kVariants) {
    for (const auto& m : {"prefill_ms", "decode_ms_per_token"}) {
      EXPECT_TRUE(fits.count({v, m, "all"})) << v << " " << m;
      EXPECT_TRUE(fits.count({v, m, "long"})) << v << " " << m;
    }
  }

  // metrics: per variant and repeat; params once per variant, about equal across variants.
  std::map<std::pair<std::string, std::string>, int> metric_count;
  std::map<std::string, double> body_params;
  for (const auto& row : tables.at("metrics")) {
    const auto v = row.at("variant").get<std::string>(), m = row.at("metric").get<std::string>();
    ++metric_count[{v, m}];
    EXPECT_TRUE(std::isfinite(row.at("value").get<double>())) << row.dump();
    if (m == "params_non_embedding") body_params[v] = row.at("value").get<double>();
  }
  for (const auto& v : kVariants) {
    for (const auto& m : {"prefill_exponent", "decode_exponent", "decode_growth",
                          "prefill_growth_last_doubling", "prefill_exponent_long"})
      EXPECT_EQ((metric_count[{v, m}]), 2) << v << " " << m;
    EXPECT_EQ((metric_count[{v, "params"}]), 1) << v;
    ASSERT_GT(body_params[v], 0) << v;
  }
  for (const auto& v : {"pythia", "hybrid"})
    EXPECT_NEAR(body_params[v] / body_params["mamba"], 1.0, 0.25) << v;
  EXPECT_FALSE(tables.at("summary").empty());

  // plots: three scaling plots with one fit per variant, a bars plot of decode_growth.
  int scaling_plots = 0;
  bool growth_bars = false;
  for (const auto& p : r.at("plots")) {
    if (p.at("type") == "scaling") {
      ++scaling_plots;
      EXPECT_EQ(p.at("data").size(), kVariants.size() * kMicroLengths.size()) << p.at("title");
      EXPECT_EQ(p.at("fits").size(), kVariants.size()) << p.at("title");
      for (const auto& f : p.at("fits")) EXPECT_TRUE(std::isfinite(f.at("exponent").get<double>()));
    }
    if (p.at("type") == "bars" && p.at("data").size() == kVariants.size() &&
        p.at("title").get<std::string>().find("growth") != std::string::npos)
      growth_bars = true;
  }
  EXPECT_EQ(scaling_plots, 3);
  EXPECT_TRUE(growth_bars);
  EXPECT_FALSE(r.at("notes").empty());

  for (const char* f : {"scaling.csv", "fits.csv", "metrics.csv", "summary.csv", "meta.json"})
    EXPECT_TRUE(fs::exists(opt.out / f)) << f;
  for (const auto& v : kVariants) EXPECT_TRUE(fs::exists(opt.out / "configs" / (v + ".json"))) << v;
  fs::remove_all(opt.out);
}

TEST(ExperimentEfficiency, DryRunMeasuresNothing) {
  ExperimentOptions opt;
  opt.out = temp_dir("efficiency_dry");
  opt.scale = "micro";
  opt.dry_run = true;
  opt.progress = false;
  prepare_output("efficiency", opt);
  run_efficiency(opt);
  const nlohmann::json r = read_json(opt.out / "results.json");
  EXPECT_EQ(r.at("experiment"), "efficiency");
  EXPECT_FALSE(r.at("tables").contains("scaling"));
  for (const auto& v : kVariants) {
    const nlohmann::json c = read_json(opt.out / "configs" / (v + ".json"));
    EXPECT_EQ(c.at("variant"), v);
    EXPECT_TRUE(c.at("lm_config").is_object()) << v;
  }
  fs::remove_all(opt.out);
}
