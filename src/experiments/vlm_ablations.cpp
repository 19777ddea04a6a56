// The four VLM experiments of SPEC §4 (coarse-fine, task-aware, resolution, connectors): each
// trains its variants with the recipe of vlm_common.h (same data, steps, optimizer, schedule and
// evaluation for every variant; K seeds) and reports caption CIDEr-D, VQA exact match and
// grounding accuracy (IoU > 0.5) on held-out synthetic scenes.
#include "common/error.h"
#include "experiments/experiment.h"
#include "experiments/vlm_common.h"

namespace mambavl::experiments {

namespace {

void run_vlm_experiment(const std::string& name, const std::string& title,
                        const std::string& description, const std::vector<vlm::Variant>& variants,
                        const std::vector<std::string>& notes, const ExperimentOptions& opt) {
  MVL_CHECK(opt.scale != "paper" || opt.dry_run, "experiment ", name,
            ": the paper scale trains 0.8-3B-parameter models (a GPU job); on this machine only "
            "--dry-run (write its run files) is possible");
  Results results(name, title, description, opt);
  for (const auto& n : notes) results.add_note(n);
  const vlm::Plan plan = vlm::make_plan(variants, opt);
  log_line(opt, name,
           std::to_string(plan.chains.size()) + " trained variant x seed chains at " + opt.scale +
               " scale" + (opt.dry_run ? " (dry run)" : ""));
  vlm::execute(plan, results, opt, name);
}

std::vector<vlm::Variant> backbones() {
  std::vector<vlm::Variant> v;
  for (const auto& b : vlm::kBackbones) {
    vlm::Variant x;
    x.name = b;
    x.backbone = b;
    v.push_back(x);
  }
  return v;
}

}  // namespace

void run_coarse_fine(const ExperimentOptions& opt) {
  run_vlm_experiment(
      "coarse-fine", "Coarse- vs fine-grained tasks: Mamba-VL vs Pythia-VL vs hybrid-VL",
      "Three backbones of about equal size trained identically (same encoder, connector, data, "
      "steps, optimizer) on synthetic scenes: captioning (CIDEr-D), VQA (exact match) and "
      "grounding (accuracy at IoU > 0.5). Shaking-Up claims Mamba-VL matches or beats Pythia-VL "
      "on the coarse tasks (captions, VQA) but trails it on grounding, a fine-grained task.",
      backbones(), {}, opt);
}

void run_task_aware(const ExperimentOptions& opt) {
  std::vector<vlm::Variant> vs;
  for (const auto& b : vlm::kBackbones)
    for (const std::string order : {"default", "instruction_first", "query_first"}) {
      vlm::Variant v;
      v.name = b + "/" + order;
      v.backbone = b;
      // The default order omits the key, so these runs are coarse-fine's (shared by the cache).
      v.order = order == "default" ? "" : order;
      vs.push_back(v);
    }
  run_vlm_experiment(
      "task-aware", "Task-aware encoding: where the instruction and query go in the prompt",
      "Each backbone trained with the prompt orders default (image, instruction, query), "
      "instruction_first (instruction, image, query) and query_first (instruction, query, "
      "image), everything else equal. Shaking-Up: placing the task before the image "
      "(task-aware encoding) helps Mamba, whose recurrent state reads the image knowing the task "
      "(mainly on grounding); attention models can look back and gain less.",
      vs,
      {"The default-order variants are exactly coarse-fine's runs (same run files): with a "
       "shared cache they are reused, not trained again."},
      opt);
}

void run_resolution(const ExperimentOptions& opt) {
  const auto sizes = vlm::resolution_sizes(opt.scale);
  std::vector<vlm::Variant> vs;
  for (const auto& b : vlm::kBackbones)
    for (size_t i = 0; i < sizes.size(); ++i) {
      vlm::Variant v;
      v.name = b + "/" + std::to_string(sizes[i]) + "px";
      v.backbone = b;
      // The first size is the recipe's own (coarse-fine's runs, shared through the cache).
      v.image_size = i == 0 ? 0 : sizes[i];
      vs.push_back(v);
    }
  std::vector<std::string> notes = {
      "Image sizes " + std::to_string(sizes[0]) + " and " + std::to_string(sizes[1]) +
      " px: the larger one gives more patches (image tokens) for the same scenes. The "
      "first size is the recipe's default, so those runs are coarse-fine's (shared by the "
      "cache)."};
  if (opt.scale == "micro" || opt.scale == "tiny")
    notes.push_back(
        "Every variant uses the same frozen encoder, pretrained at " + std::to_string(sizes[0]) +
        " px; at " + std::to_string(sizes[1]) +
        " px its position embeddings are interpolated (bicubic, as for a pretrained CLIP run at "
        "another size). The scenes are rendered at each variant's size (same objects).");
  if (opt.scale == "paper")
    notes.push_back("Paper scale: at " + std::to_string(sizes[1]) +
                    " px the encoder's position embeddings are interpolated (the presets are at " +
                    std::to_string(sizes[0]) + " px).");
  run_vlm_experiment("resolution", "Image resolution: more patches per image",
                     "Each backbone trained at two image sizes (the larger gives more image "
                     "tokens), everything else equal.",
                     vs, notes, opt);
}

void run_connectors(const ExperimentOptions& opt) {
  struct C {
    const char* name;
    const char* type;
    const char* scan;
  };
  std::vector<vlm::Variant> vs;
  for (const C& c :
       {C{"mlp", "", ""}, C{"vss-mlp/bsm", "vss_mlp", "bsm"}, C{"vss-mlp/csm", "vss_mlp", "csm"},
        C{"vss-l2/bsm", "vss_l2", "bsm"}, C{"vss-l2/csm", "vss_l2", "csm"}}) {
    vlm::Variant v;
    v.name = c.name;
    v.backbone = "mamba-vl";
    v.connector = c.type;
    v.scan = c.scan;
    vs.push_back(v);
  }
  // At micro / tiny / small the "mlp" variant keeps the preset's connector (mlp): it is
  // coarse-fine's mamba-vl run. At paper scale the base is VL-Mamba's preset (VSS-L2): say mlp.
  if (opt.scale == "paper") vs[0].connector = "mlp", vs[0].scan = "bsm";
  std::vector<std::string> notes = {
      "VL-Mamba's connector ablation on a Mamba backbone: MLP (LLaVA's two linear layers), "
      "VSS-MLP (a vision selective scan at the encoder's width before the MLP) and VSS-L2 (the "
      "scan at the LM's width between the two linear layers), each VSS with the bidirectional "
      "scan (BSM: row-major and reversed) or the cross scan (CSM: rows and columns, both "
      "directions)."};
  if (opt.scale != "paper")
    notes.push_back(
        "Below paper scale the base is the Mamba-VL recipe (separator image block), so the mlp "
        "variant is coarse-fine's mamba-vl run (shared by the cache); VL-Mamba itself uses the "
        "plain image block.");
  run_vlm_experiment("connectors", "Vision-language connectors: MLP vs VSS-MLP vs VSS-L2",
                     "VL-Mamba's ablation: the connector between a frozen vision encoder and a "
                     "Mamba LM, everything else equal. VL-Mamba reports VSS-L2 at least as good "
                     "as the MLP.",
                     vs, notes, opt);
}

}  // namespace mambavl::experiments
