#include "cmd_vlm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <iostream>
#include <memory>

#include "cli/cli_common.h"
#include "common/error.h"
#include "data/image_dataset.h"
#include "data/lm_samples.h"
#include "data/retrieval.h"
#include "data/scenes.h"
#include "data/vl_data.h"
#include "data/vl_sequence.h"
#include "eval/classification.h"
#include "eval/vl_eval.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "models/connector.h"
#include "models/registry.h"
#include "models/vision.h"
#include "models/vlm.h"
#include "train/toml_config.h"
#include "experiments/train_run.h"

namespace mambavl::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::unique_ptr<models::VLM> load_vlm(const fs::path& dir, const std::string& dtype) {
  auto m = models::VLM::load(dir);
  if (dtype == "bf16") m->to_dtype(at::kBFloat16);
  return m;
}

// Generates the answer of one example with its images; streams the text when `stream`.
std::vector<int64_t> answer(models::VLM& vlm, const data::VLExample& ex,
                            const std::vector<io::Image>& images,
                            const generate::GenerateOptions& opt, bool stream,
                            generate::GenerateStats* st) {
  c10::InferenceMode guard;
  vlm.module().eval();
  const auto fmt = data::sequence_format(vlm);
  auto seq = data::assemble(ex, vlm.tokenizer(), fmt, /*include_answer=*/false, "prompt");
  const io::ImagePreprocess pp = vlm.preprocess();
  std::vector<at::Tensor> t;
  for (const auto& im : images) t.push_back(pp(im));
  auto batch = data::make_vlm_batch({seq}, t.empty() ? at::Tensor() : at::stack(t),
                                    fmt.block.placeholder_id);
  at::Tensor e = vlm.embed(batch)[0];  // [L, H]
  std::optional<TextStreamer> streamer;
  if (stream) streamer.emplace(vlm.tokenizer());
  auto out = generate::generate_batch(
      vlm.lm(), {e}, opt,
      [&](int64_t, int64_t id) {
        if (streamer) streamer->push(id);
      },
      st);
  if (streamer) streamer->finish();
  return out[0];
}

void print_stats(const generate::GenerateStats& st) {
  std::fprintf(stderr,
               "prefill (image + prompt): %lld tokens in %.3f s; decode: %lld tokens in %.3f s "
               "(%.1f tok/s)\n",
               static_cast<long long>(st.prompt_tokens), st.prefill_seconds,
               static_cast<long long>(st.new_tokens), st.decode_seconds,
               st.new_tokens > 1 ? (st.new_tokens - 1) / std::max(st.decode_seconds, 1e-9) : 0.0);
}

generate::GenerateOptions sampling_options(models::VLM& vlm, int64_t max_new, bool greedy,
                                           double temperature, int64_t top_k, double top_p,
                                           uint64_t seed) {
  generate::GenerateOptions g;
  g.max_new_tokens = max_new;
  g.sampling.greedy = greedy;
  g.sampling.temperature = temperature;
  g.sampling.top_k = top_k;
  g.sampling.top_p = top_p;
  g.sampling.seed = seed;
  g.eos_id = vlm.eos_id();
  return g;
}

// A structured or chat example for one image and a user text.
data::VLExample make_example(const std::string& task, const std::string& text, int64_t images) {
  data::VLExample ex;
  ex.task = task;
  ex.num_images = images;
  if (task == "chat") {
    std::string human;
    for (int64_t i = 0; i < images; ++i) human += "<image>\n";
    ex.turns = {{human + text, ""}};
  } else {
    MVL_CHECK(task == "caption" || !text.empty(), "--task ", task,
              " needs --prompt (the question or the referring phrase)");
    ex.question = text;
  }
  return ex;
}

void add_compose(CLI::App& app) {
  struct Opts {
    std::string vision, lm, connector = "mlp", scan = "bsm", family, out, feature = "patch",
                            order = "default";
    int64_t layer = -1, image_size = 0;
    bool final_norm = false;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "compose",
      "Build a vision-language model folder from a pretrained vision encoder folder and a "
      "pretrained language model folder (a new, randomly initialised connector): the start of "
      "stage-1 training from real checkpoints");
  c->add_option("--vision", o->vision,
                "Vision encoder folder (Hugging Face CLIP / SigLIP, timm EVA-02, MambaOut)")
      ->required();
  c->add_option("--lm", o->lm,
                "Language model folder (Mamba, Pythia / GPT-NeoX, hybrid) with "
                "its tokenizer.json")
      ->required();
  c->add_option("--connector", o->connector, "mlp | vss-mlp | vss-l2")
      ->check(CLI::IsMember({"mlp", "vss-mlp", "vss-l2", "vss_mlp", "vss_l2"}));
  c->add_option("--scan", o->scan, "VSS scan orders: bsm (2) | csm (4)")
      ->check(CLI::IsMember({"bsm", "csm"}));
  c->add_option("--family", o->family,
                "mamba-vl | pythia-vl | vl-mamba | hybrid-vl (default: from the LM and connector)");
  c->add_option("--layer", o->layer, "Vision feature layer (-1 = last, -2 = penultimate, ...)");
  c->add_option("--feature", o->feature, "patch | cls_patch")
      ->check(CLI::IsMember({"patch", "cls_patch"}));
  c->add_flag("--final-norm", o->final_norm, "Apply the encoder's final norm to the features");
  c->add_option("--image-size", o->image_size, "Input size (default: the encoder's)");
  c->add_option("--order", o->order, "Prompt order: default | instruction_first | query_first")
      ->check(CLI::IsMember({"default", "instruction_first", "query_first"}));
  c->add_option("--seed", o->seed, "Connector initialisation seed");
  c->add_option("--out", o->out, "Output VLM folder")->required();
  c->callback([o] {
    auto vision = models::load_vision_encoder(o->vision);
    auto lm = models::load_causal_lm(o->lm);
    MVL_CHECK(fs::exists(fs::path(o->lm) / "tokenizer.json"), o->lm,
              ": no tokenizer.json (the VLM needs the language model's tokenizer)");
    models::VLMConfig cfg;
    cfg.connector.type = o->connector == "vss-mlp"  ? "vss_mlp"
                         : o->connector == "vss-l2" ? "vss_l2"
                                                    : o->connector;
    cfg.connector.scan = o->scan;
    cfg.connector.d_vision = vision->feature_dim();
    cfg.connector.d_lm = lm->hidden_size();
    const bool vss = cfg.connector.type != "mlp";
    cfg.family = !o->family.empty()         ? o->family
                 : lm->arch() == "gpt_neox" ? "pythia-vl"
                 : lm->arch() == "hybrid"   ? "hybrid-vl"
                 : vss                      ? "vl-mamba"
                                            : "mamba-vl";
    cfg.image_block = cfg.family == "vl-mamba" ? "plain" : "separator";
    cfg.vision_feature_layer = o->layer;
    cfg.vision_feature_select = o->feature;
    cfg.vision_final_norm = o->final_norm;
    cfg.image_size = o->image_size;
    cfg.prompt_order = o->order;
    auto conn = std::make_shared<models::ConnectorImpl>(cfg.connector, o->seed);
    models::VLM vlm(cfg, std::move(vision), conn, std::move(lm));
    vlm.set_tokenizer(fs::path(o->lm) / "tokenizer.json");
    vlm.save(o->out);
    std::cout << "wrote " << cfg.family << " (" << vlm.vision().arch() << " + "
              << cfg.connector.type << " + " << vlm.lm().arch() << ", " << vlm.num_parameters()
              << " parameters, " << vlm.image_tokens() << " image tokens) to " << o->out << "\n";
  });
}

void add_train(CLI::App& app) {
  struct Opts {
    std::string config, resume, out;
    std::vector<std::string> sets;
    int threads = 0;
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "train",
      "Train a language model, a vision-language model or an image classifier from a "
      "TOML run file (stages, freezing, AdamW, warmup + cosine, checkpoints, exact "
      "resume)");
  c->footer(experiments::train_config_help());
  c->add_option("--config", o->config, "Run file (TOML, or the same keys as JSON: *.json)")->required()->check(CLI::ExistingFile);
  c->add_option("--set", o->sets,
                "Override a key: --set train.batch_size=16 --set 'train.stages.0.lr=1e-4' "
                "(repeatable; values in TOML syntax)");
  c->add_option("--resume", o->resume,
                "Continue a run: its out folder (newest checkpoint) or a checkpoint folder");
  c->add_option("--out", o->out,
                "Output folder (overrides 'out' in the run file). Must be new or empty, unless "
                "--resume continues the run in it, or --overwrite");
  c->add_flag("--overwrite", o->overwrite,
              "Train into a used output folder as a new run: its run.json, config.json and "
              "train_log.jsonl are replaced at the start, its step checkpoints (and final) stay "
              "until this run has written its first checkpoint and are removed then; other files "
              "there are left alone");
  cli::add_threads_option(*c, o->threads);
  c->callback([o] {
    // A .json run file (as `mambavl experiment` writes them) or TOML.
    json cfg = fs::path(o->config).extension() == ".json" ? io::read_json_file(o->config)
                                                          : train::load_toml(o->config);
    train::apply_overrides(cfg, o->sets);
    if (!o->out.empty()) cfg["out"] = o->out;
    auto r = experiments::run_training(cfg, o->config, o->resume, o->threads, o->overwrite);
    std::cout << "trained " << r.steps << " steps; model: " << r.final_model.string() << "\n";
    if (!r.last_eval.is_null()) std::cout << "eval: " << r.last_eval.dump() << "\n";
  });
}

void add_eval(CLI::App& app) {
  struct Opts {
    std::string model, task = "all", data, out, order, dtype = "f32", lengths = "20",
                       query = "after";
    int64_t scenes = 0, image_size = 64, min_objects = 1, max_objects = 3, limit = 0, batch = 16,
            max_new = 32, retrieval = 0, max_n = 600, content = 1024;
    uint64_t seed = 1;
    int threads = 0;
    bool quiet = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "eval",
      "Evaluate a model: caption (CIDEr-D), vqa (exact match), grounding (IoU > 0.5), "
      "retrieval (accuracy per position), classify (top-1 / top-5)");
  c->add_option("--model", o->model, "Model folder (VLM, LM for retrieval, classifier)")
      ->required();
  c->add_option("--task", o->task, "caption | vqa | grounding | all | retrieval | classify")
      ->check(CLI::IsMember({"caption", "vqa", "grounding", "all", "retrieval", "classify"}));
  c->add_option("--data", o->data,
                "LLaVA JSON (.json), grounding JSONL (.jsonl), retrieval JSONL, or an image folder "
                "(classify)");
  c->add_option("--scenes", o->scenes, "Evaluate on N built-in synthetic scenes instead");
  c->add_option("--retrieval", o->retrieval,
                "Evaluate on N built-in retrieval examples instead (--lengths, --query)");
  c->add_option("--lengths", o->lengths, "Retrieval sequence lengths, comma separated");
  c->add_option("--query", o->query, "Retrieval query: after | before | both")
      ->check(CLI::IsMember({"after", "before", "both"}));
  c->add_option("--max-n", o->max_n, "Retrieval vocabulary: positions (as trained)");
  c->add_option("--content", o->content, "Retrieval vocabulary: content tokens (as trained)");
  c->add_option("--seed", o->seed, "Seed of the built-in data (default 1: not a training seed)");
  c->add_option("--image-size", o->image_size, "Canvas of the built-in scenes");
  c->add_option("--min-objects", o->min_objects, "Built-in scenes: fewest objects");
  c->add_option("--max-objects", o->max_objects, "Built-in scenes: most objects (as trained)");
  c->add_option("--limit", o->limit, "Evaluate only the first N examples");
  c->add_option("--batch-size", o->batch, "Examples per batch")->check(cli::Positive);
  c->add_option("--max-new-tokens", o->max_new,
                "Generated tokens per answer (GPT-NeoX language model: prompt + tokens must fit "
                "its context, max_position_embeddings)")
      ->check(cli::Positive);
  c->add_option("--order", o->order, "Prompt order override")
      ->check(CLI::IsMember({"default", "instruction_first", "query_first"}));
  c->add_option("--out", o->out, "Write results.json + predictions.jsonl (+ per_position.csv)");
  cli::add_threads_option(*c, o->threads, "Intra-op threads");
  c->add_option("--dtype", o->dtype, "f32 | bf16")->check(CLI::IsMember({"f32", "bf16"}));
  c->add_flag("--quiet", o->quiet, "No progress bar");
  c->callback([o] {
    if (o->threads > 0) at::set_num_threads(o->threads);
    eval::EvalOutput out;
    json extra = {{"model", o->model}, {"task", o->task}};
    if (o->task == "retrieval") {
      auto lm = load_model(o->model, RuntimeOptions{o->threads, o->dtype, "auto"});
      data::RetrievalVocab v;
      v.max_n = o->max_n;
      v.content = o->content;
      v.check();
      std::shared_ptr<data::RetrievalSamples> src;
      if (o->retrieval > 0) {
        std::vector<int64_t> lengths = parse_ids(o->lengths);
        src = std::make_shared<data::RetrievalSamples>(
            data::RetrievalSamples::generate(o->retrieval, o->seed, lengths, o->query, v));
      } else {
        MVL_CHECK(!o->data.empty(), "eval: give --data retrieval.jsonl or --retrieval N");
        src = std::make_shared<data::RetrievalSamples>(data::read_retrieval_jsonl(o->data, v), v);
      }
      out = eval::evaluate_retrieval(*lm, *src, o->batch, !o->quiet);
      std::cout << "retrieval accuracy: " << out.metrics["retrieval"]["accuracy"] << " ("
                << out.metrics["retrieval"]["correct"] << " / " << out.metrics["retrieval"]["total"]
                << ")\n";
    } else if (o->task == "classify") {
      auto clf = models::load_classifier(o->model);
      MVL_CHECK(!o->data.empty(), "eval --task classify: give --data IMAGE_FOLDER");
      data::ImageFolderDataset ds(o->data);
      eval::EvalOptions eo;
      eo.batch = o->batch;
      eo.progress = !o->quiet;
      auto m = eval::evaluate_classifier(*clf, ds, clf->preprocess(), eo);
      out.metrics = {
          {"classify", {{"top1", m.top1}, {"top5", m.top5}, {"loss", m.loss}, {"n", m.count}}}};
      std::cout << "top1: " << m.top1 << " top5: " << m.top5 << " loss: " << m.loss << " ("
                << m.count << " images)\n";
    } else {
      auto vlm = load_vlm(o->model, o->dtype);
      std::shared_ptr<data::VLDataset> ds;
      if (o->scenes > 0) {
        data::SceneOptions so;
        so.image_size = o->image_size;
        so.min_objects = o->min_objects;
        so.max_objects = o->max_objects;
        data::check_scene_options(so);
        ds = std::make_shared<data::SceneDataset>(o->scenes, o->seed, so);
      } else {
        MVL_CHECK(!o->data.empty(),
                  "eval: give --data FILE (LLaVA .json or grounding .jsonl) "
                  "or --scenes N");
        if (fs::path(o->data).extension() == ".jsonl")
          ds = std::make_shared<data::GroundingJsonlDataset>(o->data);
        else
          ds = std::make_shared<data::LlavaJsonDataset>(o->data);
      }
      eval::VLEvalOptions eo;
      eo.task = o->task;
      eo.limit = o->limit;
      eo.batch_size = o->batch;
      eo.max_new_tokens = o->max_new;
      eo.order = o->order;
      eo.progress = !o->quiet;
      out = eval::evaluate_vlm(*vlm, *ds, eo);
      for (const auto& [task, m] : out.metrics.items())
        std::cout << task << ": " << m.dump() << "\n";
    }
    if (!o->out.empty()) {
      eval::write_eval_output(o->out, out, extra);
      std::cout << "wrote " << (fs::path(o->out) / "results.json").string() << "\n";
    }
  });
}

void add_chat(CLI::App& app) {
  struct Opts {
    std::string model, prompt, task = "chat", dtype = "f32";
    std::vector<std::string> images;
    int64_t max_new = 64, top_k = 0;
    bool greedy = false, stats = false;
    double temperature = 1.0, top_p = 1.0;
    uint64_t seed = 0;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "chat",
      "Talk to a vision-language model about an image (interactive when no --prompt; "
      "multi-turn; streaming)");
  c->add_option("--model", o->model, "VLM folder")->required();
  c->add_option("--image", o->images, "Image file (repeatable)")->required();
  c->add_option("--prompt", o->prompt, "One question, answered and exit");
  c->add_option("--task", o->task,
                "chat (free text turns) | caption | vqa (--prompt = the question) | grounding "
                "(--prompt = the referring phrase): the task templates the model was trained with")
      ->check(CLI::IsMember({"chat", "caption", "vqa", "grounding"}));
  c->add_option("--max-new-tokens", o->max_new,
                "Tokens per answer (GPT-NeoX language model: image + conversation + tokens must "
                "fit its context, max_position_embeddings)")
      ->check(cli::Positive);
  auto* g = c->add_flag("--greedy", o->greedy, "Argmax decoding");
  c->add_option("--temperature", o->temperature, "Sampling temperature")->excludes(g);
  c->add_option("--top-k", o->top_k, "Top-k sampling (0 = off)")->excludes(g);
  c->add_option("--top-p", o->top_p, "Nucleus sampling mass (1 = off)")->excludes(g);
  c->add_option("--seed", o->seed, "Sampling seed");
  c->add_flag("--stats", o->stats, "Print prefill / decode speed to stderr");
  cli::add_threads_option(*c, o->threads, "Intra-op threads");
  c->add_option("--dtype", o->dtype, "f32 | bf16")->check(CLI::IsMember({"f32", "bf16"}));
  c->callback([o] {
    if (o->threads > 0) at::set_num_threads(o->threads);
    auto vlm = load_vlm(o->model, o->dtype);
    std::vector<io::Image> images;
    for (const auto& f : o->images) images.push_back(io::load_image(f));
    auto gopt =
        sampling_options(*vlm, o->max_new, o->greedy, o->temperature, o->top_k, o->top_p, o->seed);
    generate::GenerateStats st;
    if (o->task == "caption" && o->prompt.empty()) o->prompt = " ";
    if (!o->prompt.empty()) {
      auto ex = make_example(o->task, o->prompt == " " ? "" : o->prompt,
                             static_cast<int64_t>(images.size()));
      answer(*vlm, ex, images, gopt, true, &st);
      std::cout << std::endl;
      if (o->stats) print_stats(st);
      return;
    }
    MVL_CHECK(o->task == "chat", "chat --task ", o->task, ": give --prompt");
    // Interactive: each turn re-reads the whole conversation (image first) and answers.
    data::VLExample ex = make_example("chat", "", static_cast<int64_t>(images.size()));
    std::string prefix = ex.turns[0].human;
    ex.turns.clear();
    std::cerr << "Chatting with " << o->model << " about " << o->images.size()
              << " image(s). Empty line or Ctrl-D ends.\n";
    std::string line;
    while (true) {
      std::cout << "> " << std::flush;
      if (!std::getline(std::cin, line) || line.empty()) break;
      ex.turns.push_back({(ex.turns.empty() ? prefix : "") + line, ""});
      auto ids = answer(*vlm, ex, images, gopt, true, &st);
      std::cout << std::endl;
      ex.turns.back().gpt = vlm->tokenizer().decode(ids, /*skip_special_tokens=*/true);
      if (o->stats) print_stats(st);
    }
  });
}

}  // namespace

void add_vlm_commands(CLI::App& app) {
  add_compose(app);
  add_train(app);
  add_eval(app);
  add_chat(app);
}

std::string init_vlm_preset(const std::string& preset, const std::string& tokenizer,
                            uint64_t seed, const fs::path& out) {
  int64_t vocab = 0;
  if (!tokenizer.empty()) vocab = io::Tokenizer::from_file(tokenizer).vocab_size();
  models::VLM vlm(models::vlm_preset(preset, vocab), seed);
  if (!tokenizer.empty()) vlm.set_tokenizer(tokenizer);
  vlm.save(out);
  return preset + " (" + vlm.config().family + ": " + vlm.vision().arch() + " + " +
         vlm.config().connector.type + " + " + vlm.lm().arch() + ", " +
         std::to_string(vlm.num_parameters()) + " parameters)";
}

bool describe_vlm_folder(const fs::path& dir, std::ostream& out) {
  if (!models::is_vlm_folder(dir)) return false;
  auto vlm = models::VLM::load(dir);
  const json d = vlm->describe();
  out << "kind: " << d["kind"].get<std::string>() << "\nfamily: " << d["family"].get<std::string>()
      << "\nvision: " << d["vision"].dump() << "\nconnector: " << d["connector"].dump()
      << "\nlanguage model: " << d["language_model"].dump()
      << "\nimage block: " << d["image_block"].get<std::string>() << " (" << d["image_tokens"]
      << " image tokens)\nprompt order: " << d["prompt_order"].get<std::string>()
      << "\nparameters: " << d["parameters"] << "\n";
  return true;
}

void generate_with_image(const fs::path& model, const fs::path& image, const std::string& prompt,
                         const generate::GenerateOptions& opt, const std::string& dtype,
                         bool print_ids, bool stats) {
  auto vlm = load_vlm(model, dtype);
  std::vector<io::Image> images = {io::load_image(image)};
  generate::GenerateOptions g = opt;
  if (!g.eos_id) g.eos_id = vlm->eos_id();
  generate::GenerateStats st;
  auto ex = make_example("chat", prompt, 1);
  auto ids = answer(*vlm, ex, images, g, !print_ids, &st);
  if (print_ids)
    for (size_t k = 0; k < ids.size(); ++k) std::cout << (k ? "," : "") << ids[k];
  std::cout << std::endl;
  if (stats) print_stats(st);
}

}  // namespace mambavl::cli
