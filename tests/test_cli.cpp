// The mambavl binary end to end: init / info / generate / perplexity, and bad input giving one
// clear error (non-zero exit, message naming the file and the problem), never a crash.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli_run.h"
#include "eval/perplexity.h"
#include "generate/generate.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/registry.h"

using namespace mambavl;
namespace fs = std::filesystem;

namespace {
using testing_util::CliRun;
CliRun run(const std::string& args) { return testing_util::run_cli(args); }

class Cli : public testing_util::TempDirTest {
 protected:
  Cli() : TempDirTest("mambavl_cli_") {}
  // A copy of the mamba-tiny fixture whose weights pass through `edit` before being re-saved.
  fs::path edited_model(
      const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
    const fs::path src = fs::path(MAMBAVL_FIXTURES_DIR) / "mamba-tiny";
    const fs::path m = dir / "model";
    fs::create_directories(m);
    fs::copy_file(src / "config.json", m / "config.json");
    io::SafetensorsFile f(src / "model.safetensors");
    std::vector<std::pair<std::string, at::Tensor>> t;
    for (auto& n : f.names()) t.emplace_back(n, f.tensor(n));
    edit(t);
    io::save_safetensors(m / "model.safetensors", t);
    return m;
  }
};

void expect_error(const CliRun& r, std::initializer_list<std::string> parts) {
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_LT(r.code, 128) << "crashed: " << r.out;
  EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  for (const auto& p : parts)
    EXPECT_NE(r.out.find(p), std::string::npos) << "missing '" << p << "' in: " << r.out;
}
}  // namespace

TEST_F(Cli, InitInfoGeneratePerplexity) {
  const fs::path m = dir / "tiny";
  CliRun r = run("init --preset mamba-tiny --seed 3 --out " + m.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::exists(m / "config.json") && fs::exists(m / "model.safetensors"));
  r = run("info --model " + m.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("architecture: mamba"), std::string::npos) << r.out;

  // generate --print-ids: greedy ids equal the library's greedy generation on the same folder.
  r = run("generate --model " + m.string() +
          " --ids 5,6,7 --max-new-tokens 8 --greedy --print-ids");
  ASSERT_EQ(r.code, 0) << r.out;
  auto model = models::load_causal_lm(m);
  generate::GenerateOptions go;
  go.max_new_tokens = 8;
  go.sampling.greedy = true;
  auto ids = generate::generate(*model, {5, 6, 7}, go);
  std::string want;
  for (size_t i = 0; i < ids.size(); ++i) want += (i ? "," : "") + std::to_string(ids[i]);
  EXPECT_EQ(r.out, want + "\n");

  // Sampling is reproducible with a seed.
  std::string cmd =
      "generate --model " + m.string() +
      " --ids 1 --max-new-tokens 10 --temperature 0.8 --top-k 40 --top-p 0.9 --seed 9 --print-ids";
  EXPECT_EQ(run(cmd).out, run(cmd).out);

  r = run("perplexity --model " + m.string() + " --ids 1,2,3,4,5,6");
  ASSERT_EQ(r.code, 0) << r.out;
  auto nll = eval::mean_nll(*model, {1, 2, 3, 4, 5, 6});
  char line[128];
  std::snprintf(line, sizeof line, "nll: %.6f ppl: %.4f", nll.nll, nll.ppl);
  EXPECT_NE(r.out.find(line), std::string::npos) << r.out << " vs " << line;

  // bf16 runs too.
  r = run("generate --model " + m.string() +
          " --ids 5,6,7 --max-new-tokens 4 --greedy --dtype bf16 --threads 1");
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(Cli, TextInTextOut) {
  const fs::path tokfile =
      fs::path(MAMBAVL_FIXTURES_DIR) / "tokenizer" / "bpe-small" / "tokenizer.json";
  const fs::path m = dir / "withtok";
  CliRun r =
      run("init --preset mamba-tiny --out " + m.string() + " --tokenizer " + tokfile.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::exists(m / "tokenizer.json"));
  auto tok = io::Tokenizer::from_file(tokfile);
  auto model = models::load_causal_lm(m);
  EXPECT_GE(model->vocab_size(), tok.vocab_size());

  // tokenize prints the ids the library gives
  const std::string text = "The cat sat on the mat.";
  auto ids = tok.encode(text);
  std::string want;
  for (size_t i = 0; i < ids.size(); ++i) want += (i ? "," : "") + std::to_string(ids[i]);
  r = run("tokenize --model " + m.string() + " --text '" + text + "' --ids-only");
  EXPECT_EQ(r.out, want + "\n");

  // generate --prompt streams the prompt and the decoded continuation of the greedy ids
  generate::GenerateOptions go;
  go.max_new_tokens = 6;
  go.sampling.greedy = true;
  go.eos_id = tok.token_to_id("<|endoftext|>");
  auto out = generate::generate(*model, ids, go);
  r = run("generate --model " + m.string() + " --prompt '" + text +
          "' --max-new-tokens 6 --greedy");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, text + tok.decode(out, /*skip_special_tokens=*/true) + "\n");

  // perplexity --text equals --ids of the same tokens
  CliRun a = run("perplexity --model " + m.string() + " --text '" + text + "'");
  CliRun b = run("perplexity --model " + m.string() + " --ids " + want);
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_EQ(a.out.substr(0, a.out.find('\n')), b.out.substr(0, b.out.find('\n')));
}

TEST_F(Cli, UsageErrors) {
  expect_error(run("generate --model " + dir.string() + "/nope --ids 1"), {"nope"});
  CliRun r = run("generate --model x");
  EXPECT_NE(r.code, 0);
  const fs::path m = edited_model([](auto&) {});
  expect_error(run("generate --model " + m.string() + " --ids 1,x,3"), {"--ids"});
  expect_error(run("generate --model " + m.string() + " --ids 1,100000"),
               {"100000", "out of range"});
  expect_error(run("perplexity --model " + m.string() + " --ids 1"), {"at least 2 tokens"});
  expect_error(run("generate --model " + m.string() + " --ids 1 --temperature 0"), {"temperature"});
  expect_error(run("generate --model " + m.string() + " --prompt hi"), {"tokenizer.json", "--ids"});
  expect_error(run("perplexity --model " + m.string() + " --file /nonexistent/x.txt"),
               {"tokenizer.json"});
}

TEST_F(Cli, UnknownArchitectureAndMalformedConfig) {
  const fs::path m = edited_model([](auto&) {});
  io::write_text_file_atomic(m / "config.json", R"({"model_type": "llama", "hidden_size": 8})");
  expect_error(run("info --model " + m.string()), {"config.json", "unknown architecture", "llama"});
  io::write_text_file_atomic(m / "config.json",
                             "{\"model_type\": \"mamba\",\n \"hidden_size\": 32,, }");
  expect_error(run("info --model " + m.string()), {"config.json", "line 2"});
  io::write_text_file_atomic(
      m / "config.json",
      R"({"model_type": "mamba", "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 96, "state_size": 8, "hidden_sise": 3})");
  expect_error(run("info --model " + m.string()), {"config.json", "'hidden_sise'"});
  io::write_text_file_atomic(
      m / "config.json",
      R"({"model_type": "mamba", "hidden_size": "32", "num_hidden_layers": 2, "vocab_size": 96})");
  expect_error(run("info --model " + m.string()),
               {"config.json", "'hidden_size' must be an integer"});
}

TEST_F(Cli, MissingExtraWrongShapeWrongDtypeTensors) {
  const std::string key = "backbone.layers.1.mixer.x_proj.weight";
  fs::path m =
      edited_model([&](auto& t) { std::erase_if(t, [&](auto& e) { return e.first == key; }); });
  expect_error(run("info --model " + m.string()), {m.string(), key, "missing"});
  fs::remove_all(m);
  m = edited_model([](auto& t) { t.emplace_back("backbone.layers.7.mixer.D", at::ones({64})); });
  expect_error(run("info --model " + m.string()),
               {m.string(), "unexpected", "backbone.layers.7.mixer.D"});
  fs::remove_all(m);
  m = edited_model([&](auto& t) {
    for (auto& e : t)
      if (e.first == key) e.second = at::zeros({3, 3});
  });
  expect_error(run("info --model " + m.string()), {"model.safetensors", key, "[3, 3]"});
  fs::remove_all(m);
  m = edited_model([&](auto& t) {
    for (auto& e : t)
      if (e.first == key) e.second = e.second.to(at::kLong);
  });
  expect_error(run("info --model " + m.string()), {"model.safetensors", key});
}

TEST_F(Cli, TruncatedAndHostileSafetensors) {
  fs::path m = edited_model([](auto&) {});
  const auto size = fs::file_size(m / "model.safetensors");
  fs::resize_file(m / "model.safetensors", size / 2);
  expect_error(run("info --model " + m.string()), {"model.safetensors"});
  {  // header length far beyond the file
    std::ofstream f(m / "model.safetensors", std::ios::binary | std::ios::trunc);
    uint64_t n = 1ull << 62;
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << "{}";
  }
  expect_error(run("info --model " + m.string()), {"model.safetensors", "header"});
  {  // span outside the buffer
    std::ofstream f(m / "model.safetensors", std::ios::binary | std::ios::trunc);
    std::string h = R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16000]}})";
    uint64_t n = h.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f << h << std::string(16, '\0');
  }
  expect_error(run("info --model " + m.string()), {"model.safetensors", "'a'"});
  fs::remove(m / "model.safetensors");
  expect_error(run("info --model " + m.string()), {"model.safetensors"});
}
