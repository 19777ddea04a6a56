// The controlled experiments of SPEC §4 (`mambavl experiment NAME`): each trains or measures a set
// of variants with everything else held equal, over K seeds, and writes its raw results into one
// folder, which `mambavl report` (experiments/report.h) turns into an HTML page and
// experiments/claims.h checks against the papers' claims.
//
// A results folder (written by Results::write, every file atomically):
//   results.json   {"experiment", "title", "description", "scale", "seeds", "meta",
//                   "tables": {"metrics": [...], "summary": [...], "curves": [...], ...},
//                   "plots": [...], "notes": [...]}
//   meta.json      the commit, the machine (CPU model, ISA, threads, LibTorch version), the command
//   <table>.csv    every table as CSV (metrics.csv, summary.csv, curves.csv, heatmap.csv, ...)
//   configs/       the exact configuration of every run (run files as JSON, one per variant/seed)
//   runs/          the runs' own output folders (train_log.jsonl, final models) where kept
//
// Tables are lists of flat JSON objects (string / number values). The ones every experiment may
// fill, and what the report and the claims read:
//   metrics  {"variant", "seed", "metric", "value", ...}   a final scalar of one run
//   summary  {"variant", "metric", "mean", "std", "min", "max", "n"}  metrics over the seeds
//            (computed by write(); std is the sample standard deviation, 0 when n == 1)
//   curves   {"variant", "seed", "metric", "step", "value"}  learning curves
// Experiments add their own (retrieval: "heatmap"; efficiency: "scaling", "fits").
//
// Plots are declarations with their data inline, so the report needs no knowledge of any
// experiment:
//   {"type": "bars",    "title", "x_label", "y_label",
//    "data": [{"x": category, "group": series (optional), "mean", "lo", "hi"}]}
//   {"type": "lines",   "title", "x_label", "y_label", "log_x", "log_y",
//    "data": [{"x": number, "y": number, "series": name, "lo"?, "hi"?}]}
//   {"type": "heatmap", "title", "x_label", "y_label", "value_label",
//    "data": [{"x": number, "y": number, "value": number}]}
//   {"type": "scaling", "title", "x_label", "y_label",          (log-log axes)
//    "data": [{"x", "y", "series"}],
//    "fits": [{"series", "exponent", "coefficient", "x_min", "x_max"}]}   y = coefficient * x^exponent
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mambavl::experiments {

using nlohmann::json;

// Scales: micro (tests; seconds), tiny (the demo; a minute or so per experiment), small (longer
// runs, closer to the papers' regime on a CPU), paper (the papers' shapes; needs a GPU).
inline const std::vector<std::string> kScales = {"micro", "tiny", "small", "paper"};

struct ExperimentOptions {
  std::filesystem::path out;      // results folder (created; must not hold another experiment)
  std::string scale = "tiny";     // one of kScales
  int seeds = 1;                  // K >= 1: every trained comparison runs K seeds
  std::string device = "cpu";     // "cpu" | "cuda"
  int threads = 0;                // intra-op threads (0: LibTorch's default)
  std::filesystem::path data;     // optional data (mambaout: an image folder root/<class>/*)
  bool progress = true;           // progress bars / one line per run on stderr
  bool dry_run = false;           // write the configs and meta only, run nothing
  bool keep_models = false;       // keep the runs' final model folders (else only logs)
  std::string command;            // the command line, recorded in meta.json
  int jobs = 0;                   // training runs at a time (child processes); 0: hardware threads
  std::filesystem::path cache;    // optional: finished runs reused by exact config (runner.h)
  std::filesystem::path exe;      // the mambavl binary for child runs (default /proc/self/exe)
};

// Gathers one experiment's results and writes the folder described above.
class Results {
 public:
  Results(std::string experiment, std::string title, std::string description,
          const ExperimentOptions& opt);

  // Appends a row to a table (created on first use).
  void add_row(const std::string& table, json row);
  // metrics row {"variant", "seed", "metric", "value"} + extra fields.
  void add_metric(const std::string& variant, int seed, const std::string& metric, double value,
                  const json& extra = json::object());
  // curves row {"variant", "seed", "metric", "step", "value"}.
  void add_curve(const std::string& variant, int seed, const std::string& metric, int64_t step,
                 double value);
  void add_plot(json plot);  // see the plot types above
  void add_note(const std::string& note);
  // The exact configuration of one run: configs/<name>.json.
  void add_config(const std::string& name, const json& config);
  void set(const std::string& key, json value);  // an extra top-level key of results.json

  // The summary table of the metrics so far (mean / std / min / max / n over seeds).
  json summary() const;
  // {"x": variant, "group": metric-or-"", "mean", "lo" = mean - std, "hi" = mean + std} rows of
  // the summary for the given metrics, variants in first-seen order: data for a "bars" plot.
  json bars_data(const std::vector<std::string>& metrics, bool group_by_metric) const;

  const json& tables() const { return tables_; }
  const std::filesystem::path& dir() const { return opt_.out; }
  const ExperimentOptions& options() const { return opt_; }
  // Writes results.json, meta.json and every table as CSV (atomically; may be called repeatedly,
  // e.g. after every run, so an interrupted experiment keeps what it finished).
  void write() const;

 private:
  std::string name_, title_, description_;
  ExperimentOptions opt_;
  json tables_ = json::object(), plots_ = json::array(), notes_ = json::array(),
       extra_ = json::object();
};

// The commit this binary was built from ("<sha>[-dirty]", or "unknown" outside a git checkout).
std::string build_commit();

// The commit, the machine and the software, as written into meta.json.
json run_metadata(const ExperimentOptions& opt);

// CSV text of a table (header: the union of the rows' keys, "variant", "seed", "metric", ...
// first; strings quoted when they contain a comma, quote or newline).
std::string table_csv(const json& rows);

// Mean and sample standard deviation (0 for one value).
struct Spread {
  double mean = 0, std = 0, min = 0, max = 0;
  int64_t n = 0;
};
Spread spread(const std::vector<double>& v);

// Least-squares fit of log y = log c + e log x over points with x, y > 0 (>= 2 points):
// {exponent e, coefficient c, r2}.
struct PowerFit {
  double exponent = 0, coefficient = 0, r2 = 0;
};
PowerFit fit_power_law(const std::vector<double>& x, const std::vector<double>& y);

// --- registry -------------------------------------------------------------------------------
struct ExperimentInfo {
  std::string name, summary;
  std::function<void(const ExperimentOptions&)> run;
};
// Every experiment, in the demo's order: retrieval, coarse-fine, task-aware, resolution,
// connectors, mambaout, efficiency.
const std::vector<ExperimentInfo>& experiments();
const ExperimentInfo& find_experiment(const std::string& name);  // Error listing the names

// Checks the options (scale, seeds in [1, 100], device available) and prepares `out`: created;
// an existing folder must be empty or hold results of the same experiment (then it is replaced).
void prepare_output(const std::string& experiment, const ExperimentOptions& opt);

// One stderr line "[experiment] message" unless opt.progress is false.
void log_line(const ExperimentOptions& opt, const std::string& experiment, const std::string& msg);

// The experiments (each in its own file).
void run_retrieval(const ExperimentOptions& opt);
void run_coarse_fine(const ExperimentOptions& opt);
void run_task_aware(const ExperimentOptions& opt);
void run_resolution(const ExperimentOptions& opt);
void run_connectors(const ExperimentOptions& opt);
void run_mambaout(const ExperimentOptions& opt);
void run_efficiency(const ExperimentOptions& opt);

}  // namespace mambavl::experiments
