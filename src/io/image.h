// Images in: decoding (PNG / JPEG / BMP / GIF first frame via stb_image), RGB conversion,
// resizing, cropping, normalisation, batching (SPEC §2.1 "Preprocessing").
// Tensors are channel-first float: one image [3, H, W], a batch [B, 3, H, W].
#pragma once
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace mambavl::io {

// An 8-bit RGB image, row-major, interleaved: pixels[(y * width + x) * 3 + c].
struct Image {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> pixels;
};

struct ImageLimits {
  // Decompression-bomb guard: images with more pixels are refused before decoding (PIL's default
  // MAX_IMAGE_PIXELS * 2, about 179 M).
  int64_t max_pixels = 178956970;
};

// Decodes a file / a buffer. Grey, grey+alpha, RGBA and palette images become RGB (alpha is
// dropped, as PIL's convert("RGB") does). 16-bit PNG samples keep their high byte (value >> 8).
// PIL does the same for 16-bit RGB(A), but not for 16-bit greyscale: it opens those in mode
// "I;16", whose convert("RGB") clips (min(value, 255)) instead, so there PIL gives 255 for every
// value above 255 where we give value >> 8 (PIL's result is mostly white, ours the picture).
// Errors (mambavl::Error) name the file and say what is wrong: missing, unreadable, not an image,
// truncated/corrupt, zero-sized, too many pixels (with the limit and how to raise it; checked on
// the header's width and height before decoding, without overflow for any 32-bit sizes).
Image load_image(const std::filesystem::path& path, const ImageLimits& limits = {});
Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                   const ImageLimits& limits = {});
// Error (naming `what`) unless img has a positive size and exactly width * height * 3 bytes of
// pixels (compared without overflow, so absurd sizes are refused, not wrapped around).
void check_image(const Image& img, const std::string& what);
// Writes an 8-bit RGB PNG atomically (temp file + rename).
void save_png(const std::filesystem::path& path, const Image& img);

// uint8 RGB -> [3, H, W] float32 in [0, 1] (pixel / 255); and back (rounded, clamped).
at::Tensor to_tensor(const Image& img);
Image from_tensor(const at::Tensor& chw);

enum class Resample { Nearest, Bilinear, Bicubic };
Resample parse_resample(const std::string& s);  // "nearest" | "bilinear" | "bicubic"
std::string to_string(Resample r);

// [3, H, W] or [B, 3, H, W] float -> same rank at (height, width). Bilinear and bicubic are
// antialiased when shrinking (PIL's filters, as Hugging Face image processors use); nearest picks
// the pixels PIL's NEAREST picks. Also takes uint8 (0..255): then computed in 8 bits as Pillow and
// torchvision do (within one level of PIL; float input differs from PIL's 8-bit result by one
// level, more next to hard edges with bicubic, where PIL clips its intermediate pass).
at::Tensor resize(const at::Tensor& img, int64_t height, int64_t width, Resample mode);
// Resizes so that the shorter side is `size`, the longer int(size * long / short) (truncated, as
// transformers' get_resize_output_image_size). The output size is computed first: Error (with
// the input and output sizes) when one output image would have more than `max_pixels` pixels,
// as an extreme aspect ratio gives (1 x 1,000,000 -> 224 x 224,000,000), instead of allocating it.
at::Tensor resize_shorter(const at::Tensor& img, int64_t size, Resample mode,
                          int64_t max_pixels = ImageLimits{}.max_pixels);
// The central (height, width) window, offsets rounded down as transformers' center_crop; Error if
// the image is smaller.
at::Tensor center_crop(const at::Tensor& img, int64_t height, int64_t width);
// (img - mean[c]) / std[c] per channel, in img's floating-point type; Error for integer input
// (uint8 0..255 must be converted and scaled first: to(kFloat) / 255).
at::Tensor normalize(const at::Tensor& img, const std::array<double, 3>& mean,
                     const std::array<double, 3>& std);

// How an encoder wants its input (part of a model folder's config).
struct ImagePreprocess {
  int64_t size = 224;  // square input size
  Resample resample = Resample::Bicubic;
  // "squash": resize straight to size x size (SigLIP, Shaking-Up); "crop": shorter side to size,
  // then center crop (CLIP).
  std::string mode = "crop";
  std::array<double, 3> mean{0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> std{0.26862954, 0.26130258, 0.27577711};

  static ImagePreprocess clip(int64_t size = 224);      // bicubic, crop, CLIP mean/std
  static ImagePreprocess siglip(int64_t size = 224);    // bicubic, squash, mean = std = 0.5
  static ImagePreprocess imagenet(int64_t size = 224);  // bicubic, crop, ImageNet mean/std
  // {"size", "resample", "mode", "mean", "std"}; unknown keys / bad values are errors naming
  // `file`.
  static ImagePreprocess from_json(const nlohmann::json& j, const std::string& file);
  nlohmann::json to_json() const;

  // One image -> [3, size, size] normalised float32. Resized in 8 bits (as transformers'
  // processors: CLIPImageProcessor gives the same values). "crop" resizes the whole image and
  // crops it, exactly as transformers, while the resized image has at most
  // max(kExactCropPixels, 4 * size * size) pixels; beyond (extreme aspect ratios: 1 x 1,000,000
  // would need 224 x 224,000,000) it resizes only the source span under the center crop (plus
  // the filter's reach) at nearly the same scale and crops that: within one output pixel of the
  // exact result, in O(size * size) memory.
  at::Tensor operator()(const Image& img) const;
  static constexpr int64_t kExactCropPixels = int64_t{1} << 24;
  // The largest `size` a config may ask for (from_json; classifier, encoder and VLM configs): one
  // preprocessed image is then at most 3 x 4096 x 4096 float32 = 201 MB, whatever the input
  // (the 8-bit resize before a crop at most 4x that in bytes / 4). Real encoders use 224-1024 px.
  static constexpr int64_t kMaxSize = 4096;
  // Bytes of a [batch, 3, size, size] float32 input (saturating: never overflows), and an Error
  // naming `what` (e.g. "--batch 64") when that is over kMaxBatchBytes.
  int64_t input_bytes(int64_t batch) const {
    int64_t n = 0;
    if (__builtin_mul_overflow(size, size, &n) || __builtin_mul_overflow(n, int64_t{12}, &n) ||
        __builtin_mul_overflow(n, batch, &n))
      return INT64_MAX;
    return n;
  }
  static constexpr int64_t kMaxBatchBytes = int64_t{8} << 30;
  void check_batch(int64_t batch, const std::string& what) const;
};

// Loads and preprocesses each file -> [B, 3, size, size].
at::Tensor load_batch(const std::vector<std::filesystem::path>& files, const ImagePreprocess& pp,
                      const ImageLimits& limits = {});

}  // namespace mambavl::io
