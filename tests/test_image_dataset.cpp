// Image-classification datasets: image folders, the synthetic shapes dataset, splits,
// augmentation, batches.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/image_dataset.h"
#include "io/image.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::data;
namespace fs = std::filesystem;

namespace {

using testing_util::expect_error;

io::Image solid(int64_t w, int64_t h, uint8_t r, uint8_t g, uint8_t b) {
  io::Image img;
  img.width = w;
  img.height = h;
  for (int64_t i = 0; i < w * h; ++i) img.pixels.insert(img.pixels.end(), {r, g, b});
  return img;
}

class ImageFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() /
            ("mvl_imgds_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void png(const std::string& rel, uint8_t value) {
    fs::create_directories((root_ / rel).parent_path());
    io::save_png(root_ / rel, solid(6, 4, value, value, value));
  }
  fs::path root_;
};

// ---------------------------------------------------------------- image folder

TEST_F(ImageFolder, SortedClassesAndFilesWithLabels) {
  png("zebra/b.png", 1);
  png("zebra/a.PNG", 2);
  png("cat/02.jpeg", 3);  // a PNG named .jpeg: the decoder goes by content
  png("cat/01.JPG", 4);
  png("cat/notes.txt", 5);                              // not an image extension: ignored
  png(".hidden/x.png", 6);                              // hidden folder: ignored
  fs::create_directories(root_ / "zebra" / "sub.png");  // a folder, not a file: ignored
  ImageFolderDataset ds(root_);
  EXPECT_EQ(ds.classes(), (std::vector<std::string>{"cat", "zebra"}));
  ASSERT_EQ(ds.size(), 4);
  const std::vector<std::string> names{"cat/01.JPG", "cat/02.jpeg", "zebra/a.PNG", "zebra/b.png"};
  const std::vector<int64_t> labels{0, 0, 1, 1};
  const std::vector<uint8_t> values{4, 3, 2, 1};
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(ds.name(i), (root_ / names[i]).string());
    EXPECT_EQ(ds.label(i), labels[i]);
    const auto img = ds.image(i);
    EXPECT_EQ(img.width, 6);
    EXPECT_EQ(img.pixels[0], values[i]);
  }
  expect_error([&] { ds.image(4); }, {"index 4", "4 images"});
}

TEST_F(ImageFolder, Errors) {
  expect_error([&] { ImageFolderDataset(root_ / "missing"); }, {"missing", "not found"});
  expect_error([&] { ImageFolderDataset{root_}; }, {root_.string(), "no class folders"});
  png("a/1.png", 1);
  fs::create_directories(root_ / "b");
  std::ofstream(root_ / "b" / "readme.md") << "hi";
  expect_error([&] { ImageFolderDataset{root_}; }, {(root_ / "b").string(), "no images"});
  fs::remove_all(root_ / "b");
  std::ofstream(root_ / "a" / "broken.png") << "not a png";
  ImageFolderDataset ds(root_);
  ASSERT_EQ(ds.size(), 2);
  expect_error([&] { ds.image(1); }, {"broken.png", "not a readable image"});
  expect_error([&] { ImageFolderDataset{root_ / "a" / "1.png"}; }, {"1.png", "not a folder"});
}

TEST_F(ImageFolder, SkipsHiddenFilesAndFolders) {
  // macOS writes "._name" AppleDouble files (resource forks, not images) beside each file it
  // copies to a non-Apple file system; they must not become samples that fail to decode.
  png("cat/a.png", 1);
  std::ofstream(root_ / "cat" / "._a.png", std::ios::binary) << std::string("\0\5\26\7\0\2", 6);
  std::ofstream(root_ / "cat" / "._b.JPG", std::ios::binary) << "Mac OS X        ";
  png("cat/.thumb.png", 2);  // a valid image, but hidden: skipped too
  fs::create_directories(root_ / "cat" / ".Trashes");
  png("dog/._1.jpg", 3);  // only hidden files: the class has no images
  std::ofstream(root_ / "dog" / ".DS_Store") << "x";
  png(".hidden/x.png", 4);
  expect_error([&] { ImageFolderDataset{root_}; }, {(root_ / "dog").string(), "no images"});
  png("dog/1.png", 5);
  ImageFolderDataset ds(root_);
  EXPECT_EQ(ds.classes(), (std::vector<std::string>{"cat", "dog"}));
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.name(0), (root_ / "cat" / "a.png").string());
  EXPECT_EQ(ds.name(1), (root_ / "dog" / "1.png").string());
  EXPECT_EQ(ds.image(0).pixels[0], 1);
  EXPECT_EQ(ds.image(1).pixels[0], 5);
}

// ---------------------------------------------------------------- synthetic

TEST(SyntheticDataset, DeterministicFromSeedAndIndexOnly) {
  SyntheticDataset a(100, 8, 32, 7), b(100, 8, 32, 7), other(100, 8, 32, 8);
  SyntheticDataset longer(1000, 8, 32, 7);  // same seed, more samples: same images
  for (int64_t i : {0, 1, 9, 57, 99}) {
    const auto img = a.image(i);
    EXPECT_EQ(img.width, 32);
    EXPECT_EQ(img.height, 32);
    EXPECT_EQ(img.pixels.size(), 32u * 32 * 3);
    EXPECT_EQ(img.pixels, a.image(i).pixels);  // same call twice
    EXPECT_EQ(img.pixels, b.image(i).pixels);
    EXPECT_EQ(img.pixels, longer.image(i).pixels);
    EXPECT_NE(img.pixels, other.image(i).pixels);
    EXPECT_EQ(a.name(i), "synthetic#" + std::to_string(i));
  }
  // Two samples of one class differ (position, size, colours, noise).
  EXPECT_EQ(a.label(3), a.label(11));
  EXPECT_NE(a.image(3).pixels, a.image(11).pixels);
}

TEST(SyntheticDataset, BalancedDistinctClassesShowTheirColour) {
  SyntheticDataset ds(160, 16, 24, 1);
  ASSERT_EQ(ds.classes().size(), 16u);
  EXPECT_EQ(std::set<std::string>(ds.classes().begin(), ds.classes().end()).size(), 16u);
  EXPECT_EQ(ds.classes()[0], "red_circle");
  std::map<int64_t, int> count;
  for (int64_t i = 0; i < ds.size(); ++i) ++count[ds.label(i)];
  ASSERT_EQ(count.size(), 16u);
  for (const auto& [k, n] : count) EXPECT_EQ(n, 10) << "class " << k;
  // Red classes: a clearly red blob (R high, G and B low) covers a few % of the image at least.
  for (int64_t i = 0; i < ds.size(); ++i) {
    if (!ds.classes()[ds.label(i)].starts_with("red_")) continue;
    const auto img = ds.image(i);
    int red = 0;
    for (size_t p = 0; p < img.pixels.size(); p += 3)
      red += img.pixels[p] > 150 && img.pixels[p + 1] < 110 && img.pixels[p + 2] < 110;
    EXPECT_GE(red, 24 * 24 / 50) << ds.name(i);
  }
  // The largest supported count works; beyond it is an error naming the limit.
  EXPECT_EQ(SyntheticDataset(36, 36, 16, 0).classes().size(), 36u);
  expect_error([] { SyntheticDataset(10, 37, 16, 0); }, {"num_classes", "36", "37"});
  expect_error([] { SyntheticDataset(10, 0, 16, 0); }, {"num_classes"});
  expect_error([] { SyntheticDataset(10, 4, 4, 0); }, {"image_size", "4"});
  expect_error([] { SyntheticDataset(0, 4, 16, 0); }, {"num_samples"});
  expect_error([&] { ds.image(160); }, {"index 160"});
}

TEST(SyntheticDataset, NearestClassMeanSeparatesClasses) {
  // A crude learnability check: with per-image colour features (mean RGB of the pixels far from
  // the image's median colour, i.e. the shape), the nearest class centroid from a training half
  // must classify the other half's colour far better than chance. Shapes need a real model.
  const int64_t k = 6;  // 6 colours: classes 0..5 have distinct colours
  SyntheticDataset ds(600, k, 32, 3);
  auto feature = [&](int64_t i) {
    const auto img = ds.image(i);
    const auto t = io::to_tensor(img).view({3, -1});       // [3, HW]
    const auto med = std::get<0>(t.median(1, true));       // [3, 1]
    const auto far = (t - med).abs().sum(0).gt(0.3);       // [HW]
    return t.index({at::indexing::Slice(), far}).mean(1);  // [3]
  };
  std::vector<at::Tensor> sums;  // one tensor each (a filled vector would share one)
  for (int64_t c = 0; c < k; ++c) sums.push_back(at::zeros({3}, at::kDouble));
  std::vector<int> n(k, 0);
  for (int64_t i = 0; i < 300; ++i) {
    sums[ds.label(i)] += feature(i).to(at::kDouble);
    ++n[ds.label(i)];
  }
  int correct = 0;
  for (int64_t i = 300; i < 600; ++i) {
    const auto f = feature(i);
    int64_t best = -1;
    double best_d = 1e9;
    for (int64_t c = 0; c < k; ++c) {
      const double d = (f.to(at::kDouble) - sums[c] / n[c]).pow(2).sum().item<double>();
      if (d < best_d) best_d = d, best = c;
    }
    correct += best == ds.label(i);
  }
  EXPECT_GE(correct, 270);  // 90 %; chance is 50 of 300
}

// ---------------------------------------------------------------- subsets and splits

TEST(SplitDataset, StratifiedDisjointCoveringDeterministic) {
  auto ds = std::make_shared<SyntheticDataset>(103, 5, 16, 0);  // classes of 21 or 20
  const auto s = split_dataset(ds, 0.2, 42);
  ASSERT_EQ(s.train->size() + s.val->size(), 103);
  std::set<std::string> seen;
  std::map<int64_t, int> val_per_class;
  for (int64_t i = 0; i < s.val->size(); ++i) {
    seen.insert(s.val->name(i));
    ++val_per_class[s.val->label(i)];
  }
  for (int64_t i = 0; i < s.train->size(); ++i) seen.insert(s.train->name(i));
  EXPECT_EQ(seen.size(), 103u);                                         // disjoint and covering
  for (int64_t c = 0; c < 5; ++c) EXPECT_EQ(val_per_class[c], 4) << c;  // round(0.2 * 20 or 21)
  EXPECT_EQ(s.train->classes(), ds->classes());
  // The subset forwards images and labels of the base.
  const auto idx0 = std::stoll(s.val->name(0).substr(10));
  EXPECT_EQ(s.val->image(0).pixels, ds->image(idx0).pixels);
  EXPECT_EQ(s.val->label(0), ds->label(idx0));

  const auto again = split_dataset(ds, 0.2, 42), other = split_dataset(ds, 0.2, 43);
  std::vector<std::string> v1, v2, v3;
  for (int64_t i = 0; i < s.val->size(); ++i) {
    v1.push_back(s.val->name(i));
    v2.push_back(again.val->name(i));
    v3.push_back(other.val->name(i));
  }
  EXPECT_EQ(v1, v2);
  EXPECT_NE(v1, v3);
}

TEST(SplitDataset, SmallClassesAndEdgeFractions) {
  auto ds = std::make_shared<SyntheticDataset>(6, 3, 16, 0);  // two images per class
  const auto s = split_dataset(ds, 0.01, 1);  // rounds to 0, but each class gives one
  EXPECT_EQ(s.val->size(), 3);
  EXPECT_EQ(s.train->size(), 3);
  EXPECT_EQ(split_dataset(ds, 0.0, 1).val->size(), 0);
  const auto most = split_dataset(ds, 0.99, 1);  // keeps one per class in train
  EXPECT_EQ(most.train->size(), 3);
  expect_error([&] { split_dataset(ds, 1.0, 1); }, {"val_fraction"});
  expect_error([&] { split_dataset(ds, -0.1, 1); }, {"val_fraction"});
  expect_error([&] { SubsetDataset(ds, {0, 6}); }, {"index 6"});
}

// ---------------------------------------------------------------- augmentation and batches

TEST(TrainAugment, ShapeRangeAndDeterminism) {
  TrainAugment aug{io::ImagePreprocess::clip(24)};
  SyntheticDataset ds(4, 4, 40, 0);
  const auto img = ds.image(2);
  std::mt19937_64 r1(5), r2(5), r3(6);
  const auto a = aug(img, r1), b = aug(img, r2), c = aug(img, r3);
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{3, 24, 24}));
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
  // Normalised values of [0, 1] inputs: (0 - mean) / std .. (1 - mean) / std per channel.
  for (int ch = 0; ch < 3; ++ch) {
    const double lo = -aug.pp.mean[ch] / aug.pp.std[ch],
                 hi = (1 - aug.pp.mean[ch]) / aug.pp.std[ch];
    EXPECT_GE(a[ch].min().item<double>(), lo - 1e-5);
    EXPECT_LE(a[ch].max().item<double>(), hi + 1e-5);
  }
}

TEST(TrainAugment, FullCropWithoutFlipIsThePlainResize) {
  // scale = ratio = 1 on a square image: the crop is the whole image; flip_prob 0 / 1.
  TrainAugment aug{io::ImagePreprocess::siglip(20), 1.0, 1.0, 1.0, 1.0, 0.0};
  const auto img = SyntheticDataset(1, 1, 32, 0).image(0);
  std::mt19937_64 rng(1);
  const auto want = aug.pp(img);  // squash-resize 32 -> 20
  EXPECT_TRUE(at::allclose(aug(img, rng), want, 0, 1e-5));
  aug.flip_prob = 1.0;
  EXPECT_TRUE(at::allclose(aug(img, rng), want.flip({2}), 0, 1e-5));
  // A very wide image: no try fits the ratio range; the fallback is the central crop at the
  // largest allowed ratio, so the output is still [3, S, S].
  TrainAugment narrow{io::ImagePreprocess::siglip(8), 0.9, 1.0};
  const auto wide = solid(200, 10, 10, 200, 30);
  EXPECT_EQ(narrow(wide, rng).sizes(), (std::vector<int64_t>{3, 8, 8}));
  expect_error(
      [&] {
        TrainAugment{io::ImagePreprocess::siglip(8), 0.0}(wide, rng);
      },
      {"scale_min"});
}

TEST(TrainAugment, ExtremeAndAbsurdImages) {
  // width * height * 3 = 3 * 2^64 wraps around to 0, the size of the empty pixel vector: refused.
  TrainAugment aug{io::ImagePreprocess::clip(16)};
  std::mt19937_64 rng(3);
  io::Image absurd;
  absurd.width = absurd.height = int64_t{1} << 32;
  expect_error([&] { aug(absurd, rng); }, {"TrainAugment", "4294967296 x 4294967296"});
  expect_error([&] { aug(io::Image{}, rng); }, {"TrainAugment", "zero size"});
  // 1 x 1,000,000 and back: the crop is taken from the source, then resized to 16 x 16, so
  // nothing larger than the input or output is made.
  for (auto [w, h] : std::vector<std::pair<int64_t, int64_t>>{{1, 1000000}, {1000000, 1}}) {
    const auto out = aug(solid(w, h, 7, 100, 250), rng);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 16, 16}));
    EXPECT_NEAR(out[0][3][5].item<double>(), (7 / 255.0 - aug.pp.mean[0]) / aug.pp.std[0], 1e-5);
  }
}

TEST(MakeBatch, PlainAndAugmented) {
  SyntheticDataset ds(10, 5, 32, 0);
  const auto pp = io::ImagePreprocess::imagenet(16);
  const auto b = make_batch(ds, {3, 0, 7}, pp, nullptr, 0);
  ASSERT_EQ(b.images.sizes(), (std::vector<int64_t>{3, 3, 16, 16}));
  ASSERT_EQ(b.labels.sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(b.labels.scalar_type(), at::kLong);
  EXPECT_EQ(b.labels[0].item<int64_t>(), ds.label(3));
  EXPECT_EQ(b.labels[2].item<int64_t>(), ds.label(7));
  EXPECT_TRUE(at::equal(b.images[1], pp(ds.image(0))));

  TrainAugment aug{pp};
  const auto a1 = make_batch(ds, {3, 0, 7}, pp, &aug, 11);
  const auto a2 = make_batch(ds, {7, 3}, pp, &aug, 11);  // per-item rng: order does not matter
  const auto a3 = make_batch(ds, {3, 0, 7}, pp, &aug, 12);
  EXPECT_TRUE(at::equal(a1.images[0], a2.images[1]));
  EXPECT_TRUE(at::equal(a1.images[2], a2.images[0]));
  EXPECT_FALSE(at::equal(a1.images, a3.images));
  EXPECT_FALSE(at::equal(a1.images, b.images));

  EXPECT_EQ(make_batch(ds, {}, pp, nullptr, 0).images.sizes(),
            (std::vector<int64_t>{0, 3, 16, 16}));
  expect_error([&] { make_batch(ds, {10}, pp, nullptr, 0); }, {"make_batch", "index 10"});
  TrainAugment big{io::ImagePreprocess::imagenet(32)};
  expect_error([&] { make_batch(ds, {1}, pp, &big, 0); }, {"32", "16"});
}

}  // namespace
