#include "cmd_data.h"

#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/parse.h"
#include "common/progress.h"
#include "data/retrieval.h"
#include "data/scenes.h"
#include "data/vl_data.h"
#include "data/word_tokenizer.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/image.h"

namespace mambavl::cli {

namespace {

namespace fs = std::filesystem;
// Rows keep LLaVA's key order (id, image, conversations, then our fields) for readers' eyes.
using ojson = nlohmann::ordered_json;

constexpr int64_t kMaxExamples = 100'000'000;

// "a, b,c" -> {"a", "b", "c"}; empty items are errors.
std::vector<std::string> split_list(const std::string& s, const char* what) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t end = s.find(',', start);
    std::string item = s.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    MVL_CHECK(a != std::string::npos, what, ": empty item in \"", s, "\"");
    out.push_back(item.substr(a, b - a + 1));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

int64_t parse_int(const std::string& s, const char* what) { return parse_int64(s, what); }

// One LLaVA JSON row of a structured example (SPEC §2.3 templates in the human turn).
ojson llava_row(const data::VLExample& ex, const std::string& image) {
  ojson row = {{"id", ex.id},
               {"image", image},
               {"conversations",
                ojson::array({{{"from", "human"},
                               {"value", "<image>\n" + data::task_prompt(ex.task, ex.question)}},
                              {{"from", "gpt"}, {"value", ex.answers.at(0)}}})},
               {"task", ex.task},
               {"question", ex.question},
               {"answers", ex.answers}};
  if (ex.box) row["box"] = *ex.box;
  return row;
}

void add_scenes(CLI::App& parent) {
  struct Opts {
    int64_t n = 0, image_size = 64, min_objects = 1, max_objects = 3;
    uint64_t seed = 0;
    bool clutter = false;
    std::string out, tasks = "caption,vqa,grounding";
  };
  auto o = std::make_shared<Opts>();
  auto* c = parent.add_subcommand(
      "scenes",
      "Synthetic scenes (coloured shapes) with captions, VQA and grounding boxes. Writes "
      "OUT/images/<id>.png, OUT/data.json (LLaVA conversation JSON with the prompt templates and "
      "the fields task / question / answers / box), OUT/grounding.jsonl (the grounding rows, box "
      "normalised) and OUT/tokenizer.json + tokenizer_config.json (a word-level tokenizer covering "
      "every text, with ### and &&). Deterministic: the same --seed gives the same files "
      "everywhere.");
  c->add_option("--n", o->n, "Number of examples (scenes)")->required();
  c->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  c->add_option("--out", o->out, "Output folder (created; existing files are replaced)")
      ->required();
  c->add_option("--image-size", o->image_size, "Canvas side in pixels (16..4096)")
      ->capture_default_str();
  c->add_option("--min-objects", o->min_objects, "Fewest objects per scene (>= 1)")
      ->capture_default_str();
  c->add_option("--max-objects", o->max_objects, "Most objects per scene (<= 8)")
      ->capture_default_str();
  c->add_flag("--clutter", o->clutter, "Add grey noise dots and thin strokes that are not objects");
  c->add_option("--tasks", o->tasks,
                "Comma-separated tasks, cycled over the examples (example i gets task i mod k): "
                "caption, vqa, grounding")
      ->capture_default_str();
  c->callback([o]() {
    MVL_CHECK(o->n >= 1 && o->n <= kMaxExamples, "make-data scenes: --n must be in [1, ",
              kMaxExamples, "], got ", o->n);
    data::SceneOptions opt;
    opt.image_size = o->image_size;
    opt.min_objects = o->min_objects;
    opt.max_objects = o->max_objects;
    opt.clutter = o->clutter;
    opt.tasks = split_list(o->tasks, "make-data scenes: --tasks");
    data::check_scene_options(opt);
    const fs::path out(o->out), images = out / "images";
    fs::create_directories(images);
    ojson rows = ojson::array();
    std::string grounding;
    int64_t counts[3] = {0, 0, 0};
    {
      ProgressBar bar("scenes", o->n, ProgressBar::Options{.unit = "img"});
      for (int64_t i = 0; i < o->n; ++i) {
        const data::Scene scene = data::render_scene(o->seed, i, opt);
        const data::VLExample ex = data::scene_example(o->seed, i, opt);
        const std::string rel = "images/" + ex.id + ".png";
        io::save_png(out / rel, scene.image);
        rows.push_back(llava_row(ex, rel));
        if (ex.task == "grounding") {
          grounding += ojson({{"id", ex.id},
                              {"image", rel},
                              {"phrase", ex.question},
                              {"box", *ex.box},
                              {"width", scene.image.width},
                              {"height", scene.image.height}})
                           .dump() +
                       "\n";
        }
        ++counts[ex.task == "caption" ? 0 : ex.task == "vqa" ? 1 : 2];
        bar.advance();
      }
    }
    io::write_text_file_atomic(out / "data.json", rows.dump(2) + "\n");
    io::write_text_file_atomic(out / "grounding.jsonl", grounding);
    data::write_wordlevel_tokenizer(out, data::scene_texts_for_vocabulary(), {"###", "&&"});
    std::cout << "wrote " << o->n << " scenes (" << counts[0] << " caption, " << counts[1]
              << " vqa, " << counts[2] << " grounding) to " << out.string()
              << ": images/, data.json, grounding.jsonl, tokenizer.json\n";
  });
}

void add_retrieval(CLI::App& parent) {
  struct Opts {
    int64_t n = 0, length = 20, max_n = 600, content = 1024;
    uint64_t seed = 0;
    std::string out, lengths, query = "after";
  };
  auto o = std::make_shared<Opts>();
  auto* c = parent.add_subcommand(
      "retrieval",
      "The synthetic retrieval task: N unique random tokens and a query token; the answer is the "
      "query's position. Writes OUT/retrieval.jsonl ({\"tokens\", \"query\", \"answer\", \"n\", "
      "\"query_first\"}, ids of the tokenizer) and OUT/tokenizer.json + tokenizer_config.json "
      "(<pad>=0 (eos), <sep>=1, <ans>=2, p0.. positions, t0.. content tokens). Model input: "
      "t1..tN <sep> q <ans> (query after) or q <sep> t1..tN <ans> (query before); target: the "
      "position token p<answer>.");
  c->add_option("--n", o->n, "Number of examples")->required();
  c->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  c->add_option("--out", o->out, "Output folder (created; existing files are replaced)")
      ->required();
  auto* len = c->add_option("--length", o->length, "Sequence length N of every example")
                  ->capture_default_str();
  c->add_option("--lengths", o->lengths,
                "Comma-separated lengths, cycled over the examples (example i gets length i mod k)")
      ->excludes(len);
  c->add_option("--query", o->query,
                "Query position: after the sequence, before it, or both (alternating)")
      ->check(CLI::IsMember({"after", "before", "both"}))
      ->capture_default_str();
  c->add_option("--max-n", o->max_n, "Largest N the vocabulary has position tokens for")
      ->capture_default_str();
  c->add_option("--content", o->content, "Number of content tokens in the vocabulary (>= max-n)")
      ->capture_default_str();
  c->callback([o]() {
    MVL_CHECK(o->n >= 1 && o->n <= kMaxExamples, "make-data retrieval: --n must be in [1, ",
              kMaxExamples, "], got ", o->n);
    data::RetrievalVocab v;
    v.max_n = o->max_n;
    v.content = o->content;
    v.check();
    std::vector<int64_t> lengths;
    if (o->lengths.empty()) {
      lengths.push_back(o->length);
    } else {
      for (const auto& s : split_list(o->lengths, "make-data retrieval: --lengths"))
        lengths.push_back(parse_int(s, "make-data retrieval: --lengths"));
    }
    for (int64_t L : lengths)
      MVL_CHECK(L >= 1 && L <= v.max_n, "make-data retrieval: length ", L,
                " is outside [1, --max-n = ", v.max_n, "]");
    const auto k = static_cast<int64_t>(lengths.size());
    const fs::path out(o->out);
    fs::create_directories(out);
    io::AtomicFileWriter w(out / "retrieval.jsonl");
    std::string buf;
    {
      ProgressBar bar("retrieval", o->n, ProgressBar::Options{.unit = "ex"});
      for (int64_t i = 0; i < o->n; ++i) {
        const bool first = o->query == "before" || (o->query == "both" && (i / k) % 2 == 1);
        const auto e =
            data::make_retrieval_example(o->seed, i, lengths[static_cast<size_t>(i % k)], first, v);
        buf += data::retrieval_to_json(e);
        buf += '\n';
        if (buf.size() > (1u << 20)) {
          w.write(buf.data(), buf.size());
          buf.clear();
        }
        bar.advance();
      }
    }
    w.write(buf.data(), buf.size());
    w.commit();
    io::write_text_file_atomic(out / "tokenizer.json", v.tokenizer_json());
    io::write_text_file_atomic(out / "tokenizer_config.json", v.tokenizer_config_json());
    std::cout << "wrote " << o->n << " retrieval examples (N " << join(lengths, ",") << ", query "
              << o->query << ", vocabulary " << v.vocab_size() << ") to " << out.string()
              << ": retrieval.jsonl, tokenizer.json\n";
  });
}

}  // namespace

void add_data_commands(CLI::App& app) {
  auto* c = app.add_subcommand(
      "make-data", "Write the built-in data sets (synthetic scenes, synthetic retrieval) to disk");
  c->require_subcommand(1);
  add_scenes(*c);
  add_retrieval(*c);
}

}  // namespace mambavl::cli
