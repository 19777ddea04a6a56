// The VLM experiments (experiments/vlm_ablations.cpp, vlm_recipe.cpp): coarse-fine, task-aware,
// resolution and connectors at micro scale (child runs of the CLI: ExperimentOptions::exe), the
// cache shared between experiments (task-aware reuses coarse-fine's default-order runs and the
// shared encoder), the small scale's chained run files and the paper scale's dry run; the run-file
// keys they rely on (model.overrides, model.init_from / init_parts).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "cli_run.h"
#include "experiments/experiment.h"
#include "experiments/train_run.h"
#include "io/checkpoint.h"
#include "models/vlm.h"
#include "test_util.h"

namespace mambavl {
namespace {

namespace fs = std::filesystem;
using experiments::ExperimentOptions;
using nlohmann::json;

const std::vector<std::string> kMetrics = {"caption_cider_d", "vqa_exact_match",
                                           "grounding_accuracy"};
const std::vector<std::string> kBackbones = {"mamba-vl", "pythia-vl", "hybrid-vl"};

class ExpVlm : public testing_util::TempDirTest {
 protected:
  ExpVlm() : TempDirTest("mvl_exp_vlm_") {}

  ExperimentOptions options(const std::string& sub, const std::string& scale, int seeds) const {
    ExperimentOptions o;
    o.out = dir / sub;
    o.scale = scale;
    o.seeds = seeds;
    o.threads = 2;
    o.jobs = 2;
    o.progress = false;
    o.exe = MAMBAVL_CLI;
    o.command = "test_exp_vlm";
    return o;
  }

  static json run(const std::string& name, const ExperimentOptions& o) {
    experiments::prepare_output(name, o);
    experiments::find_experiment(name).run(o);
    return io::read_json_file(o.out / "results.json");
  }

  // Checks the tables and plots of a finished (not dry) run: every metric for every variant x
  // seed, a summary row per (variant, metric), loss curves per variant, the two plots, a config
  // per run.
  static void check_results(const json& r, const ExperimentOptions& o, const std::string& name,
                            const std::vector<std::string>& variants) {
    EXPECT_EQ(r.at("experiment"), name);
    EXPECT_EQ(r.at("scale"), o.scale);
    const json& t = r.at("tables");
    std::map<std::string, std::set<std::pair<std::string, int>>> seen;  // metric -> (variant, seed)
    for (const auto& m : t.at("metrics")) {
      const double v = m.at("value");
      EXPECT_GE(v, 0.0) << m.dump();
      if (m.at("metric") != "caption_cider_d") EXPECT_LE(v, 1.0) << m.dump();
      seen[m.at("metric")].insert({m.at("variant"), m.at("seed").get<int>()});
    }
    std::set<std::pair<std::string, int>> want;
    for (const auto& v : variants)
      for (int s = 0; s < o.seeds; ++s) want.insert({v, s});
    for (const auto& metric : kMetrics) EXPECT_EQ(seen[metric], want) << metric;
    EXPECT_EQ(t.at("metrics").size(), 3 * want.size());
    EXPECT_EQ(t.at("summary").size(), 3 * variants.size());
    for (const auto& s : t.at("summary")) EXPECT_EQ(s.at("n"), o.seeds) << s.dump();

    std::set<std::string> curve_variants;
    for (const auto& c : t.at("curves")) {
      EXPECT_EQ(c.at("metric"), "loss");
      curve_variants.insert(c.at("variant"));
    }
    EXPECT_EQ(curve_variants, std::set<std::string>(variants.begin(), variants.end()));

    const json& plots = r.at("plots");
    ASSERT_EQ(plots.size(), 2u);
    EXPECT_EQ(plots[0].at("type"), "bars");
    EXPECT_EQ(plots[0].at("data").size(), 3 * variants.size());
    EXPECT_EQ(plots[1].at("type"), "lines");
    std::set<std::string> series;
    for (const auto& p : plots[1].at("data")) series.insert(p.at("series"));
    EXPECT_EQ(series, std::set<std::string>(variants.begin(), variants.end()));

    // Every run's config is in configs/ and its log in runs/.
    for (const auto& run : r.at("runs")) {
      const std::string n = run.at("name");
      EXPECT_TRUE(fs::exists(o.out / "configs" / (n + ".json"))) << n;
      EXPECT_TRUE(fs::exists(o.out / "runs" / n / "train_log.jsonl")) << n;
    }
    EXPECT_TRUE(fs::exists(o.out / "metrics.csv"));
    EXPECT_TRUE(fs::exists(o.out / "meta.json"));

    // Image-blind references (priors from the training data) on the same held-out scenes.
    std::set<std::string> baselines;
    for (const auto& b : t.at("baselines")) {
      baselines.insert(b.at("metric"));
      EXPECT_GE(b.at("value").get<double>(), 0.0);
    }
    EXPECT_EQ(baselines, std::set<std::string>(kMetrics.begin(), kMetrics.end()));
  }

  static json config(const ExperimentOptions& o, const std::string& run) {
    return io::read_json_file(o.out / "configs" / (run + ".json"));
  }
};

TEST_F(ExpVlm, CoarseFineThenTaskAwareReusesTheDefaultOrderRuns) {
  ExperimentOptions cf = options("coarse-fine", "micro", 1);
  cf.cache = dir / "cache";
  const json r = run("coarse-fine", cf);
  check_results(r, cf, "coarse-fine", kBackbones);
  EXPECT_EQ(r.at("cached_runs"), 0);

  // One shared encoder (phase 0) + the three backbones, trained identically: same data, steps,
  // trainer, evaluation; the encoder frozen and copied from the shared run.
  json data0, train0, eval0;
  std::string encoder;
  for (const auto& run : r.at("runs")) {
    const json c = config(cf, run.at("name"));
    if (run.at("phase") == 0) {
      encoder = run.at("name");
      EXPECT_EQ(c.at("data").at("tasks"), json({"caption"}));
      continue;
    }
    EXPECT_EQ(c.at("model").at("init_from"), encoder + "/final");
    EXPECT_EQ(c.at("model").at("preset"), run.at("variant").get<std::string>() + "-tiny");
    EXPECT_FALSE(c.at("model").contains("prompt_order"));
    EXPECT_EQ(c.at("train").at("stages").at(0).at("freeze"), json({"vision_tower"}));
    if (data0.is_null()) data0 = c.at("data"), train0 = c.at("train"), eval0 = c.at("eval");
    EXPECT_EQ(c.at("data"), data0);
    EXPECT_EQ(c.at("train"), train0);
    EXPECT_EQ(c.at("eval"), eval0);
  }
  EXPECT_FALSE(encoder.empty());
  EXPECT_EQ(r.at("runs").size(), 4u);

  // task-aware with the same cache: the encoder and the three default-order runs are reused.
  ExperimentOptions ta = options("task-aware", "micro", 1);
  ta.cache = cf.cache;
  const json t = run("task-aware", ta);
  std::vector<std::string> variants;
  for (const auto& b : kBackbones)
    for (const char* order : {"default", "instruction_first", "query_first"})
      variants.push_back(b + "/" + order);
  check_results(t, ta, "task-aware", variants);
  int cached = 0;
  for (const auto& run : t.at("runs")) {
    const std::string v = run.at("variant");
    const bool shared = run.at("phase") == 0 || v.find("/default") != std::string::npos;
    EXPECT_EQ(run.at("cached").get<bool>(), shared) << run.dump();
    cached += shared ? 1 : 0;
    const json c = config(ta, run.at("name"));
    if (v.find("/instruction_first") != std::string::npos)
      EXPECT_EQ(c.at("model").at("prompt_order"), "instruction_first");
  }
  EXPECT_EQ(cached, 4);
  EXPECT_EQ(t.at("cached_runs"), 4);
  // The reused runs report coarse-fine's numbers.
  std::map<std::string, double> cf_vqa, ta_vqa;
  for (const auto& m : r.at("tables").at("metrics"))
    if (m.at("metric") == "vqa_exact_match") cf_vqa[m.at("variant")] = m.at("value");
  for (const auto& m : t.at("tables").at("metrics"))
    if (m.at("metric") == "vqa_exact_match") ta_vqa[m.at("variant")] = m.at("value");
  for (const auto& b : kBackbones) EXPECT_EQ(ta_vqa[b + "/default"], cf_vqa[b]) << b;
}

TEST_F(ExpVlm, ResolutionTwoSeeds) {
  const ExperimentOptions o = options("out", "micro", 2);
  const json r = run("resolution", o);
  std::vector<std::string> variants;
  for (const auto& b : kBackbones)
    for (const char* size : {"16px", "24px"}) variants.push_back(b + "/" + size);
  check_results(r, o, "resolution", variants);
  // Two encoders (one per seed), 12 variant runs; the larger size renders larger scenes and
  // feeds the model larger images, the encoder (and its config) the same.
  EXPECT_EQ(r.at("runs").size(), 14u);
  const json a = config(o, "pythia-vl-16px-s1"), b = config(o, "pythia-vl-24px-s1");
  EXPECT_EQ(a.at("data").at("image_size"), 16);
  EXPECT_EQ(b.at("data").at("image_size"), 24);
  EXPECT_EQ(b.at("model").at("overrides").at("image_size"), 24);
  EXPECT_EQ(a.at("model").at("overrides").at("vision_config"),
            b.at("model").at("overrides").at("vision_config"));
  EXPECT_EQ(a.at("model").at("init_from"), b.at("model").at("init_from"));
  EXPECT_EQ(a.at("model").at("seed"), 1);
  EXPECT_EQ(a.at("train").at("seed"), 1);
}

TEST_F(ExpVlm, Connectors) {
  const ExperimentOptions o = options("out", "micro", 1);
  const json r = run("connectors", o);
  const std::vector<std::string> variants = {"mlp", "vss-mlp/bsm", "vss-mlp/csm", "vss-l2/bsm",
                                             "vss-l2/csm"};
  check_results(r, o, "connectors", variants);
  const json c = config(o, "vss-l2-csm-s0");
  EXPECT_EQ(c.at("model").at("preset"), "mamba-vl-tiny");
  EXPECT_EQ(c.at("model").at("overrides").at("connector_config").at("type"), "vss_l2");
  EXPECT_EQ(c.at("model").at("overrides").at("connector_config").at("scan"), "csm");
  EXPECT_FALSE(
      config(o, "mlp-s0").at("model").at("overrides").at("connector_config").contains("type"));
}

TEST_F(ExpVlm, SmallScaleChainsFourRuns) {
  ExperimentOptions o = options("out", "small", 1);
  o.dry_run = true;
  const json r = run("coarse-fine", o);
  EXPECT_FALSE(r.at("tables").contains("metrics"));
  // Four chained runs per variant (phases 0-3): each starts from the previous one's final model.
  std::map<std::string, std::vector<std::string>> chain;
  for (const auto& run : r.at("runs")) {
    EXPECT_EQ(run.at("phase"), chain[run.at("variant")].size());
    chain[run.at("variant")].push_back(run.at("name"));
  }
  ASSERT_EQ(chain.size(), 3u);
  const auto& h = chain.at("hybrid-vl");
  ASSERT_EQ(h.size(), 4u);
  const json r1 = config(o, h[0]), r4 = config(o, h[3]);
  EXPECT_EQ(r1.at("model").at("preset"), "hybrid-vl-tiny");
  EXPECT_FALSE(r1.at("model").contains("init_from"));
  EXPECT_EQ(r1.at("data").at("tasks"), json({"caption"}));
  EXPECT_EQ(r4.at("model").at("init_from"), h[2] + "/final");
  EXPECT_EQ(r4.at("model").at("init_parts").size(), 3u);
  EXPECT_EQ(r4.at("data").at("seed"), 3);
  EXPECT_FALSE(fs::exists(o.out / "runs" / h[0] / "train_log.jsonl"));
  // task-aware's default-order chain is the same four run files (names and configs), so a
  // shared cache reuses all of it, not only the first run.
  ExperimentOptions t = options("ta", "small", 1);
  t.dry_run = true;
  const json ta = run("task-aware", t);
  std::vector<std::string> def;
  for (const auto& run : ta.at("runs"))
    if (run.at("variant") == "hybrid-vl/default") def.push_back(run.at("name"));
  EXPECT_EQ(def, h);
  for (const auto& n : h) EXPECT_EQ(config(t, n).at("model"), config(o, n).at("model")) << n;
}

TEST_F(ExpVlm, PaperScaleDryRunWritesThePapersPresets) {
  std::map<std::string, std::set<std::string>> want = {
      {"coarse-fine", {"mamba-vl-790m", "pythia-vl-1b"}},
      {"task-aware", {"mamba-vl-790m", "pythia-vl-1b"}},
      {"resolution", {"mamba-vl-790m", "pythia-vl-1b"}},
      {"connectors", {"vl-mamba-2.8b"}}};
  for (const auto& [name, presets] : want) {
    ExperimentOptions o = options(name, "paper", 2);
    o.dry_run = true;
    const json r = run(name, o);
    EXPECT_TRUE(r.at("dry_run").get<bool>());
    EXPECT_FALSE(r.at("tables").contains("metrics")) << name;
    std::set<std::string> got;
    for (const auto& e : fs::directory_iterator(o.out / "configs")) {
      const json c = io::read_json_file(e.path());
      got.insert(c.at("model").at("preset"));
      EXPECT_EQ(c.at("train").at("stages").size(), 2u);
      EXPECT_EQ(c.at("train").at("stages").at(0).at("freeze"),
                json({"vision_tower", "language_model"}));
      EXPECT_FALSE(fs::exists(o.out / "runs" / e.path().stem() / "train_log.jsonl"));
    }
    EXPECT_EQ(got, presets) << name;
    const std::map<std::string, size_t> variants = {
        {"coarse-fine", 3}, {"task-aware", 9}, {"resolution", 6}, {"connectors", 5}};
    EXPECT_EQ(r.at("runs").size(), 2 * variants.at(name)) << name;
  }
  // The hybrid is Mamba-790M with attention layers.
  const json h = io::read_json_file(dir / "coarse-fine" / "configs" / "hybrid-vl-s0.json");
  EXPECT_EQ(h.at("model").at("overrides").at("family"), "hybrid-vl");
  // Training at paper scale on this machine is refused.
  ExperimentOptions o = options("refused", "paper", 1);
  testing_util::expect_error([&] { run("coarse-fine", o); }, {"--dry-run"});
}

TEST_F(ExpVlm, RunFileInitFromAndOverridesErrors) {
  const json base = {{"kind", "vlm"},
                     {"out", (dir / "runs" / "x").string()},
                     {"model", {{"preset", "mamba-vl-tiny"}}},
                     {"data", {{"source", "scenes"}, {"n", 4}}},
                     {"train", {{"stages", {{{"name", "s"}, {"steps", 1}}}}}}};
  json c = base;
  c["model"]["init_from"] = "no-such-run/final";
  testing_util::expect_error([&] { experiments::run_training(c, "r.json", "", 1); },
                             {"r.json", "init_from", "no-such-run"});
  c = base;
  c["model"]["init_parts"] = {"vision_tower"};
  testing_util::expect_error([&] { experiments::run_training(c, "r.json", "", 1); },
                             {"r.json", "init_parts needs model.init_from"});
  c = base;
  c["model"]["overrides"] = {{"connector_config", {{"type", "vss_l3"}}}};
  testing_util::expect_error([&] { experiments::run_training(c, "r.json", "", 1); },
                             {"r.json", "vss_l3"});
  c = base;
  c["model"]["overrides"] = 3;
  testing_util::expect_error([&] { experiments::run_training(c, "r.json", "", 1); },
                             {"r.json", "model.overrides must be a table"});
}

TEST_F(ExpVlm, RunFileInitFromCopiesTheNamedParts) {
  // Run a: a small model (overrides) trained one step; run b: a new model of the same shape with
  // a's vision tower (frozen), written next to a and naming it relatively.
  const json ov = {{"image_size", 16},
                   {"vision_config",
                    {{"hidden_size", 32},
                     {"num_hidden_layers", 1},
                     {"intermediate_size", 64},
                     {"num_attention_heads", 2},
                     {"image_size", 16}}},
                   {"text_config", {{"hidden_size", 32}, {"num_hidden_layers", 1}}},
                   {"connector_config", {{"d_vision", 32}, {"d_lm", 32}}}};
  json a = {
      {"kind", "vlm"},
      {"out", (dir / "runs" / "a").string()},
      {"model", {{"preset", "mamba-vl-tiny"}, {"seed", 1}, {"overrides", ov}}},
      {"data", {{"source", "scenes"}, {"n", 8}, {"image_size", 16}}},
      {"train",
       {{"batch_size", 2}, {"progress", false}, {"stages", {{{"name", "s"}, {"steps", 1}}}}}}};
  const auto ra = experiments::run_training(a, "a.json", "", 1);
  json b = a;
  b["out"] = (dir / "runs" / "b").string();
  b["model"]["seed"] = 2;
  b["model"]["init_from"] = "a/final";
  b["train"]["stages"][0]["freeze"] = json::array({"vision_tower"});
  const auto rb = experiments::run_training(b, "b.json", "", 1);
  auto ma = models::VLM::load(ra.final_model), mb = models::VLM::load(rb.final_model);
  EXPECT_EQ(mb->config().image_size, 16);
  EXPECT_EQ(mb->config().connector.d_lm, 32);
  auto pa = ma->module().named_parameters(true);
  int vision = 0, other_differs = 0;
  for (const auto& p : mb->module().named_parameters(true)) {
    const at::Tensor* q = pa.find(p.key());
    ASSERT_TRUE(q) << p.key();
    if (p.key().rfind("vision_tower.", 0) == 0) {
      EXPECT_TRUE(q->equal(p.value())) << p.key();
      ++vision;
    } else if (!q->equal(p.value())) {
      ++other_differs;  // seed 2's own connector and LM
    }
  }
  EXPECT_GT(vision, 0);
  EXPECT_GT(other_differs, 0);
}

}  // namespace
}  // namespace mambavl
