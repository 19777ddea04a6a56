// `mambavl encode` and the vision side of `mambavl info` end to end on the tiny encoder fixtures
// (tests/fixtures/vision/): the written features equal the library's on the same preprocessed
// image; bad input gives one `error:` line naming the file and exit code 1.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cli_run.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "models/vision.h"
#include "models/vit.h"
#include "test_util.h"

using namespace mambavl;
namespace fs = std::filesystem;
using testing_util::CliRun;
using testing_util::close;

namespace {

const std::string kFix = MAMBAVL_FIXTURES_DIR;
const std::string kVision = kFix + "/vision/";
const std::string kImg1 = kFix + "/images/src_64x48.png";
const std::string kImg2 = kFix + "/images/grey_24x17.png";  // another size and a grey image

CliRun run(const std::string& args) { return testing_util::run_cli(args); }

class CliEncode : public testing_util::TempDirTest {
 protected:
  CliEncode() : TempDirTest("mambavl_clienc_") {}
};

void expect_cli_error(const CliRun& r, std::initializer_list<std::string> parts) {
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  for (const auto& p : parts)
    EXPECT_NE(r.out.find(p), std::string::npos) << "missing '" << p << "' in: " << r.out;
}

// What the library gives for one image: [tokens, dim] f32.
at::Tensor library_features(const std::string& model, const std::string& image,
                            const models::FeatureSelect& sel, int64_t image_size = 0,
                            bool causal = false) {
  auto enc = models::load_vision_encoder(model);
  enc->module().eval();
  if (causal) dynamic_cast<models::ViTEncoder&>(*enc).set_causal(true);
  io::ImagePreprocess pp = enc->preprocess();
  if (image_size > 0) pp.size = image_size;
  at::NoGradGuard ng;
  const at::Tensor x = pp(io::load_image(image)).unsqueeze(0);  // [1, 3, S, S]
  return enc->encode(x, sel).tokens[0].to(at::kFloat);
}

at::Tensor read_features(const fs::path& file) {
  io::SafetensorsFile f(file);
  EXPECT_EQ(f.names(), std::vector<std::string>{"features"});
  EXPECT_EQ(f.entry("features").dtype, "F32");
  return f.tensor("features");
}

int64_t parameters_of(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

TEST_F(CliEncode, ClipFeaturesEqualTheLibrary) {
  const fs::path out = dir / "f.safetensors";
  const CliRun r = run("encode --model " + kVision + "clip-tiny " + kImg1 + " " + kImg2 +
                       " --out " + out.string() + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find(kImg1 + ": features [16, 32], grid 4 x 4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(kImg2 + ": features [16, 32]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mean "), std::string::npos);
  EXPECT_NE(r.out.find("wrote features [2, 16, 32]"), std::string::npos) << r.out;
  const at::Tensor got = read_features(out);
  ASSERT_EQ(got.sizes(), (at::IntArrayRef{2, 16, 32}));
  const models::FeatureSelect sel;  // layer -1, patch
  EXPECT_TRUE(close(got[0], library_features(kVision + "clip-tiny", kImg1, sel), 1e-5, 1e-5));
  EXPECT_TRUE(close(got[1], library_features(kVision + "clip-tiny", kImg2, sel), 1e-5, 1e-5));
  io::SafetensorsFile f(out);
  EXPECT_EQ(f.metadata().at("grid"), "4,4");
  EXPECT_EQ(f.metadata().at("feature"), "patch");
}

TEST_F(CliEncode, Eva02OptionsEqualTheLibrary) {
  // --layer, --feature cls_patch, --causal and --image-size together (48 px: interpolated
  // position embeddings and rotary grid).
  const fs::path out = dir / "f.safetensors";
  const CliRun r = run("encode --model " + kVision + "eva02-clip-tiny --layer -2 --feature " +
                       "cls_patch --causal --image-size 48 " + kImg1 + " --out " + out.string() +
                       " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("features [37, 32], grid 6 x 6 + 1 prefix"), std::string::npos) << r.out;
  const at::Tensor got = read_features(out);
  ASSERT_EQ(got.sizes(), (at::IntArrayRef{1, 37, 32}));
  models::FeatureSelect sel = models::FeatureSelect::parse(-2, "cls_patch");
  const at::Tensor want = library_features(kVision + "eva02-clip-tiny", kImg1, sel, 48, true);
  EXPECT_TRUE(close(got[0], want, 1e-5, 1e-5));
  // Causal attention changes the features (so the flag reached the model).
  const at::Tensor full = library_features(kVision + "eva02-clip-tiny", kImg1, sel, 48, false);
  EXPECT_GT((full - want).abs().max().item<double>(), 1e-3);
}

TEST_F(CliEncode, FinalNormAndMambaOut) {
  const fs::path out = dir / "f.safetensors";
  CliRun r = run("encode --model " + kVision + "siglip-tiny --final-norm " + kImg1 + " --out " +
                 out.string() + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  models::FeatureSelect sel;
  sel.final_norm = true;
  EXPECT_TRUE(close(read_features(out)[0], library_features(kVision + "siglip-tiny", kImg1, sel),
                    1e-5, 1e-5));
  // A MambaOut classifier folder: its trunk's last stage, 64 px -> 2 x 2 grid.
  r = run("encode --model " + kVision + "mambaout-tiny " + kImg1 + " --out " + out.string() +
          " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("features [4, 32], grid 2 x 2"), std::string::npos) << r.out;
  EXPECT_TRUE(close(read_features(out)[0],
                    library_features(kVision + "mambaout-tiny", kImg1, models::FeatureSelect{}),
                    1e-5, 1e-5));
}

TEST_F(CliEncode, Bf16IsCloseToF32) {
  const fs::path out = dir / "f.safetensors";
  const CliRun r = run("encode --model " + kVision + "clip-tiny --dtype bf16 " + kImg1 + " --out " +
                       out.string() + " --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  const at::Tensor got = read_features(out)[0];  // stored as f32
  const at::Tensor want = library_features(kVision + "clip-tiny", kImg1, models::FeatureSelect{});
  const double rel = ((got - want).norm() / want.norm()).item<double>();
  EXPECT_LT(rel, 0.05);
  EXPECT_GT(rel, 0.0);  // it did run in bf16
}

TEST_F(CliEncode, BadImageNamesTheFile) {
  const std::string clip = "encode --model " + kVision + "clip-tiny ";
  expect_cli_error(run(clip + kFix + "/images/not_image.txt"),
                   {"not_image.txt", "not a readable image"});
  expect_cli_error(run(clip + kFix + "/images/truncated.png"), {"truncated.png"});
  expect_cli_error(run(clip + kImg1 + " " + kFix + "/images/no_such.png"),
                   {"no_such.png", "not found"});
}

TEST_F(CliEncode, BadFolderNamesIt) {
  expect_cli_error(run("encode --model " + (dir / "missing").string() + " " + kImg1),
                   {(dir / "missing").string(), "not a folder"});
  expect_cli_error(run("encode --model " + kFix + "/mamba-tiny " + kImg1),
                   {"mamba-tiny", "language-model folder"});
}

TEST_F(CliEncode, BadOptionsAreErrors) {
  const std::string clip = "encode --model " + kVision + "clip-tiny ";
  expect_cli_error(run(clip + "--layer 9 " + kImg1), {"clip-tiny", "layer 9", "out of range"});
  expect_cli_error(run(clip + "--layer 1 --final-norm " + kImg1), {"final norm", "layer 1"});
  expect_cli_error(run("encode --model " + kVision + "mambaout-tiny --causal " + kImg1),
                   {"--causal", "mambaout"});
  expect_cli_error(run(clip), {"image files"});
  expect_cli_error(run(clip + "--image-size 4 " + kImg1), {"--image-size 4"});
  const fs::path bad_out = dir / "nope" / "f.safetensors";
  expect_cli_error(run(clip + kImg1 + " --out " + bad_out.string()),
                   {bad_out.string(), "does not exist"});
  EXPECT_FALSE(fs::exists(bad_out.parent_path()));
}

TEST_F(CliEncode, InfoDescribesVisionFolders) {
  CliRun r = run("info --model " + kVision + "clip-tiny");
  ASSERT_EQ(r.code, 0) << r.out;
  auto enc = models::load_vision_encoder(kVision + "clip-tiny");
  for (const std::string& s :
       {std::string("kind: vision encoder"), std::string("architecture: clip"),
        std::string("feature dim: 32"), std::string("input: 32 x 32, bicubic"),
        std::string("patch grid: 4 x 4"), std::string("layers: 3"),
        "parameters: " + std::to_string(parameters_of(enc->module())) + "\n"})
    EXPECT_NE(r.out.find(s), std::string::npos) << "missing '" << s << "' in: " << r.out;

  r = run("info --model " + kVision + "eva02-tiny");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("architecture: eva02"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bilinear, squash"), std::string::npos) << r.out;

  r = run("info --model " + kVision + "mambaout-tiny");
  ASSERT_EQ(r.code, 0) << r.out;
  auto clf = models::load_classifier(kVision + "mambaout-tiny");
  for (const std::string& s :
       {std::string("kind: image classifier"), std::string("architecture: mambaout"),
        std::string("classes: 10 (class_0, class_1"), std::string("input: 64 x 64"),
        "parameters: " + std::to_string(parameters_of(clf->module())) + "\n"})
    EXPECT_NE(r.out.find(s), std::string::npos) << "missing '" << s << "' in: " << r.out;

  // Language-model folders keep their description.
  r = run("info --model " + kFix + "/mamba-tiny");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("architecture: mamba\nlayers: 2"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("kind:"), std::string::npos) << r.out;
}
