#include "experiments/train_run.h"

#include <ATen/Parallel.h>

#include <iostream>
#include <memory>

#include "common/error.h"
#include "data/image_dataset.h"
#include "data/lm_samples.h"
#include "data/retrieval.h"
#include "data/scenes.h"
#include "data/vl_data.h"
#include "data/vl_sequence.h"
#include "data/word_tokenizer.h"
#include "eval/vl_eval.h"
#include "io/checkpoint.h"
#include "io/tokenizer.h"
#include "models/presets.h"
#include "models/registry.h"
#include "models/vision.h"
#include "models/vlm.h"
#include "train/classifier_trainer.h"
#include "train/tasks.h"
#include "train/toml_config.h"
#include "train/trainer.h"

namespace mambavl::experiments {

namespace fs = std::filesystem;
using json = nlohmann::json;
using train::check_keys;
using train::get_or;

namespace {

const std::vector<std::string> kTop = {"kind", "out", "model", "data", "eval", "train"};
const std::vector<std::string> kModel = {
    "preset",     "path",       "tokenizer", "seed",         "prompt_order",   "overrides",
    "init_from",  "init_parts", "dtype",     "architecture", "variant",        "num_classes",
    "image_size", "causal",     "depths",    "dims",         "drop_path_rate", "pool",
    "hidden_size", "num_layers", "num_heads", "patch_size",  "intermediate_size"};
const std::vector<std::string> kData = {
    "source", "n",     "seed",    "image_size",  "min_objects",      "max_objects", "clutter",
    "tasks",  "path",  "paths",   "image_root",  "on_missing_image", "seq_len",     "lengths",
    "query",  "max_n", "content", "num_classes", "val_fraction"};
const std::vector<std::string> kEval = {"n", "path", "batch_size", "max_new_tokens", "task"};

json section(const json& cfg, const char* name) {
  return cfg.contains(name) ? cfg.at(name) : json::object();
}

data::SceneOptions scene_options(const json& d, const std::string& file) {
  data::SceneOptions o;
  o.image_size = get_or<int64_t>(d, "image_size", o.image_size, file, "data");
  o.min_objects = get_or<int64_t>(d, "min_objects", o.min_objects, file, "data");
  o.max_objects = get_or<int64_t>(d, "max_objects", o.max_objects, file, "data");
  o.clutter = get_or<bool>(d, "clutter", o.clutter, file, "data");
  o.tasks = get_or<std::vector<std::string>>(d, "tasks", o.tasks, file, "data");
  data::check_scene_options(o);
  return o;
}

// The VL data set of `split` ("train" or "eval"); null when the run has no such data.
std::shared_ptr<data::VLDataset> vl_dataset(const json& cfg, const std::string& file,
                                            const std::string& split) {
  const json d = section(cfg, "data"), e = section(cfg, "eval");
  const std::string source = get_or<std::string>(d, "source", "scenes", file, "data");
  const uint64_t seed = get_or<uint64_t>(d, "seed", 0, file, "data");
  if (source == "scenes") {
    const auto opt = scene_options(d, file);
    if (split == "train")
      return std::make_shared<data::SceneDataset>(get_or<int64_t>(d, "n", 2000, file, "data"), seed,
                                                  opt);
    const int64_t n = get_or<int64_t>(e, "n", 0, file, "eval");
    if (n <= 0) return nullptr;
    // Held-out scenes: another seed, so no training scene is evaluated.
    return std::make_shared<data::SceneDataset>(n, seed + 0x5eed5eedull, opt);
  }
  MVL_CHECK(source == "llava" || source == "grounding", file, ": data.source '", source,
            "' is not a vision-language source (scenes, llava, grounding)");
  const auto missing =
      data::parse_missing_image(get_or<std::string>(d, "on_missing_image", "fail", file, "data"));
  const fs::path root = get_or<std::string>(d, "image_root", "", file, "data");
  std::string path = split == "train" ? get_or<std::string>(d, "path", "", file, "data")
                                      : get_or<std::string>(e, "path", "", file, "eval");
  if (path.empty()) {
    MVL_CHECK(split != "train", file, ": data.path (the ", source, " file) is required");
    return nullptr;
  }
  if (source == "llava") return std::make_shared<data::LlavaJsonDataset>(path, root, missing);
  return std::make_shared<data::GroundingJsonlDataset>(path, root, missing);
}

struct Prepared {
  std::unique_ptr<models::VLM> vlm;
  std::unique_ptr<models::CausalLM> lm;
  std::unique_ptr<models::ImageClassifier> clf;
  std::shared_ptr<data::VLDataset> vl_train, vl_eval;
  std::shared_ptr<data::LMSampleSource> lm_train;
  std::shared_ptr<data::RetrievalSamples> retrieval_eval;
  std::shared_ptr<const data::ImageDataset> img_all;
  data::Split split;
  std::unique_ptr<train::TrainTask> task;
};

std::unique_ptr<models::VLM> build_vlm(const json& cfg, const std::string& file,
                                       const fs::path& out) {
  const json m = section(cfg, "model"), d = section(cfg, "data");
  const std::string preset = get_or<std::string>(m, "preset", "", file, "model");
  const std::string path = get_or<std::string>(m, "path", "", file, "model");
  MVL_CHECK(preset.empty() != path.empty(), file,
            ": give exactly one of model.preset (a new random model) and model.path (a VLM "
            "folder)");
  std::unique_ptr<models::VLM> vlm;
  if (!path.empty()) {
    vlm = models::VLM::load(path);
  } else {
    fs::path tok = get_or<std::string>(m, "tokenizer", "", file, "model");
    if (tok.empty()) {
      MVL_CHECK(get_or<std::string>(d, "source", "scenes", file, "data") == "scenes", file,
                ": model.tokenizer is required (only the scenes data brings its own vocabulary)");
      tok = out / "tokenizer" / "tokenizer.json";
      data::write_wordlevel_tokenizer(tok.parent_path(), data::scene_texts_for_vocabulary(),
                                      {"###", "&&"});
    }
    const int64_t vocab = io::Tokenizer::from_file(tok).vocab_size();
    models::VLMConfig vc = models::vlm_preset(preset, vocab);
    if (m.contains("overrides")) {
      // A JSON merge patch (RFC 7386) on the preset's config.json: nested objects merge, other
      // values replace, null removes a key.
      const json& ov = m.at("overrides");
      MVL_CHECK(ov.is_object(), file,
                ": model.overrides must be a table (merged into the preset's config.json)");
      json j = vc.to_json();
      j.merge_patch(ov);
      vc = models::VLMConfig::from_json(j, file + " [model.overrides on preset " + preset + "]");
    }
    vlm = std::make_unique<models::VLM>(vc, get_or<uint64_t>(m, "seed", 0, file, "model"));
    vlm->set_tokenizer(tok);
  }
  MVL_CHECK(path.empty() || !m.contains("overrides"), file,
            ": model.overrides applies to a preset only (model.path loads a model as saved)");
  const std::string init_from = get_or<std::string>(m, "init_from", "", file, "model");
  MVL_CHECK(!init_from.empty() || !m.contains("init_parts"), file,
            ": model.init_parts needs model.init_from");
  if (!init_from.empty()) {
    // Relative to the folder that holds `out`, so the runs of one experiment name each other
    // ("NAME/final") whatever the working directory.
    fs::path src = init_from;
    fs::path holder = out.lexically_normal();
    if (!holder.has_filename()) holder = holder.parent_path();  // "runs/x/"
    if (src.is_relative()) src = holder.parent_path() / src;
    const auto parts =
        get_or<std::vector<std::string>>(m, "init_parts", {"vision_tower"}, file, "model");
    MVL_CHECK(!parts.empty(), file, ": model.init_parts is empty (nothing would be copied)");
    MVL_CHECK(models::is_vlm_folder(src), file, ": model.init_from: ", src.string(),
              " is not a vision-language model folder (a relative path is relative to the folder "
              "that holds `out`)");
    auto from = models::VLM::load(src);
    for (const auto& part : parts) {
      const int64_t copied = train::copy_parameters(
          vlm->module(), from->module(), file + ": model.init_from " + src.string(), part);
      MVL_CHECK(copied > 0, file, ": model.init_parts: '", part,
                "' names no parameter (parts: vision_tower, multi_modal_projector, "
                "language_model, or a longer dotted prefix)");
    }
  }
  return vlm;
}

void prepare_vlm(Prepared& p, const json& cfg, const std::string& file, const fs::path& out) {
  const json m = section(cfg, "model"), e = section(cfg, "eval");
  p.vlm = build_vlm(cfg, file, out);
  p.vl_train = vl_dataset(cfg, file, "train");
  p.vl_eval = vl_dataset(cfg, file, "eval");
  const std::string order = get_or<std::string>(m, "prompt_order", "", file, "model");
  auto fmt = data::sequence_format(*p.vlm, order);
  std::function<json()> eval_fn;
  if (p.vl_eval) {
    eval::VLEvalOptions eo;
    eo.batch_size = get_or<int64_t>(e, "batch_size", 16, file, "eval");
    eo.max_new_tokens = get_or<int64_t>(e, "max_new_tokens", 32, file, "eval");
    eo.task = get_or<std::string>(e, "task", "all", file, "eval");
    eo.order = order;
    eo.progress = false;
    models::VLM* vlm = p.vlm.get();
    auto ds = p.vl_eval;
    eval_fn = [vlm, ds, eo] { return eval::evaluate_vlm(*vlm, *ds, eo).metrics; };
  }
  p.task = std::make_unique<train::VLMTask>(*p.vlm, p.vl_train, fmt, eval_fn);
}

void prepare_lm(Prepared& p, const json& cfg, const std::string& file) {
  const json m = section(cfg, "model"), d = section(cfg, "data"), e = section(cfg, "eval");
  const std::string source = get_or<std::string>(d, "source", "", file, "data");
  const std::string preset = get_or<std::string>(m, "preset", "", file, "model");
  const std::string path = get_or<std::string>(m, "path", "", file, "model");
  MVL_CHECK(preset.empty() != path.empty(), file,
            ": give exactly one of model.preset (a new random model) and model.path (a model "
            "folder)");
  const uint64_t seed = get_or<uint64_t>(d, "seed", 0, file, "data");
  fs::path tok_dir;
  int64_t pad = 0;
  std::function<json()> eval_fn;
  if (source == "retrieval") {
    data::RetrievalVocab v;
    v.max_n = get_or<int64_t>(d, "max_n", 600, file, "data");
    v.content = get_or<int64_t>(d, "content", 1024, file, "data");
    v.check();
    const auto lengths = get_or<std::vector<int64_t>>(d, "lengths", {20}, file, "data");
    for (int64_t n : lengths)
      MVL_CHECK(n >= 1 && n <= v.max_n, file, ": data.lengths: ", n,
                " is outside [1, max_n = ", v.max_n, "]");
    const std::string query = get_or<std::string>(d, "query", "after", file, "data");
    p.lm_train = std::make_shared<data::RetrievalSamples>(data::RetrievalSamples::generate(
        get_or<int64_t>(d, "n", 2000, file, "data"), seed, lengths, query, v));
    const int64_t en = get_or<int64_t>(e, "n", 0, file, "eval");
    if (en > 0)
      p.retrieval_eval = std::make_shared<data::RetrievalSamples>(
          data::RetrievalSamples::generate(en, seed + 0x5eed5eedull, lengths, query, v));
    pad = v.pad_id();
    if (!preset.empty())
      p.lm = models::make_preset(preset, get_or<uint64_t>(m, "seed", 0, file, "model"),
                                 v.vocab_size());
    else
      p.lm = models::load_causal_lm(path);
    MVL_CHECK(p.lm->vocab_size() >= v.vocab_size(), file, ": the model's vocabulary (",
              p.lm->vocab_size(), ") is smaller than the retrieval vocabulary (", v.vocab_size(),
              " = 3 + max_n + content)");
    if (p.retrieval_eval) {
      models::CausalLM* lm = p.lm.get();
      auto ev = p.retrieval_eval;
      const int64_t bs = get_or<int64_t>(e, "batch_size", 32, file, "eval");
      eval_fn = [lm, ev, bs] {
        auto r = eval::evaluate_retrieval(*lm, *ev, bs, false).metrics["retrieval"];
        return json{
            {"retrieval", {{"accuracy", r["accuracy"]}, {"pos_accuracy", r["pos_accuracy"]}}}};
      };
    }
  } else if (source == "text") {
    std::vector<std::string> files = get_or<std::vector<std::string>>(d, "paths", {}, file, "data");
    const std::string one = get_or<std::string>(d, "path", "", file, "data");
    if (!one.empty()) files.push_back(one);
    MVL_CHECK(!files.empty(), file, ": data.path or data.paths (text files) is required");
    const std::string tok_path = get_or<std::string>(
        m, "tokenizer", path.empty() ? "" : (fs::path(path) / "tokenizer.json").string(), file,
        "model");
    MVL_CHECK(!tok_path.empty(), file, ": model.tokenizer (a tokenizer.json) is required");
    io::Tokenizer tok = io::Tokenizer::from_file(tok_path);
    tok_dir = fs::path(tok_path).parent_path();
    std::vector<fs::path> fp(files.begin(), files.end());
    auto ds = std::make_shared<data::TextDataset>(fp, tok,
                                                  get_or<int64_t>(d, "seq_len", 256, file, "data"));
    p.lm_train = std::make_shared<data::TextSamples>(ds);
    pad = tok.eos_id().value_or(0);
    if (!preset.empty())
      p.lm = models::make_preset(preset, get_or<uint64_t>(m, "seed", 0, file, "model"),
                                 tok.vocab_size());
    else
      p.lm = models::load_causal_lm(path);
  } else {
    MVL_FAIL(file, ": data.source '", source, "' is not a language-model source (text, retrieval)");
  }
  p.task = std::make_unique<train::LMTask>(*p.lm, p.lm_train, pad, eval_fn, tok_dir);
}

void prepare_classifier(Prepared& p, const json& cfg, const std::string& file) {
  json m = section(cfg, "model");
  const json d = section(cfg, "data"), e = section(cfg, "eval");
  const uint64_t seed = get_or<uint64_t>(m, "seed", 0, file, "model");
  const std::string source = get_or<std::string>(d, "source", "synthetic", file, "data");
  const std::string path = get_or<std::string>(m, "path", "", file, "model");
  if (!path.empty()) {
    p.clf = models::load_classifier(path);
  } else {
    json mc = m;
    mc.erase("seed");
    if (!mc.contains("architecture")) mc["architecture"] = "mambaout";
    if (source == "synthetic" && !mc.contains("num_classes"))
      mc["num_classes"] = get_or<int64_t>(d, "num_classes", 8, file, "data");
    p.clf = models::make_classifier(mc, seed, file + " [model]");
  }
  const double val = get_or<double>(d, "val_fraction", 0.1, file, "data");
  const uint64_t dseed = get_or<uint64_t>(d, "seed", 0, file, "data");
  if (source == "synthetic") {
    p.img_all = std::make_shared<data::SyntheticDataset>(
        get_or<int64_t>(d, "n", 2000, file, "data"), p.clf->num_classes(), p.clf->preprocess().size,
        dseed);
  } else {
    MVL_CHECK(source == "folder", file, ": data.source '", source,
              "' is not a classification source (synthetic, folder)");
    p.img_all = std::make_shared<data::ImageFolderDataset>(
        get_or<std::string>(d, "path", "", file, "data"));
  }
  p.split = data::split_dataset(p.img_all, val, dseed);
  train::ClassifierTaskOptions o;
  o.eval_batch = get_or<int64_t>(e, "batch_size", 64, file, "eval");
  p.task = std::make_unique<train::ClassifierTask>(*p.clf, *p.split.train, p.split.val.get(), o);
}

}  // namespace

std::string train_config_help() {
  return "Run file (TOML), every key documented in docs/train-config.md:\n"
         "  kind = \"vlm\" | \"lm\" | \"classifier\";  out = \"runs/NAME\"\n"
         "  [model] " +
         join(kModel) +
         "\n"
         "  [data]  " +
         join(kData) +
         "\n"
         "  [eval]  " +
         join(kEval) +
         "\n"
         "  [train] batch_size, grad_accum, grad_clip, precision, no_decay, adam_beta1, "
         "adam_beta2, adam_eps, seed, log_every, eval_every, save_every, keep_last, progress\n"
         "  [[train.stages]] name, steps, epochs, lr, min_lr_ratio, warmup_ratio, warmup_steps, "
         "weight_decay, freeze\n";
}

TrainRunResult run_training(const json& cfg, const std::string& file, const fs::path& resume,
                            int threads, bool overwrite) {
  check_keys(cfg, kTop, file, "");
  for (const auto& [name, keys] : std::vector<std::pair<const char*, std::vector<std::string>>>{
           {"model", kModel}, {"data", kData}, {"eval", kEval}})
    if (cfg.contains(name)) check_keys(cfg.at(name), keys, file, name);
  const std::string kind = get_or<std::string>(cfg, "kind", "", file, "");
  MVL_CHECK(kind == "vlm" || kind == "lm" || kind == "classifier", file,
            ": 'kind' must be \"vlm\", \"lm\" or \"classifier\"",
            kind.empty() ? " (it is missing)" : ", not \"" + kind + "\"");
  const fs::path out = get_or<std::string>(cfg, "out", "", file, "");
  MVL_CHECK(!out.empty(), file, ": 'out' (the run's output folder) is required (or give --out)");
  train::TrainerConfig tc = train::TrainerConfig::from_json(section(cfg, "train"), file, "train");
  tc.out_dir = out;
  tc.overwrite = overwrite;
  if (threads > 0) at::set_num_threads(threads);
  // A used folder needs --resume (of the run in it) or --overwrite.
  std::error_code ec;
  const bool existed = fs::exists(out, ec);
  const bool was_empty =
      train::check_output_folder(out, resume, overwrite, "--resume " + out.string());
  fs::create_directories(out);

  Prepared p;
  bool started = false;
  train::TrainerResult r;
  try {
    if (kind == "vlm") prepare_vlm(p, cfg, file, out);
    if (kind == "lm") prepare_lm(p, cfg, file);
    if (kind == "classifier") prepare_classifier(p, cfg, file);
    train::TrainerHooks hooks;
    hooks.on_start = [&] {
      started = true;
      io::write_json_file(out / "run.json", cfg);
    };
    r = train::train(*p.task, tc, resume, hooks);
  } catch (...) {
    if (was_empty && !started) {
      // Nothing was trained: leave the folder as it was (absent or empty).
      if (!existed) {
        fs::remove_all(out, ec);
      } else {
        std::vector<fs::path> made;
        for (fs::directory_iterator it(out, ec), end; !ec && it != end; it.increment(ec))
          made.push_back(it->path());
        for (const fs::path& m : made) fs::remove_all(m, ec);
      }
    }
    throw;
  }
  TrainRunResult res;
  res.out = out;
  res.steps = r.steps;
  res.last_eval = r.last_eval;
  res.final_model = r.final_checkpoint.empty() ? fs::path() : r.final_checkpoint / "model";
  return res;
}

}  // namespace mambavl::experiments
