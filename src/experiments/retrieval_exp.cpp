// `mambavl experiment retrieval` (SPEC §4.1, Shaking Up VLMs §5): Transformer vs Mamba vs hybrid
// LMs of about equal size, each trained from scratch on the synthetic retrieval task at several
// sequence lengths N, query after and before the sequence; accuracy curves and the per-position
// accuracy at every evaluation during training (the heatmap: position × training step).
//
// Each (variant, N, query, seed) is one run of the one trainer (`mambavl train`, kind "lm", data
// source "retrieval"), evaluated every eval_every steps on held-out examples; the per-position
// accuracy comes from those evaluations in the run's train_log.jsonl. The models are initialised
// here (seed = the seed index) and written to OUT/init/<variant>-seed<k>/, which the run files
// name as model.path; so configs/*.json + init/ reproduce every run.
#include <cmath>
#include <map>

#include "common/error.h"
#include "data/retrieval.h"
#include "experiments/experiment.h"
#include "experiments/runner.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "models/registry.h"

namespace mambavl::experiments {

namespace fs = std::filesystem;

namespace {

struct RetrievalScale {
  int64_t d_model, attn_layers;  // the Transformer's depth; Mamba / hybrid have twice the layers
  std::vector<int64_t> lengths;
  std::vector<std::string> queries;
  int64_t steps, batch, eval_every, eval_n, train_n, max_n, content;
  double lr;
};

RetrievalScale scale_of(const std::string& s) {
  if (s == "micro") return {32, 1, {8, 16}, {"after"}, 24, 16, 8, 48, 512, 16, 64, 2e-3};
  if (s == "tiny")
    return {64, 2, {5, 10}, {"after"}, 800, 32, 50, 120, 25600, 10, 256, 2e-3};
  if (s == "small")
    return {128,  4,   {20, 100, 300, 600}, {"after", "before"}, 3000, 32, 150, 600, 96000, 600,
            1024, 1e-3};
  // paper: the scale of the papers' smaller models (Pythia-160m-like widths), lengths 20..600.
  return {768,  12,  {20, 100, 300, 600}, {"after", "before"}, 5000, 32, 250, 1000, 160000, 600,
          1024, 3e-4};
}

// Model config (config.json content) of a variant: "transformer" (GPT-NeoX, L layers, rotary on
// the whole head), "mamba" (2L Mamba layers), "hybrid" (2L layers, the middle one attention).
json variant_config(const std::string& variant, const RetrievalScale& sc, int64_t vocab) {
  const int64_t padded = (vocab + 7) / 8 * 8;
  const int64_t heads = std::max<int64_t>(1, sc.d_model / 32);
  if (variant == "transformer") {
    models::GPTNeoXConfig c;
    c.hidden_size = sc.d_model;
    c.num_hidden_layers = sc.attn_layers;
    c.num_attention_heads = heads;
    c.intermediate_size = 4 * sc.d_model;
    c.vocab_size = padded;
    c.rotary_pct = 1.0;
    c.max_position_embeddings = std::max<int64_t>(2048, sc.max_n + 8);
    c.finalize();
    return c.to_json();
  }
  models::MambaConfig c;
  c.d_model = sc.d_model;
  c.n_layer = 2 * sc.attn_layers;
  c.vocab_size = padded;
  c.d_inner = 0, c.dt_rank = 0;
  if (variant == "hybrid") {
    c.attn_layer_idx = {c.n_layer / 2};
    c.attn.num_heads = heads;
    c.attn.rotary_emb_dim = sc.d_model / heads;
    c.layout = "original";
    c.pad_vocab_size_multiple = 8;
    c.unpadded_vocab_size = padded;
  }
  c.finalize();
  return c.to_json();
}

std::string setting_key(int64_t n, const std::string& query) {
  return "N" + std::to_string(n) + "_" + query;
}

// Mean accuracy of the first and last thirds of positions [0, n) minus the middle third's
// (NaN positions skipped); NaN when a third has no sample.
double middle_deficit(const json& pos_accuracy, int64_t n) {
  double s[3] = {0, 0, 0};
  int64_t c[3] = {0, 0, 0};
  for (int64_t p = 0; p < n && p < static_cast<int64_t>(pos_accuracy.size()); ++p) {
    if (!pos_accuracy[p].is_number()) continue;
    const int k = std::min<int64_t>(2, p * 3 / n);
    s[k] += pos_accuracy[p].get<double>();
    ++c[k];
  }
  if (!c[0] || !c[1] || !c[2]) return std::nan("");
  return 0.5 * (s[0] / c[0] + s[2] / c[2]) - s[1] / c[1];
}

}  // namespace

void run_retrieval(const ExperimentOptions& opt) {
  const RetrievalScale sc = scale_of(opt.scale);
  Results res("retrieval", "Synthetic retrieval: Transformer vs Mamba vs hybrid",
              "Language models of about equal size trained from scratch to return the position "
              "of a query token among N unique random tokens (Shaking Up VLMs' synthetic "
              "grounding task), query after or before the sequence. Learning speed is the mean "
              "held-out accuracy over the evaluations during training (the area under the "
              "learning curve); the heatmaps show the held-out accuracy per true position at each "
              "evaluation.",
              opt);
  data::RetrievalVocab v;
  v.max_n = sc.max_n;
  v.content = sc.content;
  v.check();
  const std::vector<std::string> variants = {"transformer", "mamba", "hybrid"};

  // Initial models (one per variant and seed) and the run specs.
  std::vector<RunSpec> specs;
  struct Key {
    std::string variant, query;
    int64_t n;
    int seed;
  };
  std::vector<Key> keys;
  for (const auto& variant : variants) {
    const json mc = variant_config(variant, sc, v.vocab_size());
    for (int seed = 0; seed < opt.seeds; ++seed) {
      const fs::path init = opt.out / "init" / (variant + "-seed" + std::to_string(seed));
      if (!opt.dry_run) {
        auto lm = models::make_causal_lm(mc, static_cast<uint64_t>(seed), true, variant);
        lm->save(init);
        if (seed == 0) {
          int64_t params = 0;
          for (const auto& p : lm->module().parameters()) params += p.numel();
          res.add_metric(variant, 0, "params", static_cast<double>(params));
        }
      }
      for (int64_t n : sc.lengths)
        for (const auto& q : sc.queries) {
          json cfg = {{"kind", "lm"},
                      {"model", {{"path", init.string()}}},
                      {"data",
                       {{"source", "retrieval"},
                        {"n", sc.train_n},
                        {"seed", 1000 + n},  // the same data for every variant and seed
                        {"lengths", {n}},
                        {"query", q},
                        {"max_n", sc.max_n},
                        {"content", sc.content}}},
                      {"eval", {{"n", sc.eval_n}, {"batch_size", 64}}},
                      {"train",
                       {{"batch_size", sc.batch},
                        {"seed", seed},
                        {"log_every", sc.eval_every},
                        {"eval_every", sc.eval_every},
                        {"keep_last", 1},
                        {"stages", json::array({{{"name", "retrieval"},
                                                 {"steps", sc.steps},
                                                 {"lr", sc.lr},
                                                 {"warmup_ratio", 0.05},
                                                 {"min_lr_ratio", 0.1},
                                                 {"weight_decay", 0.01}}})}}}};
          const std::string name =
              variant + "_" + setting_key(n, q) + "_seed" + std::to_string(seed);
          specs.push_back({name,
                           variant + " N=" + std::to_string(n) + " query " + q + " seed " +
                               std::to_string(seed),
                           cfg});
          keys.push_back({variant, q, n, seed});
        }
    }
  }
  res.add_note("Models: Transformer = GPT-NeoX with " + std::to_string(sc.attn_layers) +
               " layers (rotary on the whole head); Mamba = " + std::to_string(2 * sc.attn_layers) +
               " Mamba layers; hybrid = " + std::to_string(2 * sc.attn_layers) +
               " layers, the middle one attention; d_model " + std::to_string(sc.d_model) +
               " (parameter counts in the metrics table, metric 'params').");
  res.add_note("Training: " + std::to_string(sc.steps) + " AdamW steps of " +
               std::to_string(sc.batch) + " examples, lr " + std::to_string(sc.lr) +
               ", from scratch; evaluation every " + std::to_string(sc.eval_every) + " steps on " +
               std::to_string(sc.eval_n) + " held-out examples (another seed).");
  if (opt.dry_run) {
    run_all(specs, opt, "retrieval");
    res.add_note("dry run: configs written, nothing trained (the init/ models are not written)");
    res.write();
    return;
  }
  const auto outcomes = run_all(specs, opt, "retrieval");

  // Per run: curves, heatmap rows, final metrics; per (variant, seed): the aggregates.
  std::map<std::pair<std::string, int>, std::vector<double>> speed, final_acc, deficit;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const auto& o = outcomes[i];
    const Key& k = keys[i];
    const std::string sk = setting_key(k.n, k.query);
    double sum = 0;
    int64_t cnt = 0;
    json last_pos;
    for (const auto& e : o.evals) {
      const json& r = e.at("eval").at("retrieval");
      const double acc = r.at("accuracy").get<double>();
      const int64_t step = e.at("step").get<int64_t>();
      res.add_curve(k.variant, k.seed, "accuracy_" + sk, step, acc);
      sum += acc;
      ++cnt;
      last_pos = r.at("pos_accuracy");
      for (int64_t p = 0; p < k.n && p < static_cast<int64_t>(last_pos.size()); ++p)
        res.add_row("heatmap",
                    {{"variant", k.variant},
                     {"seed", k.seed},
                     {"n", k.n},
                     {"query", k.query},
                     {"step", step},
                     {"position", p},
                     {"accuracy", last_pos[p].is_number() ? last_pos[p] : json(nullptr)}});
    }
    MVL_CHECK(cnt > 0, o.dir.string(), ": the run logged no evaluation");
    const double fin = o.final_eval.at("retrieval").at("accuracy").get<double>();
    const double lspeed = sum / cnt;
    const double def = middle_deficit(last_pos, k.n);
    const json extra = {{"n", k.n}, {"query", k.query}};
    res.add_metric(k.variant, k.seed, "accuracy_" + sk, fin, extra);
    res.add_metric(k.variant, k.seed, "learning_speed_" + sk, lspeed, extra);
    if (!std::isnan(def)) res.add_metric(k.variant, k.seed, "middle_deficit_" + sk, def, extra);
    speed[{k.variant, k.seed}].push_back(lspeed);
    final_acc[{k.variant, k.seed}].push_back(fin);
    if (!std::isnan(def)) deficit[{k.variant, k.seed}].push_back(def);
  }
  for (const auto& variant : variants)
    for (int seed = 0; seed < opt.seeds; ++seed) {
      auto mean = [](const std::vector<double>& x) { return spread(x).mean; };
      res.add_metric(variant, seed, "learning_speed", mean(speed[{variant, seed}]));
      res.add_metric(variant, seed, "final_accuracy", mean(final_acc[{variant, seed}]));
      if (!deficit[{variant, seed}].empty())
        res.add_metric(variant, seed, "middle_deficit", mean(deficit[{variant, seed}]));
    }

  // Plots: the headline bars, a learning curve per setting, a heatmap per variant and setting.
  res.add_plot(
      {{"type", "bars"},
       {"title",
        "Retrieval: learning speed, final accuracy, middle deficit (mean ± std over seeds; all "
        "settings averaged)"},
       {"x_label", "model"},
       {"y_label", "accuracy"},
       {"data", res.bars_data({"learning_speed", "final_accuracy", "middle_deficit"}, true)}});
  for (int64_t n : sc.lengths)
    for (const auto& q : sc.queries) {
      const std::string sk = setting_key(n, q);
      // Mean over seeds per (variant, step).
      std::map<std::pair<std::string, int64_t>, std::vector<double>> pts;
      for (const auto& r : res.tables().at("curves"))
        if (r.at("metric") == "accuracy_" + sk)
          pts[{r.at("variant").get<std::string>(), r.at("step").get<int64_t>()}].push_back(
              r.at("value").get<double>());
      json data = json::array();
      for (const auto& variant : variants)
        for (const auto& [key, vals] : pts)
          if (key.first == variant) {
            const Spread s = spread(vals);
            data.push_back({{"x", key.second},
                            {"y", s.mean},
                            {"series", variant},
                            {"lo", s.mean - s.std},
                            {"hi", s.mean + s.std}});
          }
      res.add_plot({{"type", "lines"},
                    {"title", "Held-out accuracy during training, N = " + std::to_string(n) +
                                  ", query " + q},
                    {"x_label", "training step"},
                    {"y_label", "accuracy"},
                    {"data", data}});
      // Heatmaps: positions grouped into at most 40 rows; mean over seeds and positions.
      const int64_t bin = std::max<int64_t>(1, (n + 39) / 40);
      for (const auto& variant : variants) {
        std::map<std::pair<int64_t, int64_t>, std::pair<double, int64_t>> cells;
        for (const auto& r : res.tables().at("heatmap"))
          if (r.at("variant") == variant && r.at("n") == n && r.at("query") == q &&
              r.at("accuracy").is_number()) {
            auto& c = cells[{r.at("step").get<int64_t>(), r.at("position").get<int64_t>() / bin}];
            c.first += r.at("accuracy").get<double>();
            c.second += 1;
          }
        json hd = json::array();
        for (const auto& [key, c] : cells)
          hd.push_back({{"x", key.first}, {"y", key.second * bin}, {"value", c.first / c.second}});
        res.add_plot(
            {{"type", "heatmap"},
             {"title", variant + ": accuracy per position during training, N = " +
                           std::to_string(n) + ", query " + q},
             {"x_label", "training step"},
             {"y_label", bin > 1 ? "position (groups of " + std::to_string(bin) + ")" : "position"},
             {"value_label", "accuracy"},
             {"data", hd}});
      }
    }
  res.write();
}

}  // namespace mambavl::experiments
