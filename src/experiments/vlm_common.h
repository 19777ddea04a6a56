// The recipes of the VLM experiments (coarse-fine, task-aware, resolution, connectors): which run
// files each variant × seed trains at each scale, and how a finished set of runs becomes metrics,
// curves and plots. Internal to src/experiments/vlm_*.cpp.
//
// Scales (see vlm_recipe.cpp for the numbers):
//   micro  plumbing only: 16-px scenes, models of a few thousand parameters, a handful of steps.
//   tiny   the demo: 32-px one-object scenes (a 4 x 4 patch grid), a 4-layer ViT, 128-wide
//          backbones. Phase 1: a shared vision encoder per seed, pretrained on captions only
//          (cached: every experiment and variant of that seed starts from the same one). Phase 2:
//          each variant trains a new connector + language model on captions, VQA and grounding
//          with the pretrained encoder frozen (as the papers keep CLIP / EVA / SigLIP frozen).
//   small  the four-run chain of configs/*-tiny-*.toml (captions -> a third each -> grounding ->
//          mixed), 64-px scenes and the 4.5-5.2M-parameter tiny presets; run k of a chain starts
//          from run k - 1's final model (model.init_from, all three parts).
//   paper  the papers' presets (mamba-vl-790m, pythia-vl-1b, a hybrid of mamba-vl-790m,
//          vl-mamba-2.8b) and their two stages (connector only, then connector + LM); configs
//          only (dry run).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "experiments/experiment.h"
#include "experiments/runner.h"

namespace mambavl::experiments::vlm {

using nlohmann::json;

// The three metrics every VLM experiment reports (names read by claims.h).
inline const std::vector<std::string> kMetrics = {"caption_cider_d", "vqa_exact_match",
                                                  "grounding_accuracy"};
inline const std::vector<std::string> kBackbones = {"mamba-vl", "pythia-vl", "hybrid-vl"};

// One variant of an experiment: a backbone and what differs from the recipe's default.
struct Variant {
  std::string name;                   // "mamba-vl/query_first"
  std::string backbone = "mamba-vl";  // one of kBackbones
  std::string order;                  // "" (the model's default; key omitted) or a prompt order
  int64_t image_size = 0;             // 0: the recipe's
  std::string connector;              // "" (the preset's) | "mlp" | "vss_mlp" | "vss_l2"
  std::string scan;                   // "" | "bsm" | "csm"
};

// The runs of one variant × seed, in phase order (run k of every chain goes in phase k + 1;
// phase 0 holds the shared encoder runs).
struct Chain {
  Variant variant;
  int seed = 0;
  std::vector<RunSpec> runs;
};

struct Plan {
  std::string scale;
  std::vector<RunSpec> encoders;  // phase 0 (tiny / micro), deduplicated by name
  std::vector<Chain> chains;
  std::vector<std::string> notes;  // the recipe in words, parameter counts
};

// The image sizes of the resolution experiment at a scale (the first is the recipe's default).
std::vector<int64_t> resolution_sizes(const std::string& scale);
// The paper-scale preset of a backbone (connectors: "vl-mamba").
std::string paper_preset(const std::string& backbone);

// The runs of `variants` × seeds 0..opt.seeds - 1 at opt.scale.
Plan make_plan(const std::vector<Variant>& variants, const ExperimentOptions& opt);

// Writes the configs, runs the phases (nothing with opt.dry_run), and fills `results`: metrics
// per variant × seed, training-loss curves, the bars and lines plots, notes (recipe, parameters,
// cache reuse, wall time per phase) and a "runs" key listing every run. Calls results.write().
void execute(const Plan& plan, Results& results, const ExperimentOptions& opt,
             const std::string& experiment);

}  // namespace mambavl::experiments::vlm
