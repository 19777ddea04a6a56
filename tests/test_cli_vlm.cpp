// The vision-language commands end to end through the CLI: init --preset (VLM), compose (a real
// Hugging Face CLIP vision folder + an LM folder), info, generate --image, chat, train --config
// (stages, freezing, checkpoints, resume from a mid-run checkpoint == uninterrupted, identity
// check), eval (caption / vqa / grounding / retrieval) and the bad-input errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli_run.h"
#include "io/safetensors.h"

using mambavl::testing_util::CliRun;
using mambavl::testing_util::run_cli;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write(const fs::path& p, const std::string& text) {
  std::ofstream f(p);
  f << text;
}

class CliVlm : public mambavl::testing_util::TempDirTest {
 protected:
  CliVlm() : TempDirTest("mvl_cli_vlm_") {}
  // scenes (32 px) + a tiny Mamba LM on their tokenizer + a VLM composed with the CLIP fixture.
  void make_vlm(const std::string& lm_preset = "mamba-tiny") {
    auto r = run_cli("make-data scenes --n 12 --seed 3 --image-size 32 --out " +
                     (dir / "scenes").string());
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_cli("init --preset " + lm_preset + " --tokenizer " +
                (dir / "scenes/tokenizer.json").string() + " --out " + (dir / "lm").string());
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_cli("compose --vision " + std::string(MAMBAVL_FIXTURES_DIR) +
                "/vision/clip-tiny --lm " + (dir / "lm").string() + " --connector mlp --out " +
                (dir / "vlm").string());
    ASSERT_EQ(r.code, 0) << r.out;
  }
  std::string run_file(int steps, int save_every, const std::string& extra = "") {
    std::ostringstream s;
    s << "kind = \"vlm\"\nout = \"" << (dir / "run").string() << "\"\n"
      << "[model]\npath = \"" << (dir / "vlm").string() << "\"\n"
      << "[data]\nsource = \"scenes\"\nn = 24\nseed = 0\nimage_size = 32\n"
      << "[eval]\nn = 6\nbatch_size = 3\nmax_new_tokens = 12\n"
      << "[train]\nbatch_size = 4\nlog_every = 1\nsave_every = " << save_every
      << "\nkeep_last = 0\nprogress = false\n"
      << "[[train.stages]]\nname = \"connector\"\nsteps = 2\nlr = 1e-2\n"
      << "freeze = [\"vision_tower\", \"language_model\"]\n"
      << "[[train.stages]]\nname = \"full\"\nsteps = " << steps - 2 << "\nlr = 3e-3\n"
      << "freeze = [\"vision_tower\"]\n"
      << extra;
    return s.str();
  }
};

}  // namespace

TEST_F(CliVlm, InitPresetInfoGenerateAndChat) {
  auto r = run_cli("make-data scenes --n 2 --seed 0 --out " + (dir / "s").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("init --preset pythia-vl-tiny --tokenizer " + (dir / "s/tokenizer.json").string() +
              " --out " + (dir / "m").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("info --model " + (dir / "m").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("family: pythia-vl"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("64 image tokens"), std::string::npos) << r.out;
  const std::string img = (dir / "s/images/scene_000000.png").string();
  r = run_cli("generate --model " + (dir / "m").string() + " --image " + img +
              " --prompt 'what is it?' --max-new-tokens 5 --greedy --print-ids");
  ASSERT_EQ(r.code, 0) << r.out;
  int commas = 0;
  for (char ch : r.out) commas += ch == ',';
  EXPECT_EQ(commas, 4) << r.out;  // 5 ids (a random model rarely emits eos first; greedy is fixed)
  // encode: the VLM's encoder + connector, [images, 64, 256] (the LM's width).
  r = run_cli("encode --model " + (dir / "m").string() + " " + img + " " + img + " --out " +
              (dir / "f.safetensors").string());
  ASSERT_EQ(r.code, 0) << r.out;
  {
    mambavl::io::SafetensorsFile f(dir / "f.safetensors");
    EXPECT_EQ(f.entry("features").shape, (std::vector<int64_t>{2, 64, 256}));
  }
  r = run_cli("encode --model " + (dir / "m").string() + " --layer -2 " + img);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--layer is set by its config.json"), std::string::npos) << r.out;
  r = run_cli("chat --model " + (dir / "m").string() + " --image " + img +
              " --task vqa --prompt 'what colour is the square?' --max-new-tokens 4 --greedy");
  EXPECT_EQ(r.code, 0) << r.out;
  // The interactive mode ends at EOF.
  r = run_cli("chat --model " + (dir / "m").string() + " --image " + img +
              " --max-new-tokens 3 --greedy < /dev/null");
  EXPECT_EQ(r.code, 0) << r.out;
  // An LM folder with --image, a VLM without it.
  r = run_cli("generate --model " + (dir / "m").string() + " --prompt hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("give --image"), std::string::npos) << r.out;
}

TEST_F(CliVlm, ComposeTrainResumeEval) {
  make_vlm();
  auto r = run_cli("info --model " + (dir / "vlm").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("family: mamba-vl"), std::string::npos) << r.out;
  {
    mambavl::io::SafetensorsFile st(dir / "vlm/model.safetensors");
    EXPECT_TRUE(st.contains("vision_tower.vision_model.embeddings.patch_embedding.weight"));
    EXPECT_TRUE(st.contains("multi_modal_projector.linear_1.weight"));
    EXPECT_TRUE(st.contains("language_model.backbone.embeddings.weight"));
  }
  // The composed vision tower is the fixture's, unchanged.
  write(dir / "run.toml", run_file(4, 2));
  r = run_cli("train --config " + (dir / "run.toml").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("trained 4 steps"), std::string::npos) << r.out;
  const fs::path final4 = dir / "run/checkpoints/step-00000004/model/model.safetensors";
  ASSERT_TRUE(fs::exists(final4));
  ASSERT_TRUE(fs::exists(dir / "run/checkpoints/step-00000002/model/model.safetensors"));
  // The log has a line per step and an eval at the end of each stage.
  const std::string log = slurp(dir / "run/train_log.jsonl");
  int evals = 0;
  for (size_t p = log.find("\"eval\""); p != std::string::npos; p = log.find("\"eval\"", p + 1))
    ++evals;
  EXPECT_EQ(evals, 2) << log;
  EXPECT_NE(log.find("cider_d"), std::string::npos);
  // Stage 1 froze the vision tower and the LM: they equal the composed folder's after step 2.
  {
    mambavl::io::SafetensorsFile a(dir / "vlm/model.safetensors");
    mambavl::io::SafetensorsFile b(dir / "run/checkpoints/step-00000002/model/model.safetensors");
    for (const std::string k : {"vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
                                "language_model.backbone.layers.0.mixer.in_proj.weight"})
      EXPECT_TRUE(a.tensor(k).equal(b.tensor(k))) << k;
    EXPECT_FALSE(a.tensor("multi_modal_projector.linear_1.weight")
                     .equal(b.tensor("multi_modal_projector.linear_1.weight")));
  }
  // Resume from the step-2 checkpoint into another folder: bit-identical to the uninterrupted run.
  r = run_cli("train --config " + (dir / "run.toml").string() + " --out " +
              (dir / "run2").string() + " --resume " +
              (dir / "run/checkpoints/step-00000002").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(slurp(dir / "run2/checkpoints/step-00000004/model/model.safetensors"), slurp(final4));
  // Evaluation of the final model on held-out scenes.
  r = run_cli("eval --model " + (dir / "run/checkpoints/step-00000004/model").string() +
              " --scenes 6 --image-size 32 --max-new-tokens 12 --quiet --out " +
              (dir / "ev").string());
  ASSERT_EQ(r.code, 0) << r.out;
  auto res = nlohmann::json::parse(slurp(dir / "ev/results.json"));
  for (const char* k : {"caption", "vqa", "grounding"})
    EXPECT_TRUE(res["metrics"].contains(k)) << res.dump();
  EXPECT_EQ(res["metrics"]["grounding"]["n"], 2);
  int lines = 0;
  for (char ch : slurp(dir / "ev/predictions.jsonl")) lines += ch == '\n';
  EXPECT_EQ(lines, 6);
}

TEST_F(CliVlm, ResumeRefusesACheckpointOfAnotherModel) {
  make_vlm();
  write(dir / "run.toml", run_file(3, 3));
  auto r = run_cli("train --config " + (dir / "run.toml").string());
  ASSERT_EQ(r.code, 0) << r.out;
  // Another VLM: the same parts but a Pythia backbone.
  r = run_cli("init --preset pythia-tiny --tokenizer " + (dir / "scenes/tokenizer.json").string() +
              " --out " + (dir / "lm2").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("compose --vision " + std::string(MAMBAVL_FIXTURES_DIR) + "/vision/clip-tiny --lm " +
              (dir / "lm2").string() + " --out " + (dir / "vlm2").string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("train --config " + (dir / "run.toml").string() + " --set 'model.path=\"" +
              (dir / "vlm2").string() + "\"' --out " + (dir / "run3").string() + " --resume " +
              (dir / "run").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gpt_neox"), std::string::npos) << r.out;
}

TEST_F(CliVlm, RetrievalLanguageModelTrainsAndEvaluates) {
  write(dir / "ret.toml",
        "kind = \"lm\"\nout = \"" + (dir / "ret").string() +
            "\"\n[model]\npreset = \"mamba-tiny\"\n[data]\nsource = \"retrieval\"\nn = 64\n"
            "lengths = [6, 8]\nquery = \"both\"\nmax_n = 16\ncontent = 32\n[eval]\nn = 16\n"
            "[train]\nbatch_size = 8\nprogress = false\n[[train.stages]]\nsteps = 3\nlr = 3e-3\n");
  auto r = run_cli("train --config " + (dir / "ret.toml").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"retrieval\""), std::string::npos) << r.out;
  const std::string model = (dir / "ret/checkpoints/step-00000003/model").string();
  r = run_cli("eval --model " + model +
              " --task retrieval --retrieval 10 --lengths 8 --max-n 16 "
              "--content 32 --quiet --out " +
              (dir / "rev").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("retrieval accuracy"), std::string::npos) << r.out;
  const std::string csv = slurp(dir / "rev/per_position.csv");
  EXPECT_EQ(csv.rfind("position,correct,total,accuracy", 0), 0u) << csv;
}

TEST_F(CliVlm, RunFileErrorsNameFileAndKey) {
  make_vlm();
  write(dir / "bad.toml", run_file(3, 3, "[extra]\nx = 1\n"));
  auto r = run_cli("train --config " + (dir / "bad.toml").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad.toml"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("extra"), std::string::npos) << r.out;
  write(dir / "bad2.toml", run_file(3, 3));
  r = run_cli("train --config " + (dir / "bad2.toml").string() + " --set data.colour=1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("data.colour"), std::string::npos) << r.out;
  r = run_cli("train --config " + (dir / "bad2.toml").string() +
              " --set 'train.stages.0.freeze=[\"vision_towr\"]'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("vision_towr"), std::string::npos) << r.out;
  // A LLaVA file whose image is missing: fail (default) names row and path; skip counts it.
  fs::create_directories(dir / "ll");
  write(
      dir / "ll/data.json",
      R"([{"id": "a", "image": "nope.png", "conversations": [{"from": "human", "value": "<image>\nhi"}, {"from": "gpt", "value": "red"}]},
            {"id": "b", "image": "../scenes/images/scene_000000.png", "conversations": [{"from": "human", "value": "<image>\nwhat is it?"}, {"from": "gpt", "value": "red"}]},
            {"id": "c", "conversations": [{"from": "human", "value": "what colour is the sky?"}, {"from": "gpt", "value": "blue"}]}])");
  const std::string llava = "--set 'data.source=\"llava\"' --set 'data.path=\"" +
                            (dir / "ll/data.json").string() + "\"' --set eval.n=0";
  r = run_cli("train --config " + (dir / "bad2.toml").string() + " " + llava);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("nope.png"), std::string::npos) << r.out;
  r = run_cli("train --config " + (dir / "bad2.toml").string() + " " + llava +
              " --set 'data.on_missing_image=\"skip\"' --set train.batch_size=2 --out " +
              (dir / "skiprun").string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("skipped 1"), std::string::npos) << r.out;
}

// Every shipped run file is valid and trains (one step on a few scenes, no evaluation); run
// "-N-" continues from "-(N-1)-" of the same model (the previous file in sorted order).
TEST_F(CliVlm, ShippedConfigsRunOneStep) {
  const fs::path configs = fs::path(MAMBAVL_FIXTURES_DIR) / "../../configs";
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(configs))
    if (e.path().extension() == ".toml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  std::string prev;
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    const std::string stem = f.stem().string();
    std::string extra;
    if (stem.find("-1-") == std::string::npos) {
      ASSERT_FALSE(prev.empty());
      extra = " --set 'model.path=\"" + (dir / prev / "final").string() + "\"'";
    }
    auto r = run_cli("train --config " + f.string() +
                     " --set data.n=4 --set eval.n=0 --set train.batch_size=2 --set "
                     "train.stages.0.steps=1 --set train.progress=false --threads 1 --out " +
                     (dir / stem).string() + extra);
    EXPECT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("trained 1 steps"), std::string::npos) << r.out;
    prev = stem;
  }
  EXPECT_GE(files.size(), 16u);
}
