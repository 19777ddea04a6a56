// Image-classification datasets (the MambaOut experiment): an image folder
// (root/<class>/*.png|jpg|jpeg) and a built-in deterministic synthetic dataset (shapes, colours,
// positions) that needs no download; plus the training augmentation.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "io/image.h"

namespace mambavl::data {

class ImageDataset {
 public:
  virtual ~ImageDataset() = default;
  virtual int64_t size() const = 0;
  virtual const std::vector<std::string>& classes() const = 0;
  virtual int64_t label(int64_t i) const = 0;
  // The i-th image, decoded (RGB uint8). Errors name the file.
  virtual io::Image image(int64_t i) const = 0;
  // A name for messages ("root/cat/001.png", "synthetic#17").
  virtual std::string name(int64_t i) const = 0;
};

// root/<class>/<file> with extensions .png .jpg .jpeg (case-insensitive); classes are the
// sub-folder names, sorted; files sorted. Names starting with "." are skipped, folders and files
// (.git, .DS_Store, macOS' AppleDouble "._x.jpg"). Error if root is missing, has no class
// folders, or a class has no images.
class ImageFolderDataset : public ImageDataset {
 public:
  explicit ImageFolderDataset(const std::filesystem::path& root,
                              const io::ImageLimits& limits = {});
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t label(int64_t i) const override;
  io::Image image(int64_t i) const override;
  std::string name(int64_t i) const override;

 private:
  std::vector<std::string> classes_;
  std::vector<std::filesystem::path> files_;
  std::vector<int64_t> labels_;
  io::ImageLimits limits_;
};

// Most images a synthetic data set may have (index lists are allocated per image).
inline constexpr int64_t kMaxSyntheticSamples = int64_t{1} << 24;

// Deterministic synthetic images: each class is a (shape, colour) pair (circle, square,
// triangle, cross... x red, green, blue...); position, size, background noise vary per sample,
// drawn from (seed, index) only, so image i is the same on every machine and call.
class SyntheticDataset : public ImageDataset {
 public:
  SyntheticDataset(int64_t num_samples, int64_t num_classes, int64_t image_size, uint64_t seed);
  int64_t size() const override { return n_; }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t label(int64_t i) const override;
  io::Image image(int64_t i) const override;
  std::string name(int64_t i) const override;

 private:
  int64_t n_, k_, size_;
  uint64_t seed_;
  std::vector<std::string> classes_;
};

// A view of a subset of another dataset's indices (train/val split).
class SubsetDataset : public ImageDataset {
 public:
  SubsetDataset(std::shared_ptr<const ImageDataset> base, std::vector<int64_t> indices);
  int64_t size() const override { return static_cast<int64_t>(idx_.size()); }
  const std::vector<std::string>& classes() const override { return base_->classes(); }
  int64_t label(int64_t i) const override;
  io::Image image(int64_t i) const override;
  std::string name(int64_t i) const override;

 private:
  std::shared_ptr<const ImageDataset> base_;
  std::vector<int64_t> idx_;
};

// Deterministic stratified split: `val_fraction` of each class (at least one image per class
// when the class has two or more) goes to val; shuffled with `seed`.
struct Split {
  std::shared_ptr<ImageDataset> train, val;
};
Split split_dataset(std::shared_ptr<const ImageDataset> ds, double val_fraction, uint64_t seed);

// Training augmentation: RandomResizedCrop(size, scale [0.08, 1], ratio [3/4, 4/3]) with the
// preprocess' resample filter, horizontal flip with p = 0.5, then normalisation.
// Evaluation uses ImagePreprocess itself.
struct TrainAugment {
  io::ImagePreprocess pp;
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  double flip_prob = 0.5;
  // -> [3, pp.size, pp.size] normalised float32.
  at::Tensor operator()(const io::Image& img, std::mt19937_64& rng) const;
};

// Batch of dataset items [B, 3, S, S] + labels [B] int64. With `augment`, each item uses
// TrainAugment with an rng seeded from (seed, index); otherwise pp.
struct Batch {
  at::Tensor images, labels;
};
Batch make_batch(const ImageDataset& ds, const std::vector<int64_t>& indices,
                 const io::ImagePreprocess& pp, const TrainAugment* augment, uint64_t seed);

}  // namespace mambavl::data
