// libFuzzer harness: image decoding (PNG / JPEG / BMP / GIF via stb_image, our header and
// truncation checks) and preprocessing. The input is the image file as is (its first bytes are
// the format's magic); the options come from its last byte: bit 0 decodes through the file path
// (io::load_image: size cap, regular-file check) instead of the buffer, bits 1-2 the resampling
// filter, bit 3 "squash" instead of "crop", bits 4-7 the output size (8..68 pixels, small so that
// a run stays fast). Images over 4 M pixels are refused (ImageLimits) to keep memory under
// libFuzzer's limit; the default limit (179 M pixels) is the tests' business.
#include <ATen/ATen.h>

#include "fuzz_util.h"
#include "io/image.h"

using namespace mambavl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t opt = data[size - 1];
  io::ImageLimits limits;
  limits.max_pixels = int64_t{1} << 22;
  io::Image img;
  const bool decoded = fuzz::expect_ok_or_error([&] {
    if (opt & 1) {
      const auto path = fuzz::scratch_dir("fuzz_image") / "input.img";
      fuzz::write_bytes(path, data, size);
      img = io::load_image(path, limits);
    } else {
      img = io::decode_image(data, size, "fuzz input", limits);
    }
  });
  if (!decoded) return 0;
  // A decoded image is well-formed, within the limit.
  if (img.width <= 0 || img.height <= 0 || img.width * img.height > limits.max_pixels ||
      img.pixels.size() != static_cast<size_t>(img.width * img.height * 3))
    std::abort();

  static const io::Resample kModes[] = {io::Resample::Nearest, io::Resample::Bilinear,
                                        io::Resample::Bicubic, io::Resample::Bicubic};
  io::ImagePreprocess pp = (opt & 8) ? io::ImagePreprocess::siglip(8 + 4 * (opt >> 4))
                                     : io::ImagePreprocess::clip(8 + 4 * (opt >> 4));
  pp.resample = kModes[(opt >> 1) & 3];
  const at::Tensor x = pp(img);  // valid image + valid options: must not throw at all
  if (x.dim() != 3 || x.size(0) != 3 || x.size(1) != pp.size || x.size(2) != pp.size ||
      !at::isfinite(x).all().item<bool>())
    std::abort();
  const io::Image back = io::from_tensor(io::to_tensor(img));
  if (back.pixels != img.pixels) std::abort();  // to_tensor / from_tensor round trip
  return 0;
}
