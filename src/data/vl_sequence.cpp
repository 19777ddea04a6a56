#include "data/vl_sequence.h"

#include <ATen/ATen.h>

#include "common/error.h"
#include "models/gpt_neox.h"

namespace mambavl::data {

int64_t ImageBlockFormat::length() const {
  if (style == "plain") return image_tokens();
  return 1 + prefix + grid_h * (grid_w + 1);
}

PromptParts task_prompt(const VLExample& ex) {
  if (ex.task == "caption") return {"Provide a one-sentence caption for the provided image.\n", ""};
  if (ex.task == "vqa")
    return {"Answer the question using a single word or phrase.",
            "\nQuestion: " + ex.question + "\nAnswer: "};
  if (ex.task == "grounding")
    return {"Locate the region that is described by:", "\n" + ex.question + "\n"};
  if (ex.task == "mc")
    return {"Answer with the option's letter from the given choices directly.",
            "\n" + ex.question + "\nAnswer: "};
  if (ex.task == "chat") return {};
  MVL_FAIL("unknown task '", ex.task, "' (known: caption, vqa, grounding, mc, chat)");
}

namespace {

struct Builder {
  const io::Tokenizer& tok;
  const SequenceFormat& f;
  AssembledSequence s;

  void text(const std::string& t, bool supervised) {
    if (t.empty()) return;
    for (int64_t id : tok.encode(t)) {
      s.ids.push_back(id);
      s.labels.push_back(supervised ? id : -100);
    }
  }
  void token(int64_t id, bool supervised) {
    s.ids.push_back(id);
    s.labels.push_back(supervised ? id : -100);
  }
  void image() {
    const ImageBlockFormat& b = f.block;
    std::vector<int64_t> pos;
    auto placeholder = [&] {
      pos.push_back(static_cast<int64_t>(s.ids.size()));
      token(b.placeholder_id, false);
    };
    if (b.style == "plain") {
      for (int64_t i = 0; i < b.image_tokens(); ++i) placeholder();
    } else {
      token(b.start_id, false);
      for (int64_t i = 0; i < b.prefix; ++i) placeholder();
      for (int64_t r = 0; r < b.grid_h; ++r) {
        for (int64_t c = 0; c < b.grid_w; ++c) placeholder();
        token(r + 1 == b.grid_h ? b.start_id : b.row_end_id, false);
      }
    }
    s.image_positions.push_back(std::move(pos));
  }
  void answer(const std::string& a) {
    text(a, true);
    if (f.eos_id) token(*f.eos_id, true);
  }
};

int64_t count_markers(const std::string& s) {
  int64_t n = 0;
  for (size_t p = s.find("<image>"); p != std::string::npos; p = s.find("<image>", p + 7)) ++n;
  return n;
}

}  // namespace

AssembledSequence assemble(const VLExample& ex, const io::Tokenizer& tok, const SequenceFormat& f,
                           bool include_answer, const std::string& what) {
  const ImageBlockFormat& b = f.block;
  if (ex.num_images > 0) {
    MVL_CHECK(b.grid_h > 0 && b.grid_w > 0, what, ": the sequence format has no image grid");
    MVL_CHECK(b.style == "plain" || (b.start_id >= 0 && b.row_end_id >= 0), what,
              ": the image block tokens are not set");
    MVL_CHECK(f.max_length <= 0 || b.length() * ex.num_images <= f.max_length, what, ": ",
              ex.num_images, " image block(s) of ", b.length(), " tokens do not fit the model's ",
              "context of ", f.max_length,
              " tokens (use a smaller image size or fewer images; nothing is truncated)");
  }
  Builder bld{tok, f, {}};
  if (ex.task == "chat") {
    int64_t markers = 0;
    for (const auto& t : ex.turns) markers += count_markers(t.human);
    MVL_CHECK(markers == ex.num_images, what, ": ", markers, " <image> marker(s) but ",
              ex.num_images, " image(s)");
    MVL_CHECK(!ex.turns.empty(), what, ": a conversation without turns");
    for (size_t i = 0; i < ex.turns.size(); ++i) {
      const std::string& h = ex.turns[i].human;
      size_t start = 0;
      for (size_t p = h.find("<image>"); p != std::string::npos; p = h.find("<image>", start)) {
        bld.text(h.substr(start, p - start), false);
        bld.image();
        start = p + 7;
      }
      bld.text(h.substr(start), false);
      const bool last = i + 1 == ex.turns.size();
      if (last && !include_answer) break;
      bld.answer(ex.turns[i].gpt);
    }
    bld.s.answer = ex.turns.back().gpt;
  } else {
    const PromptParts p = task_prompt(ex);
    auto images = [&] {
      for (int64_t i = 0; i < ex.num_images; ++i) bld.image();
    };
    if (f.order == "default") {
      images();
      bld.text(p.instruction, false);
      bld.text(p.query, false);
    } else if (f.order == "instruction_first") {
      bld.text(p.instruction, false);
      images();
      bld.text(p.query, false);
    } else if (f.order == "query_first") {
      bld.text(p.instruction, false);
      bld.text(p.query, false);
      images();
    } else {
      MVL_FAIL("unknown prompt order '", f.order,
               "' (known: default, instruction_first, query_first)");
    }
    MVL_CHECK(!ex.answers.empty() || !include_answer, what, ": no answer to train on");
    if (!ex.answers.empty()) bld.s.answer = ex.answers[0];
    if (include_answer) bld.answer(ex.answers[0]);
  }
  MVL_CHECK(!bld.s.ids.empty(), what, ": the sequence is empty");
  MVL_CHECK(f.max_length <= 0 || static_cast<int64_t>(bld.s.ids.size()) <= f.max_length, what,
            ": the sequence has ", bld.s.ids.size(), " tokens, more than the model's context of ",
            f.max_length, " (nothing is truncated: shorten the text or use a smaller image)");
  return std::move(bld.s);
}

SequenceFormat sequence_format(models::VLM& vlm, const std::string& order) {
  SequenceFormat f;
  const auto& c = vlm.config();
  f.order = order.empty() ? c.prompt_order : order;
  f.block.style = c.image_block;
  const auto g = vlm.grid();
  f.block.grid_h = g[0], f.block.grid_w = g[1];
  f.block.prefix = vlm.image_tokens() - g[0] * g[1];
  if (c.image_block == "separator") {
    f.block.start_id = vlm.image_start_id();
    f.block.row_end_id = vlm.image_row_end_id();
  }
  f.eos_id = vlm.eos_id();
  f.block.placeholder_id = f.eos_id.value_or(0);
  if (auto* neox = dynamic_cast<models::GPTNeoXLM*>(&vlm.lm()))
    f.max_length = neox->config().max_position_embeddings;
  return f;
}

models::VLMBatch make_vlm_batch(const std::vector<AssembledSequence>& seqs,
                                const at::Tensor& images, int64_t pad_id) {
  MVL_CHECK(!seqs.empty(), "make_vlm_batch: no sequences");
  const int64_t B = static_cast<int64_t>(seqs.size());
  int64_t L = 0, n_img = 0, T = -1;
  for (const auto& s : seqs) {
    L = std::max<int64_t>(L, static_cast<int64_t>(s.ids.size()));
    for (const auto& p : s.image_positions) {
      MVL_CHECK(T < 0 || T == static_cast<int64_t>(p.size()),
                "make_vlm_batch: images of different token counts in one batch");
      T = static_cast<int64_t>(p.size());
      ++n_img;
    }
  }
  models::VLMBatch b;
  b.ids = at::full({B, L}, pad_id, at::kLong);
  b.labels = at::full({B, L}, -100, at::kLong);
  auto ids = b.ids.accessor<int64_t, 2>();
  auto lab = b.labels.accessor<int64_t, 2>();
  for (int64_t i = 0; i < B; ++i)
    for (size_t t = 0; t < seqs[i].ids.size(); ++t) {
      ids[i][t] = seqs[i].ids[t];
      lab[i][t] = seqs[i].labels[t];
    }
  if (n_img > 0) {
    MVL_CHECK(images.defined() && images.size(0) == n_img, "make_vlm_batch: the sequences have ",
              n_img, " image block(s) but ", images.defined() ? images.size(0) : 0,
              " image(s) were given");
    b.images = images;
    b.image_pos = at::empty({n_img, T}, at::kLong);
    auto ip = b.image_pos.accessor<int64_t, 2>();
    int64_t k = 0;
    for (int64_t i = 0; i < B; ++i)
      for (const auto& p : seqs[i].image_positions) {
        for (int64_t j = 0; j < T; ++j) ip[k][j] = i * L + p[j];
        ++k;
      }
  } else {
    MVL_CHECK(!images.defined() || images.size(0) == 0, "make_vlm_batch: ", images.size(0),
              " image(s) given but the sequences have no image block");
  }
  return b;
}

VLMCollated collate(const VLDataset& ds, const std::vector<int64_t>& indices, models::VLM& vlm,
                    const SequenceFormat& f, bool include_answer) {
  VLMCollated c;
  const io::ImagePreprocess pp = vlm.preprocess();
  std::vector<at::Tensor> imgs;
  for (int64_t i : indices) {
    VLExample ex = ds.example(i);
    std::vector<io::Image> im = ex.num_images > 0 ? ds.images(i) : std::vector<io::Image>{};
    MVL_CHECK(static_cast<int64_t>(im.size()) == ex.num_images, ds.name(i), ": ", im.size(),
              " image(s) decoded but the example has ", ex.num_images);
    c.seqs.push_back(assemble(ex, vlm.tokenizer(), f, include_answer, ds.name(i)));
    for (const auto& img : im) imgs.push_back(pp(img));
    c.examples.push_back(std::move(ex));
  }
  at::Tensor images = imgs.empty() ? at::Tensor() : at::stack(imgs);  // [n, 3, S, S]
  c.batch = make_vlm_batch(c.seqs, images, f.block.placeholder_id);
  return c;
}

std::vector<at::Tensor> prompt_embeds(models::VLM& vlm, const VLMCollated& c) {
  at::Tensor e = vlm.embed(c.batch);  // [B, L, H]
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < c.seqs.size(); ++i)
    out.push_back(
        e[static_cast<int64_t>(i)].narrow(0, 0, static_cast<int64_t>(c.seqs[i].ids.size())));
  return out;
}

}  // namespace mambavl::data
