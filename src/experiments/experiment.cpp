#include "experiments/experiment.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <thread>

#include "build_info.h"
#include "common/error.h"
#include "common/sysinfo.h"
#include "io/checkpoint.h"

namespace mambavl::experiments {

namespace fs = std::filesystem;

namespace {
// Written by prepare_output: the folder belongs to this experiment even before results.json
// exists (a failed or interrupted run can be redone into it).
const char* kMarker = ".mambavl-experiment";
}  // namespace

Results::Results(std::string experiment, std::string title, std::string description,
                 const ExperimentOptions& opt)
    : name_(std::move(experiment)),
      title_(std::move(title)),
      description_(std::move(description)),
      opt_(opt) {}

void Results::add_row(const std::string& table, json row) {
  MVL_CHECK(row.is_object(), "results table ", table, ": a row must be an object");
  if (!tables_.contains(table)) tables_[table] = json::array();
  tables_[table].push_back(std::move(row));
}

void Results::add_metric(const std::string& variant, int seed, const std::string& metric,
                         double value, const json& extra) {
  json row = {{"variant", variant}, {"seed", seed}, {"metric", metric}, {"value", value}};
  for (auto& [k, v] : extra.items()) row[k] = v;
  add_row("metrics", std::move(row));
}

void Results::add_curve(const std::string& variant, int seed, const std::string& metric,
                        int64_t step, double value) {
  add_row(
      "curves",
      {{"variant", variant}, {"seed", seed}, {"metric", metric}, {"step", step}, {"value", value}});
}

void Results::add_plot(json plot) {
  MVL_CHECK(plot.is_object() && plot.contains("type") && plot.contains("data"),
            "results plot: needs \"type\" and \"data\"");
  plots_.push_back(std::move(plot));
}

void Results::add_note(const std::string& note) { notes_.push_back(note); }

void Results::add_config(const std::string& name, const json& config) {
  if (opt_.out.empty()) return;
  fs::create_directories(opt_.out / "configs");
  io::write_json_file(opt_.out / "configs" / (name + ".json"), config);
}

void Results::set(const std::string& key, json value) { extra_[key] = std::move(value); }

json Results::summary() const {
  // Group by (variant, metric) in first-seen order.
  std::vector<std::pair<std::string, std::string>> keys;
  std::map<std::pair<std::string, std::string>, std::vector<double>> values;
  if (tables_.contains("metrics"))
    for (const auto& r : tables_.at("metrics")) {
      auto k =
          std::make_pair(r.at("variant").get<std::string>(), r.at("metric").get<std::string>());
      if (!values.count(k)) keys.push_back(k);
      values[k].push_back(r.at("value").get<double>());
    }
  json out = json::array();
  for (const auto& k : keys) {
    const Spread s = spread(values[k]);
    out.push_back({{"variant", k.first},
                   {"metric", k.second},
                   {"mean", s.mean},
                   {"std", s.std},
                   {"min", s.min},
                   {"max", s.max},
                   {"n", s.n}});
  }
  return out;
}

json Results::bars_data(const std::vector<std::string>& metrics, bool group_by_metric) const {
  json out = json::array();
  for (const auto& r : summary()) {
    const std::string m = r.at("metric");
    if (std::find(metrics.begin(), metrics.end(), m) == metrics.end()) continue;
    const double mean = r.at("mean"), sd = r.at("std");
    out.push_back({{"x", r.at("variant")},
                   {"group", group_by_metric ? m : std::string()},
                   {"mean", mean},
                   {"lo", mean - sd},
                   {"hi", mean + sd},
                   {"n", r.at("n")}});
  }
  return out;
}

void Results::write() const {
  if (opt_.out.empty()) return;
  fs::create_directories(opt_.out);
  json tables = tables_;
  tables["summary"] = summary();
  const json meta = run_metadata(opt_);
  json j = {{"experiment", name_}, {"title", title_},     {"description", description_},
            {"scale", opt_.scale}, {"seeds", opt_.seeds}, {"dry_run", opt_.dry_run},
            {"meta", meta},        {"tables", tables},    {"plots", plots_},
            {"notes", notes_}};
  for (auto& [k, v] : extra_.items()) j[k] = v;
  io::write_json_file(opt_.out / "meta.json", meta);
  for (auto& [name, rows] : tables.items())
    if (!rows.empty()) io::write_text_file_atomic(opt_.out / (name + ".csv"), table_csv(rows));
  io::write_json_file(opt_.out / "results.json", j);  // last: its presence means complete files
}

namespace {

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) {
        std::string s = line.substr(p + 1);
        s.erase(0, s.find_first_not_of(' '));
        return s;
      }
    }
  return "unknown";
}

std::string cpu_isa() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("flags", 0) == 0) {
      std::vector<std::string> have;
      for (const char* flag : {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"})
        if (line.find(std::string(" ") + flag) != std::string::npos) have.push_back(flag);
      return join(have, " ");
    }
  return "unknown";
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

std::string build_commit() { return MAMBAVL_COMMIT; }

json run_metadata(const ExperimentOptions& opt) {
  return {{"commit", MAMBAVL_COMMIT},
          {"command", opt.command},
          {"date", now_utc()},
          {"scale", opt.scale},
          {"seeds", opt.seeds},
          {"device", opt.device},
          {"machine",
           {{"cpu", cpu_model()},
            {"isa", cpu_isa()},
            {"threads", at::get_num_threads()},
            {"hardware_threads", static_cast<int64_t>(std::thread::hardware_concurrency())},
            {"aten_cpu_capability", at::get_cpu_capability()},
            {"load_average", sys::load_average()}}},
          {"software",
           {{"libtorch", TORCH_VERSION},
            {"compiler", __VERSION__},
            {"mambavl_commit", MAMBAVL_COMMIT}}}};
}

std::string table_csv(const json& rows) {
  // Columns: the usual keys first in this order, then the others alphabetically (JSON objects
  // keep no insertion order).
  static const std::vector<std::string> first = {"variant", "seed", "n",        "query", "metric",
                                                 "step",    "x",    "position", "value", "mean",
                                                 "std",     "min",  "max"};
  std::set<std::string> seen;
  for (const auto& r : rows)
    for (auto& [k, v] : r.items()) seen.insert(k);
  std::vector<std::string> cols;
  for (const auto& k : first)
    if (seen.erase(k)) cols.push_back(k);
  cols.insert(cols.end(), seen.begin(), seen.end());
  auto cell = [](const json& v) -> std::string {
    if (v.is_null()) return "";
    std::string s;
    if (v.is_string()) {
      s = v.get<std::string>();
    } else if (v.is_number_float()) {
      std::ostringstream o;
      o.precision(9);
      o << v.get<double>();
      s = o.str();
    } else {
      s = v.dump();
    }
    if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  std::ostringstream out;
  for (size_t i = 0; i < cols.size(); ++i) out << (i ? "," : "") << cols[i];
  out << "\n";
  for (const auto& r : rows) {
    for (size_t i = 0; i < cols.size(); ++i)
      out << (i ? "," : "") << (r.contains(cols[i]) ? cell(r.at(cols[i])) : "");
    out << "\n";
  }
  return out.str();
}

Spread spread(const std::vector<double>& v) {
  Spread s;
  s.n = static_cast<int64_t>(v.size());
  if (v.empty()) return s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / v.size();
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - s.mean) * (x - s.mean);
    s.std = std::sqrt(ss / (v.size() - 1));
  }
  return s;
}

PowerFit fit_power_law(const std::vector<double>& x, const std::vector<double>& y) {
  MVL_CHECK(x.size() == y.size(), "fit_power_law: x and y differ in length");
  std::vector<double> lx, ly;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] > 0 && y[i] > 0) {
      lx.push_back(std::log(x[i]));
      ly.push_back(std::log(y[i]));
    }
  MVL_CHECK(lx.size() >= 2, "fit_power_law: needs at least two points with x, y > 0");
  const double n = static_cast<double>(lx.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < lx.size(); ++i) mx += lx[i] / n, my += ly[i] / n;
  double sxx = 0, sxy = 0, syy = 0;
  for (size_t i = 0; i < lx.size(); ++i) {
    sxx += (lx[i] - mx) * (lx[i] - mx);
    sxy += (lx[i] - mx) * (ly[i] - my);
    syy += (ly[i] - my) * (ly[i] - my);
  }
  MVL_CHECK(sxx > 0, "fit_power_law: all x are equal");
  PowerFit f;
  f.exponent = sxy / sxx;
  f.coefficient = std::exp(my - f.exponent * mx);
  f.r2 = syy > 0 ? (sxy * sxy) / (sxx * syy) : 1.0;
  return f;
}

const std::vector<ExperimentInfo>& experiments() {
  static const std::vector<ExperimentInfo> list = {
      {"retrieval",
       "Transformer vs Mamba vs hybrid LMs on the synthetic retrieval task at several N: accuracy "
       "curves and per-position accuracy during training (heatmaps)",
       run_retrieval},
      {"coarse-fine",
       "Mamba-VL vs Pythia-VL vs hybrid-VL trained identically on the synthetic scenes: caption "
       "CIDEr-D, VQA exact match, grounding accuracy",
       run_coarse_fine},
      {"task-aware", "prompt order: default vs instruction-first vs query-first, for each backbone",
       run_task_aware},
      {"resolution", "two image sizes (more patches) for each backbone", run_resolution},
      {"connectors",
       "VL-Mamba's ablation on a Mamba backbone: MLP vs VSS-MLP vs VSS-L2, BSM vs CSM",
       run_connectors},
      {"mambaout",
       "image classification: Gated-CNN vs SSM-mixer blocks, ViT causal vs fully visible",
       run_mambaout},
      {"efficiency",
       "prefill time and peak memory vs sequence length, decode ms/token vs context, with fitted "
       "scaling exponents",
       run_efficiency},
  };
  return list;
}

const ExperimentInfo& find_experiment(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& e : experiments()) {
    if (e.name == name) return e;
    names.push_back(e.name);
  }
  MVL_FAIL("unknown experiment '", name, "' (one of: ", join(names), ")");
}

void prepare_output(const std::string& experiment, const ExperimentOptions& opt) {
  MVL_CHECK(std::find(kScales.begin(), kScales.end(), opt.scale) != kScales.end(), "--scale: '",
            opt.scale, "' is not one of ", join(kScales));
  MVL_CHECK(opt.seeds >= 1 && opt.seeds <= 100, "--seeds: ", opt.seeds, " is outside [1, 100]");
  MVL_CHECK(opt.device == "cpu" || opt.device == "cuda", "--device: '", opt.device,
            "' is not cpu or cuda");
  if (opt.device == "cuda")
    MVL_CHECK(at::hasCUDA(),
              "--device cuda: this build of mambavl has no CUDA support (LibTorch "
              "reports no CUDA device); run with --device cpu");
  MVL_CHECK(!opt.out.empty(), "--out: the results folder is required");
  std::error_code ec;
  if (fs::exists(opt.out, ec)) {
    MVL_CHECK(fs::is_directory(opt.out, ec), opt.out.string(), ": exists and is not a folder");
    const fs::path rj = opt.out / "results.json", marker = opt.out / kMarker;
    std::string owner;  // the experiment whose folder this is ("" = none)
    if (fs::exists(rj, ec)) {
      const json j = io::read_json_file(rj, io::kMaxTextBytes);
      owner = j.contains("experiment") && j["experiment"].is_string()
                  ? j["experiment"].get<std::string>()
                  : "?";
      MVL_CHECK(!opt.dry_run || !j.contains("dry_run") || !j["dry_run"].is_boolean() ||
                    j["dry_run"].get<bool>(),
                opt.out.string(), ": holds finished results; a --dry-run would replace them "
                "with configs only; choose another --out");
    } else if (fs::exists(marker, ec)) {
      // A run of an experiment that did not finish (interrupted or failed): may be redone.
      std::ifstream f(marker);
      std::getline(f, owner);
    } else {
      MVL_CHECK(fs::is_empty(opt.out, ec), opt.out.string(),
                ": is not empty and holds no results of this experiment; choose another --out");
    }
    if (!owner.empty())
      MVL_CHECK(owner == experiment, opt.out.string(),
                ": holds the results of another experiment ('", owner,
                "'); choose another --out");
    // Results of the same experiment: replaced (the runs are redone from scratch).
    for (const char* sub : {"runs", "configs"}) fs::remove_all(opt.out / sub, ec);
    for (const auto& e : fs::directory_iterator(opt.out, ec))
      if (e.path().extension() == ".csv" || e.path().filename() == "results.json" ||
          e.path().filename() == "meta.json")
        fs::remove(e.path(), ec);
  }
  fs::create_directories(opt.out);
  io::write_text_file_atomic(opt.out / kMarker, experiment + "\n");
}

void log_line(const ExperimentOptions& opt, const std::string& experiment, const std::string& msg) {
  if (!opt.progress) return;
  std::cerr << "[" << experiment << "] " << msg << std::endl;
}

}  // namespace mambavl::experiments
