// Vision-language models: every encoder x connector x backbone builds and trains a step; the
// folder round trip (prefixed keys in one safetensors); sequence assembly exactly as SPEC §2.3
// (block layout, orders, answer-only labels, placeholders overwritten by the connector); the loss
// rule (mean within a sample, then over samples); a sample's logits and loss alone equal those in
// a padded batch, for every backbone; several images and text-only samples in one batch; errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/scenes.h"
#include "data/vl_data.h"
#include "data/vl_sequence.h"
#include "data/word_tokenizer.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "models/mambaout.h"
#include "models/vit.h"
#include "models/vlm.h"
#include "test_util.h"

using namespace mambavl;
using data::VLExample;
using models::VLM;
using models::VLMConfig;
using testing_util::close;
using testing_util::expect_error;
namespace fs = std::filesystem;

namespace {

// A word-level tokenizer over the scene texts, with ### and && (what make-data writes).
fs::path tokenizer_dir() {
  static fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("mvl_vlm_tok_" + std::to_string(getpid()));
    fs::create_directories(d);
    data::write_wordlevel_tokenizer(d, data::scene_texts_for_vocabulary(), {"###", "&&"});
    return d;
  }();
  return dir;
}

const io::Tokenizer& tok() {
  static io::Tokenizer t = io::Tokenizer::from_file(tokenizer_dir() / "tokenizer.json");
  return t;
}

nlohmann::json vision_cfg(const std::string& kind) {
  if (kind == "mambaout") {
    models::MambaOutConfig c = models::MambaOutConfig::preset("femto");
    c.variant = "";
    c.depths = {1, 1, 1, 1};
    c.dims = {8, 8, 16, 16};
    c.num_classes = 0;
    c.preprocess.size = 64;  // -> a 2 x 2 grid
    return c.to_json();
  }
  models::ViTConfig c;
  c.layout = kind == "siglip"  ? models::ViTLayout::SigLIP
             : kind == "eva02" ? models::ViTLayout::EVA02
                               : models::ViTLayout::CLIP;
  c.hidden_size = 16, c.num_layers = 1, c.num_heads = 2, c.intermediate_size = 32;
  c.patch_size = 8, c.image_size = 32;  // -> a 4 x 4 grid
  c.hidden_act = kind == "siglip" ? "gelu_pytorch_tanh" : "quick_gelu";
  if (kind == "eva02") {
    c.hidden_act = "swiglu";
    c.timm_arch = "eva02_base_patch14_224";
    c.ref_feat_shape = {4, 4};
    c.intermediate_size = static_cast<int64_t>(16 * c.mlp_ratio);
  }
  return c.to_json();
}

nlohmann::json text_cfg(const std::string& kind, int64_t vocab) {
  if (kind == "gpt_neox") {
    models::GPTNeoXConfig c;
    c.hidden_size = 32, c.num_hidden_layers = 2, c.num_attention_heads = 4;
    c.intermediate_size = 64, c.vocab_size = vocab, c.max_position_embeddings = 512;
    c.finalize();
    return c.to_json();
  }
  models::MambaConfig c;
  c.d_model = 32, c.n_layer = kind == "hybrid" ? 3 : 2, c.vocab_size = vocab;
  c.d_state = 4, c.d_inner = 0, c.dt_rank = 0;
  if (kind == "hybrid") {
    c.attn_layer_idx = {1};
    c.attn.num_heads = 4;
    c.attn.rotary_emb_dim = 8;
    c.layout = "original";
    c.unpadded_vocab_size = vocab;
  }
  c.finalize();
  return models::MambaLM(c, false).save_config().to_json();
}

VLMConfig make_cfg(const std::string& vision, const std::string& connector,
                   const std::string& backbone, const std::string& scan = "bsm") {
  VLMConfig c;
  c.family = backbone == "gpt_neox" ? "pythia-vl" : backbone == "hybrid" ? "hybrid-vl" : "mamba-vl";
  if (connector == "vss_l2") c.family = "vl-mamba";
  c.vision_config = vision_cfg(vision);
  const int64_t vocab = (tok().vocab_size() + 7) / 8 * 8;
  c.text_config = text_cfg(backbone, vocab);
  c.connector.type = connector;
  c.connector.scan = scan;
  c.connector.d_vision = vision == "mambaout" ? 16 : 16;
  c.connector.d_lm = 32;
  c.connector.d_state = 4;
  return c;
}

std::unique_ptr<VLM> make_vlm(const VLMConfig& c, uint64_t seed = 1) {
  auto m = std::make_unique<VLM>(c, seed);
  m->set_tokenizer(tokenizer_dir() / "tokenizer.json");
  return m;
}

// A deterministic scene dataset of the model's image size.
data::SceneDataset scenes(int64_t n, int64_t size) {
  data::SceneOptions o;
  o.image_size = size;
  return data::SceneDataset(n, 3, o);
}

}  // namespace

TEST(VLMAssembly, SeparatorBlockLayoutIsExact) {
  data::ImageBlockFormat b;
  b.start_id = 7, b.row_end_id = 9, b.grid_h = 3, b.grid_w = 4, b.placeholder_id = 1;
  EXPECT_EQ(b.length(), 1 + 3 * (4 + 1));
  data::SequenceFormat f;
  f.block = b;
  VLExample ex;
  ex.task = "caption";
  ex.answers = {"a red circle."};
  ex.num_images = 1;
  auto s = data::assemble(ex, tok(), f, /*include_answer=*/true);
  // ### p p p p && p p p p && p p p p ###
  ASSERT_EQ(s.image_positions.size(), 1u);
  ASSERT_EQ(s.image_positions[0].size(), 12u);
  EXPECT_EQ(s.ids[0], 7);
  EXPECT_EQ(s.ids[5], 9);
  EXPECT_EQ(s.ids[10], 9);
  EXPECT_EQ(s.ids[15], 7);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(s.image_positions[0][r * 4 + c], 1 + r * 5 + c);
  // 336 px, patch 14: 601 tokens (SPEC §2.3).
  b.grid_h = b.grid_w = 24;
  EXPECT_EQ(b.length(), 601);
  b.style = "plain";
  EXPECT_EQ(b.length(), 576);
}

TEST(VLMAssembly, OrdersTemplatesAndAnswerOnlyLabels) {
  auto m = make_vlm(make_cfg("clip", "mlp", "mamba"));
  VLExample ex;
  ex.task = "vqa";
  ex.question = "what colour is the circle?";
  ex.answers = {"red"};
  ex.num_images = 1;
  auto enc = [&](const std::string& s) { return tok().encode(s); };
  const auto instr = enc("Answer the question using a single word or phrase.");
  const auto query = enc("\nQuestion: what colour is the circle?\nAnswer: ");
  const auto ans = enc("red");
  const int64_t block = data::sequence_format(*m).block.length();
  const int64_t eos = *m->eos_id();
  for (const std::string order : {"default", "instruction_first", "query_first"}) {
    SCOPED_TRACE(order);
    auto f = data::sequence_format(*m, order);
    auto s = data::assemble(ex, tok(), f, true);
    std::vector<int64_t> text;                        // the sequence without the image block
    int64_t img_start = s.image_positions[0][0] - 1;  // the first ###
    for (int64_t i = 0; i < static_cast<int64_t>(s.ids.size()); ++i)
      if (i < img_start || i >= img_start + block) text.push_back(s.ids[i]);
    std::vector<int64_t> want = instr;
    want.insert(want.end(), query.begin(), query.end());
    want.insert(want.end(), ans.begin(), ans.end());
    want.push_back(eos);
    EXPECT_EQ(text, want);
    const int64_t expect_start = order == "default" ? 0
                                 : order == "instruction_first"
                                     ? static_cast<int64_t>(instr.size())
                                     : static_cast<int64_t>(instr.size() + query.size());
    EXPECT_EQ(img_start, expect_start);
    EXPECT_EQ(s.ids[img_start], m->image_start_id());
    // Labels: exactly the answer and eos, at the end.
    const int64_t n = static_cast<int64_t>(s.ids.size());
    for (int64_t i = 0; i < n; ++i) {
      const bool sup = i >= n - static_cast<int64_t>(ans.size()) - 1;
      EXPECT_EQ(s.labels[i], sup ? s.ids[i] : -100) << "position " << i;
    }
    // The prompt-only sequence is the training sequence without answer and eos.
    auto p = data::assemble(ex, tok(), f, false);
    EXPECT_EQ(p.ids, std::vector<int64_t>(s.ids.begin(), s.ids.end() - ans.size() - 1));
  }
}

TEST(VLMAssembly, ChatTurnsImagesAtMarkersAndEveryAnswerSupervised) {
  auto m = make_vlm(make_cfg("clip", "mlp", "mamba"));
  VLExample ex;
  ex.task = "chat";
  ex.num_images = 2;
  ex.turns = {{"<image>\nwhat shape is it?", "circle"}, {"and here? <image>", "square"}};
  auto f = data::sequence_format(*m);
  auto s = data::assemble(ex, tok(), f, true);
  ASSERT_EQ(s.image_positions.size(), 2u);
  EXPECT_EQ(s.image_positions[0][0], 1);  // the first marker starts the sequence
  int64_t supervised = 0;
  for (auto l : s.labels) supervised += l != -100;
  EXPECT_EQ(supervised, static_cast<int64_t>(tok().encode("circle").size() +
                                             tok().encode("square").size() + 2));
  ex.num_images = 1;
  expect_error([&] { data::assemble(ex, tok(), f, true); }, {"2 <image> marker(s) but 1 image"});
}

TEST(VLMAssembly, ImageBlockLongerThanContextIsAnError) {
  auto m = make_vlm(make_cfg("clip", "mlp", "gpt_neox"));
  auto f = data::sequence_format(*m);
  EXPECT_EQ(f.max_length, 512);
  f.max_length = 10;
  VLExample ex;
  ex.task = "caption";
  ex.answers = {"a red circle."};
  ex.num_images = 1;
  expect_error([&] { data::assemble(ex, tok(), f, true, "data.json row 4"); },
               {"data.json row 4", "do not fit the model's context of 10", "nothing is truncated"});
}

TEST(VLMModel, PlaceholdersAreOverwrittenByTheConnector) {
  auto m = make_vlm(make_cfg("clip", "mlp", "mamba"));
  auto ds = scenes(2, 32);
  auto f = data::sequence_format(*m);
  auto c = data::collate(ds, {0, 1}, *m, f, true);
  at::Tensor e = m->embed(c.batch);                     // [2, L, H]
  at::Tensor plain = m->lm().embed(c.batch.ids);        // [2, L, H]
  at::Tensor feats = m->encode_images(c.batch.images);  // [2, 16, H]
  const int64_t L = c.batch.ids.size(1);
  at::Tensor flat = e.reshape({-1, e.size(2)});
  for (int64_t i = 0; i < 2; ++i)
    EXPECT_TRUE(close(flat.index_select(0, c.batch.image_pos[i]), feats[i], 0, 0));
  at::Tensor is_img = at::zeros({2 * L}, at::kBool);
  is_img.index_put_({c.batch.image_pos.reshape(-1)}, true);
  EXPECT_TRUE(close(flat.index({is_img.logical_not()}),
                    plain.reshape({-1, e.size(2)}).index({is_img.logical_not()}), 0, 0));
}

TEST(VLMModel, LossIsMeanWithinSampleThenOverSamples) {
  auto m = make_vlm(make_cfg("clip", "mlp", "mamba"));
  auto ds = scenes(3, 32);
  auto c = data::collate(ds, {0, 1, 2}, *m, data::sequence_format(*m), true);
  auto out = m->loss(c.batch);
  at::Tensor lg = m->logits(c.batch);  // [B, L, V]
  double total = 0;
  for (int64_t b = 0; b < 3; ++b) {
    double s = 0;
    int64_t n = 0;
    for (int64_t t = 1; t < lg.size(1); ++t) {
      const int64_t y = c.batch.labels[b][t].item<int64_t>();
      if (y == -100) continue;
      s -= at::log_softmax(lg[b][t - 1], 0)[y].item<double>();
      ++n;
    }
    ASSERT_GT(n, 0);
    EXPECT_NEAR(out.per_sample[b].item<double>(), s / n, 1e-4);
    total += s / n;
  }
  EXPECT_NEAR(out.loss.item<double>(), total / 3, 1e-4);
}

TEST(VLMModel, AloneEqualsPaddedInABatchForEveryBackbone) {
  for (const std::string bb : {"mamba", "gpt_neox", "hybrid"}) {
    SCOPED_TRACE(bb);
    auto m = make_vlm(make_cfg("clip", "mlp", bb));
    auto ds = scenes(4, 32);
    auto f = data::sequence_format(*m);
    auto all = data::collate(ds, {0, 1, 2, 3}, *m, f, true);
    auto lb = m->loss(all.batch);
    at::Tensor lg = m->logits(all.batch);
    for (int64_t i = 0; i < 4; ++i) {
      auto one = data::collate(ds, {i}, *m, f, true);
      auto l1 = m->loss(one.batch);
      EXPECT_NEAR(l1.loss.item<double>(), lb.per_sample[i].item<double>(), 1e-5);
      at::Tensor g1 = m->logits(one.batch)[0];
      EXPECT_TRUE(close(lg[i].narrow(0, 0, g1.size(0)), g1, 1e-4, 1e-4));
    }
  }
}

TEST(VLMModel, SeveralImagesAndTextOnlySamplesInOneBatch) {
  auto m = make_vlm(make_cfg("clip", "mlp", "gpt_neox"));
  auto f = data::sequence_format(*m);
  VLExample two, none;
  two.task = "chat";
  two.num_images = 2;
  two.turns = {{"<image> <image> how many circles are there?", "2"}};
  none.task = "chat";
  none.turns = {{"what colour is the sky?", "blue"}};
  std::vector<data::AssembledSequence> seqs = {data::assemble(two, tok(), f, true),
                                               data::assemble(none, tok(), f, true)};
  at::Tensor images = at::randn({2, 3, 32, 32});
  auto b = data::make_vlm_batch(seqs, images, 0);
  EXPECT_EQ(b.image_pos.size(0), 2);
  auto l = m->loss(b);
  EXPECT_TRUE(std::isfinite(l.loss.item<double>()));
  // The text-only sample alone.
  auto b1 = data::make_vlm_batch({seqs[1]}, at::Tensor(), 0);
  EXPECT_NEAR(m->loss(b1).loss.item<double>(), l.per_sample[1].item<double>(), 1e-5);
  expect_error(
      [&] {
        data::make_vlm_batch(seqs, at::randn({1, 3, 32, 32}), 0);
      },
      {"2 image block(s) but 1 image(s)"});
}

TEST(VLMModel, EveryEncoderConnectorBackboneBuildsAndLearns) {
  struct Case {
    std::string vision, connector, backbone, scan;
  };
  std::vector<Case> cases;
  for (const std::string v : {"clip", "siglip", "eva02", "mambaout"})
    cases.push_back({v, "mlp", "mamba", "bsm"});
  for (const std::string c : {"mlp", "vss_mlp", "vss_l2"})
    for (const std::string bb : {"mamba", "gpt_neox", "hybrid"})
      cases.push_back({"clip", c, bb, c == "vss_mlp" ? "csm" : "bsm"});
  for (const auto& k : cases) {
    SCOPED_TRACE(k.vision + " " + k.connector + " " + k.scan + " " + k.backbone);
    auto m = make_vlm(make_cfg(k.vision, k.connector, k.backbone, k.scan));
    const int64_t size = m->preprocess().size;
    auto ds = scenes(2, size);
    auto c = data::collate(ds, {0, 1}, *m, data::sequence_format(*m), true);
    auto l0 = m->loss(c.batch);
    l0.loss.backward();
    // Every part gets a gradient.
    for (auto* part : {&m->vision().module(), static_cast<torch::nn::Module*>(&m->connector()),
                       &m->lm().module()}) {
      double g = 0;
      for (auto& p : part->parameters())
        if (p.grad().defined()) g += p.grad().abs().sum().item<double>();
      EXPECT_GT(g, 0);
    }
    // A few SGD steps lower the loss on the batch.
    {
      at::NoGradGuard ng;
      for (auto& p : m->module().parameters())
        if (p.grad().defined()) p.sub_(p.grad() * 0.05), p.mutable_grad().reset();
    }
    for (int it = 0; it < 3; ++it) {
      auto l = m->loss(c.batch);
      l.loss.backward();
      at::NoGradGuard ng;
      for (auto& p : m->module().parameters())
        if (p.grad().defined()) p.sub_(p.grad() * 0.05), p.mutable_grad().reset();
    }
    EXPECT_LT(m->loss(c.batch).loss.item<double>(), l0.loss.item<double>());
  }
}

TEST(VLMFolder, SaveLoadRoundTripWithPrefixedKeys) {
  for (const std::string bb : {"mamba", "gpt_neox", "hybrid"}) {
    SCOPED_TRACE(bb);
    auto m = make_vlm(make_cfg("clip", "vss_l2", bb));
    fs::path dir = fs::temp_directory_path() / ("mvl_vlm_rt_" + std::to_string(getpid()) + bb);
    m->save(dir);
    EXPECT_TRUE(models::is_vlm_folder(dir));
    EXPECT_TRUE(fs::exists(dir / "tokenizer.json"));
    io::SafetensorsFile st(dir / "model.safetensors");
    int vt = 0, mp = 0, lmk = 0;
    for (const auto& n : st.names()) {
      vt += n.rfind("vision_tower.", 0) == 0;
      mp += n.rfind("multi_modal_projector.", 0) == 0;
      lmk += n.rfind("language_model.", 0) == 0;
    }
    EXPECT_GT(vt, 0);
    EXPECT_GT(mp, 0);
    EXPECT_GT(lmk, 0);
    EXPECT_EQ(vt + mp + lmk, static_cast<int>(st.names().size()));
    auto back = VLM::load(dir);
    auto ds = scenes(2, 32);
    auto f = data::sequence_format(*m);
    auto c = data::collate(ds, {0, 1}, *m, f, true);
    EXPECT_TRUE(close(back->logits(c.batch), m->logits(c.batch), 0, 0));
    EXPECT_EQ(back->config().to_json(), m->config().to_json());
    if (back->lm().max_context() > 0) {  // GPT-NeoX: the context bound names this folder's key
      const std::string src = back->lm().max_context_source();
      EXPECT_NE(src.find("text_config.max_position_embeddings"), std::string::npos) << src;
      EXPECT_NE(src.find((dir / "config.json").string()), std::string::npos) << src;
    }
    fs::remove_all(dir);
  }
}

TEST(VLMFolder, ConfigErrorsNameTheKey) {
  auto j = make_cfg("clip", "mlp", "mamba").to_json();
  j["image_blok"] = "plain";
  expect_error([&] { VLMConfig::from_json(j, "x/config.json"); },
               {"x/config.json", "unknown key 'image_blok'"});
  j.erase("image_blok");
  j["prompt_order"] = "sideways";
  expect_error([&] { VLMConfig::from_json(j, "x/config.json"); }, {"prompt_order", "sideways"});
  auto c = make_cfg("clip", "mlp", "mamba");
  c.connector.d_lm = 48;
  expect_error([&] { VLM(c, 0); }, {"connector d_lm = 48", "hidden size is 32"});
}

TEST(VLMPresets, TinyPresetsBuildWithTheirFamilies) {
  const int64_t vocab = tok().vocab_size();
  for (const std::string name :
       {"mamba-vl-tiny", "pythia-vl-tiny", "hybrid-vl-tiny", "vl-mamba-tiny"}) {
    SCOPED_TRACE(name);
    VLMConfig c = models::vlm_preset(name, vocab);
    VLM m(c, 0);
    const int64_t n = m.num_parameters();
    EXPECT_GT(n, 3'000'000);
    EXPECT_LT(n, 20'000'000);
    EXPECT_EQ(m.grid()[0], 8);
  }
  // Paper shapes are configs only here (building them would allocate gigabytes).
  VLMConfig p = models::vlm_preset("vl-mamba-2.8b", 50277);
  EXPECT_EQ(p.connector.type, "vss_l2");
  EXPECT_EQ(p.connector.d_vision, 1152);
  EXPECT_EQ(p.connector.d_lm, 2560);
  EXPECT_EQ(p.image_block, "plain");
  VLMConfig e = models::vlm_preset("pythia-vl-1b", 50277);
  EXPECT_EQ(e.connector.d_vision, 1024);
  EXPECT_EQ(e.image_size, 336);
  expect_error([&] { models::vlm_preset("mamba-vl-tiny", 0); }, {"needs a tokenizer"});
}

TEST(VLMTokens, NeoXSeparatorIdsAreThePapers) {
  const fs::path file = fs::path(MAMBAVL_SHARED_DIR) / "tokenizers/gpt-neox-20b/tokenizer.json";
  if (!fs::exists(file))
    GTEST_SKIP() << "shared GPT-NeoX-20B tokenizer not found at " << file.string()
                 << " (a checkout beside ../shared has it)";
  auto t = io::Tokenizer::from_file(file);
  EXPECT_EQ(*t.token_to_id("###"), 4118);
  EXPECT_EQ(*t.token_to_id("&&"), 10494);
}
