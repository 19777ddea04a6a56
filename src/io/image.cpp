#include "io/image.h"

#include <ATen/ATen.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <utility>

#include "common/error.h"
#include "common/shape.h"
#include "io/atomic_file.h"
#include "io/config_util.h"
#include "io/file.h"

namespace mambavl::io {

namespace {

// stb_image decodes a JPEG that ends early without an error (missing data reads as zeros, the
// bottom of the picture turns grey); PIL refuses such a file. Walks the marker segments (skipping
// APPn payloads, so an embedded EXIF thumbnail's EOI does not count) and the entropy-coded data
// after each SOS, and reports whether the stream reaches its EOI marker.
// One walk over a JPEG's marker segments (SOI at p[0..1]): whether the data reaches the
// end-of-image marker, and the first Huffman table (DHT) that declares more than 256 codes.
// Debian's stb_image (2.27) indexes past its 257-entry code-size table for such a table
// (stbi__build_huffman; later versions check it), so these are refused before stb_image sees them.
struct JpegScan {
  bool reaches_eoi = false;
  int64_t bad_dht_codes = 0;  // > 0: a table declares this many codes
};

JpegScan scan_jpeg(const uint8_t* p, size_t n) {
  JpegScan r;
  size_t i = 2;  // after SOI (FF D8)
  while (true) {
    while (i < n && p[i] != 0xFF) ++i;  // garbage between segments: libjpeg skips it too
    while (i < n && p[i] == 0xFF) ++i;  // fill bytes
    if (i >= n) return r;
    const uint8_t m = p[i++];
    if (m == 0xD9) {  // EOI
      r.reaches_eoi = true;
      return r;
    }
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // markers without length
    if (i + 2 > n) return r;
    const size_t len = (size_t{p[i]} << 8) | p[i + 1];
    if (len < 2) {  // corrupt, not truncated: stb_image reports it
      r.reaches_eoi = true;
      return r;
    }
    if (m == 0xC4) {  // DHT: tables of [class/id][16 code counts][values]
      // As stb_image reads them: table after table while the segment's length is not used up,
      // even when a table's 17-byte header runs past the segment's end (stb reads on, into the
      // next segment); bytes past the end of the file read as 0.
      int64_t left = static_cast<int64_t>(len) - 2;
      for (size_t t = i + 2; left > 0;) {
        int64_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += t + k < n ? p[t + k] : 0;
        if (codes > 256) {
          r.bad_dht_codes = codes;
          return r;
        }
        left -= 17 + codes;
        t += 17 + static_cast<size_t>(codes);
      }
    }
    i += len;
    if (i > n) return r;
    if (m != 0xDA) continue;
    // SOS: entropy-coded data up to the next marker other than a stuffed 00 or a restart.
    while (true) {
      while (i < n && p[i] != 0xFF) ++i;
      if (i + 1 >= n) return r;
      const uint8_t b = p[i + 1];
      if (b == 0xFF) {
        ++i;
      } else if (b == 0x00 || (b >= 0xD0 && b <= 0xD7)) {
        i += 2;
      } else {
        break;  // p[i] starts the next marker
      }
    }
  }
}

uint32_t be16(const uint8_t* p) { return (uint32_t{p[0]} << 8) | p[1]; }
uint32_t be32(const uint8_t* p) { return (be16(p) << 16) | be16(p + 2); }
uint32_t le16(const uint8_t* p) { return (uint32_t{p[1]} << 8) | p[0]; }
uint32_t le32(const uint8_t* p) { return (le16(p + 2) << 16) | le16(p); }

// (width, height) from the header of a PNG, GIF, BMP or JPEG, read here rather than by
// stb_image, which refuses (as "unknown image type") headers whose RGB buffer would pass 1 GiB:
// the pixel limit must still be reported as such. nullopt for other or unparsable data.
std::optional<std::pair<int64_t, int64_t>> header_size(const uint8_t* p, size_t n) {
  if (n >= 24 && std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0 && std::memcmp(p + 12, "IHDR", 4) == 0)
    return std::pair<int64_t, int64_t>{be32(p + 16), be32(p + 20)};
  if (n >= 10 && (std::memcmp(p, "GIF87a", 6) == 0 || std::memcmp(p, "GIF89a", 6) == 0))
    return std::pair<int64_t, int64_t>{le16(p + 6), le16(p + 8)};
  if (n >= 26 && p[0] == 'B' && p[1] == 'M') {
    if (le32(p + 14) == 12) return std::pair<int64_t, int64_t>{le16(p + 18), le16(p + 20)};
    const auto w = static_cast<int32_t>(le32(p + 18)), h = static_cast<int32_t>(le32(p + 22));
    return std::pair<int64_t, int64_t>{std::llabs(w), std::llabs(h)};
  }
  if (n >= 4 && p[0] == 0xFF && p[1] == 0xD8) {
    size_t i = 2;
    while (i + 4 <= n) {
      if (p[i] != 0xFF) return std::nullopt;
      const uint8_t m = p[i + 1];
      if (m == 0xFF) {
        ++i;
        continue;
      }
      const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
      if (sof) {
        if (i + 9 > n) return std::nullopt;
        return std::pair<int64_t, int64_t>{be16(p + i + 7), be16(p + i + 5)};
      }
      if (m == 0xDA || m == 0xD9) return std::nullopt;  // scan before any frame header
      i += 2 + be16(p + i + 2);
    }
  }
  return std::nullopt;
}

// stb_image also decodes truncated BMP and GIF data without an error (missing bytes read as 0).
// BMP: uncompressed pixel rows must all be there (RLE-compressed files are left to stb_image).
// Returns the byte count the header implies, or 0 when it cannot tell.
uint64_t bmp_needed_bytes(const uint8_t* p, size_t n) {
  if (n < 30) return 0;
  const uint32_t offset = le32(p + 10), header = le32(p + 14);
  uint64_t w = 0, h = 0, bpp = 0;
  if (header == 12) {
    w = le16(p + 18);
    h = le16(p + 20);
    bpp = le16(p + 24);
  } else if (header >= 40 && n >= 34) {
    const uint32_t compression = le32(p + 30);
    if (compression != 0 && compression != 3 && compression != 6) return 0;  // RLE, JPEG, PNG
    w = static_cast<uint64_t>(std::llabs(static_cast<int32_t>(le32(p + 18))));
    h = static_cast<uint64_t>(std::llabs(static_cast<int32_t>(le32(p + 22))));
    bpp = le16(p + 28);
  } else {
    return 0;
  }
  const uint64_t stride = (w * bpp + 31) / 32 * 4;
  return offset + stride * h;
}

// GIF: the first frame's data (the one stb_image decodes) must end with its 0-length sub-block.
bool gif_first_frame_complete(const uint8_t* p, size_t n) {
  if (n < 13) return false;
  size_t i = 13;
  if (p[10] & 0x80) i += 3u << ((p[10] & 7) + 1);  // global colour table
  auto skip_sub_blocks = [&]() {
    while (i < n && p[i] != 0) i += 1 + size_t{p[i]};
    if (i >= n) return false;
    ++i;  // the terminator
    return true;
  };
  while (i < n) {
    const uint8_t b = p[i++];
    if (b == 0x21) {  // extension: label, sub-blocks
      if (++i > n || !skip_sub_blocks()) return false;
    } else if (b == 0x2C) {  // image descriptor: 9 more bytes, local colour table, LZW data
      if (i + 9 > n) return false;
      const uint8_t flags = p[i + 8];
      i += 9;
      if (flags & 0x80) i += 3u << ((flags & 7) + 1);
      if (++i > n) return false;  // LZW minimum code size
      return skip_sub_blocks();
    } else {
      return true;  // trailer before any image, or garbage: stb_image reports it
    }
  }
  return false;
}

// Checks a PNG's chunk table and the size of its compressed image data before stb_image sees it
// ("" if fine, else what is wrong). Debian's stb_image (2.27) grows its IDAT buffer to a chunk's
// declared length before reading the chunk, so a 200-byte file declaring a 1.4 GB IDAT chunk made
// it allocate 2 GiB; and it inflates the image data into a buffer that doubles without bound (up
// to 4 GiB), so a few MB of deflate data under a 5 x 3 header would expand a thousandfold. Here
// every chunk up to IEND must lie within the file, the IDAT data must be large enough to hold the
// header's image, and it must inflate to no more than that image needs (exact, Adam7 passes
// included, plus slack), checked with stb_image's bounded inflate into a buffer of that size.
// Malformed headers are left to stb_image to report.
std::string check_png(const uint8_t* p, size_t n) {
  size_t i = 8;  // after the signature
  bool iphone = false, have_ihdr = false;
  uint32_t w = 0, h = 0;
  int depth = 0, color = 0, interlace = 0;
  std::vector<size_t> idat_at, idat_len;
  size_t idat_total = 0;
  while (true) {
    if (i + 8 > n) break;  // no IEND: stb_image reports the truncation itself
    const uint32_t len = be32(p + i);
    const std::string type(reinterpret_cast<const char*>(p + i + 4), 4);
    if (len > n - i - 8)
      return "truncated or corrupt PNG (the chunk at byte " + std::to_string(i) + " declares " +
             std::to_string(len) + " bytes of data, the file has " + std::to_string(n - i - 8) +
             " left)";
    const uint8_t* d = p + i + 8;
    if (type == "CgBI") iphone = true;
    if (type == "IHDR" && len >= 13 && !have_ihdr) {
      have_ihdr = true;
      w = be32(d);
      h = be32(d + 4);
      depth = d[8];
      color = d[9];
      interlace = d[12];
    }
    if (type == "IDAT") {
      idat_at.push_back(i + 8);
      idat_len.push_back(len);
      idat_total += len;
    }
    if (type == "IEND") break;
    i += size_t{12} + len;  // data and CRC (stb_image tolerates a missing final CRC)
  }
  const int channels = color == 0 ? 1 : color == 2 ? 3 : color == 3 ? 1 : color == 4 ? 2
                       : color == 6 ? 4 : 0;
  const bool depth_ok = depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
  // Sizes beyond the pixel limit are refused before this; leave odd headers to stb_image.
  if (!have_ihdr || channels == 0 || !depth_ok || w == 0 || h == 0 || idat_total == 0 ||
      w > (1u << 30) || h > (1u << 30) || idat_total > static_cast<size_t>(INT_MAX))
    return "";
  // Filtered scanlines: one filter byte per row of each (Adam7) pass.
  const uint64_t bits = static_cast<uint64_t>(channels) * static_cast<uint64_t>(depth);
  auto pass_bytes = [&](uint64_t pw, uint64_t ph) {
    return pw == 0 || ph == 0 ? 0 : ph * ((pw * bits + 7) / 8 + 1);
  };
  uint64_t expected = 0;
  if (interlace == 0) {
    expected = pass_bytes(w, h);
  } else {
    static constexpr int x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
    static constexpr int dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    for (int k = 0; k < 7; ++k)
      expected += pass_bytes((w + dx[k] - 1 - x0[k]) / dx[k], (h + dy[k] - 1 - y0[k]) / dy[k]);
  }
  // Deflate expands at most 1032-fold (a 258-byte match in 2 bits), plus its header and final
  // bits: less data than that cannot hold the image (stb_image would still allocate the header's
  // size first), and where even that much cannot pass the bound, there is nothing to inflate.
  const uint64_t most = static_cast<uint64_t>(idat_total) * 1032 + 258;
  if (most < expected)
    return "truncated PNG (" + std::to_string(idat_total) +
           " bytes of compressed image data cannot hold the " + std::to_string(w) + " x " +
           std::to_string(h) + " image's " + std::to_string(expected) + " bytes)";
  const uint64_t allowed = expected + expected / 4 + (1 << 16);
  if (most <= allowed) return "";
  if (allowed > static_cast<uint64_t>(INT_MAX)) return "";  // stb_image refuses such sizes
  std::string data;
  data.reserve(idat_total);
  for (size_t k = 0; k < idat_at.size(); ++k)
    data.append(reinterpret_cast<const char*>(p + idat_at[k]), idat_len[k]);
  std::unique_ptr<char[]> out(new char[static_cast<size_t>(allowed)]);
  const int got =
      iphone ? stbi_zlib_decode_noheader_buffer(out.get(), static_cast<int>(allowed), data.data(),
                                                static_cast<int>(data.size()))
             : stbi_zlib_decode_buffer(out.get(), static_cast<int>(allowed), data.data(),
                                       static_cast<int>(data.size()));
  const char* why = got < 0 ? stbi_failure_reason() : nullptr;
  if (why && std::strcmp(why, "output buffer limit") == 0)
    return "corrupt PNG (its " + std::to_string(idat_total) +
           " bytes of compressed image data expand past " + std::to_string(allowed) +
           " bytes, where its " + std::to_string(w) + " x " + std::to_string(h) +
           " header needs " + std::to_string(expected) + "; a decompression bomb?)";
  return "";  // other inflate errors: stb_image reports them when it decodes
}

std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown reason";
}

// PIL's NEAREST resize (an affine transform sampling pixel centres): source index of each output
// index, accumulated in double exactly as Pillow does, so ties round the same way.
at::Tensor nearest_indices(int64_t in, int64_t out) {
  std::vector<int64_t> idx(static_cast<size_t>(out));
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double x = scale * 0.5;
  for (int64_t i = 0; i < out; ++i, x += scale)
    idx[static_cast<size_t>(i)] = std::min<int64_t>(static_cast<int64_t>(x), in - 1);
  return at::tensor(idx, at::kLong);
}

// resize_shorter's output (height, width): the shorter side `size`, the longer
// int(size * long / short), as transformers' get_resize_output_image_size(default_to_square=False)
// (truncated; Python's float division of the exact product). Error if it cannot be represented.
std::pair<int64_t, int64_t> shorter_side_dims(int64_t h, int64_t w, int64_t size,
                                              const char* what) {
  const bool w_short = w <= h;
  const int64_t short_side = w_short ? w : h, long_side = w_short ? h : w;
  // size * long_side below 2^61: exact in int64, and the quotient's cast back cannot overflow.
  MVL_CHECK(size <= (int64_t{1} << 61) / long_side, what, ": resizing a ", h, " x ", w,
            " image so that its shorter side is ", size,
            " gives a size that does not fit in 64 bits");
  const auto new_long =
      static_cast<int64_t>(static_cast<double>(size * long_side) / static_cast<double>(short_side));
  return w_short ? std::pair<int64_t, int64_t>{new_long, size}
                 : std::pair<int64_t, int64_t>{size, new_long};
}

const std::array<double, 3> kClipMean{0.48145466, 0.4578275, 0.40821073};
const std::array<double, 3> kClipStd{0.26862954, 0.26130258, 0.27577711};

}  // namespace

void check_image(const Image& img, const std::string& what) {
  MVL_CHECK(img.width > 0 && img.height > 0, what, ": image has zero size (", img.width, " x ",
            img.height, ")");
  // width * height * 3 as uint64 would wrap around for absurd sizes (2^32 x 2^32 x 3 = 3 * 2^64
  // reads as 0, the size of an empty pixel vector): compare by division first.
  const auto w = static_cast<uint64_t>(img.width), h = static_cast<uint64_t>(img.height);
  const bool fits = w <= UINT64_MAX / 3 / h;
  MVL_CHECK(fits && img.pixels.size() == w * h * 3, what, ": image of ", img.width, " x ",
            img.height, " has ", img.pixels.size(), " bytes of pixels, expected width * height * 3",
            fits ? " = " + std::to_string(w * h * 3) : std::string(" (more than 2^64)"));
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                   const ImageLimits& limits) {
  MVL_CHECK(size > 0, name, ": empty file (0 bytes), not an image");
  MVL_CHECK(size <= static_cast<size_t>(INT_MAX), name, ": ", size,
            " bytes is more than the image decoder accepts (2 GiB)");
  const int len = static_cast<int>(size);
  auto check_pixels = [&](int64_t w, int64_t h) {
    MVL_CHECK(w > 0 && h > 0, name, ": image has zero size (", w, " x ", h, ")");
    // By division: a PNG header's width and height go up to 2^32 - 1 each, whose product
    // overflows int64 (and would read as negative, passing a plain pixels <= limit test). The
    // product is printed as uint64, where (2^32 - 1)^2 fits.
    MVL_CHECK(w <= limits.max_pixels / h, name, ": image is ", w, " x ", h, " = ",
              static_cast<uint64_t>(w) * static_cast<uint64_t>(h),
              " pixels, more than the limit of ", limits.max_pixels,
              " (a guard against decompression bombs); if the file is trusted, raise "
              "ImageLimits::max_pixels");
  };
  const auto dims = header_size(data, size);
  if (dims) check_pixels(dims->first, dims->second);
  // stb_image takes any run of 0xFF fill bytes before the SOI marker (FF D8) as a JPEG.
  size_t soi = 0;
  while (soi < size && data[soi] == 0xFF) ++soi;
  const bool jpeg = soi >= 1 && soi < size && data[soi] == 0xD8;
  const JpegScan js = jpeg ? scan_jpeg(data + soi - 1, size - soi + 1) : JpegScan{};
  MVL_CHECK(js.bad_dht_codes == 0, name, ": corrupt JPEG (a Huffman table declares ",
            js.bad_dht_codes, " codes; at most 256)");
  if (size >= 8 && std::memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) {
    const std::string bad = check_png(data, size);
    MVL_CHECK(bad.empty(), name, ": ", bad);
  }
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp)) {
    if (dims)
      MVL_FAIL(
          name, ": cannot read the ", dims->first, " x ", dims->second,
          " image's header (corrupt, or too large for the decoder?): stb_image: ", stb_reason());
    MVL_FAIL(name,
             ": not a readable image (PNG, JPEG, BMP or GIF expected): stb_image: ", stb_reason());
  }
  check_pixels(w, h);
  if (jpeg)
    MVL_CHECK(js.reaches_eoi, name,
              ": truncated JPEG (the data ends before the end-of-image marker)");
  if (size >= 2 && data[0] == 'B' && data[1] == 'M') {
    const uint64_t need = bmp_needed_bytes(data, size);
    MVL_CHECK(need == 0 || size >= need, name, ": truncated BMP (", size,
              " bytes, the header needs ", need, ")");
  }
  if (size >= 6 && std::memcmp(data, "GIF8", 4) == 0)
    MVL_CHECK(gif_first_frame_complete(data, size), name,
              ": truncated GIF (the data ends inside the first frame)");

  int dw = 0, dh = 0, dcomp = 0;
  // 16-bit PNGs are reduced to 8 bits (value >> 8); 1, 2 and 4 channels become RGB (alpha dropped).
  uint8_t* rgb = stbi_load_from_memory(data, len, &dw, &dh, &dcomp, 3);
  if (!rgb)
    MVL_FAIL(name, ": cannot decode the ", w, " x ", h,
             " image (truncated or corrupt data?): stb_image: ", stb_reason());
  Image img;
  img.width = dw;
  img.height = dh;
  const size_t bytes = static_cast<size_t>(dw) * static_cast<size_t>(dh) * 3;
  img.pixels.assign(rgb, rgb + bytes);
  stbi_image_free(rgb);
  return img;
}

Image load_image(const std::filesystem::path& path, const ImageLimits& limits) {
  // Only a regular file (a FIFO or device would block or never end), checked on the open
  // descriptor; an uncompressed image at max_pixels is 3 bytes a pixel plus headers, so a larger
  // file cannot be a valid image within the limits (and never more than the decoder's 2 GiB).
  const uint64_t cap = std::min<uint64_t>(static_cast<uint64_t>(limits.max_pixels) * 4 + (1 << 20),
                                          static_cast<uint64_t>(INT_MAX));
  const std::string bytes = read_file(path, cap, "image");
  return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path.string(),
                      limits);
}

void save_png(const std::filesystem::path& path, const Image& img) {
  const std::string name = path.string();
  check_image(img, name.c_str());
  MVL_CHECK(img.width <= INT_MAX / 3 && img.height <= INT_MAX, name, ": image of ", img.width,
            " x ", img.height, " is too large for the PNG writer");
  std::vector<uint8_t> png;
  auto sink = [](void* ctx, void* data, int n) {
    auto* out = static_cast<std::vector<uint8_t>*>(ctx);
    const auto* b = static_cast<const uint8_t*>(data);
    out->insert(out->end(), b, b + n);
  };
  const int ok =
      stbi_write_png_to_func(sink, &png, static_cast<int>(img.width), static_cast<int>(img.height),
                             3, img.pixels.data(), static_cast<int>(img.width * 3));
  MVL_CHECK(ok && !png.empty(), name, ": PNG encoding failed (out of memory?)");
  AtomicFileWriter out(path);
  out.write(png.data(), png.size());
  out.commit();
}

at::Tensor to_tensor(const Image& img) {
  check_image(img, "to_tensor");
  // [H, W, 3] uint8 view of the pixels -> [3, H, W] float32 copy.
  auto hwc =
      at::from_blob(const_cast<uint8_t*>(img.pixels.data()), {img.height, img.width, 3}, at::kByte);
  return hwc.permute({2, 0, 1}).to(at::kFloat).div_(255.0).contiguous();
}

Image from_tensor(const at::Tensor& chw) {
  MVL_CHECK(chw.defined() && chw.dim() == 3 && chw.size(0) == 3,
            "from_tensor: expected an image tensor [3, H, W], got ",
            chw.defined() ? shape_str(chw.sizes()) : std::string("an undefined tensor"));
  MVL_CHECK(at::isFloatingType(chw.scalar_type()),
            "from_tensor: expected a floating-point tensor in [0, 1], got ", chw.scalar_type());
  MVL_CHECK(chw.size(1) > 0 && chw.size(2) > 0, "from_tensor: image has zero size ",
            shape_str(chw.sizes()));
  // [3, H, W] -> [H, W, 3] uint8; NaN becomes 0.
  auto u8 = at::nan_to_num(chw.detach().to(at::kCPU, at::kFloat), 0.0, 1.0, 0.0)
                .mul(255.0)
                .round()
                .clamp(0.0, 255.0)
                .to(at::kByte)
                .permute({1, 2, 0})
                .contiguous();
  Image img;
  img.height = chw.size(1);
  img.width = chw.size(2);
  const auto* p = u8.data_ptr<uint8_t>();
  img.pixels.assign(p, p + u8.numel());
  return img;
}

Resample parse_resample(const std::string& s) {
  if (s == "nearest") return Resample::Nearest;
  if (s == "bilinear") return Resample::Bilinear;
  if (s == "bicubic") return Resample::Bicubic;
  MVL_FAIL("unknown resample filter '", s, "' (expected nearest, bilinear or bicubic)");
}

std::string to_string(Resample r) {
  switch (r) {
    case Resample::Nearest:
      return "nearest";
    case Resample::Bilinear:
      return "bilinear";
    case Resample::Bicubic:
      return "bicubic";
  }
  return "?";
}

at::Tensor resize(const at::Tensor& img, int64_t height, int64_t width, Resample mode) {
  MVL_CHECK(img.defined() && (img.dim() == 3 || img.dim() == 4),
            "resize: expected [C, H, W] or [B, C, H, W], got ",
            img.defined() ? shape_str(img.sizes()) : std::string("an undefined tensor"));
  const auto in_type = img.scalar_type();
  MVL_CHECK(at::isFloatingType(in_type) || in_type == at::kByte,
            "resize: expected a floating-point or uint8 tensor, got ", in_type);
  MVL_CHECK(img.size(-1) > 0 && img.size(-2) > 0, "resize: input has zero size ",
            shape_str(img.sizes()));
  MVL_CHECK(height > 0 && width > 0, "resize: target size must be positive, got ", height, " x ",
            width);
  const bool batched = img.dim() == 4;
  at::Tensor x = batched ? img : img.unsqueeze(0);  // [B, C, H, W]
  const int64_t planes = x.size(0) * x.size(1);     // B * C: at most the input's element count
  MVL_CHECK(planes == 0 || (height <= INT64_MAX / width && height * width <= INT64_MAX / planes),
            "resize: ", shape_str(img.sizes()), " at ", height, " x ", width,
            " would have more elements than fit in 64 bits");
  at::Tensor y;
  if (x.size(2) == height && x.size(3) == width) {
    y = x.clone();
  } else if (mode == Resample::Nearest) {
    y = x.index_select(2, nearest_indices(x.size(2), height).to(x.device()))
            .index_select(3, nearest_indices(x.size(3), width).to(x.device()));
  } else {
    // Antialiased filters widened by the scale when shrinking: triangle = PIL's BILINEAR, cubic
    // with a = -0.5 = PIL's BICUBIC. uint8 on the CPU has its own kernel (separable, 8-bit
    // intermediate, like Pillow's); elsewhere uint8 goes through float and is rounded back, as
    // torchvision does.
    const bool native = in_type == at::kFloat || in_type == at::kDouble ||
                        (in_type == at::kByte && x.device().is_cpu());
    at::Tensor in = native ? x : x.to(at::kFloat);
    y = mode == Resample::Bilinear
            ? at::_upsample_bilinear2d_aa(in, {height, width}, /*align_corners=*/false)
            : at::_upsample_bicubic2d_aa(in, {height, width}, /*align_corners=*/false);
    if (y.scalar_type() != in_type) {
      if (in_type == at::kByte) y = y.clamp(0.0, 255.0).round();
      y = y.to(in_type);
    }
  }
  y = y.contiguous();
  return batched ? y : y.squeeze(0);
}

at::Tensor resize_shorter(const at::Tensor& img, int64_t size, Resample mode, int64_t max_pixels) {
  MVL_CHECK(img.defined() && (img.dim() == 3 || img.dim() == 4),
            "resize_shorter: expected [C, H, W] or [B, C, H, W], got ",
            img.defined() ? shape_str(img.sizes()) : std::string("an undefined tensor"));
  MVL_CHECK(size > 0, "resize_shorter: size must be positive, got ", size);
  const int64_t h = img.size(-2), w = img.size(-1);
  MVL_CHECK(h > 0 && w > 0, "resize_shorter: input has zero size ", shape_str(img.sizes()));
  // The output size first: an extreme aspect ratio makes it enormous (1 x 1,000,000 at 224 is
  // 224 x 224,000,000), refused here rather than allocated.
  const auto [nh, nw] = shorter_side_dims(h, w, size, "resize_shorter");
  MVL_CHECK(nh <= max_pixels / nw, "resize_shorter: resizing a ", h, " x ", w,
            " image so that its shorter side is ", size, " would make it ", nh, " x ", nw,
            " pixels, more than the limit of ", max_pixels,
            " (an extreme aspect ratio: crop first, as ImagePreprocess does, or raise max_pixels)");
  return resize(img, nh, nw, mode);
}

at::Tensor center_crop(const at::Tensor& img, int64_t height, int64_t width) {
  MVL_CHECK(img.defined() && img.dim() >= 2, "center_crop: expected [..., H, W], got ",
            img.defined() ? shape_str(img.sizes()) : std::string("an undefined tensor"));
  const int64_t h = img.size(-2), w = img.size(-1);
  MVL_CHECK(height > 0 && width > 0, "center_crop: crop size must be positive, got ", height, " x ",
            width);
  MVL_CHECK(height <= h && width <= w, "center_crop: cannot take a ", height, " x ", width,
            " crop from an image of ", h, " x ", w);
  // Offsets rounded down, as transformers' center_crop (torchvision's own rounds half to even).
  const int64_t top = (h - height) / 2, left = (w - width) / 2;
  return img.narrow(-2, top, height).narrow(-1, left, width).contiguous();
}

at::Tensor normalize(const at::Tensor& img, const std::array<double, 3>& mean,
                     const std::array<double, 3>& std) {
  MVL_CHECK(img.defined() && (img.dim() == 3 || img.dim() == 4) && img.size(-3) == 3,
            "normalize: expected [3, H, W] or [B, 3, H, W], got ",
            img.defined() ? shape_str(img.sizes()) : std::string("an undefined tensor"));
  // mean / std are built in img's type: in uint8 they would truncate to 0 and the arithmetic
  // wrap around, a silent garbage result.
  MVL_CHECK(at::isFloatingType(img.scalar_type()),
            "normalize: expected a floating-point tensor (pixel values scaled to [0, 1]), got ",
            img.scalar_type(), "; convert first, e.g. x.to(at::kFloat) / 255");
  for (double s : std)
    MVL_CHECK(std::isfinite(s) && s != 0.0, "normalize: std must be finite and non-zero, got ", s);
  const auto opts = at::TensorOptions().dtype(img.scalar_type()).device(img.device());
  // [3, 1, 1], broadcasting over [.., 3, H, W].
  auto m = at::tensor(std::vector<double>(mean.begin(), mean.end()), opts).view({3, 1, 1});
  auto s = at::tensor(std::vector<double>(std.begin(), std.end()), opts).view({3, 1, 1});
  return (img - m) / s;
}

namespace {
ImagePreprocess bicubic_preset(int64_t size, const char* mode, const std::array<double, 3>& mean,
                               const std::array<double, 3>& std) {
  ImagePreprocess p;
  p.size = size;
  p.resample = Resample::Bicubic;
  p.mode = mode;
  p.mean = mean;
  p.std = std;
  return p;
}
}  // namespace

ImagePreprocess ImagePreprocess::clip(int64_t size) {
  return bicubic_preset(size, "crop", kClipMean, kClipStd);
}

ImagePreprocess ImagePreprocess::siglip(int64_t size) {
  return bicubic_preset(size, "squash", {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5});
}

ImagePreprocess ImagePreprocess::imagenet(int64_t size) {
  return bicubic_preset(size, "crop", {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225});
}

ImagePreprocess ImagePreprocess::from_json(const nlohmann::json& j, const std::string& file) {
  namespace cfg = ::mambavl::cfg;
  const std::string where = "image preprocessing";
  cfg::check_known_keys(j, {"size", "resample", "mode", "mean", "std"}, file, where);
  ImagePreprocess p;
  p.size = cfg::get_int(j, "size", file, p.size);
  cfg::check_limit(p.size, 1, kMaxSize, file, "preprocess.size");
  try {
    p.resample = parse_resample(cfg::get_string(j, "resample", file, to_string(p.resample)));
  } catch (const Error& e) {
    MVL_FAIL(file, ": key 'resample': ", e.what());
  }
  p.mode = cfg::get_string(j, "mode", file, p.mode);
  MVL_CHECK(p.mode == "crop" || p.mode == "squash", file, ": key 'mode' must be \"crop\" or ",
            "\"squash\", got \"", p.mode, "\"");
  auto triple = [&](const char* key, std::array<double, 3>& out, bool positive) {
    if (!j.contains(key) || j.at(key).is_null()) return;
    const auto& v = j.at(key);
    MVL_CHECK(v.is_array() && v.size() == 3, file, ": key '", key,
              "' must be an array of 3 numbers (R, G, B), got ", v.dump());
    for (size_t c = 0; c < 3; ++c) {
      MVL_CHECK(v[c].is_number(), file, ": key '", key, "' must hold numbers, got ", v.dump());
      out[c] = v[c].get<double>();
      MVL_CHECK(std::isfinite(out[c]) && (!positive || out[c] > 0), file, ": key '", key, "'[", c,
                "] must be ", positive ? "a positive number" : "finite", ", got ", v[c].dump());
    }
  };
  triple("mean", p.mean, false);
  triple("std", p.std, true);
  return p;
}

void ImagePreprocess::check_batch(int64_t batch, const std::string& what) const {
  MVL_CHECK(input_bytes(batch) <= kMaxBatchBytes, what, ": ", batch, " images of 3 x ", size,
            " x ", size, " float32 would take ", input_bytes(batch) >> 20,
            " MiB, over the limit of ", kMaxBatchBytes >> 20, " MiB: use a smaller batch");
}

nlohmann::json ImagePreprocess::to_json() const {
  return {{"size", size},
          {"resample", to_string(resample)},
          {"mode", mode},
          {"mean", {mean[0], mean[1], mean[2]}},
          {"std", {std[0], std[1], std[2]}}};
}

at::Tensor ImagePreprocess::operator()(const Image& img) const {
  MVL_CHECK(mode == "crop" || mode == "squash", "image preprocessing: unknown mode '", mode,
            "' (expected crop or squash)");
  MVL_CHECK(size > 0, "image preprocessing: size must be positive, got ", size);
  check_image(img, "image preprocessing");
  // Resized in 8 bits, as transformers' processors do (their torchvision backend calls the same
  // uint8 kernel; PIL's filters agree within one level): [3, H, W] uint8 view of the pixels.
  at::Tensor x =
      at::from_blob(const_cast<uint8_t*>(img.pixels.data()), {img.height, img.width, 3}, at::kByte)
          .permute({2, 0, 1});
  if (mode == "squash") {
    x = resize(x, size, size, resample);
  } else {
    const int64_t H = img.height, W = img.width;
    const auto [nh, nw] = shorter_side_dims(H, W, size, "image preprocessing");
    const int64_t new_long = std::max(nh, nw);  // the other side is `size`
    // nh * nw <= max(kExactCropPixels, 4 * size * size), compared without overflow.
    if (new_long <= kExactCropPixels / size || new_long / 4 <= size) {
      // As transformers: resize the whole image, then take the central size x size.
      x = center_crop(resize(x, nh, nw, resample), size, size);
    } else {
      // Too large to resize whole. The crop keeps resized pixels [off, off + size) along the
      // longer side, which come from source [off * r, (off + size) * r), r = long / new_long
      // source pixels per resized pixel (the shorter side is resized whole, as above). Take that
      // span plus the filter's reach (bicubic: 2 pixels, 2 r when shrinking) and one pixel, resize
      // it at nearly the same scale (n resized pixels for hi - lo source ones) and crop there:
      // within one output pixel of transformers' result, in O(size * size) memory (n is at most
      // about 9 size, as 1 / r <= size / short).
      const int dim = nh > nw ? 1 : 2;  // the longer side of x = [3, H, W]
      const int64_t long_side = dim == 1 ? H : W;
      const int64_t off = (new_long - size) / 2;
      const double r = static_cast<double>(long_side) / static_cast<double>(new_long);
      const auto reach = static_cast<int64_t>(std::ceil(2.0 * std::max(r, 1.0))) + 1;
      const auto first = static_cast<double>(off) * r;
      const int64_t lo =
          std::clamp<int64_t>(static_cast<int64_t>(std::floor(first)) - reach, 0, long_side - 1);
      const int64_t hi = std::clamp<int64_t>(
          static_cast<int64_t>(std::ceil(static_cast<double>(off + size) * r)) + reach, lo + 1,
          long_side);
      const int64_t n =
          std::max<int64_t>(size, std::llround(static_cast<double>(hi - lo) / r));  // ~ 1/r each
      const int64_t k =
          std::clamp<int64_t>(std::llround((first - static_cast<double>(lo)) / r), 0, n - size);
      x = resize(x.narrow(dim, lo, hi - lo), dim == 1 ? n : size, dim == 1 ? size : n, resample)
              .narrow(dim, k, size);
    }
  }
  // [3, size, size] float in [0, 1], normalised.
  return normalize(x.to(at::kFloat).div_(255.0), mean, std).contiguous();
}

at::Tensor load_batch(const std::vector<std::filesystem::path>& files, const ImagePreprocess& pp,
                      const ImageLimits& limits) {
  if (files.empty()) return at::empty({0, 3, pp.size, pp.size}, at::kFloat);
  std::vector<at::Tensor> items;
  items.reserve(files.size());
  for (const auto& f : files) items.push_back(pp(load_image(f, limits)));
  return at::stack(items);  // [B, 3, size, size]
}

}  // namespace mambavl::io
