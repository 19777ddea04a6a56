#include "data/image_dataset.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <system_error>
#include <utility>

#include "common/error.h"
#include "data/synth_draw.h"

namespace mambavl::data {

namespace {

using namespace synth;  // mix64, Stream, unit, inside, clamp8 (data/synth_draw.h)

constexpr std::array<const char*, 6> kShapes{"circle", "square", "triangle",
                                             "cross",  "ring",   "diamond"};
struct Colour {
  const char* name;
  int r, g, b;
};
constexpr std::array<Colour, 6> kColours{{{"red", 220, 40, 40},
                                          {"green", 40, 200, 60},
                                          {"blue", 50, 70, 230},
                                          {"yellow", 230, 220, 40},
                                          {"magenta", 220, 50, 220},
                                          {"cyan", 40, 220, 220}}};
constexpr int64_t kMaxSyntheticClasses = static_cast<int64_t>(kShapes.size() * kColours.size());

// Class k -> (shape, colour). Both vary from one class to the next (k = 0, 1, 2... are red
// circle, green square, blue triangle...), and the pairs are distinct for k < 36.
std::pair<size_t, size_t> shape_colour(int64_t k) {
  const auto n = static_cast<int64_t>(kShapes.size());
  return {static_cast<size_t>(k % n), static_cast<size_t>((k % n + k / n) % n)};
}

bool has_image_extension(const std::filesystem::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

// A name starting with "." (files and folders alike).
bool is_hidden(const std::filesystem::path& p) { return p.filename().string().starts_with("."); }

void check_index(int64_t i, int64_t n, const char* what) {
  MVL_CHECK(i >= 0 && i < n, what, ": index ", i, " out of range for a dataset of ", n, " images");
}

// root/<class>/<image files> -> sorted classes, files and their labels.
void scan_folder(const std::filesystem::path& root, std::vector<std::string>& classes,
                 std::vector<std::filesystem::path>& files_out, std::vector<int64_t>& labels) {
  namespace fs = std::filesystem;
  const std::string name = root.string();
  std::vector<fs::path> class_dirs;
  for (const auto& e : fs::directory_iterator(root)) {
    if (!e.is_directory()) continue;
    if (is_hidden(e.path())) continue;  // .git, .cache...
    class_dirs.push_back(e.path());
  }
  MVL_CHECK(!class_dirs.empty(), name,
            ": no class folders (expected root/<class>/<image files>, one sub-folder per class)");
  std::sort(class_dirs.begin(), class_dirs.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  for (const auto& dir : class_dirs) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      // Hidden files are no images of the class: macOS leaves "._x.jpg" (AppleDouble metadata)
      // beside x.jpg on non-Apple file systems, and ".x.png" is an editor's or a sync tool's.
      if (is_hidden(e.path())) continue;
      if (e.is_regular_file() && has_image_extension(e.path())) files.push_back(e.path());
    }
    MVL_CHECK(!files.empty(), dir.string(),
              ": class folder has no images (.png, .jpg or .jpeg files)");
    std::sort(files.begin(), files.end());
    const auto label = static_cast<int64_t>(classes.size());
    classes.push_back(dir.filename().string());
    for (auto& f : files) {
      files_out.push_back(std::move(f));
      labels.push_back(label);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- ImageFolderDataset

ImageFolderDataset::ImageFolderDataset(const std::filesystem::path& root,
                                       const io::ImageLimits& limits)
    : limits_(limits) {
  namespace fs = std::filesystem;
  const std::string name = root.string();
  std::error_code ec;
  MVL_CHECK(fs::exists(root, ec), name, ": image folder not found");
  MVL_CHECK(fs::is_directory(root, ec), name,
            ": not a folder (expected root/<class>/<image files>)");
  try {
    scan_folder(root, classes_, files_, labels_);
  } catch (const fs::filesystem_error& e) {
    MVL_FAIL(name, ": cannot list the image folder: ", e.what());
  }
}

int64_t ImageFolderDataset::label(int64_t i) const {
  check_index(i, size(), "ImageFolderDataset::label");
  return labels_[static_cast<size_t>(i)];
}

io::Image ImageFolderDataset::image(int64_t i) const {
  check_index(i, size(), "ImageFolderDataset::image");
  return io::load_image(files_[static_cast<size_t>(i)], limits_);
}

std::string ImageFolderDataset::name(int64_t i) const {
  check_index(i, size(), "ImageFolderDataset::name");
  return files_[static_cast<size_t>(i)].string();
}

// ---------------------------------------------------------------- SyntheticDataset

SyntheticDataset::SyntheticDataset(int64_t num_samples, int64_t num_classes, int64_t image_size,
                                   uint64_t seed)
    : n_(num_samples), k_(num_classes), size_(image_size), seed_(seed) {
  MVL_CHECK(num_samples > 0, "synthetic dataset: num_samples must be positive, got ", num_samples);
  MVL_CHECK(num_classes >= 1 && num_classes <= kMaxSyntheticClasses,
            "synthetic dataset: num_classes must be in [1, ", kMaxSyntheticClasses, "] (",
            kShapes.size(), " shapes x ", kColours.size(), " colours), got ", num_classes);
  MVL_CHECK(image_size >= 8 && image_size <= 4096,
            "synthetic dataset: image_size must be in [8, 4096], got ", image_size);
  for (int64_t k = 0; k < k_; ++k) {
    const auto [s, c] = shape_colour(k);
    classes_.push_back(std::string(kColours[c].name) + "_" + kShapes[s]);
  }
}

int64_t SyntheticDataset::label(int64_t i) const {
  check_index(i, n_, "SyntheticDataset::label");
  return i % k_;  // balanced: class counts differ by at most one
}

io::Image SyntheticDataset::image(int64_t i) const {
  check_index(i, n_, "SyntheticDataset::image");
  const auto [shape, colour] = shape_colour(label(i));
  Stream rng(seed_, static_cast<uint64_t>(i));
  const int64_t S = size_;
  // Background: a random, nearly grey tone; the shape: the class colour, jittered.
  const int64_t grey = rng.range(30, 225);
  const int64_t bg[3] = {grey + rng.range(-20, 20), grey + rng.range(-20, 20),
                         grey + rng.range(-20, 20)};
  const Colour& col = kColours[colour];
  const int64_t fg[3] = {col.r + rng.range(-25, 25), col.g + rng.range(-25, 25),
                         col.b + rng.range(-25, 25)};
  // Radius 15 % .. 35 % of the side; the shape stays inside the image.
  const int64_t r = std::max<int64_t>(2, rng.range(S * 15 / 100, S * 35 / 100));
  const int64_t cx = rng.range(r, S - 1 - r), cy = rng.range(r, S - 1 - r);
  io::Image img;
  img.width = img.height = S;
  img.pixels.resize(static_cast<size_t>(S * S * 3));
  for (int64_t y = 0; y < S; ++y)
    for (int64_t x = 0; x < S; ++x) {
      const bool in = inside(shape, x - cx, y - cy, r);
      const uint64_t noise = rng.next();  // three 8-bit noise draws in [-12, 12]
      for (int c = 0; c < 3; ++c) {
        const int64_t n = static_cast<int64_t>((noise >> (16 * c)) & 0xFFFF) % 25 - 12;
        img.pixels[static_cast<size_t>((y * S + x) * 3 + c)] = clamp8((in ? fg[c] : bg[c]) + n);
      }
    }
  return img;
}

std::string SyntheticDataset::name(int64_t i) const {
  check_index(i, n_, "SyntheticDataset::name");
  return "synthetic#" + std::to_string(i);
}

// ---------------------------------------------------------------- SubsetDataset

SubsetDataset::SubsetDataset(std::shared_ptr<const ImageDataset> base, std::vector<int64_t> indices)
    : base_(std::move(base)), idx_(std::move(indices)) {
  MVL_CHECK(base_ != nullptr, "SubsetDataset: base dataset is null");
  for (int64_t i : idx_) check_index(i, base_->size(), "SubsetDataset");
}

int64_t SubsetDataset::label(int64_t i) const {
  check_index(i, size(), "SubsetDataset::label");
  return base_->label(idx_[static_cast<size_t>(i)]);
}

io::Image SubsetDataset::image(int64_t i) const {
  check_index(i, size(), "SubsetDataset::image");
  return base_->image(idx_[static_cast<size_t>(i)]);
}

std::string SubsetDataset::name(int64_t i) const {
  check_index(i, size(), "SubsetDataset::name");
  return base_->name(idx_[static_cast<size_t>(i)]);
}

// ---------------------------------------------------------------- split

Split split_dataset(std::shared_ptr<const ImageDataset> ds, double val_fraction, uint64_t seed) {
  MVL_CHECK(ds != nullptr, "split_dataset: dataset is null");
  MVL_CHECK(val_fraction >= 0.0 && val_fraction < 1.0,
            "split_dataset: val_fraction must be in [0, 1), got ", val_fraction);
  const auto k = static_cast<int64_t>(ds->classes().size());
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(k));
  for (int64_t i = 0; i < ds->size(); ++i) {
    const int64_t l = ds->label(i);
    MVL_CHECK(l >= 0 && l < k, "split_dataset: ", ds->name(i), " has label ", l, ", outside [0, ",
              k, ")");
    by_class[static_cast<size_t>(l)].push_back(i);
  }
  std::vector<int64_t> train, val;
  for (int64_t c = 0; c < k; ++c) {
    auto& idx = by_class[static_cast<size_t>(c)];
    const auto n = static_cast<int64_t>(idx.size());
    // Fisher-Yates with the portable stream keyed by (seed, class).
    Stream rng(seed, 0x5EED0000ull + static_cast<uint64_t>(c));
    for (int64_t i = n - 1; i > 0; --i) std::swap(idx[i], idx[rng.range(0, i)]);
    int64_t n_val = static_cast<int64_t>(std::llround(val_fraction * static_cast<double>(n)));
    if (val_fraction > 0 && n >= 2) n_val = std::clamp<int64_t>(n_val, 1, n - 1);
    n_val = std::min(n_val, n);
    val.insert(val.end(), idx.begin(), idx.begin() + n_val);
    train.insert(train.end(), idx.begin() + n_val, idx.end());
  }
  // Dataset order inside each part (the shuffle only chose the members).
  std::sort(train.begin(), train.end());
  std::sort(val.begin(), val.end());
  return {std::make_shared<SubsetDataset>(ds, std::move(train)),
          std::make_shared<SubsetDataset>(ds, std::move(val))};
}

// ---------------------------------------------------------------- augmentation

at::Tensor TrainAugment::operator()(const io::Image& img, std::mt19937_64& rng) const {
  MVL_CHECK(scale_min > 0 && scale_min <= scale_max && scale_max <= 1.0,
            "TrainAugment: need 0 < scale_min <= scale_max <= 1, got [", scale_min, ", ", scale_max,
            "]");
  MVL_CHECK(ratio_min > 0 && ratio_min <= ratio_max,
            "TrainAugment: need 0 < ratio_min <= ", "ratio_max, got [", ratio_min, ", ", ratio_max,
            "]");
  MVL_CHECK(pp.size > 0, "TrainAugment: size must be positive, got ", pp.size);
  // Without overflow: width * height * 3 could wrap around to the pixel vector's size.
  io::check_image(img, "TrainAugment");
  // [3, H, W] uint8 view of the pixels: cropped and resized in 8 bits, like ImagePreprocess.
  const at::Tensor x =
      at::from_blob(const_cast<uint8_t*>(img.pixels.data()), {img.height, img.width, 3}, at::kByte)
          .permute({2, 0, 1});
  const int64_t H = img.height, W = img.width;
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * unit(rng()); };
  auto randint = [&](int64_t lo, int64_t hi) {  // [lo, hi]
    return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  // torchvision RandomResizedCrop.get_params: 10 tries, then the central crop with the ratio
  // clamped to [ratio_min, ratio_max].
  int64_t top = 0, left = 0, h = H, w = W;
  bool found = false;
  const double area = static_cast<double>(H * W);
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * uniform(scale_min, scale_max);
    const double ratio = std::exp(uniform(std::log(ratio_min), std::log(ratio_max)));
    const auto cw = static_cast<int64_t>(std::llround(std::sqrt(target * ratio)));
    const auto ch = static_cast<int64_t>(std::llround(std::sqrt(target / ratio)));
    if (cw > 0 && cw <= W && ch > 0 && ch <= H) {
      h = ch;
      w = cw;
      top = randint(0, H - h);
      left = randint(0, W - w);
      found = true;
    }
  }
  if (!found) {
    const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
    if (in_ratio < ratio_min) {
      w = W;
      h = std::max<int64_t>(1, std::llround(static_cast<double>(w) / ratio_min));
    } else if (in_ratio > ratio_max) {
      h = H;
      w = std::max<int64_t>(1, std::llround(static_cast<double>(h) * ratio_max));
    } else {
      w = W;
      h = H;
    }
    top = (H - h) / 2;
    left = (W - w) / 2;
  }
  // [3, h, w] -> [3, size, size] uint8
  at::Tensor y = io::resize(x.narrow(1, top, h).narrow(2, left, w), pp.size, pp.size, pp.resample);
  if (unit(rng()) < flip_prob) y = y.flip({2});
  y = y.to(at::kFloat).div_(255.0);
  return io::normalize(y, pp.mean, pp.std).contiguous();
}

// ---------------------------------------------------------------- batches

Batch make_batch(const ImageDataset& ds, const std::vector<int64_t>& indices,
                 const io::ImagePreprocess& pp, const TrainAugment* augment, uint64_t seed) {
  MVL_CHECK(!augment || augment->pp.size == pp.size, "make_batch: the augmentation makes ",
            augment ? augment->pp.size : 0, "-pixel images, the preprocessing ", pp.size);
  Batch b;
  b.labels = at::empty({static_cast<int64_t>(indices.size())}, at::kLong);  // [B]
  if (indices.empty()) {
    b.images = at::empty({0, 3, pp.size, pp.size}, at::kFloat);
    return b;
  }
  std::vector<at::Tensor> items;
  items.reserve(indices.size());
  auto* labels = b.labels.data_ptr<int64_t>();
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    check_index(i, ds.size(), "make_batch");
    const io::Image img = ds.image(i);
    if (augment) {
      std::mt19937_64 rng(mix64(mix64(seed) ^ static_cast<uint64_t>(i)));
      items.push_back((*augment)(img, rng));
    } else {
      items.push_back(pp(img));
    }
    labels[k] = ds.label(i);
  }
  b.images = at::stack(items);  // [B, 3, S, S]
  return b;
}

}  // namespace mambavl::data
