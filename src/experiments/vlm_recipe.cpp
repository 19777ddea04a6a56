// The run files of the VLM experiments at each scale (vlm_common.h) and their execution.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "data/scenes.h"
#include "data/word_tokenizer.h"
#include "eval/vl_metrics.h"
#include "experiments/vlm_common.h"
#include "models/vlm.h"

namespace mambavl::experiments::vlm {

namespace {

// The numbers of one scale (micro / tiny; small and paper use the run files of configs/ and the
// papers' presets).
struct Shapes {
  int64_t image_size = 32;
  int64_t vit_hidden = 128, vit_layers = 4, vit_heads = 4, patch = 8;
  int64_t d_lm = 128, heads = 4;
  int64_t mamba_layers = 4, pythia_layers = 2, hybrid_layers = 4, hybrid_attn = 1;
  int64_t n = 20000, batch = 16;
  int64_t encoder_steps = 600;
  double encoder_lr = 1e-3;
  int64_t steps = 200;
  double lr = 1e-3;
  std::vector<std::string> tasks = {"caption", "vqa", "grounding", "grounding"};
  int64_t eval_n = 240, eval_batch = 60, max_new_tokens = 24;
  int64_t log_every = 10;
};

Shapes shapes(const std::string& scale) {
  Shapes s;
  if (scale == "micro") {
    s.image_size = 16;
    s.vit_hidden = 32, s.vit_layers = 1, s.vit_heads = 2, s.patch = 8;
    s.d_lm = 32, s.heads = 2;
    s.mamba_layers = 2, s.pythia_layers = 1, s.hybrid_layers = 2, s.hybrid_attn = 1;
    s.n = 64, s.batch = 4;
    s.encoder_steps = 3, s.steps = 3;
    s.tasks = {"caption", "vqa", "grounding"};
    s.eval_n = 6, s.eval_batch = 6, s.max_new_tokens = 4;
    s.log_every = 1;
  }
  return s;
}

// A config's content hash, short: names a shared run by its content, so a variant that starts
// from it has another config (and cache key) whenever the shared run changes.
std::string short_hash(const json& j) { return content_hash(j).substr(0, 8); }

json merged(json a, const json& b) {
  a.merge_patch(b);
  return a;
}

std::string tiny_preset(const std::string& backbone) { return backbone + "-tiny"; }

// model.overrides of a micro / tiny model: the encoder (trained at `encoder_size`), the input
// size, the backbone's width and depth, the connector.
json small_overrides(const Shapes& s, const std::string& backbone, int64_t encoder_size,
                     int64_t image_size) {
  json o = {{"vision_config",
             {{"hidden_size", s.vit_hidden},
              {"num_hidden_layers", s.vit_layers},
              {"num_attention_heads", s.vit_heads},
              {"intermediate_size", 4 * s.vit_hidden},
              {"patch_size", s.patch},
              {"image_size", encoder_size}}},
            {"image_size", image_size},
            {"connector_config", {{"d_vision", s.vit_hidden}, {"d_lm", s.d_lm}}}};
  const int64_t d = s.d_lm, rank = (d + 15) / 16, head_dim = d / s.heads;
  if (backbone == "mamba-vl") {
    o["text_config"] = {{"hidden_size", d},
                        {"num_hidden_layers", s.mamba_layers},
                        {"intermediate_size", 2 * d},
                        {"time_step_rank", rank}};
  } else if (backbone == "pythia-vl") {
    o["text_config"] = {{"hidden_size", d},
                        {"num_hidden_layers", s.pythia_layers},
                        {"num_attention_heads", s.heads},
                        {"intermediate_size", 4 * d}};
  } else {
    MVL_CHECK(backbone == "hybrid-vl", "VLM experiments: unknown backbone '", backbone, "'");
    o["text_config"] = {{"d_model", d},
                        {"n_layer", s.hybrid_layers},
                        {"attn_layer_idx", json::array({s.hybrid_attn})},
                        {"ssm_cfg", {{"dt_rank", rank}}},
                        {"attn_cfg",
                         {{"num_heads", s.heads},
                          {"num_heads_kv", s.heads},
                          {"head_dim", head_dim},
                          {"rotary_emb_dim", head_dim / 2}}}};
  }
  return o;
}

json connector_overrides(const Variant& v) {
  json c = json::object();
  if (!v.connector.empty()) c["type"] = v.connector;
  if (!v.scan.empty()) c["scan"] = v.scan;
  return c.empty() ? json::object() : json{{"connector_config", c}};
}

json stage(const std::string& name, int64_t steps, double lr,
           const std::vector<std::string>& freeze) {
  json st = {{"name", name},         {"steps", steps},       {"lr", lr},
             {"warmup_ratio", 0.05}, {"min_lr_ratio", 0.05}, {"weight_decay", 0.01}};
  if (!freeze.empty()) st["freeze"] = freeze;
  return st;
}

json scenes_data(int64_t n, uint64_t seed, int64_t size, int64_t max_objects,
                 const std::vector<std::string>& tasks) {
  return {{"source", "scenes"}, {"n", n},           {"seed", seed},
          {"image_size", size}, {"min_objects", 1}, {"max_objects", max_objects},
          {"tasks", tasks}};
}

json train_section(int64_t batch, int seed, int64_t log_every, const std::vector<json>& stages) {
  return {{"batch_size", batch}, {"grad_clip", 1.0}, {"seed", seed},      {"log_every", log_every},
          {"save_every", 0},     {"keep_last", 1},   {"progress", false}, {"stages", stages}};
}

std::string run_name(const Variant& v, int seed) {
  std::string n = v.name;
  std::replace(n.begin(), n.end(), '/', '-');
  return n + "-s" + std::to_string(seed);
}

// --- micro / tiny: a shared pretrained encoder, then one run per variant ------------------

RunSpec encoder_run(const Shapes& s, int64_t size, int seed) {
  json cfg = {{"kind", "vlm"},
              {"model",
               {{"preset", tiny_preset("mamba-vl")},
                {"seed", seed},
                {"overrides", small_overrides(s, "mamba-vl", size, size)}}},
              {"data", scenes_data(s.n, 0, size, 1, {"caption"})},
              {"eval", {{"n", 0}}},
              {"train", train_section(s.batch, seed, s.log_every,
                                      {stage("captions", s.encoder_steps, s.encoder_lr, {})})}};
  RunSpec r;
  r.name =
      "encoder-" + std::to_string(size) + "px-s" + std::to_string(seed) + "-" + short_hash(cfg);
  r.label = "vision encoder " + std::to_string(size) + " px seed " + std::to_string(seed);
  r.config = cfg;
  r.keep_model = true;
  return r;
}

RunSpec variant_run(const Shapes& s, const Variant& v, int seed, const RunSpec& encoder) {
  const int64_t size = v.image_size > 0 ? v.image_size : s.image_size;
  json model = {{"preset", tiny_preset(v.backbone)},
                {"seed", seed},
                {"overrides", merged(small_overrides(s, v.backbone, s.image_size, size),
                                     connector_overrides(v))},
                {"init_from", encoder.name + "/final"},
                {"init_parts", json::array({"vision_tower"})}};
  if (!v.order.empty()) model["prompt_order"] = v.order;
  RunSpec r;
  r.name = run_name(v, seed);
  r.label = v.name + " seed " + std::to_string(seed);
  r.config = {
      {"kind", "vlm"},
      {"model", model},
      {"data", scenes_data(s.n, 1, size, 1, s.tasks)},
      {"eval",
       {{"n", s.eval_n}, {"batch_size", s.eval_batch}, {"max_new_tokens", s.max_new_tokens}}},
      {"train", train_section(s.batch, seed, s.log_every,
                              {stage("tasks", s.steps, s.lr, {"vision_tower"})})}};
  return r;
}

// --- small: the four-run chain of configs/*-tiny-*.toml -------------------------------------

std::vector<RunSpec> small_chain(const Variant& v, int seed) {
  struct R {
    const char* suffix;
    const char* stage;
    int64_t steps;
    double lr;
    std::vector<std::string> tasks;
    int64_t eval_n;
  };
  const std::vector<R> rs = {
      {"r1-captions", "captions", 250, 1e-3, {"caption"}, 150},
      {"r2-tasks", "tasks", 500, 5e-4, {"caption", "vqa", "grounding"}, 150},
      {"r3-grounding", "grounding", 300, 5e-4, {"grounding"}, 0},
      {"r4-mixed", "mixed", 200, 3e-4, {"caption", "grounding", "vqa", "grounding"}, 150}};
  const int64_t size = v.image_size > 0 ? v.image_size : 64;
  json ov = connector_overrides(v);
  if (v.image_size > 0)
    ov = merged(ov, {{"image_size", size}, {"vision_config", {{"image_size", size}}}});
  std::vector<RunSpec> out;
  for (size_t k = 0; k < rs.size(); ++k) {
    json model = {{"preset", tiny_preset(v.backbone)}, {"seed", seed}};
    if (!ov.empty()) model["overrides"] = ov;
    if (k > 0) {
      model["init_from"] = out.back().name + "/final";
      model["init_parts"] =
          json::array({"vision_tower", "multi_modal_projector", "language_model"});
    }
    if (!v.order.empty()) model["prompt_order"] = v.order;
    RunSpec r;
    r.config = {
        {"kind", "vlm"},
        {"model", model},
        {"data", scenes_data(24000, k, size, 1, rs[k].tasks)},
        {"eval", {{"n", rs[k].eval_n}, {"batch_size", 50}, {"max_new_tokens", 24}}},
        {"train", train_section(16, seed, 25, {stage(rs[k].stage, rs[k].steps, rs[k].lr, {})})}};
    // Named by content (not by the variant's name), so the next run's init_from, and with it its
    // cache key, is the same in every experiment that trains this chain.
    r.name =
        v.backbone + "-s" + std::to_string(seed) + "-" + short_hash(r.config) + "-" + rs[k].suffix;
    r.label = v.name + " seed " + std::to_string(seed) + " run " + std::to_string(k + 1) + "/4";
    r.keep_model = k + 1 < rs.size();
    out.push_back(r);
  }
  return out;
}

// --- paper: the papers' presets, two stages ------------------------------------------------

RunSpec paper_run(const Variant& v, int seed, bool connectors) {
  const std::string preset = connectors ? paper_preset("vl-mamba") : paper_preset(v.backbone);
  json ov = connector_overrides(v);
  if (v.backbone == "hybrid-vl" && !connectors)
    // Mamba-790M's 48 layers with one attention layer in 8 (the Jamba ratio), 12 heads of 128.
    ov = merged(ov, {{"family", "hybrid-vl"},
                     {"text_config",
                      {{"attn_layer_idx", {4, 12, 20, 28, 36, 44}},
                       {"attn_cfg", {{"num_heads", 12}, {"rotary_emb_dim", 64}}}}}});
  if (v.image_size > 0) ov = merged(ov, {{"image_size", v.image_size}});
  const int64_t size = v.image_size > 0 ? v.image_size : (connectors ? 384 : 336);
  json model = {{"preset", preset}, {"seed", seed}};
  if (!ov.empty()) model["overrides"] = ov;
  if (!v.order.empty()) model["prompt_order"] = v.order;
  RunSpec r;
  r.name = run_name(v, seed);
  r.label = v.name + " seed " + std::to_string(seed);
  r.config = {{"kind", "vlm"},
              {"model", model},
              {"data", scenes_data(200000, 0, size, 3, {"caption", "vqa", "grounding"})},
              {"eval", {{"n", 1000}, {"batch_size", 16}, {"max_new_tokens", 32}}},
              {"train",
               merged(train_section(32, seed, 10,
                                    {stage("align", 2000, 1e-3, {"vision_tower", "language_model"}),
                                     stage("instruct", 5000, 2e-5, {"vision_tower"})}),
                      {{"save_every", 1000}, {"keep_last", 2}})}};
  return r;
}

int64_t scenes_vocab_size() {
  const json tok = json::parse(
      data::make_wordlevel_tokenizer_json(data::scene_texts_for_vocabulary(), {"###", "&&"}));
  return static_cast<int64_t>(tok.at("model").at("vocab").size());
}

// Parameters of the model a run file builds: {total, language_model, connector} (micro / tiny /
// small only: the model is built without initialising it).
json parameter_counts(const json& run) {
  const json& m = run.at("model");
  models::VLMConfig c = models::vlm_preset(m.at("preset").get<std::string>(), scenes_vocab_size());
  if (m.contains("overrides"))
    c = models::VLMConfig::from_json(merged(c.to_json(), m.at("overrides")), "overrides");
  models::VLM vlm(c, 0, /*initialize=*/false);
  int64_t lm = 0, conn = 0;
  for (const auto& p : vlm.module().named_parameters(true)) {
    if (p.key().rfind("language_model.", 0) == 0) lm += p.value().numel();
    if (p.key().rfind("multi_modal_projector.", 0) == 0) conn += p.value().numel();
  }
  return {{"total", vlm.num_parameters()}, {"language_model", lm}, {"connector", conn}};
}

std::string millions(int64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3fM", static_cast<double>(n) / 1e6);
  return buf;
}

// Image-blind references on the held-out scenes of a run file, from its training data alone: the
// most frequent training caption for every image (CIDEr-D), the most frequent training answer to
// the same question text (VQA; else the most frequent answer overall), and the mean training box
// of the same referring phrase (grounding; else the mean box overall). What a model that ignores
// the image can reach at best by these simple priors.
json blind_baselines(const json& run) {
  const json& d = run.at("data");
  data::SceneOptions so;
  so.image_size = d.at("image_size");
  so.min_objects = d.at("min_objects");
  so.max_objects = d.at("max_objects");
  so.tasks = d.at("tasks").get<std::vector<std::string>>();
  const uint64_t seed = d.at("seed");
  const int64_t n = d.at("n"), eval_n = run.at("eval").at("n");
  std::map<std::string, int64_t> captions, answers;
  std::map<std::string, std::map<std::string, int64_t>> by_question;
  std::map<std::string, std::pair<std::array<double, 4>, int64_t>> boxes;
  std::array<double, 4> mean_box{0, 0, 0, 0};
  int64_t n_boxes = 0;
  auto argmax = [](const std::map<std::string, int64_t>& m) {
    std::string best;
    int64_t c = -1;
    for (const auto& [k, v] : m)
      if (v > c) best = k, c = v;
    return best;
  };
  const data::SceneDataset train(n, seed, so), held(eval_n, seed + 0x5eed5eedull, so);
  for (int64_t i = 0; i < train.size(); ++i) {
    const auto ex = train.example(i);
    if (ex.task == "caption") ++captions[ex.answers.at(0)];
    if (ex.task == "vqa") ++answers[ex.answers.at(0)], ++by_question[ex.question][ex.answers.at(0)];
    if (ex.task == "grounding" && ex.box) {
      auto& [sum, cnt] = boxes[ex.question];
      for (int k = 0; k < 4; ++k) sum[k] += (*ex.box)[k], mean_box[k] += (*ex.box)[k];
      ++cnt, ++n_boxes;
    }
  }
  const std::string caption = argmax(captions), answer = argmax(answers);
  std::vector<std::vector<std::string>> refs;
  std::vector<std::string> cands;
  int64_t vqa_n = 0, vqa_ok = 0, g_n = 0, g_ok = 0;
  for (int64_t i = 0; i < held.size(); ++i) {
    const auto ex = held.example(i);
    if (ex.task == "caption") refs.push_back(ex.answers), cands.push_back(caption);
    if (ex.task == "vqa") {
      auto it = by_question.find(ex.question);
      ++vqa_n;
      vqa_ok +=
          eval::vqa_exact_match(it == by_question.end() ? answer : argmax(it->second), ex.answers)
              ? 1
              : 0;
    }
    if (ex.task == "grounding" && ex.box && n_boxes > 0) {
      auto it = boxes.find(ex.question);
      std::array<double, 4> b = it == boxes.end() ? mean_box : it->second.first;
      const double c = static_cast<double>(it == boxes.end() ? n_boxes : it->second.second);
      for (auto& x : b) x /= c;
      ++g_n;
      g_ok += eval::box_iou(b, *ex.box) > 0.5 ? 1 : 0;
    }
  }
  json out = json::array();
  if (!cands.empty())
    out.push_back({{"metric", "caption_cider_d"},
                   {"value", eval::cider_d(refs, cands)},
                   {"n", cands.size()},
                   {"prior", "the most frequent training caption: \"" + caption + "\""}});
  if (vqa_n > 0)
    out.push_back({{"metric", "vqa_exact_match"},
                   {"value", static_cast<double>(vqa_ok) / vqa_n},
                   {"n", vqa_n},
                   {"prior", "the most frequent training answer to the same question"}});
  if (g_n > 0)
    out.push_back({{"metric", "grounding_accuracy"},
                   {"value", static_cast<double>(g_ok) / g_n},
                   {"n", g_n},
                   {"prior", "the mean training box of the same phrase"}});
  return out;
}

}  // namespace

std::vector<int64_t> resolution_sizes(const std::string& scale) {
  if (scale == "micro") return {16, 24};
  if (scale == "tiny") return {32, 48};
  if (scale == "small") return {64, 96};
  return {336, 448};
}

std::string paper_preset(const std::string& backbone) {
  if (backbone == "pythia-vl") return "pythia-vl-1b";
  if (backbone == "vl-mamba") return "vl-mamba-2.8b";
  return "mamba-vl-790m";  // mamba-vl; hybrid-vl: mamba-vl-790m with attention layers
}

Plan make_plan(const std::vector<Variant>& variants, const ExperimentOptions& opt) {
  Plan plan;
  plan.scale = opt.scale;
  const bool connectors = std::any_of(variants.begin(), variants.end(),
                                      [](const Variant& v) { return !v.connector.empty(); });
  std::set<std::string> enc_names;
  for (const auto& v : variants)
    for (int seed = 0; seed < opt.seeds; ++seed) {
      Chain ch;
      ch.variant = v;
      ch.seed = seed;
      if (opt.scale == "micro" || opt.scale == "tiny") {
        const Shapes s = shapes(opt.scale);
        RunSpec enc = encoder_run(s, s.image_size, seed);
        if (enc_names.insert(enc.name).second) plan.encoders.push_back(enc);
        ch.runs.push_back(variant_run(s, v, seed, enc));
      } else if (opt.scale == "small") {
        ch.runs = small_chain(v, seed);
      } else {
        ch.runs.push_back(paper_run(v, seed, connectors));
      }
      plan.chains.push_back(ch);
    }

  // The recipe in words.
  if (opt.scale == "micro" || opt.scale == "tiny") {
    const Shapes s = shapes(opt.scale);
    std::ostringstream o;
    o << "Recipe (" << opt.scale << "): one-object synthetic scenes at " << s.image_size
      << " px (a " << s.image_size / s.patch << " x " << s.image_size / s.patch
      << " patch grid). Phase 1, one per seed and shared by every variant and experiment (the "
         "cache): a "
      << s.vit_layers << "-layer ViT (width " << s.vit_hidden
      << ") is pretrained with a small Mamba LM on captions only (" << s.encoder_steps
      << " steps, batch " << s.batch << ", lr " << s.encoder_lr
      << "), so the encoder learns to see before any task can be answered from the language "
         "prior. Phase 2, per variant: a new connector and language model (width "
      << s.d_lm << ") are trained on " << join(s.tasks) << " (" << s.steps << " steps, batch "
      << s.batch << ", lr " << s.lr
      << ", warmup 5 %, cosine to 5 %) with the pretrained encoder frozen, as the papers keep "
         "their pretrained encoders frozen. Every variant of a seed sees the same training data "
         "(data seed 1), and all are evaluated on the same "
      << s.eval_n << " held-out scenes (greedy, " << s.max_new_tokens
      << " new tokens). Seed = model initialisation + trainer seed (and the seed's encoder).";
    plan.notes.push_back(o.str());
  } else if (opt.scale == "small") {
    plan.notes.push_back(
        "Recipe (small): the four-run chain of configs/*-tiny-*.toml per variant and seed, "
        "everything trained from scratch on one-object 64-px scenes, batch 16: captions (250 "
        "steps, lr 1e-3) -> captions / VQA / grounding a third each (500, 5e-4) -> grounding "
        "alone (300, 5e-4) -> all three with grounding twice (200, 3e-4); each run starts from "
        "the previous run's final model (model.init_from) on new scenes (data seeds 0-3, the "
        "same for every variant); evaluated on 150 held-out scenes after run 4.");
  } else {
    plan.notes.push_back(
        "Recipe (paper): the papers' shapes (" + paper_preset("mamba-vl") + ", " +
        paper_preset("pythia-vl") + ", a hybrid of " + paper_preset("mamba-vl") +
        " with one attention layer in 8, " + paper_preset("vl-mamba") +
        " for the connectors) and their two stages: the connector alone (2000 steps, lr 1e-3), "
        "then connector + LM (5000 steps, lr 2e-5), the encoder frozen throughout. The presets "
        "are random: a real run composes the pretrained encoder and LM first (`mambavl "
        "compose`) and needs a GPU; the configs are written for reference (dry run).");
  }
  if (opt.scale != "paper") {
    std::map<std::string, json> seen;
    std::ostringstream o;
    o << "Parameters (the same for every seed):";
    for (const auto& ch : plan.chains) {
      if (ch.seed != 0 || seen.count(ch.variant.name)) continue;
      const json p = parameter_counts(ch.runs.front().config);
      seen[ch.variant.name] = p;
      o << " " << ch.variant.name << " " << millions(p.at("total")) << " (language model "
        << millions(p.at("language_model")) << ", connector " << millions(p.at("connector"))
        << ");";
    }
    plan.notes.push_back(o.str());
  }
  return plan;
}

void execute(const Plan& plan, Results& results, const ExperimentOptions& opt,
             const std::string& experiment) {
  for (const auto& n : plan.notes) results.add_note(n);
  json runs = json::array();
  auto describe = [&](const RunSpec& r, const std::string& variant, int seed, int phase) {
    return json{{"name", r.name}, {"variant", variant}, {"seed", seed}, {"phase", phase}};
  };
  size_t phases = plan.encoders.empty() ? 0 : 1, depth = 0;
  for (const auto& ch : plan.chains) depth = std::max(depth, ch.runs.size());
  phases += depth;

  if (opt.dry_run) {  // the runner writes every run file into configs/ and runs nothing
    std::vector<RunSpec> all = plan.encoders;
    for (const auto& r : plan.encoders) runs.push_back(describe(r, "", 0, 0));
    const int first = plan.encoders.empty() ? 0 : 1;
    for (const auto& ch : plan.chains)
      for (size_t k = 0; k < ch.runs.size(); ++k) {
        all.push_back(ch.runs[k]);
        runs.push_back(describe(ch.runs[k], ch.variant.name, ch.seed, first + static_cast<int>(k)));
      }
    run_all(all, opt, experiment);
    results.set("runs", runs);
    results.add_note("Dry run: the run files are in configs/, nothing was trained.");
    results.write();
    return;
  }

  std::map<std::string, RunOutcome> done;
  std::vector<std::string> timing;
  auto run_phase = [&](const std::vector<RunSpec>& specs, const std::string& what) {
    const auto t0 = std::chrono::steady_clock::now();
    auto outs = run_all(specs, opt, experiment);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int cached = 0;
    for (auto& o : outs) {
      cached += o.cached ? 1 : 0;
      done[o.name] = o;
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s: %zu runs (%d from the cache) in %.1f s", what.c_str(),
                  specs.size(), cached, s);
    timing.push_back(buf);
    log_line(opt, experiment, buf);
  };
  int phase = 0;
  if (!plan.encoders.empty()) {
    run_phase(plan.encoders, "phase " + std::to_string(phase) + " (shared vision encoders)");
    for (const auto& r : plan.encoders) runs.push_back(describe(r, "", 0, phase));
    ++phase;
  }
  for (size_t k = 0; k < depth; ++k, ++phase) {
    std::vector<RunSpec> specs;
    for (const auto& ch : plan.chains)
      if (k < ch.runs.size()) {
        specs.push_back(ch.runs[k]);
        runs.push_back(describe(ch.runs[k], ch.variant.name, ch.seed, phase));
      }
    run_phase(specs, "phase " + std::to_string(phase) +
                         (depth > 1 ? " (run " + std::to_string(k + 1) + " of each chain)"
                                    : " (the variants)"));
  }
  int cached = 0;
  for (auto& r : runs) {
    const RunOutcome& o = done.at(r.at("name").get<std::string>());
    r["seconds"] = o.seconds;
    r["cached"] = o.cached;
    cached += o.cached ? 1 : 0;
  }

  // Metrics of each chain's last run; loss curves over the whole chain.
  for (const auto& ch : plan.chains) {
    const RunOutcome& last = done.at(ch.runs.back().name);
    json ev = last.final_eval;
    if (ev.is_object() && ev.contains("eval")) ev = ev.at("eval");
    MVL_CHECK(ev.is_object(), "experiment ", experiment, ": run ", last.name,
              " has no evaluation in its train_log.jsonl (", last.dir.string(), ")");
    auto metric = [&](const char* task, const char* key, const char* name) {
      if (!ev.contains(task)) return;
      const json& t = ev.at(task);
      json extra = {{"n", t.value("n", 0)}};
      results.add_metric(ch.variant.name, ch.seed, name, t.at(key).get<double>(), extra);
    };
    metric("caption", "cider_d", "caption_cider_d");
    metric("vqa", "exact_match", "vqa_exact_match");
    metric("grounding", "accuracy", "grounding_accuracy");
    int64_t offset = 0;
    for (const auto& spec : ch.runs) {
      const RunOutcome& o = done.at(spec.name);
      int64_t last_step = 0;
      for (const auto& s : o.steps) {
        if (!s.contains("loss") || !s.contains("step")) continue;
        last_step = s.at("step").get<int64_t>();
        results.add_curve(ch.variant.name, ch.seed, "loss", offset + last_step,
                          s.at("loss").get<double>());
      }
      offset += last_step;
    }
  }

  // Plots: the three metrics per variant; the training loss per variant (mean over seeds).
  results.add_plot({{"type", "bars"},
                    {"title", "Held-out scores (mean ± std over seeds)"},
                    {"x_label", "variant"},
                    {"y_label", "CIDEr-D / exact match / accuracy (IoU > 0.5)"},
                    {"data", results.bars_data(kMetrics, true)}});
  std::vector<std::string> order;
  std::map<std::string, std::map<int64_t, std::vector<double>>> by;
  if (results.tables().contains("curves"))
    for (const auto& r : results.tables().at("curves")) {
      const std::string v = r.at("variant");
      if (!by.count(v)) order.push_back(v);
      by[v][r.at("step").get<int64_t>()].push_back(r.at("value").get<double>());
    }
  json lines = json::array();
  for (const auto& v : order)
    for (const auto& [step, vals] : by[v]) {
      const Spread sp = spread(vals);
      lines.push_back({{"x", step},
                       {"y", sp.mean},
                       {"series", v},
                       {"lo", sp.mean - sp.std},
                       {"hi", sp.mean + sp.std}});
    }
  results.add_plot({{"type", "lines"},
                    {"title", "Training loss (answer tokens; mean over seeds)"},
                    {"x_label", "step"},
                    {"y_label", "loss"},
                    {"log_x", false},
                    {"log_y", true},
                    {"data", lines}});
  if (plan.scale != "paper" && !plan.chains.empty()) {
    // The same held-out scenes for every variant (the resolution experiment renders them at two
    // sizes; the priors do not depend on the size).
    std::vector<std::string> parts;
    for (const auto& b : blind_baselines(plan.chains.front().runs.back().config)) {
      results.add_row("baselines", b);
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s %.3f", b.at("metric").get<std::string>().c_str(),
                    b.at("value").get<double>());
      parts.push_back(buf);
    }
    results.add_note(
        "Image-blind references on the same held-out scenes, from the training "
        "data alone (table baselines: the most frequent caption; the most frequent "
        "answer to the same question; the mean box of the same phrase): " +
        join(parts) + ".");
  }
  results.add_note("Runs reused from the cache: " + std::to_string(cached) + " of " +
                   std::to_string(runs.size()) + ".");
  results.add_note("Wall time: " + join(timing, "; ") + ".");
  results.set("runs", runs);
  results.set("cached_runs", cached);
  results.write();
}

}  // namespace mambavl::experiments::vlm
