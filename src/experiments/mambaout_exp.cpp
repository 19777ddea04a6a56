// `mambavl experiment mambaout` (SPEC §4.5): image classification with four token mixers trained
// identically -- MambaOut's Gated-CNN blocks ("gated-cnn"), the same network whose mixer adds a
// bidirectional selective SSM ("ssm-mixer", the Mamba block), and a ViT with fully visible
// ("vit-full") or causal ("vit-causal") self-attention -- on the synthetic shapes x colours
// classes, or on an image folder (--data root/<class>/*.png|jpg). The papers' claims it checks:
// "Gated CNN ~ SSM for classification" (MambaOut: the SSM is not needed for image classification)
// and "causal attention hurts classification" (MambaOut's ViT causal vs fully visible).
//
// Every (variant, seed) is one classifier run file (kind "classifier", experiments/train_run.h)
// run by the runner in a child process: same data (data.seed fixed), same trainer settings, same
// seeds (train.seed = model.seed = the seed index 0..K-1); the ViTs pool by mean over the patches
// in both modes, so only the attention mask differs. Results: metrics val_top1 / val_top5 /
// val_loss (the final evaluation on the held-out split), curves train_loss / val_top1 / val_loss
// vs step, a "models" table (parameters), bars of val_top1 and lines of val_top1 vs step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "common/error.h"
#include "data/image_dataset.h"
#include "experiments/experiment.h"
#include "experiments/runner.h"
#include "experiments/train_run.h"
#include "models/vision.h"

namespace mambavl::experiments {

namespace fs = std::filesystem;

namespace {

const char* kName = "mambaout";

struct Variant {
  std::string name, architecture;
  bool causal = false;
};

const std::vector<Variant> kVariants = {{"gated-cnn", "mambaout", false},
                                        {"ssm-mixer", "mambaout_ssm", false},
                                        {"vit-full", "vit", false},
                                        {"vit-causal", "vit", true}};

// Everything a scale fixes. The MambaOut pair shares one shape (the SSM adds its parameters); the
// ViT is of the same size class (see the "models" table for the counts).
struct Scale {
  int64_t image_size = 32;
  int64_t num_classes = 12;  // synthetic data only (a folder brings its own classes)
  int64_t n = 2400;          // synthetic images (train + held-out)
  double val_fraction = 0.2;
  int64_t steps = 300, batch = 32, eval_every = 50;
  double lr = 2e-3, weight_decay = 0.05, warmup_ratio = 0.05, drop_path = 0.0;
  std::string mambaout_variant;  // a paper size, or "" for explicit depths / dims
  std::vector<int64_t> depths, dims;
  int64_t vit_width = 64, vit_layers = 4, vit_heads = 4, vit_patch = 4;
};

Scale scale_of(const std::string& name) {
  Scale s;
  if (name == "micro") {
    // CI: the whole experiment (8 runs) in seconds.
    s.image_size = 32;
    s.num_classes = 4;
    s.n = 64;
    s.val_fraction = 0.25;
    s.steps = 6;
    s.batch = 8;
    s.eval_every = 2;
    s.depths = {1, 1, 1, 1};
    s.dims = {8, 16, 24, 32};
    s.vit_width = 32;
    s.vit_layers = 2;
    s.vit_heads = 2;
    s.vit_patch = 8;
  } else if (name == "tiny") {
    // The demo: 12 classes at 32 px; each colour is two classes of different shapes, so colour
    // alone gives 50 % top-1 (chance 8.3 %) and more needs the shape.
    s.steps = 600;
    s.eval_every = 100;
    s.lr = 1e-3;
    s.depths = {1, 1, 2, 1};
    s.dims = {16, 32, 64, 96};
    s.vit_patch = 8;
  } else if (name == "small") {
    s.image_size = 64;
    s.num_classes = 24;
    s.n = 12000;
    s.val_fraction = 0.1;
    s.steps = 3000;
    s.batch = 64;
    s.eval_every = 300;
    s.lr = 1e-3;
    s.depths = {2, 2, 4, 2};
    s.dims = {24, 48, 96, 192};
    s.vit_width = 128;
    s.vit_layers = 6;
    s.vit_heads = 2;
    s.vit_patch = 8;
  } else {
    MVL_CHECK(name == "paper", "experiment mambaout: unknown scale '", name, "'");
    // MambaOut-Femto and its SSM version vs ViT-S/16 at 224 px (a GPU job).
    s.image_size = 224;
    s.num_classes = 36;
    s.n = 50000;
    s.val_fraction = 0.1;
    s.steps = 20000;
    s.batch = 128;
    s.eval_every = 2000;
    s.lr = 1e-3;
    s.warmup_ratio = 0.1;
    s.drop_path = 0.1;
    s.mambaout_variant = "femto";
    s.vit_width = 384;
    s.vit_layers = 12;
    s.vit_heads = 6;
    s.vit_patch = 16;
  }
  return s;
}

// The classifier config of a variant (make_classifier's keys, models/vision.h).
json model_config(const Variant& v, const Scale& s, int64_t num_classes) {
  json m = {{"architecture", v.architecture},
            {"num_classes", num_classes},
            {"image_size", s.image_size},
            {"drop_path_rate", s.drop_path}};
  if (v.architecture == "vit") {
    m["hidden_size"] = s.vit_width;
    m["num_layers"] = s.vit_layers;
    m["num_heads"] = s.vit_heads;
    m["patch_size"] = s.vit_patch;
    m["causal"] = v.causal;
    m["pool"] = "mean";  // both modes: only the attention mask differs
  } else if (!s.mambaout_variant.empty()) {
    m["variant"] = s.mambaout_variant;
  } else {
    m["depths"] = s.depths;
    m["dims"] = s.dims;
  }
  return m;
}


int64_t count_parameters(models::ImageClassifier& clf) {
  int64_t n = 0;
  for (const auto& p : clf.module().parameters()) n += p.numel();
  return n;
}

// The data: the synthetic classes, or the image folder (checked here, so that a bad folder fails
// before any run starts, with the folder named).
struct DataChoice {
  json section;
  std::vector<std::string> classes;
  int64_t size = 0;
};

DataChoice choose_data(const ExperimentOptions& opt, const Scale& s) {
  DataChoice d;
  if (opt.data.empty()) {
    d.section = {{"source", "synthetic"},
                 {"n", s.n},
                 {"seed", 0},
                 {"num_classes", s.num_classes},
                 {"val_fraction", s.val_fraction}};
    d.classes = data::SyntheticDataset(1, s.num_classes, 8, 0).classes();
    d.size = s.n;
    return d;
  }
  const fs::path root = fs::absolute(opt.data);
  auto ds = std::make_shared<data::ImageFolderDataset>(root);
  const std::string name = root.string();
  MVL_CHECK(ds->classes().size() >= 2, name, ": --data needs at least two class folders ",
            "(root/<class>/*.png|jpg), found ", ds->classes().size());
  const data::Split split = data::split_dataset(ds, s.val_fraction, 0);
  MVL_CHECK(split.val && split.val->size() > 0 && split.train->size() > 0, name,
            ": too few images for a training and a held-out split (", ds->size(),
            " images; every class needs at least two)");
  d.section = {{"source", "folder"}, {"path", name}, {"seed", 0}, {"val_fraction", s.val_fraction}};
  d.classes = ds->classes();
  d.size = ds->size();
  return d;
}

std::string seed_name(const std::string& variant, int seed) {
  return variant + "-seed" + std::to_string(seed);
}

}  // namespace

void run_mambaout(const ExperimentOptions& opt) {
  const Scale s = scale_of(opt.scale);
  const DataChoice data = choose_data(opt, s);
  const int64_t num_classes = static_cast<int64_t>(data.classes.size());

  const std::string where = opt.data.empty()
                                ? "the synthetic shapes x colours classes"
                                : "the image folder " + fs::absolute(opt.data).string();
  Results results(
      kName, "MambaOut: is the SSM (or full attention) needed for image classification?",
      "Image classification on " + where + " (" + std::to_string(num_classes) + " classes, " +
          std::to_string(data.size) + " images, " +
          std::to_string(static_cast<int>(std::lround(s.val_fraction * 100))) +
          " % of each class held out). Variants trained identically: gated-cnn (MambaOut's "
          "Gated-CNN blocks), ssm-mixer (the same blocks with a bidirectional selective SSM in "
          "the token mixer: the Mamba block), vit-full and vit-causal (a ViT with fully visible "
          "or causal self-attention, mean-pooled).",
      opt);
  results.set("chance_top1", 1.0 / static_cast<double>(num_classes));
  results.set("classes", data.classes);

  // Models: one per variant (the seed changes only the initialisation).
  std::map<std::string, json> model_cfg;
  for (const auto& v : kVariants) {
    model_cfg[v.name] = model_config(v, s, num_classes);
    auto clf = models::make_classifier(model_cfg[v.name], 0, std::string(kName) + " " + v.name);
    results.add_row("models", {{"variant", v.name},
                               {"architecture", v.architecture},
                               {"causal", v.causal},
                               {"parameters", count_parameters(*clf)},
                               {"config", model_cfg[v.name].dump()}});
  }

  const json train_section_base = {{"batch_size", s.batch},
                                   {"seed", 0},
                                   {"log_every", std::max<int64_t>(1, s.eval_every / 5)},
                                   {"eval_every", s.eval_every},
                                   {"keep_last", 1},
                                   {"progress", false},
                                   {"stages", json::array({{{"name", "train"},
                                                            {"steps", s.steps},
                                                            {"lr", s.lr},
                                                            {"warmup_ratio", s.warmup_ratio},
                                                            {"weight_decay", s.weight_decay}}})}};

  std::vector<RunSpec> specs;
  std::vector<std::pair<std::string, int>> which;  // spec index -> (variant, seed)
  for (const auto& v : kVariants)
    for (int seed = 0; seed < opt.seeds; ++seed) {
      RunSpec r;
      r.name = seed_name(v.name, seed);
      r.label = v.name + " seed " + std::to_string(seed);
      json model = model_cfg[v.name];
      model["seed"] = seed;
      json train = train_section_base;
      train["seed"] = seed;
      r.config = {{"kind", "classifier"},
                  {"model", model},
                  {"data", data.section},
                  {"eval", {{"batch_size", 64}}},
                  {"train", train}};
      specs.push_back(std::move(r));
      which.emplace_back(v.name, seed);
    }

  log_line(opt, kName,
           std::to_string(specs.size()) + " runs (" + std::to_string(kVariants.size()) +
               " variants x " + std::to_string(opt.seeds) + " seeds), scale " + opt.scale + ", " +
               std::to_string(s.steps) + " steps each");
  const std::vector<RunOutcome> outcomes = run_all(specs, opt, kName);
  if (opt.dry_run) {
    results.add_note("dry run: configs written, nothing trained");
    results.write();
    return;
  }
  MVL_CHECK(outcomes.size() == specs.size(), "experiment mambaout: ", outcomes.size(),
            " run outcomes for ", specs.size(), " runs");

  // Curves (mean over seeds for the plot) and final metrics.
  std::map<std::string, std::map<int64_t, std::vector<double>>> top1_by_step;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const RunOutcome& o = outcomes[i];
    const auto& [variant, seed] = which[i];
    MVL_CHECK(o.final_eval.is_object() && o.final_eval.contains("val_top1"), "experiment ", kName,
              ": run ", o.name, " has no held-out evaluation in ",
              (o.dir / "train_log.jsonl").string());
    const json& ev = o.final_eval;
    results.add_metric(variant, seed, "val_top1", ev.at("val_top1").get<double>(),
                       {{"seconds", o.seconds}, {"cached", o.cached}});
    results.add_metric(variant, seed, "val_top5", ev.at("val_top5").get<double>());
    results.add_metric(variant, seed, "val_loss", ev.at("val_loss").get<double>());
    for (const json& st : o.steps)
      if (st.contains("loss") && st.contains("step"))
        results.add_curve(variant, seed, "train_loss", st.at("step").get<int64_t>(),
                          st.at("loss").get<double>());
    for (const json& e : o.evals) {
      if (!e.contains("eval") || !e.at("eval").is_object()) continue;
      const int64_t step = e.at("step").get<int64_t>();
      const json& m = e.at("eval");
      results.add_curve(variant, seed, "val_top1", step, m.at("val_top1").get<double>());
      results.add_curve(variant, seed, "val_loss", step, m.at("val_loss").get<double>());
      top1_by_step[variant][step].push_back(m.at("val_top1").get<double>());
    }
  }

  results.add_plot({{"type", "bars"},
                    {"title", "Held-out top-1 accuracy (mean ± std over " +
                                  std::to_string(opt.seeds) + " seeds)"},
                    {"x_label", "variant"},
                    {"y_label", "val top-1"},
                    {"data", results.bars_data({"val_top1"}, false)}});
  json lines = json::array();
  for (const auto& v : kVariants) {
    if (!top1_by_step.count(v.name)) continue;
    for (const auto& [step, vals] : top1_by_step.at(v.name)) {
      const Spread sp = spread(vals);
      lines.push_back({{"x", step},
                       {"y", sp.mean},
                       {"series", v.name},
                       {"lo", sp.mean - sp.std},
                       {"hi", sp.mean + sp.std}});
    }
  }
  results.add_plot({{"type", "lines"},
                    {"title", "Held-out top-1 during training (mean over seeds)"},
                    {"x_label", "step"},
                    {"y_label", "val top-1"},
                    {"log_x", false},
                    {"log_y", false},
                    {"data", lines}});
  char chance[64];
  std::snprintf(chance, sizeof chance, "chance level: top-1 = 1/%lld = %.3f",
                static_cast<long long>(num_classes), 1.0 / static_cast<double>(num_classes));
  results.add_note(chance);
  if (opt.data.empty()) {
    // Each class is a (shape, colour) pair and there are 6 colours: a model that sees colour only
    // reaches min(K, 6) / K.
    const double colour_only =
        static_cast<double>(std::min<int64_t>(num_classes, 6)) / static_cast<double>(num_classes);
    results.set("colour_only_top1", colour_only);
    std::snprintf(chance, sizeof chance, "colour alone (no shape): top-1 = %.3f", colour_only);
    results.add_note(chance);
  }
  results.add_note(
      "claims: gated-cnn ≈ ssm-mixer (MambaOut: the SSM is not needed for classification); "
      "vit-full > vit-causal (causal token mixing hurts classification)");
  results.write();
}

}  // namespace mambavl::experiments
