// Runs an experiment's training runs: each run is a run file (the same JSON/TOML schema as
// `mambavl train --config`, docs/train-config.md) executed by a child process of this binary
// (`mambavl train --config <configs/NAME.json> --threads T`), several at a time, so two 1-thread
// runs share a 2-core machine better than one 2-thread run of a tiny model does. The run file
// written to configs/NAME.json is exactly what the child ran.
//
// Each run writes into OUT/runs/NAME/ (train_log.jsonl, config.json, run.json, stderr.log; the
// final model only with ExperimentOptions::keep_models). With a cache folder
// (ExperimentOptions::cache), a run whose exact config (minus "out") ran before to completion is
// not run again: its log is copied from the cache (the demo shares runs between experiments, e.g.
// the default-order runs of task-aware are coarse-fine's runs).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/experiment.h"

namespace mambavl::experiments {

struct RunSpec {
  std::string name;   // unique within the experiment: file names configs/NAME.json, runs/NAME
  std::string label;  // shown in the progress line ("mamba seed 1")
  json config;        // a run file; "out" is set by the runner
  bool keep_model = false;  // keep runs/NAME/final (e.g. a later run starts from it)
};

struct RunOutcome {
  std::string name;
  json final_eval;             // the last {"eval": ...} of train_log.jsonl (null when none)
  std::vector<json> evals;     // every eval line {"step", "stage", "eval"} in order
  std::vector<json> steps;     // every step line of train_log.jsonl
  double seconds = 0;          // wall time of the run (0 when reused from the cache)
  bool cached = false;
  std::filesystem::path dir;   // OUT/runs/NAME
};

// Runs every spec (in parallel child processes: jobs = ExperimentOptions::jobs, or when 0, as many
// as the machine has hardware threads, at most the number of runs; each child gets
// max(1, threads / jobs) intra-op threads), printing one line per finished run. Error naming the
// run and its stderr.log when a child fails (the other children are waited for first).
std::vector<RunOutcome> run_all(const std::vector<RunSpec>& runs, const ExperimentOptions& opt,
                                const std::string& experiment);

// 16 hex digits naming a JSON value by its content (FNV-1a 64 of its compact text): the run
// cache's keys, and names of shared runs that change whenever their config does.
std::string content_hash(const json& j);

// Reads a run folder's train_log.jsonl into an outcome (evals, steps, final_eval).
RunOutcome read_run(const std::filesystem::path& dir, const std::string& name);

}  // namespace mambavl::experiments
