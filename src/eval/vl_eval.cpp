#include "eval/vl_eval.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <map>

#include "common/error.h"
#include "common/progress.h"
#include "data/vl_sequence.h"
#include "generate/generate.h"
#include "io/checkpoint.h"

namespace mambavl::eval {

using json = nlohmann::json;

EvalOutput evaluate_vlm(models::VLM& vlm, const data::VLDataset& ds, const VLEvalOptions& opt) {
  MVL_CHECK(
      opt.task == "all" || opt.task == "caption" || opt.task == "vqa" || opt.task == "grounding",
      "eval: task must be caption, vqa, grounding or all, not '", opt.task, "'");
  MVL_CHECK(opt.batch_size > 0 && opt.max_new_tokens > 0,
            "eval: batch size and max new tokens must be > 0");
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < ds.size(); ++i) {
    if (opt.limit > 0 && static_cast<int64_t>(idx.size()) >= opt.limit) break;
    const auto ex = ds.example(i);
    if (ex.task == "chat" || ex.task == "mc") continue;  // no automatic metric for these
    if (opt.task == "all" || ex.task == opt.task) idx.push_back(i);
  }
  MVL_CHECK(!idx.empty(), "eval: the data set has no ", opt.task == "all" ? "" : opt.task + " ",
            "examples (caption / vqa / grounding) to evaluate");
  const bool was_training = vlm.module().is_training();
  vlm.module().eval();
  c10::InferenceMode guard;
  const auto fmt = data::sequence_format(vlm, opt.order);
  generate::GenerateOptions g;
  g.max_new_tokens = opt.max_new_tokens;
  g.sampling.greedy = true;
  g.eos_id = vlm.eos_id();
  const io::Tokenizer& tok = vlm.tokenizer();

  EvalOutput out;
  std::map<std::string, std::vector<std::string>> preds;
  std::vector<std::vector<std::string>> cap_refs;
  std::vector<std::vector<std::string>> vqa_refs;
  std::vector<std::array<double, 4>> boxes;
  ProgressBar bar(
      "eval", static_cast<int64_t>(idx.size()),
      ProgressBar::Options{
          .unit = "ex", .mode = opt.progress ? ProgressBar::Mode::Auto : ProgressBar::Mode::Off});
  for (size_t s = 0; s < idx.size(); s += static_cast<size_t>(opt.batch_size)) {
    std::vector<int64_t> chunk(
        idx.begin() + static_cast<std::ptrdiff_t>(s),
        idx.begin() + static_cast<std::ptrdiff_t>(
                          std::min(idx.size(), s + static_cast<size_t>(opt.batch_size))));
    auto c = data::collate(ds, chunk, vlm, fmt, /*include_answer=*/false);
    auto gen = generate::generate_batch(vlm.lm(), data::prompt_embeds(vlm, c), g);
    for (size_t r = 0; r < chunk.size(); ++r) {
      const auto& ex = c.examples[r];
      std::string text = tok.decode(gen[r], /*skip_special_tokens=*/true);
      json p = {{"id", ex.id}, {"task", ex.task}, {"prediction", text}, {"references", ex.answers}};
      if (!ex.question.empty()) p["question"] = ex.question;
      if (ex.task == "caption") cap_refs.push_back(ex.answers);
      if (ex.task == "vqa") {
        vqa_refs.push_back(ex.answers);
        p["correct"] = vqa_exact_match(text, ex.answers);
      }
      if (ex.task == "grounding") {
        MVL_CHECK(ex.box.has_value(), ds.name(chunk[r]), ": a grounding example without a box");
        boxes.push_back(*ex.box);
        p["box"] = *ex.box;
        auto pb = parse_box(text);
        p["parsed_box"] = pb ? json(*pb) : json(nullptr);
        p["iou"] = pb ? box_iou(*pb, *ex.box) : 0.0;
      }
      preds[ex.task].push_back(text);
      out.predictions.push_back(std::move(p));
    }
    bar.advance(static_cast<int64_t>(chunk.size()));
  }
  bar.finish();
  out.metrics = json::object();
  if (!cap_refs.empty())
    out.metrics["caption"] = {{"cider_d", cider_d(cap_refs, preds["caption"])},
                              {"n", cap_refs.size()}};
  if (!vqa_refs.empty()) {
    int64_t ok = 0;
    for (size_t i = 0; i < vqa_refs.size(); ++i)
      ok += vqa_exact_match(preds["vqa"][i], vqa_refs[i]);
    out.metrics["vqa"] = {{"exact_match", static_cast<double>(ok) / vqa_refs.size()},
                          {"correct", ok},
                          {"n", vqa_refs.size()}};
  }
  if (!boxes.empty()) {
    auto gs = grounding_accuracy(preds["grounding"], boxes);
    out.metrics["grounding"] = {{"accuracy", gs.accuracy},
                                {"correct", gs.correct},
                                {"unparseable", gs.unparseable},
                                {"n", gs.total}};
  }
  if (was_training) vlm.module().train();
  return out;
}

EvalOutput evaluate_retrieval(models::CausalLM& lm, const data::RetrievalSamples& src,
                              int64_t batch_size, bool progress) {
  MVL_CHECK(batch_size > 0, "eval: batch size must be > 0");
  MVL_CHECK(src.size() > 0, "eval: no retrieval examples");
  const bool was_training = lm.module().is_training();
  lm.module().eval();
  c10::InferenceMode guard;
  const auto& v = src.vocab();
  std::vector<int64_t> pred, truth;
  EvalOutput out;
  ProgressBar bar(
      "eval", src.size(),
      ProgressBar::Options{.unit = "ex",
                           .mode = progress ? ProgressBar::Mode::Auto : ProgressBar::Mode::Off});
  for (int64_t s = 0; s < src.size(); s += batch_size) {
    const int64_t n = std::min(batch_size, src.size() - s);
    std::vector<data::LMSample> samples;
    for (int64_t i = s; i < s + n; ++i) samples.push_back(src.sample(i));
    auto b = data::make_lm_batch(samples, v.pad_id());
    at::Tensor h = lm.forward_hidden(lm.embed(b.ids));  // [n, L, H]
    for (int64_t i = 0; i < n; ++i) {
      // The answer token is the last id; position len - 2 predicts it.
      const int64_t at_pos = static_cast<int64_t>(samples[i].ids.size()) - 2;
      at::Tensor lg = lm.logits(h[i][at_pos]);  // [V]
      const int64_t id = lg.argmax().item<int64_t>();
      const auto& e = src.example(s + i);
      const int64_t p = v.is_position(id) ? id - v.position_id(0) : -1;
      pred.push_back(p);
      truth.push_back(e.answer);
      out.predictions.push_back({{"index", s + i},
                                 {"n", e.tokens.size()},
                                 {"query_first", e.query_first},
                                 {"answer", e.answer},
                                 {"prediction", p}});
    }
    bar.advance(n);
  }
  bar.finish();
  auto score = retrieval_accuracy(pred, truth, v.max_n);
  out.metrics = {{"retrieval", score.to_json()}};
  out.per_position_csv = score.per_position_csv();
  if (was_training) lm.module().train();
  return out;
}

void write_eval_output(const std::filesystem::path& dir, const EvalOutput& out, const json& extra) {
  std::filesystem::create_directories(dir);
  json r = extra;
  r["metrics"] = out.metrics;
  io::write_json_file(dir / "results.json", r);
  std::string lines;
  for (const auto& p : out.predictions) lines += p.dump() + "\n";
  io::write_text_file_atomic(dir / "predictions.jsonl", lines);
  if (!out.per_position_csv.empty())
    io::write_text_file_atomic(dir / "per_position.csv", out.per_position_csv);
}

}  // namespace mambavl::eval
