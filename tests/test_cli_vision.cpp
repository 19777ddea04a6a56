// The vision subcommands end to end: train-classifier on the built-in synthetic data, classify
// a PNG, eval-classifier; bad input gives one `error:` line naming the problem and exit code 1.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include "cli_run.h"
#include "data/image_dataset.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "models/vision.h"

using namespace mambavl;
namespace fs = std::filesystem;

namespace {

using testing_util::CliRun;
CliRun run(const std::string& args) { return testing_util::run_cli(args); }

class CliVision : public testing_util::TempDirTest {
 protected:
  CliVision() : TempDirTest("mambavl_cliv_") {}
};

void expect_error(const CliRun& r, std::initializer_list<std::string> parts) {
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  for (const auto& p : parts)
    EXPECT_NE(r.out.find(p), std::string::npos) << "missing '" << p << "' in: " << r.out;
}

const std::string kTiny =
    "--arch mambaout --dims 8,16,24,32 --depths 1,1,1,1 --synthetic 48 --num-classes 4 "
    "--image-size 32 --batch 16 --threads 1 --seed 3 ";

}  // namespace

TEST_F(CliVision, TrainClassifyEval) {
  const fs::path out = dir / "run";
  CliRun r =
      run("train-classifier " + kTiny + "--steps 4 --val-fraction 0.25 --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("trained 4 steps"), std::string::npos) << r.out;
  for (const char* sub : {"last", "best"}) {
    EXPECT_TRUE(fs::exists(out / sub / "config.json")) << sub;
    EXPECT_TRUE(fs::exists(out / sub / "model.safetensors")) << sub;
  }
  EXPECT_TRUE(fs::exists(out / "train_log.jsonl"));
  const auto cfg = io::read_json_file(out / "last" / "config.json");
  ASSERT_TRUE(cfg.contains("classes")) << cfg.dump();
  ASSERT_EQ(cfg.at("classes").size(), 4u);
  const std::string cls0 = cfg.at("classes")[0].get<std::string>();

  // classify: a synthetic image of class 0 saved as PNG.
  data::SyntheticDataset ds(4, 4, 32, 3);
  const fs::path png = dir / "img0.png";
  io::save_png(png, ds.image(0));
  r = run("classify --model " + (out / "last").string() + " " + png.string() + " --top 3");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find(png.string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3. "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("4. "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(cls0), std::string::npos) << r.out;  // all 4 classes are near the top 3

  // eval-classifier on the held-out part of the same synthetic data (the split train-classifier
  // made), and with --split all on every image.
  auto synth = std::make_shared<data::SyntheticDataset>(48, 4, 32, 3);
  const int64_t n_val = data::split_dataset(synth, 0.25, 3).val->size();
  ASSERT_GT(n_val, 0);
  ASSERT_LT(n_val, 48);
  r = run("eval-classifier --model " + (out / "best").string() +
          " --synthetic 48 --seed 3 --val-fraction 0.25 --batch 16 --threads 1 --no-progress");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("top1: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("top5: 1.0000"), std::string::npos) << r.out;  // 4 classes
  EXPECT_NE(r.out.find("n: " + std::to_string(n_val) + "\n"), std::string::npos) << r.out;
  r = run("eval-classifier --model " + (out / "best").string() +
          " --synthetic 48 --seed 3 --split all --batch 16 --threads 1 --no-progress");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("n: 48"), std::string::npos) << r.out;
  r = run("eval-classifier --model " + (out / "best").string() +
          " --synthetic 48 --split val --val-fraction 0 --threads 1 --no-progress");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error: --val-fraction"), std::string::npos) << r.out;
}

TEST_F(CliVision, TrainingIsDeterministic) {
  const std::string args = "train-classifier " + kTiny + "--steps 3 --val-fraction 0 --out ";
  ASSERT_EQ(run(args + (dir / "a").string()).code, 0);
  ASSERT_EQ(run(args + (dir / "b").string()).code, 0);
  std::ifstream a(dir / "a" / "train_log.jsonl"), b(dir / "b" / "train_log.jsonl");
  std::string la, lb;
  ASSERT_TRUE(std::getline(a, la) && std::getline(b, lb));
  const auto ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
  EXPECT_EQ(ja.at("train_loss"), jb.at("train_loss"));
}

TEST_F(CliVision, DefaultWarmupLeavesShortRunsTimeToDecay) {
  // 48 images, batch 16, no val: 3 steps. With --epochs 1 the default warmup is a fifth of the
  // epoch (1 step), so the cosine is half-way down (≈ 0.5 · lr) at the last step; an explicit
  // --warmup 1 keeps the whole run in warmup (the last step at the peak lr).
  const std::string args = "train-classifier " + kTiny + "--epochs 1 --lr 1e-3 --val-fraction 0 ";
  ASSERT_EQ(run(args + "--out " + (dir / "d").string()).code, 0);
  ASSERT_EQ(run(args + "--warmup 1 --out " + (dir / "w").string()).code, 0);
  auto last_lr = [](const fs::path& log) {
    std::ifstream f(log);
    std::string line, last;
    while (std::getline(f, line))
      if (!line.empty()) last = line;
    return nlohmann::json::parse(last).at("lr").get<double>();
  };
  EXPECT_LT(last_lr(dir / "d" / "train_log.jsonl"), 0.6e-3);
  EXPECT_GT(last_lr(dir / "w" / "train_log.jsonl"), 0.9e-3);
}

TEST_F(CliVision, OtherArchitectures) {
  // A causal ViT and MambaOut with the SSM token mixer train and load back.
  const std::string common =
      "--synthetic 16 --num-classes 2 --image-size 16 --batch 8 --steps 2 --val-fraction 0 "
      "--threads 1 --no-progress ";
  for (const std::string& arch :
       {std::string("--arch vit --dims 32 --depths 2 --causal"),
        std::string("--arch mambaout_ssm --dims 8,16,24,32 --depths 1,1,1,1")}) {
    const fs::path out = dir / std::to_string(std::hash<std::string>{}(arch));
    CliRun r = run("train-classifier " + arch + " " + common + "--out " + out.string());
    ASSERT_EQ(r.code, 0) << arch << "\n" << r.out;
    const auto cfg = io::read_json_file(out / "last" / "config.json");
    EXPECT_EQ(cfg.at("architecture"), arch.substr(7, arch.find(' ', 7) - 7)) << cfg.dump();
    r = run("eval-classifier --model " + (out / "last").string() +
            " --synthetic 6 --split all --threads 1 --no-progress");
    ASSERT_EQ(r.code, 0) << arch << "\n" << r.out;
    EXPECT_NE(r.out.find("n: 6"), std::string::npos) << r.out;
  }
  const auto vit = io::read_json_file(
      dir / std::to_string(std::hash<std::string>{}("--arch vit --dims 32 --depths 2 --causal")) /
      "last" / "config.json");
  EXPECT_EQ(vit.at("causal"), true) << vit.dump();
}

TEST_F(CliVision, ImageFolderData) {
  // root/<class>/*.png from the synthetic generator: train, then eval on the same folder.
  data::SyntheticDataset ds(12, 3, 32, 1);
  const fs::path root = dir / "images";
  for (int64_t i = 0; i < ds.size(); ++i) {
    const fs::path cdir = root / ds.classes()[ds.label(i)];
    fs::create_directories(cdir);
    io::save_png(cdir / ("img" + std::to_string(i) + ".png"), ds.image(i));
  }
  const fs::path out = dir / "run";
  CliRun r = run("train-classifier --dims 8,16,24,32 --depths 1,1,1,1 --data " + root.string() +
                 " --image-size 32 --steps 2 --batch 8 --val-fraction 0 --threads 1 --out " +
                 out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("eval-classifier --model " + (out / "last").string() + " --data " + root.string() +
          " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("n: 12"), std::string::npos) << r.out;
}

TEST_F(CliVision, BadDataAndOptionsGiveOneErrorLine) {
  const fs::path missing = dir / "no_such_folder";
  expect_error(
      run("train-classifier --data " + missing.string() + " --out " + (dir / "o").string()),
      {missing.string()});
  expect_error(run("train-classifier --arch resnet --synthetic 8 --out " + (dir / "o").string()),
               {"--arch", "resnet"});
  expect_error(run("train-classifier --dims 8,16 --synthetic 8 --out " + (dir / "o").string()),
               {"--dims"});
  expect_error(run("train-classifier --causal --synthetic 8 --out " + (dir / "o").string()),
               {"--causal"});
  expect_error(run("eval-classifier --model " + missing.string() + " --synthetic 4"),
               {missing.string()});
}

TEST_F(CliVision, BadImagesAndConfigGiveOneErrorLine) {
  // A model folder made in-process (no training needed for these checks).
  const fs::path model = dir / "model";
  auto clf = models::make_classifier({{"architecture", "mambaout"},
                                      {"dims", {8, 16, 24, 32}},
                                      {"depths", {1, 1, 1, 1}},
                                      {"num_classes", 2},
                                      {"image_size", 32}},
                                     0);
  models::save_classifier(*clf, {"a", "b"}, model);
  const fs::path junk = dir / "junk.png";
  std::ofstream(junk) << "this is not a PNG";
  expect_error(run("classify --model " + model.string() + " " + junk.string()), {junk.string()});
  const fs::path nofile = dir / "missing.png";
  expect_error(run("classify --model " + model.string() + " " + nofile.string()),
               {nofile.string()});
  // eval-classifier on a folder whose class the model does not know.
  data::SyntheticDataset ds(1, 1, 32, 0);
  fs::create_directories(dir / "imgs" / "zebra");
  io::save_png(dir / "imgs" / "zebra" / "0.png", ds.image(0));
  expect_error(run("eval-classifier --model " + model.string() + " --data " +
                   (dir / "imgs").string() + " --no-progress"),
               {"zebra", "not one of the model's classes"});
  // A malformed config.json.
  std::ofstream(model / "config.json") << "{ not json";
  expect_error(run("classify --model " + model.string() + " " + junk.string()), {"config.json"});
}
