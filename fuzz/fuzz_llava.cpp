// libFuzzer harness: vision-language data files. The first byte picks the reader (even: LLaVA
// conversation JSON, an array of rows; odd: RefCOCO-style grounding JSONL, one row a line); the
// rest is the file. Image paths resolve against a private folder holding two small PNGs, a.png
// (4 x 2) and b.png (2 x 4), so rows naming them are kept (and their sizes read from the header
// where the format needs them); rows naming other files are skipped (MissingImage::Skip). Every
// kept row's example, name and images are then read.
#include <cmath>
#include <memory>

#include "data/vl_data.h"
#include "fuzz_util.h"
#include "io/image.h"

using namespace mambavl;

namespace {

const std::filesystem::path& image_root() {
  static const std::filesystem::path root = [] {
    auto r = fuzz::scratch_dir("fuzz_llava") / "images";
    std::filesystem::create_directories(r);
    io::Image a{4, 2, std::vector<uint8_t>(4 * 2 * 3, 200)};
    io::Image b{2, 4, std::vector<uint8_t>(2 * 4 * 3, 50)};
    io::save_png(r / "a.png", a);
    io::save_png(r / "b.png", b);
    return r;
  }();
  return root;
}

void check_dataset(const data::VLDataset& ds) {
  for (int64_t i = 0; i < ds.size(); ++i) {
    const data::VLExample ex = ds.example(i);
    (void)ds.name(i);
    if (ex.answers.empty() || ex.num_images < 0) std::abort();
    if (ex.box) {
      for (double v : *ex.box)
        if (!(v >= 0.0 && v <= 1.0)) std::abort();  // normalised boxes only
      (void)data::format_box(*ex.box);
    }
    const auto imgs = ds.images(i);
    if (static_cast<int64_t>(imgs.size()) != ex.num_images) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto& root = image_root();
  const auto file = fuzz::scratch_dir("fuzz_llava") / ((data[0] & 1) ? "rows.jsonl" : "data.json");
  fuzz::write_bytes(file, data + 1, size - 1);
  fuzz::expect_ok_or_error([&] {
    if (data[0] & 1) {
      data::GroundingJsonlDataset ds(file, root, data::MissingImage::Skip);
      check_dataset(ds);
    } else {
      data::LlavaJsonDataset ds(file, root, data::MissingImage::Skip);
      check_dataset(ds);
    }
  });
  return 0;
}
