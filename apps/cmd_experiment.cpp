#include "cmd_experiment.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/cli_common.h"
#include "common/error.h"
#include "common/progress.h"
#include "experiments/claims.h"
#include "experiments/experiment.h"
#include "experiments/report.h"
#include "io/checkpoint.h"

namespace mambavl::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;
using experiments::ExperimentOptions;

namespace {

std::string g_command;  // the command line (set_experiment_command_line), for meta.json

std::string experiment_list() {
  std::string s = "Experiments:\n";
  for (const auto& e : experiments::experiments()) s += "  " + e.name + ": " + e.summary + "\n";
  return s;
}

void add_common(CLI::App* c, ExperimentOptions& o) {
  c->add_option("--scale", o.scale,
                "micro (seconds; tests) | tiny (the demo's size) | small (longer runs) | paper "
                "(the papers' shapes; needs a GPU, or use --dry-run)")
      ->check(CLI::IsMember(experiments::kScales));
  c->add_option("--seeds", o.seeds, "Seeds per trained comparison (mean ± spread over them)")
      ->check(CLI::Range(1, 100));
  c->add_option("--device", o.device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  c->add_option("--threads", o.threads,
                "Threads in all (default: every core); shared among parallel training runs")
      ->check(cli::IntRange(0, cli::kMaxThreads));
  c->add_option("--jobs", o.jobs, "Training runs at a time (default: one per core)")
      ->check(CLI::Range(0, 64));
  c->add_flag("--quiet", [&o](int64_t) { o.progress = false; }, "No progress lines");
}

void run_one(const std::string& name, ExperimentOptions o) {
  const auto& e = experiments::find_experiment(name);
  experiments::prepare_output(e.name, o);
  if (o.threads > 0) at::set_num_threads(o.threads);
  const auto t0 = std::chrono::steady_clock::now();
  e.run(o);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << e.name << ": results in " << o.out.string() << " ("
            << ProgressBar::format_duration(s) << ")\n";
}

void add_experiment(CLI::App& app) {
  struct Opts {
    std::string name;
    ExperimentOptions eo;
    std::string out, data, cache;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "experiment",
      "Run one of the papers' comparisons (SPEC §4) and write its raw results (JSON + CSV), the "
      "exact run configs, the commit and the machine into --out");
  c->footer(experiment_list() +
            "\nEach writes OUT/results.json, OUT/*.csv, OUT/meta.json, OUT/configs/*.json (the "
            "exact run files, runnable with `mambavl train --config`) and OUT/runs/ (training "
            "logs). `mambavl report OUT...` makes the HTML page.");
  c->add_option("name", o->name, "The experiment (see below)")->required();
  c->add_option("--out", o->out, "Results folder (new or empty, or a previous run of the same experiment)")
      ->required();
  c->add_option("--data", o->data, "mambaout: an image folder (root/<class>/*.png|jpg)");
  c->add_option("--cache", o->cache,
                "A run cache folder shared between experiments: a training run whose exact "
                "config finished before (in this cache) is reused, not rerun");
  c->add_flag("--dry-run", o->eo.dry_run, "Write the configs and metadata only; train nothing");
  c->add_flag("--keep-models", o->eo.keep_models, "Keep every run's final model folder");
  add_common(c, o->eo);
  c->callback([o] {
    ExperimentOptions eo = o->eo;
    eo.out = o->out;
    eo.data = o->data;
    eo.cache = o->cache;
    eo.command = g_command;
    run_one(o->name, eo);
  });
}

void add_report(CLI::App& app) {
  struct Opts {
    std::vector<std::string> dirs;
    std::string out = "report.html";
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "report",
      "Write one self-contained HTML page (plots, tables of every number, the papers' claims "
      "checked, configs, commit) from experiment results folders");
  c->add_option("dirs", o->dirs,
                "Results folders (of `mambavl experiment`, or a demo folder holding several)")
      ->required();
  c->add_option("--out", o->out, "The HTML file to write")->capture_default_str();
  c->callback([o] {
    std::vector<fs::path> dirs(o->dirs.begin(), o->dirs.end());
    experiments::write_report(dirs, o->out);
    std::cout << "report: " << o->out << "\n";
  });
}

struct StageResult {
  std::string name, status;  // "done" | "failed: ..."
  double seconds = 0;
};

void run_demo(ExperimentOptions base, const fs::path& out, const std::vector<std::string>& only) {
  // The folder: new, empty, or a previous demo's (then replaced).
  for (const auto& n : only) experiments::find_experiment(n);  // unknown names: an error, first
  std::vector<const experiments::ExperimentInfo*> stages;
  for (const auto& e : experiments::experiments())
    if (only.empty() || std::find(only.begin(), only.end(), e.name) != only.end())
      stages.push_back(&e);
  // The folder: new, empty, or a previous demo's (then what a demo writes is replaced; anything
  // else in it is left alone).
  std::error_code ec;
  if (fs::exists(out, ec)) {
    MVL_CHECK(fs::is_directory(out, ec), out.string(), ": exists and is not a folder");
    MVL_CHECK(fs::is_empty(out, ec) || fs::exists(out / "demo.json", ec), out.string(),
              ": is not empty and is no demo folder; choose another --out");
    std::vector<std::string> ours = {"cache", "report.html", "summary.txt", "claims.json",
                                     "demo.json"};
    for (const auto& e : experiments::experiments()) ours.push_back(e.name);
    for (const auto& name : ours) fs::remove_all(out / name, ec);
  }
  fs::create_directories(out);
  if (base.threads > 0) at::set_num_threads(base.threads);
  io::write_json_file(out / "demo.json", {{"command", base.command}, {"status", "running"}});
  const auto t_all = std::chrono::steady_clock::now();
  std::vector<StageResult> done;
  std::printf("mambavl demo: %zu experiments at scale %s, %d seed(s), %d threads -> %s\n",
              stages.size(), base.scale.c_str(), base.seeds, at::get_num_threads(),
              out.string().c_str());
  std::fflush(stdout);
  for (size_t k = 0; k < stages.size(); ++k) {
    const auto& e = *stages[k];
    ExperimentOptions o = base;
    o.out = out / e.name;
    o.cache = out / "cache";
    o.progress = false;
    std::printf("[%zu/%zu] %-12s ", k + 1, stages.size(), e.name.c_str());
    std::fflush(stdout);
    const auto t0 = std::chrono::steady_clock::now();
    StageResult r{e.name, "done", 0};
    try {
      experiments::prepare_output(e.name, o);
      e.run(o);
    } catch (const std::exception& ex) {
      r.status = std::string("failed: ") + ex.what();
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double total =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count();
    std::printf("%s in %s (total %s)\n", r.status == "done" ? "done" : r.status.c_str(),
                ProgressBar::format_duration(r.seconds).c_str(),
                ProgressBar::format_duration(total).c_str());
    std::fflush(stdout);
    done.push_back(r);
  }
  const double total =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_all).count();

  // Claims and report from whatever finished.
  std::vector<json> results;
  for (const auto& r : done)
    if (fs::exists(out / r.name / "results.json"))
      results.push_back(
          io::read_json_file(out / r.name / "results.json", io::kMaxTextBytes));
  const auto claims = experiments::evaluate_claims(results);
  const std::string table = experiments::claims_text(claims);
  std::printf("\nThe papers' claims, checked by this run (%d seed(s); mean ± std; a claim is "
              "inconclusive when the spreads overlap):\n%s",
              base.seeds, table.c_str());
  io::write_text_file_atomic(out / "summary.txt", table);
  io::write_json_file(out / "claims.json", experiments::claims_json(claims));
  std::string report_status = "written";
  try {
    experiments::write_report({out}, out / "report.html");
  } catch (const std::exception& ex) {
    report_status = std::string("failed: ") + ex.what();
  }
  json stages_json = json::array();
  int failed = 0;
  for (const auto& r : done) {
    stages_json.push_back({{"experiment", r.name}, {"status", r.status}, {"seconds", r.seconds}});
    failed += r.status != "done";
  }
  io::write_json_file(out / "demo.json", {{"command", base.command},
                                          {"status", failed ? "failed" : "done"},
                                          {"seconds", total},
                                          {"stages", stages_json},
                                          {"report", report_status}});
  std::printf("\nreport: %s (%s)\ntotal time: %s%s\n", (out / "report.html").string().c_str(),
              report_status.c_str(), ProgressBar::format_duration(total).c_str(),
              total > 15 * 60 ? " - over the 15-minute budget" : "");
  MVL_CHECK(failed == 0, "demo: ", failed, " experiment(s) failed (see above and ",
            (out / "demo.json").string(), ")");
  MVL_CHECK(report_status == "written", "demo: the report could not be written: ", report_status);
}

void add_demo(CLI::App& app) {
  struct Opts {
    ExperimentOptions eo;
    std::string out = "out/demo";
    std::vector<std::string> only;
  };
  auto o = std::make_shared<Opts>();
  o->eo.seeds = 2;
  o->eo.scale = "tiny";
  auto* c = app.add_subcommand(
      "demo",
      "The main job: every experiment at a compact scale on the built-in data (about 8 minutes "
      "on 2 CPU cores), a summary of the papers' claims with the numbers, and the HTML report");
  c->add_option("--out", o->out, "Demo folder (one subfolder per experiment, report.html)")->capture_default_str();
  c->add_option("--only", o->only, "Run only these experiments (comma separated)")
      ->delimiter(',');
  add_common(c, o->eo);
  c->callback([o] {
    ExperimentOptions eo = o->eo;
    eo.command = g_command;
    run_demo(eo, o->out, o->only);
  });
}

}  // namespace

void set_experiment_command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  g_command = s;
}

void add_experiment_commands(CLI::App& app) {
  add_experiment(app);
  add_report(app);
  add_demo(app);
}

}  // namespace mambavl::cli
