// The experiments framework (results folder, statistics, fits), the claims' verdict logic on
// saved results, the retrieval experiment at micro scale through the CLI, and the demo command.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "cli_run.h"
#include "experiments/claims.h"
#include "experiments/experiment.h"
#include "experiments/runner.h"
#include "io/checkpoint.h"
#include "test_util.h"

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace mambavl;
using namespace mambavl::experiments;
using mambavl::testing_util::run_cli;

namespace {

class ExperimentsTest : public testing_util::TempDirTest {
 protected:
  ExperimentsTest() : TempDirTest("mvl_exp_") {}
};

std::string read_file(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// A results.json object with summary rows {variant, metric, mean, std, n}.
json saved(const std::string& experiment,
           const std::vector<std::tuple<std::string, std::string, double, double, int>>& rows) {
  json summary = json::array();
  for (const auto& [v, m, mean, sd, n] : rows)
    summary.push_back({{"variant", v}, {"metric", m}, {"mean", mean}, {"std", sd}, {"n", n}});
  return {{"experiment", experiment}, {"tables", {{"summary", summary}}}};
}

const Claim& find(const std::vector<Claim>& cs, const std::string& id) {
  for (const auto& c : cs)
    if (c.id == id) return c;
  throw std::runtime_error("no claim " + id);
}

}  // namespace

TEST(ExperimentStats, SpreadAndPowerFit) {
  const Spread s = spread({1.0, 2.0, 3.0, 6.0});
  EXPECT_DOUBLE_EQ(s.mean, 3.0);
  EXPECT_NEAR(s.std, std::sqrt((4.0 + 1.0 + 0.0 + 9.0) / 3.0), 1e-12);
  EXPECT_EQ(s.min, 1.0);
  EXPECT_EQ(s.max, 6.0);
  EXPECT_EQ(spread({5.0}).std, 0.0);
  // y = 3 x^1.5 exactly, and a noisy quadratic.
  std::vector<double> x = {10, 20, 40, 80}, y, y2;
  for (double v : x) y.push_back(3 * std::pow(v, 1.5)), y2.push_back(v * v * (v == 20 ? 1.1 : 1.0));
  const PowerFit f = fit_power_law(x, y);
  EXPECT_NEAR(f.exponent, 1.5, 1e-9);
  EXPECT_NEAR(f.coefficient, 3.0, 1e-9);
  EXPECT_NEAR(f.r2, 1.0, 1e-12);
  const PowerFit g = fit_power_law(x, y2);
  EXPECT_NEAR(g.exponent, 2.0, 0.1);
  EXPECT_LT(g.r2, 1.0);
  testing_util::expect_error([] { fit_power_law({1}, {1}); }, {"two points"});
  testing_util::expect_error([] { fit_power_law({2, 2}, {1, 3}); }, {"all x are equal"});
}

TEST(ExperimentStats, CsvQuotesAndColumnOrder) {
  json rows = json::array({{{"value", 1.5}, {"variant", "a,b"}, {"zeta", "x\"y"}},
                           {{"variant", "c"}, {"metric", "m"}}});
  const std::string csv = table_csv(rows);
  EXPECT_EQ(csv, "variant,metric,value,zeta\n\"a,b\",,1.5,\"x\"\"y\"\nc,m,,\n");
}

TEST_F(ExperimentsTest, ResultsWriteSummaryAndRefuseForeignFolder) {
  ExperimentOptions o;
  o.out = dir / "r";
  o.seeds = 2;
  prepare_output("retrieval", o);
  // Interrupted before any results: the folder is still this experiment's and may be redone.
  fs::create_directories(o.out / "runs" / "x");
  prepare_output("retrieval", o);
  EXPECT_FALSE(fs::exists(o.out / "runs" / "x"));
  testing_util::expect_error([&] { prepare_output("mambaout", o); }, {"another experiment"});
  Results r("retrieval", "T", "D", o);
  r.add_metric("a", 0, "m", 1.0);
  r.add_metric("a", 1, "m", 3.0);
  r.add_metric("b", 0, "m", 2.0, {{"n", 20}});
  r.add_plot({{"type", "bars"}, {"data", r.bars_data({"m"}, false)}});
  r.write();
  const json j = io::read_json_file(o.out / "results.json");
  EXPECT_EQ(j["experiment"], "retrieval");
  ASSERT_EQ(j["tables"]["summary"].size(), 2u);
  EXPECT_EQ(j["tables"]["summary"][0]["variant"], "a");
  EXPECT_DOUBLE_EQ(j["tables"]["summary"][0]["mean"].get<double>(), 2.0);
  EXPECT_NEAR(j["tables"]["summary"][0]["std"].get<double>(), std::sqrt(2.0), 1e-12);
  EXPECT_EQ(j["tables"]["summary"][0]["n"], 2);
  EXPECT_NEAR(j["plots"][0]["data"][0]["lo"].get<double>(), 2.0 - std::sqrt(2.0), 1e-12);
  EXPECT_TRUE(j["meta"]["commit"].is_string());
  EXPECT_FALSE(j["meta"]["commit"].get<std::string>().empty());
  EXPECT_TRUE(j["meta"]["machine"]["cpu"].is_string());
  EXPECT_TRUE(j["meta"]["software"]["libtorch"].is_string());
  EXPECT_TRUE(fs::exists(o.out / "metrics.csv"));
  EXPECT_TRUE(fs::exists(o.out / "summary.csv"));
  // The same experiment may be rerun into its folder; another may not; nor a foreign folder.
  prepare_output("retrieval", o);
  EXPECT_FALSE(fs::exists(o.out / "results.json"));
  r.write();
  testing_util::expect_error([&] { prepare_output("mambaout", o); },
                             {o.out.string(), "another experiment", "retrieval"});
  ExperimentOptions dry = o;
  dry.dry_run = true;
  testing_util::expect_error([&] { prepare_output("retrieval", dry); }, {"finished results"});
  EXPECT_TRUE(fs::exists(o.out / "results.json"));
  fs::create_directories(dir / "foreign");
  std::ofstream(dir / "foreign" / "notes.txt") << "mine";
  o.out = dir / "foreign";
  testing_util::expect_error([&] { prepare_output("retrieval", o); }, {"not empty"});
  EXPECT_TRUE(fs::exists(dir / "foreign" / "notes.txt"));
  o.out = dir / "x";
  o.scale = "huge";
  testing_util::expect_error([&] { prepare_output("retrieval", o); }, {"--scale", "huge"});
  o.scale = "micro";
  o.seeds = 0;
  testing_util::expect_error([&] { prepare_output("retrieval", o); }, {"--seeds"});
}

TEST(Claims, VerdictsFromSavedResults) {
  // coarse-fine: caption supported (no overlap, right direction), VQA inconclusive (overlap),
  // grounding not supported (Mamba clearly better, the claim says worse).
  std::vector<json> res = {
      saved("coarse-fine", {{"mamba-vl", "caption_cider_d", 0.50, 0.02, 2},
                            {"pythia-vl", "caption_cider_d", 0.40, 0.03, 2},
                            {"mamba-vl", "vqa_exact_match", 0.50, 0.05, 2},
                            {"pythia-vl", "vqa_exact_match", 0.47, 0.05, 2},
                            {"mamba-vl", "grounding_accuracy", 0.30, 0.01, 2},
                            {"pythia-vl", "grounding_accuracy", 0.20, 0.01, 2}}),
      // mambaout: gated-cnn ≈ ssm within the tolerance; ViT causal clearly worse: supported.
      saved("mambaout", {{"gated-cnn", "val_top1", 0.81, 0.005, 3},
                         {"ssm-mixer", "val_top1", 0.80, 0.005, 3},
                         {"vit-causal", "val_top1", 0.5, 0.01, 3},
                         {"vit-full", "val_top1", 0.7, 0.01, 3}}),
      // retrieval: one seed only: inconclusive, whatever the means.
      saved("retrieval", {{"transformer", "learning_speed", 0.9, 0.0, 1},
                          {"mamba", "learning_speed", 0.2, 0.0, 1},
                          {"mamba", "middle_deficit", 0.3, 0.0, 1}}),
      // efficiency: Mamba flat (1.05 ± 0.02), attention grows (1.8 ± 0.1); prefill exponents.
      saved("efficiency", {{"mamba", "decode_growth_fit", 1.05, 0.02, 2},
                           {"pythia", "decode_growth_fit", 1.8, 0.1, 2},
                           {"mamba", "prefill_exponent", 1.0, 0.05, 2},
                           {"pythia", "prefill_exponent", 1.02, 0.05, 2}}),
  };
  const auto cs = evaluate_claims(res);
  EXPECT_EQ(find(cs, "coarse-fine-caption").verdict, "supported");
  EXPECT_NE(find(cs, "coarse-fine-caption").evidence.find("mamba-vl 0.500 ± 0.020"),
            std::string::npos)
      << find(cs, "coarse-fine-caption").evidence;
  EXPECT_EQ(find(cs, "coarse-fine-vqa").verdict, "inconclusive");
  EXPECT_NE(find(cs, "coarse-fine-vqa").evidence.find("overlap"), std::string::npos);
  EXPECT_EQ(find(cs, "coarse-fine-grounding").verdict, "not supported");
  EXPECT_EQ(find(cs, "mambaout-gated-cnn").verdict, "supported");
  EXPECT_EQ(find(cs, "mambaout-vit-causal").verdict, "supported");
  EXPECT_EQ(find(cs, "retrieval-transformer-faster").verdict, "inconclusive");
  EXPECT_NE(find(cs, "retrieval-transformer-faster").evidence.find("one seed"), std::string::npos);
  EXPECT_EQ(find(cs, "retrieval-mamba-middle").verdict, "inconclusive");
  EXPECT_EQ(find(cs, "efficiency-mamba-decode-flat").verdict, "supported");
  EXPECT_EQ(find(cs, "efficiency-attention-decode-grows").verdict, "supported");
  EXPECT_EQ(find(cs, "efficiency-prefill-scaling").verdict, "inconclusive");
  // "≈" with a spread too wide to show equivalence: inconclusive, not supported by default.
  const auto wide = evaluate_claims({saved("efficiency", {{"mamba", "decode_growth_fit", 1.1, 0.37, 2}}),
                                     saved("mambaout", {{"gated-cnn", "val_top1", 0.5, 0.04, 2},
                                                        {"ssm-mixer", "val_top1", 0.51, 0.04, 2}})});
  EXPECT_EQ(find(wide, "efficiency-mamba-decode-flat").verdict, "inconclusive");
  EXPECT_NE(find(wide, "efficiency-mamba-decode-flat").evidence.find("too wide"), std::string::npos);
  EXPECT_EQ(find(wide, "mambaout-gated-cnn").verdict, "inconclusive");
  // Malformed saved results (null = a NaN written by JSON, strings, rows that are no objects):
  // the claims they would need are "not run", never an exception.
  json broken = saved("mambaout", {{"ssm-mixer", "val_top1", 0.5, 0.01, 2}});
  broken["tables"]["summary"].push_back(
      {{"variant", "gated-cnn"}, {"metric", "val_top1"}, {"mean", nullptr}, {"std", 0.0}, {"n", 2}});
  broken["tables"]["summary"].push_back(3);
  const auto bad = evaluate_claims({broken, json{{"experiment", "efficiency"}, {"tables", "x"}},
                                    json{{"experiment", 5}}, json::array(),
                                    json{{"experiment", "retrieval"}, {"dry_run", "yes"}}});
  EXPECT_EQ(find(bad, "mambaout-gated-cnn").verdict, "not run");
  EXPECT_EQ(find(bad, "efficiency-prefill-scaling").verdict, "not run");
  // Experiments not given: "not run"; results lacking the variants: "not run" with a reason.
  EXPECT_EQ(find(cs, "task-aware-helps-mamba").verdict, "not run");
  EXPECT_EQ(find(cs, "connectors-vss-l2").verdict, "not run");
  const auto cs2 = evaluate_claims({saved("connectors", {{"mlp", "vqa_exact_match", 0.5, 0.1, 2}})});
  EXPECT_EQ(find(cs2, "connectors-vss-l2").verdict, "not run");
  EXPECT_NE(find(cs2, "connectors-vss-l2").evidence.find("lack"), std::string::npos);

  // Flip the data: the same claims change verdict.
  const auto flipped = evaluate_claims(
      {saved("mambaout", {{"gated-cnn", "val_top1", 0.9, 0.005, 2},
                          {"ssm-mixer", "val_top1", 0.6, 0.005, 2}}),
       saved("efficiency", {{"mamba", "decode_growth_fit", 1.6, 0.05, 2},
                            {"pythia", "decode_growth_fit", 1.2, 0.05, 2}}),
       saved("retrieval", {{"mamba", "middle_deficit", -0.2, 0.05, 2}})});
  EXPECT_EQ(find(flipped, "mambaout-gated-cnn").verdict, "not supported");
  EXPECT_EQ(find(flipped, "efficiency-mamba-decode-flat").verdict, "not supported");
  EXPECT_EQ(find(flipped, "efficiency-attention-decode-grows").verdict, "not supported");
  EXPECT_EQ(find(flipped, "retrieval-mamba-middle").verdict, "not supported");
  const std::string text = claims_text(cs);
  EXPECT_NE(text.find("not supported"), std::string::npos);
  EXPECT_EQ(claims_json(cs).size(), cs.size());
}

TEST_F(ExperimentsTest, RetrievalMicroThroughCli) {
  const fs::path out = dir / "retrieval";
  auto r = run_cli("experiment retrieval --scale micro --seeds 2 --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  const json j = io::read_json_file(out / "results.json");
  EXPECT_EQ(j["experiment"], "retrieval");
  EXPECT_EQ(j["seeds"], 2);
  // Every variant × seed has the aggregate metrics; the summary has n == 2.
  for (const std::string v : {"transformer", "mamba", "hybrid"}) {
    int found = 0;
    for (const auto& row : j["tables"]["metrics"])
      if (row["variant"] == v && row["metric"] == "learning_speed") {
        ++found;
        EXPECT_GE(row["value"].get<double>(), 0.0);
        EXPECT_LE(row["value"].get<double>(), 1.0);
      }
    EXPECT_EQ(found, 2) << v;
    bool summary = false;
    for (const auto& row : j["tables"]["summary"])
      if (row["variant"] == v && row["metric"] == "final_accuracy") summary = row["n"] == 2;
    EXPECT_TRUE(summary) << v;
  }
  // Heatmap rows: position × step for every run (3 variants × 2 N × 2 seeds, 3 evaluations).
  int64_t cells = 0;
  for (const auto& row : j["tables"]["heatmap"]) {
    EXPECT_LT(row["position"].get<int64_t>(), row["n"].get<int64_t>());
    ++cells;
  }
  EXPECT_EQ(cells, 3 * (8 + 16) * 2 * 3);
  std::set<std::string> types;
  for (const auto& p : j["plots"]) types.insert(p["type"].get<std::string>());
  EXPECT_EQ(types, (std::set<std::string>{"bars", "lines", "heatmap"}));
  EXPECT_TRUE(fs::exists(out / "heatmap.csv"));
  EXPECT_TRUE(fs::exists(out / "curves.csv"));
  // The exact configs: one per run, runnable run files naming the initial model.
  int configs = 0;
  for (const auto& e : fs::directory_iterator(out / "configs")) {
    const json c = io::read_json_file(e.path());
    EXPECT_EQ(c["kind"], "lm");
    EXPECT_TRUE(fs::exists(c["model"]["path"].get<std::string>() + "/config.json"));
    ++configs;
  }
  EXPECT_EQ(configs, 12);
  const json meta = io::read_json_file(out / "meta.json");
  EXPECT_NE(meta["command"].get<std::string>().find("experiment retrieval"), std::string::npos);
  // A rerun into the same folder replaces it; into another experiment's folder is refused.
  auto bad = run_cli("experiment mambaout --scale micro --out " + out.string());
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("another experiment"), std::string::npos) << bad.out;
}

TEST_F(ExperimentsTest, PaperScaleDryRunAndBadOptions) {
  auto r = run_cli("experiment retrieval --scale paper --dry-run --out " + (dir / "p").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(fs::exists(dir / "p" / "runs" / "transformer_N600_after_seed0" / "train_log.jsonl"));
  const json c = io::read_json_file(dir / "p" / "configs" / "transformer_N600_after_seed0.json");
  EXPECT_EQ(c["data"]["lengths"][0], 600);
  const json j = io::read_json_file(dir / "p" / "results.json");
  EXPECT_TRUE(j["dry_run"].get<bool>());
  auto u = run_cli("experiment nosuch --out " + (dir / "u").string());
  EXPECT_EQ(u.code, 1);
  EXPECT_NE(u.out.find("unknown experiment 'nosuch'"), std::string::npos) << u.out;
  EXPECT_NE(u.out.find("coarse-fine"), std::string::npos) << u.out;
  auto d = run_cli("experiment retrieval --device cuda --out " + (dir / "c").string());
  EXPECT_EQ(d.code, 1) << d.out;
  EXPECT_NE(d.out.find("--device cuda"), std::string::npos) << d.out;
}

TEST_F(ExperimentsTest, DemoMicroRunsEveryExperimentAndChecksTheClaims) {
  const fs::path out = dir / "demo";
  auto r = run_cli("demo --scale micro --seeds 2 --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  // One progress line per stage, in order.
  size_t pos = 0;
  int k = 0;
  for (const auto& e : mambavl::experiments::experiments()) {
    const std::string line = "[" + std::to_string(++k) + "/7] " + e.name;
    const size_t at = r.out.find(line, pos);
    ASSERT_NE(at, std::string::npos) << line << "\n" << r.out;
    EXPECT_NE(r.out.find("done in", at), std::string::npos);
    pos = at;
    EXPECT_TRUE(fs::exists(out / e.name / "results.json")) << e.name;
  }
  // The summary: every claim with a verdict; claims.json; the report; demo.json.
  const json claims = io::read_json_file(out / "claims.json");
  ASSERT_EQ(claims.size(), evaluate_claims({}).size());
  for (const auto& c : claims) {
    const std::string v = c["verdict"];
    EXPECT_TRUE(v == "supported" || v == "not supported" || v == "inconclusive") << c.dump();
    EXPECT_NE(r.out.find(c["statement"].get<std::string>()), std::string::npos);
    EXPECT_NE(r.out.find(c["evidence"].get<std::string>()), std::string::npos);
  }
  EXPECT_GT(fs::file_size(out / "report.html"), 100000u);
  const json demo = io::read_json_file(out / "demo.json");
  EXPECT_EQ(demo["status"], "done");
  EXPECT_EQ(demo["stages"].size(), 7u);
  EXPECT_NE(r.out.find("total time"), std::string::npos);
  // The report command on the demo folder (one level down) works too.
  auto rep = run_cli("report " + out.string() + " --out " + (dir / "r.html").string());
  EXPECT_EQ(rep.code, 0) << rep.out;
  EXPECT_TRUE(fs::exists(dir / "r.html"));
  // A folder that is neither empty nor a demo's is refused, and left alone.
  fs::create_directories(dir / "mine");
  std::ofstream(dir / "mine" / "keep.txt") << "x";
  auto bad = run_cli("demo --scale micro --out " + (dir / "mine").string());
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("no demo folder"), std::string::npos) << bad.out;
  EXPECT_TRUE(fs::exists(dir / "mine" / "keep.txt"));
}

TEST_F(ExperimentsTest, RunnerNamesAFailedRunAndItsLog) {
  ExperimentOptions o;
  o.out = dir / "r";
  o.exe = MAMBAVL_CLI;
  o.progress = false;
  o.jobs = 2;
  prepare_output("retrieval", o);
  // A valid tiny run beside one whose run file is wrong (an unknown data source).
  json bad = {{"kind", "lm"},
              {"model", {{"preset", "mamba-tiny"}}},
              {"data", {{"source", "nosuch"}}},
              {"train", {{"stages", json::array({{{"steps", 1}}})}}}};
  json good = {{"kind", "lm"},
               {"model", {{"preset", "mamba-tiny"}}},
               {"data", {{"source", "retrieval"}, {"n", 8}, {"lengths", {4}}, {"max_n", 8},
                         {"content", 16}}},
               {"train", {{"batch_size", 4}, {"stages", json::array({{{"steps", 2}}})}}}};
  testing_util::expect_error(
      [&] {
        run_all({{"bad", "bad run", bad}, {"good", "good run", good}}, o, "retrieval");
      },
      {"1 run(s) failed", "bad (exit status 1", "stderr.log", "nosuch"});
  EXPECT_TRUE(fs::exists(o.out / "configs" / "bad.json"));
  EXPECT_TRUE(fs::exists(o.out / "runs" / "good" / "train_log.jsonl"));
}
