// The mambaout experiment (experiments/mambaout_exp.cpp) at micro scale: four variants x two
// seeds trained by the runner's child processes (this binary is not mambavl: ExperimentOptions::exe
// points at the CLI), the results folder's tables, plots, configs and CSVs; an image folder given
// with --data; a bad --data folder.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "cli_run.h"
#include "data/image_dataset.h"
#include "experiments/experiment.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "test_util.h"

namespace mambavl {
namespace {

namespace fs = std::filesystem;
using experiments::ExperimentOptions;
using nlohmann::json;

const std::vector<std::string> kVariants = {"gated-cnn", "ssm-mixer", "vit-full", "vit-causal"};

class ExpMambaOut : public testing_util::TempDirTest {
 protected:
  ExpMambaOut() : TempDirTest("mvl_exp_mambaout_") {}

  ExperimentOptions options(const std::string& sub, int seeds) const {
    ExperimentOptions o;
    o.out = dir / sub;
    o.scale = "micro";
    o.seeds = seeds;
    o.threads = 1;
    o.jobs = 2;
    o.progress = false;
    o.exe = MAMBAVL_CLI;
    o.command = "test_exp_mambaout";
    return o;
  }

  static void run(const ExperimentOptions& o) {
    experiments::prepare_output("mambaout", o);
    experiments::find_experiment("mambaout").run(o);
  }

  // The classifier config a run trained: the run file's [model] section, or the config.json of
  // the initialised model folder it names with model.path.
  static json model_of(const json& run_file) {
    const json& m = run_file.at("model");
    if (m.contains("path"))
      return io::read_json_file(fs::path(m.at("path").get<std::string>()) / "config.json");
    return m;
  }

  static std::string first_line(const fs::path& f) {
    std::ifstream in(f);
    std::string line;
    std::getline(in, line);
    return line;
  }

  // root/<class>/*.png: `per_class` synthetic images of each of `classes` classes.
  fs::path make_folder(const std::string& name, int64_t classes, int64_t per_class) const {
    data::SyntheticDataset ds(classes * per_class, classes, 32, 7);
    const fs::path root = dir / name;
    for (int64_t i = 0; i < ds.size(); ++i) {
      const fs::path cdir = root / ds.classes()[ds.label(i)];
      fs::create_directories(cdir);
      io::save_png(cdir / ("img" + std::to_string(i) + ".png"), ds.image(i));
    }
    return root;
  }
};

TEST_F(ExpMambaOut, MicroScaleTwoSeeds) {
  const ExperimentOptions o = options("out", 2);
  run(o);
  const json r = io::read_json_file(o.out / "results.json");
  EXPECT_EQ(r.at("experiment"), "mambaout");
  EXPECT_EQ(r.at("scale"), "micro");
  EXPECT_EQ(r.at("seeds"), 2);
  const json& t = r.at("tables");

  // metrics: val_top1 / val_top5 / val_loss for every (variant, seed).
  std::map<std::string, std::set<int>> seen;
  std::map<std::string, int> per_metric;
  for (const auto& m : t.at("metrics")) {
    const std::string metric = m.at("metric"), variant = m.at("variant");
    const double v = m.at("value");
    ++per_metric[metric];
    if (metric == "val_top1") {
      seen[variant].insert(m.at("seed").get<int>());
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
    if (metric == "val_loss") EXPECT_TRUE(std::isfinite(v) && v > 0) << m.dump();
  }
  for (const auto& v : kVariants) EXPECT_EQ(seen[v], (std::set<int>{0, 1})) << v;
  EXPECT_EQ(seen.size(), 4u);
  EXPECT_EQ(per_metric["val_top1"], 8);
  EXPECT_EQ(per_metric["val_loss"], 8);

  // summary: one row per (variant, metric) over n = 2 seeds.
  int summary_top1 = 0;
  for (const auto& s : t.at("summary")) {
    EXPECT_EQ(s.at("n"), 2) << s.dump();
    if (s.at("metric") == "val_top1") ++summary_top1;
  }
  EXPECT_EQ(summary_top1, 4);

  // curves: several held-out evaluations and logged losses per run.
  std::map<std::string, int> val_points, loss_points;
  for (const auto& c : t.at("curves")) {
    const std::string key =
        c.at("variant").get<std::string>() + "/" + std::to_string(c.at("seed").get<int>());
    if (c.at("metric") == "val_top1") ++val_points[key];
    if (c.at("metric") == "train_loss") ++loss_points[key];
  }
  EXPECT_EQ(val_points.size(), 8u);
  for (const auto& [k, n] : val_points) EXPECT_GE(n, 2) << k;
  EXPECT_EQ(loss_points.size(), 8u);

  // models: one row per variant; the MambaOut pair shares its shape, the SSM adds parameters.
  std::map<std::string, int64_t> params;
  for (const auto& m : t.at("models")) params[m.at("variant")] = m.at("parameters");
  ASSERT_EQ(params.size(), 4u);
  EXPECT_GT(params["ssm-mixer"], params["gated-cnn"]);
  EXPECT_EQ(params["vit-full"], params["vit-causal"]);

  // plots: bars of val_top1 (mean ± std per variant), lines of val_top1 vs step per variant.
  const json& plots = r.at("plots");
  ASSERT_EQ(plots.size(), 2u);
  EXPECT_EQ(plots[0].at("type"), "bars");
  ASSERT_EQ(plots[0].at("data").size(), 4u);
  for (const auto& b : plots[0].at("data")) {
    EXPECT_LE(b.at("lo").get<double>(), b.at("mean").get<double>());
    EXPECT_GE(b.at("hi").get<double>(), b.at("mean").get<double>());
  }
  EXPECT_EQ(plots[1].at("type"), "lines");
  std::set<std::string> series;
  for (const auto& p : plots[1].at("data")) series.insert(p.at("series"));
  EXPECT_EQ(series, (std::set<std::string>(kVariants.begin(), kVariants.end())));

  // configs: one run file per (variant, seed); same data, trainer seed = model seed = seed index.
  json data0;
  for (const auto& v : kVariants)
    for (int seed = 0; seed < 2; ++seed) {
      const fs::path f = o.out / "configs" / (v + "-seed" + std::to_string(seed) + ".json");
      ASSERT_TRUE(fs::exists(f)) << f;
      const json c = io::read_json_file(f);
      EXPECT_EQ(c.at("kind"), "classifier");
      EXPECT_EQ(c.at("train").at("seed"), seed);
      EXPECT_EQ(c.at("model").at("seed"), seed);
      EXPECT_EQ(c.at("data").at("source"), "synthetic");
      if (data0.is_null()) data0 = c.at("data");
      EXPECT_EQ(c.at("data"), data0) << v;
      const json m = model_of(c);
      const std::string arch = m.at("architecture");
      EXPECT_EQ(arch, v == "gated-cnn" ? "mambaout" : v == "ssm-mixer" ? "mambaout_ssm" : "vit");
      if (arch == "vit") EXPECT_EQ(m.at("causal"), v == "vit-causal") << v;
    }

  // CSVs and meta.
  for (const char* csv : {"metrics.csv", "summary.csv", "curves.csv", "models.csv"}) {
    ASSERT_TRUE(fs::exists(o.out / csv)) << csv;
    EXPECT_EQ(first_line(o.out / csv).rfind("variant,", 0), 0u) << csv;
  }
  EXPECT_TRUE(fs::exists(o.out / "meta.json"));
}

TEST_F(ExpMambaOut, ImageFolderData) {
  const fs::path root = make_folder("images", 3, 4);
  ExperimentOptions o = options("out", 1);
  o.data = root;
  run(o);
  const json r = io::read_json_file(o.out / "results.json");
  std::set<std::string> variants;
  for (const auto& m : r.at("tables").at("metrics"))
    if (m.at("metric") == "val_top1") variants.insert(m.at("variant"));
  EXPECT_EQ(variants, (std::set<std::string>(kVariants.begin(), kVariants.end())));
  EXPECT_EQ(r.at("classes").size(), 3u);
  const json c = io::read_json_file(o.out / "configs" / "vit-causal-seed0.json");
  EXPECT_EQ(c.at("data").at("source"), "folder");
  EXPECT_EQ(fs::path(c.at("data").at("path").get<std::string>()), fs::absolute(root));
  EXPECT_EQ(model_of(c).at("num_classes"), 3);
}

TEST_F(ExpMambaOut, BadDataFolderNamesIt) {
  ExperimentOptions o = options("out", 1);
  o.data = dir / "no_such_folder";
  experiments::prepare_output("mambaout", o);
  testing_util::expect_error([&] { experiments::run_mambaout(o); }, {"no_such_folder"});
  // One class folder only: nothing to compare.
  o.data = make_folder("one_class", 1, 4);
  testing_util::expect_error([&] { experiments::run_mambaout(o); },
                             {"one_class", "two class folders"});
  EXPECT_FALSE(fs::exists(o.out / "results.json"));
}

}  // namespace
}  // namespace mambavl
