// Sizes read from files are bounded before anything is allocated (issue 10, class 1): the limits
// of each config format (models/lm_limits.h, ViTConfig, MambaOutConfig, ConnectorConfig,
// ImagePreprocess, TokenizerLimits), the comparison of a config with its safetensors header
// before the model is built (models/weights_check.h), and the findings of the mutation fuzzer,
// each run through the CLI under a time and address-space limit (tests/cli_run.h): exit status 1
// and one "error:" line naming the file and the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "cli_run.h"
#include "common/error.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "io/config_util.h"
#include "models/connector.h"
#include "models/gpt_neox.h"
#include "models/lm_limits.h"
#include "models/mamba.h"
#include "models/mambaout.h"
#include "models/registry.h"
#include "models/vision.h"
#include "models/vit.h"
#include "models/vlm.h"
#include "models/weights_check.h"
#include "test_util.h"

using namespace mambavl;
namespace fs = std::filesystem;
using json = nlohmann::json;
using testing_util::expect_one_error_line;
using testing_util::run_cli_limited;

using mambavl::testing_util::error_of;

namespace {

const fs::path kFixtures = MAMBAVL_FIXTURES_DIR;

void expect_msg(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string m = error_of(f);
  EXPECT_FALSE(m.empty()) << "no mambavl::Error thrown";
  for (const auto& p : parts)
    EXPECT_NE(m.find(p), std::string::npos) << "no '" << p << "' in: " << m;
}

json read_json(const fs::path& p) { return io::read_json_file(p); }

void write_json(const fs::path& p, const json& j) {
  std::ofstream f(p);
  f << j.dump(1);
}

// A 48-byte model.safetensors: an empty header (only metadata), no tensors.
void write_tiny_weights(const fs::path& p) {
  std::string header = R"({"__metadata__":{"format":"pt"}})";
  header.resize(40, ' ');
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  std::ofstream f(p, std::ios::binary);
  f << bytes << header;
}

int64_t count_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

class RobustSizes : public testing_util::TempDirTest {
 protected:
  RobustSizes() : TempDirTest("mambavl_robust_sizes_") {}
  // A copy of a fixture folder with its config.json edited.
  fs::path edited(const std::string& fixture, const std::function<void(json&)>& edit,
                  const std::string& name = "model") {
    const fs::path src = kFixtures / fixture, m = dir / name;
    fs::create_directories(m);
    for (const auto& e : fs::directory_iterator(src))
      if (e.path().extension() != ".json" || e.path().filename() == "config.json" ||
          e.path().filename() == "model.safetensors.index.json")
        fs::copy_file(e.path(), m / e.path().filename());
    json j = read_json(m / "config.json");
    edit(j);
    write_json(m / "config.json", j);
    return m;
  }
  // config.json `cfg` beside the 48-byte weights file.
  fs::path tiny_weights_folder(const json& cfg, const std::string& name = "model") {
    const fs::path m = dir / name;
    fs::create_directories(m);
    write_json(m / "config.json", cfg);
    write_tiny_weights(m / "model.safetensors");
    return m;
  }
  std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
};

}  // namespace

// ---- the limit helpers -------------------------------------------------------------------------

TEST(RobustSizesUnit, CheckLimitAndIntegersPastInt64NameTheField) {
  expect_msg(
      [] {
        cfg::check_limit(274877906944, 1, 1048576, "d/config.json", "intermediate_size");
      },
      {"d/config.json: intermediate_size 274877906944 is over the limit of 1048576"});
  expect_msg([] { cfg::check_limit(0, 1, 8, "c.json", "hidden_size"); },
             {"c.json: hidden_size 0 must be at least 1"});
  EXPECT_NO_THROW(cfg::check_limit(8, 1, 8, "c.json", "x"));
  // 2^64 - 1 arrives as an unsigned JSON integer: refused, not wrapped to -1.
  const json j = json::parse(R"({"vocab_size": 18446744073709551615})");
  expect_msg([&] { cfg::get_int(j, "vocab_size", "c.json", 0); },
             {"c.json", "'vocab_size'", "out of range"});
  expect_msg(
      [&] {
        cfg::get_int_in(json{{"k", 9}}, "k", "c.json", 0, 1, 8);
      },
      {"c.json: k 9 is over the limit of 8"});
}

TEST(RobustSizesUnit, MambaConfigLimitsNameTheFieldInBothLayouts) {
  using L = models::LMLimits;
  const json base = read_json(kFixtures / "mamba-tiny" / "config.json");
  const std::vector<std::tuple<std::string, int64_t, int64_t>> hf = {
      {"hidden_size", int64_t{1} << 20, L::kMaxHidden},
      {"num_hidden_layers", int64_t{1} << 20, L::kMaxLayers},
      {"vocab_size", int64_t{1} << 47, L::kMaxVocab},
      {"intermediate_size", int64_t{1} << 38, L::kMaxIntermediate},
      {"state_size", int64_t{1} << 20, L::kMaxDState},
      {"conv_kernel", int64_t{1} << 20, L::kMaxDConv},
      {"expand", 1000, L::kMaxExpand},
      {"time_step_rank", int64_t{1} << 30, L::kMaxDtRank}};
  for (const auto& [key, value, limit] : hf) {
    json j = base;
    j[key] = value;
    expect_msg([&] { models::MambaConfig::from_json(j, "d/config.json"); },
               {"d/config.json: " + key + " " + std::to_string(value) + " is over the limit of " +
                std::to_string(limit)});
  }
  // Each size within its bound, the whole far too large: the parameter count.
  json j = base;
  j["hidden_size"] = L::kMaxHidden;
  j["num_hidden_layers"] = L::kMaxLayers;
  j["intermediate_size"] = L::kMaxIntermediate;
  expect_msg([&] { models::MambaConfig::from_json(j, "d/config.json"); },
             {"d/config.json", "parameters", "over the limit"});
  // mamba_ssm's layout: its own key names; the vocabulary is bounded before it is padded.
  const json orig = read_json(kFixtures / "mamba-tiny-orig" / "config.json");
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, int64_t>>{{"d_model", int64_t{1} << 20},
                                                    {"n_layer", int64_t{1} << 20},
                                                    {"vocab_size", INT64_MAX},
                                                    {"pad_vocab_size_multiple", INT64_MAX}}) {
    j = orig;
    j[key] = value;
    expect_msg([&] { models::MambaConfig::from_json(j, "o.json"); },
               {"o.json: " + key + " " + std::to_string(value) + " is over the limit"});
  }
  j = orig;
  j["ssm_cfg"]["d_state"] = 1 << 20;
  expect_msg([&] { models::MambaConfig::from_json(j, "o.json"); },
             {"o.json: ssm_cfg.d_state 1048576 is over the limit of 1024"});
  // Hybrid attention sizes.
  j = orig;
  j["attn_layer_idx"] = {1};
  j["attn_cfg"] = {{"num_heads", 1 << 20}};
  expect_msg([&] { models::MambaConfig::from_json(j, "o.json"); },
             {"o.json: attn_cfg.num_heads 1048576 is over the limit"});
  j["attn_cfg"] = {{"num_heads", 2}, {"head_dim", 1 << 20}};
  expect_msg([&] { models::MambaConfig::from_json(j, "o.json"); },
             {"o.json: attn_cfg.head_dim 1048576 is over the limit"});
  j["attn_cfg"] = {{"num_heads", 2}};
  j["attn_layer_idx"] = std::vector<int64_t>(100, 1);
  expect_msg([&] { models::MambaConfig::from_json(j, "o.json"); },
             {"o.json", "attn_layer_idx has 100 entries"});
}

TEST(RobustSizesUnit, NeoXConfigLimitsNameTheField) {
  using L = models::LMLimits;
  const json base = read_json(kFixtures / "gpt_neox-tiny-parallel" / "config.json");
  for (const auto& [key, value, limit] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"vocab_size", int64_t{1} << 47, L::kMaxVocab},
           {"hidden_size", int64_t{1} << 62, L::kMaxHidden},
           {"num_hidden_layers", int64_t{1} << 20, L::kMaxLayers},
           {"intermediate_size", int64_t{1} << 38, L::kMaxIntermediate},
           {"num_attention_heads", int64_t{1} << 20, L::kMaxHeads},
           {"max_position_embeddings", int64_t{1} << 40, L::kMaxPositions}}) {
    json j = base;
    j[key] = value;
    expect_msg([&] { models::GPTNeoXConfig::from_json(j, "n/config.json"); },
               {"n/config.json: " + key + " " + std::to_string(value) + " is over the limit of " +
                std::to_string(limit)});
  }
  json j = base;
  j["hidden_size"] = 65536;
  j["num_attention_heads"] = 64;
  j["vocab_size"] = L::kMaxVocab;
  expect_msg([&] { models::GPTNeoXConfig::from_json(j, "n/config.json"); },
             {"n/config.json", "parameters", "over the limit"});
}

// num_parameters() is what the limits and the header comparison rely on: it must equal the
// modules' own count for every family.
TEST(RobustSizesUnit, ParameterCountsEqualTheModules) {
  for (const char* f : {"mamba-tiny", "mamba-tiny-orig", "mamba-tiny-bias"}) {
    auto c = models::MambaConfig::from_json(read_json(kFixtures / f / "config.json"), f);
    models::MambaLM m(c, false);
    EXPECT_EQ(c.num_parameters(), count_parameters(m.module())) << f;
  }
  {  // hybrid, untied, GQA, biases off
    json j = read_json(kFixtures / "mamba-tiny-orig" / "config.json");
    j["attn_layer_idx"] = {1};
    j["attn_cfg"] = {
        {"num_heads", 4}, {"num_heads_kv", 2}, {"rotary_emb_dim", 4}, {"qkv_proj_bias", false}};
    j["tie_embeddings"] = false;
    auto c = models::MambaConfig::from_json(j, "hybrid");
    models::MambaLM m(c, false);
    EXPECT_EQ(c.num_parameters(), count_parameters(m.module()));
  }
  for (const char* f : {"gpt_neox-tiny-parallel", "gpt_neox-tiny-sequential"}) {
    auto c = models::GPTNeoXConfig::from_json(read_json(kFixtures / f / "config.json"), f);
    models::GPTNeoXLM m(c, false);
    EXPECT_EQ(c.num_parameters(), count_parameters(m.module())) << f;
  }
  for (const char* f : {"clip-tiny", "siglip-tiny", "eva02-tiny", "eva02-clip-tiny"}) {
    const json j = read_json(kFixtures / "vision" / f / "config.json");
    auto c = models::ViTConfig::from_json(j, f);
    auto enc = models::make_vision_encoder(j, 0, false, f);
    EXPECT_EQ(c.num_parameters(), count_parameters(enc->module())) << f;
  }
  // The real sizes, without allocating them: transformers' / timm's counts (test_vit.cpp).
  for (const auto& [name, size, count] :
       std::vector<std::tuple<std::string, int64_t, int64_t>>{{"clip-vit-b16", 224, 85799424},
                                                              {"clip-vit-l14", 224, 303179776},
                                                              {"siglip-so400m-14", 384, 412987248},
                                                              {"eva02-l14", 224, 303268800}})
    EXPECT_EQ(models::vit_encoder_preset_config(name, size).num_parameters(), count) << name;
}

// The expected tensors of every family exist in its fixture with the implied shapes, so the check
// passes on real folders, and a listed key that a layout does not have would show up here.
TEST(RobustSizesUnit, ExpectedWeightsMatchEveryFixture) {
  auto check = [](const fs::path& d, const models::ExpectedWeights& w) {
    io::CheckpointFolder ckpt(d);
    EXPECT_NO_THROW(models::check_weights_match_config(w, ckpt, (d / "config.json").string())) << d;
    for (const auto& t : w.tensors) {
      bool any = false;
      for (const auto& k : t.keys) any = any || ckpt.contains(k);
      EXPECT_TRUE(any) << d << ": none of " << join(t.keys) << " is in the checkpoint";
    }
    EXPECT_LE(w.num_parameters, [&] {
      double n = 0;
      for (const auto& name : ckpt.names()) {
        double v = 1;
        for (int64_t s : ckpt.shape(name)) v *= static_cast<double>(s);
        n += v;
      }
      return n;
    }()) << d;
  };
  for (const char* f : {"mamba-tiny", "mamba-tiny-orig", "mamba-tiny-bias", "mamba-tiny-sharded",
                        "mamba-tiny-bf16"})
    check(kFixtures / f, models::MambaConfig::from_json(read_json(kFixtures / f / "config.json"), f)
                             .expected_weights());
  for (const char* f : {"gpt_neox-tiny-parallel", "gpt_neox-tiny-sequential"})
    check(kFixtures / f,
          models::GPTNeoXConfig::from_json(read_json(kFixtures / f / "config.json"), f)
              .expected_weights());
  for (const char* f : {"clip-tiny", "siglip-tiny", "eva02-tiny", "eva02-clip-tiny",
                        "clip-full-tiny", "siglip-full-tiny"}) {
    const fs::path d = kFixtures / "vision" / f;
    check(d, models::ViTConfig::from_json(read_json(d / "config.json"), f).expected_weights());
  }
  for (const char* f : {"mambaout-tiny", "mambaout-tiny-timm"}) {
    const fs::path d = kFixtures / "vision" / f;
    check(d, models::MambaOutConfig::from_json(read_json(d / "config.json"), f).expected_weights());
  }
}

TEST_F(RobustSizes, ConfigDisagreeingWithItsWeightsFailsBeforeBuilding) {
  // Within the limits, but not what the weights hold: config.json, the field and the tensor.
  fs::path m = edited("mamba-tiny", [](json& j) { j["intermediate_size"] = 4096; });
  expect_msg([&] { models::load_causal_lm(m); },
             {(m / "config.json").string(), "intermediate_size", "shape mismatch",
              "'backbone.layers.0.mixer.in_proj.weight'", (m / "model.safetensors").string(),
              "[128, 32]", "[8192, 32]"});
  m = edited(
      "mamba-tiny", [](json& j) { j["vocab_size"] = 1 << 20; }, "vocab");
  expect_msg([&] { models::load_causal_lm(m); },
             {"config.json", "vocab_size", "'backbone.embeddings.weight'"});
  m = edited(
      "mamba-tiny", [](json& j) { j["num_hidden_layers"] = 4000; }, "layers");
  expect_msg([&] { models::load_causal_lm(m); },
             {"config.json", "num_hidden_layers = 4000", "layers 0..1", "missing"});
  m = edited(
      "mamba-tiny-orig", [](json& j) { j["ssm_cfg"]["d_state"] = 1000; }, "orig");
  expect_msg([&] { models::load_causal_lm(m); }, {"config.json", "ssm_cfg.d_state", "A_log"});
  m = edited(
      "gpt_neox-tiny-parallel", [](json& j) { j["intermediate_size"] = 1 << 20; }, "neox");
  expect_msg([&] { models::load_causal_lm(m); },
             {"config.json", "intermediate_size", "'gpt_neox.layers.0.mlp.dense_h_to_4h.weight'"});
  m = edited(
      "vision/clip-tiny", [](json& j) { j["image_size"] = 4096; }, "clip");
  expect_msg([&] { models::load_vision_encoder(m); },
             {"config.json", "image_size", "position_embedding.weight", "shape"});
  m = edited(
      "vision/eva02-tiny", [](json& j) { j["model_args"]["depth"] = 1000; }, "eva");
  expect_msg([&] { models::load_vision_encoder(m); }, {"config.json", "model_args.depth = 1000"});
  m = edited(
      "vision/mambaout-tiny", [](json& j) { j["dims"][3] = 16384; }, "mambaout");
  expect_msg([&] { models::load_vision_encoder(m); }, {"config.json", "dims[3]", "shape"});
  // A config within every limit beside the 48-byte weights file: refused from the header.
  json big = read_json(kFixtures / "mamba-tiny" / "config.json");
  big["hidden_size"] = 4096;
  big["num_hidden_layers"] = 64;
  big["vocab_size"] = 65024;
  big["intermediate_size"] = 8192;
  m = tiny_weights_folder(big, "falcon-shaped");
  expect_msg([&] { models::load_causal_lm(m); },
             {"config.json", "num_hidden_layers = 64", "no layers"});
  // The same without layers in the way (the header holds a few tensors of the right names).
  const fs::path m2 = dir / "few";
  fs::create_directories(m2);
  write_json(m2 / "config.json", big);
  io::save_safetensors(m2 / "model.safetensors",
                       {{"backbone.layers.63.norm.weight", at::zeros({4})}});
  expect_msg([&] { models::load_causal_lm(m2); },
             {"config.json", "parameters", "holds only 4 values"});
}

TEST(RobustSizesUnit, TokenizerIdsAndNestingAreBounded) {
  const std::string path = (kFixtures / "tokenizer" / "bpe-small" / "tokenizer.json").string();
  const json base = read_json(path);
  auto parse = [](const json& j) { io::Tokenizer::from_json_string(j.dump(), "t/tokenizer.json"); };
  EXPECT_NO_THROW(parse(base));
  for (int64_t id : {int64_t{1} << 27, int64_t{1} << 31, int64_t{1} << 62}) {
    json j = base;
    j["added_tokens"][0]["id"] = id;
    expect_msg([&] { parse(j); }, {"tokenizer t/tokenizer.json: added_tokens[0].id: " +
                                   std::to_string(id) + " is over the limit of"});
  }
  json j = base;
  j["added_tokens"][0]["id"] = json::parse("18446744073709551615");
  expect_msg([&] { parse(j); }, {"t/tokenizer.json", "added_tokens[0].id"});
  // Ids just past the entries are fine (dense near the vocabulary); far past are not.
  j = base;
  j["added_tokens"][0]["id"] = 5000;
  EXPECT_NO_THROW(parse(j));
  j = base;
  j["model"]["vocab"]["Ġthe"] = int64_t{1} << 30;
  expect_msg([&] { parse(j); }, {"t/tokenizer.json", "model.vocab", "over the limit"});
  // normalizer Sequence: nesting and length.
  auto nested = [&](int depth) {
    json n = {{"type", "NFC"}};
    for (int i = 0; i < depth; ++i) n = {{"type", "Sequence"}, {"normalizers", {n}}};
    json t = base;
    t["normalizer"] = n;
    return t;
  };
  EXPECT_NO_THROW(parse(nested(3)));
  expect_msg([&] { parse(nested(20)); },
             {"t/tokenizer.json", "normalizer.normalizers[0]", "Sequence nested more than 16"});
  j = base;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", std::vector<json>(2000, json{{"type", "NFC"}})}};
  expect_msg([&] { parse(j); }, {"t/tokenizer.json", "normalizer.normalizers", "2000 entries"});
  // Template ids are checked like the others.
  j = base;
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}}},
      {"special_tokens", {{"<s>", {{"ids", {int64_t{1} << 40}}}}}}};
  expect_msg([&] { parse(j); },
             {"t/tokenizer.json", "post_processor.special_tokens.<s>.ids", "over the limit"});
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {"x"};
  expect_msg([&] { parse(j); }, {"t/tokenizer.json", "post_processor.special_tokens.<s>.ids"});
  // Within the limit but no token (found by fuzz_tokenizer: encode emitted an id past the
  // vocabulary): refused at load.
  const int64_t n = io::Tokenizer::from_json_string(base.dump(), "t/tokenizer.json").vocab_size();
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {n + 2};
  expect_msg([&] { parse(j); }, {"t/tokenizer.json", "post_processor.special_tokens.<s>.ids",
                                 std::to_string(n + 2) + " is not a token id"});
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {n - 1};  // the last token: fine
  EXPECT_NO_THROW(parse(j));
}

TEST(RobustSizesUnit, PreprocessSizeAndBatchBytesAreBounded) {
  expect_msg(
      [] {
        io::ImagePreprocess::from_json({{"size", 16384}}, "c/config.json");
      },
      {"c/config.json: preprocess.size 16384 is over the limit of 4096"});
  EXPECT_EQ(io::ImagePreprocess::from_json({{"size", 4096}}, "c.json").size, 4096);
  io::ImagePreprocess p;
  p.size = 224;
  EXPECT_EQ(p.input_bytes(2), 2 * 3 * 224 * 224 * 4);
  p.size = int64_t{1} << 40;  // never from a file; the arithmetic still cannot overflow
  EXPECT_EQ(p.input_bytes(1 << 20), INT64_MAX);
  p.size = 4096;
  EXPECT_NO_THROW(p.check_batch(8, "--batch"));
  expect_msg([&] { p.check_batch(1000, "--batch"); }, {"--batch", "1000 images", "over the limit"});
}

// ---- the fuzzer's findings through the CLI ------------------------------------------------------

TEST_F(RobustSizes, CliLanguageModelConfigsDemandingTerabytes) {
  // intermediate_size 2^38 (1 TB) and vocab_size 2^47 (140 TB) beside a 48-byte weights file.
  json j = read_json(kFixtures / "mamba-tiny" / "config.json");
  j["intermediate_size"] = int64_t{1} << 38;
  fs::path m = tiny_weights_folder(j, "inter");
  auto r = run_cli_limited("info --model " + q(m));
  expect_one_error_line(r, {(m / "config.json").string(),
                            "intermediate_size 274877906944 is over the limit of 1048576"});
  j = read_json(kFixtures / "mamba-tiny" / "config.json");
  j["vocab_size"] = int64_t{1} << 47;
  m = tiny_weights_folder(j, "vocab");
  r = run_cli_limited("generate --model " + q(m) + " --ids 1,2 --max-new-tokens 2");
  expect_one_error_line(r, {(m / "config.json").string(), "vocab_size 140737488355328"});
  j = read_json(kFixtures / "gpt_neox-tiny-parallel" / "config.json");
  j["vocab_size"] = int64_t{1} << 47;
  m = tiny_weights_folder(j, "neox");
  r = run_cli_limited("generate --model " + q(m) + " --ids 1,2 --max-new-tokens 2");
  expect_one_error_line(r, {(m / "config.json").string(), "vocab_size 140737488355328"});
  // Within the limits, but not what the weights beside it hold.
  m = edited(
      "mamba-tiny", [](json& c) { c["intermediate_size"] = 1 << 20; }, "mismatch");
  r = run_cli_limited("info --model " + q(m));
  expect_one_error_line(r, {(m / "config.json").string(), "intermediate_size",
                            "backbone.layers.0.mixer.in_proj.weight"});
}

TEST_F(RobustSizes, CliVisionLanguageModelTextConfig) {
  const fs::path m = dir / "vlm";
  {
    models::VLM vlm(models::vlm_preset("mamba-vl-tiny", 96), 0, true);
    vlm.save(m);
  }
  json j = read_json(m / "config.json");
  j["text_config"]["intermediate_size"] = int64_t{1} << 38;
  write_json(m / "config.json", j);
  auto r = run_cli_limited("info --model " + q(m));
  expect_one_error_line(r, {(m / "config.json").string(), "text_config",
                            "intermediate_size 274877906944 is over the limit"});
  j["text_config"]["intermediate_size"] = 1 << 20;  // within the limit, not the weights
  write_json(m / "config.json", j);
  r = run_cli_limited("info --model " + q(m));
  expect_one_error_line(r, {(m / "config.json").string(), "text_config.intermediate_size",
                            "language_model.backbone.layers.0.mixer.in_proj.weight"});
}

TEST_F(RobustSizes, CliTokenizerAddedTokenIds) {
  const json base = read_json(kFixtures / "tokenizer" / "bpe-small" / "tokenizer.json");
  for (int64_t id : {int64_t{1} << 27, int64_t{1} << 31}) {
    json j = base;
    j["added_tokens"][0]["id"] = id;
    const fs::path t = dir / ("tok" + std::to_string(id) + ".json");
    write_json(t, j);
    auto r = run_cli_limited("tokenize --tokenizer " + q(t) + " --text hello");
    expect_one_error_line(r,
                          {t.string(), "added_tokens[0].id", std::to_string(id), "over the limit"});
  }
}

TEST_F(RobustSizes, CliTokenizerDeepNormalizerSequence) {
  const json base = read_json(kFixtures / "tokenizer" / "bpe-small" / "tokenizer.json");
  // 20,000 deep (the fuzzer's case; refused by the JSON depth bound) and 20 deep (by the
  // Sequence nesting bound, naming the field).
  for (int depth : {20000, 20}) {
    std::string n = R"({"type":"NFC"})";
    std::string text;
    for (int i = 0; i < depth; ++i) text += R"({"type":"Sequence","normalizers":[)";
    text += n;
    for (int i = 0; i < depth; ++i) text += "]}";
    json j = base;
    j["normalizer"] = "@@N@@";
    std::string s = j.dump();
    s.replace(s.find("\"@@N@@\""), 7, text);
    const fs::path t = dir / ("deep" + std::to_string(depth) + ".json");
    std::ofstream(t) << s;
    auto r = run_cli_limited("tokenize --tokenizer " + q(t) + " --text hello");
    expect_one_error_line(r, {t.string(), depth == 20 ? "Sequence nested more than 16" : "nested"});
  }
}

TEST_F(RobustSizes, CliClassifierPreprocessSizeAtTheOldMaximum) {
  const fs::path m = dir / "clf";
  auto clf = models::make_classifier({{"architecture", "vit"},
                                      {"hidden_size", 16},
                                      {"num_layers", 1},
                                      {"num_heads", 2},
                                      {"patch_size", 8},
                                      {"image_size", 32},
                                      {"num_classes", 3}},
                                     0, "clf.json");
  models::save_classifier(*clf, {"a", "b", "c"}, m);
  io::Image img;
  img.width = img.height = 32;
  img.pixels.assign(32 * 32 * 3, 128);
  io::save_png(dir / "img.png", img);
  json j = read_json(m / "config.json");
  j["preprocess"]["size"] = 16384;  // the documented maximum before: 3.2 GB for this image
  write_json(m / "config.json", j);
  auto r = run_cli_limited("classify --model " + q(m) + " " + q(dir / "img.png"));
  expect_one_error_line(
      r, {(m / "config.json").string(), "preprocess.size 16384", "over the limit of 4096"});
  // The classifier's head is compared with the weights too.
  j["preprocess"]["size"] = 32;
  j["num_classes"] = 1 << 20;
  j.erase("classes");
  write_json(m / "config.json", j);
  r = run_cli_limited("classify --model " + q(m) + " " + q(dir / "img.png"));
  expect_one_error_line(r, {(m / "config.json").string(), "num_classes", "head.weight"});
}
