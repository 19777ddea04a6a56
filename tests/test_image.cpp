// Image decoding / writing and preprocessing, against what PIL and transformers produce for the
// fixtures of dev/make_image_fixtures.py (tests/fixtures/images).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::io;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::path(MAMBAVL_FIXTURES_DIR) / "images";

using testing_util::expect_error;

// [H, W, 3] uint8 tensor of an Image's pixels (a copy).
at::Tensor hwc(const Image& img) {
  return at::from_blob(const_cast<uint8_t*>(img.pixels.data()), {img.height, img.width, 3},
                       at::kByte)
      .clone();
}

// [3, H, W] float in [0, 1] -> [H, W, 3] int32 levels, clamped and rounded as PIL stores them.
at::Tensor levels(const at::Tensor& chw) {
  return chw.clamp(0, 1).mul(255).round().permute({1, 2, 0}).to(at::kInt);
}

// A fresh folder per test, removed afterwards.
class ImageFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / ("mvl_img_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

Image test_pattern(int64_t w, int64_t h) {
  Image img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<size_t>(w * h * 3));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        img.pixels[static_cast<size_t>((y * w + x) * 3 + c)] =
            static_cast<uint8_t>((x * 37 + y * 11 + c * 91) % 256);
  return img;
}

// ---------------------------------------------------------------- decoding

TEST(ImageDecode, LosslessFormatsMatchPilConvertRgb) {
  SafetensorsFile expected(kDir / "expected.safetensors");
  int checked = 0;
  for (const auto& name : expected.names()) {
    if (name.ends_with(".jpg")) continue;  // lossy: decoders differ, see the next test
    SCOPED_TRACE(name);
    const Image img = load_image(kDir / name);
    const auto want = expected.tensor(name);  // [H, W, 3] uint8
    ASSERT_EQ(img.height, want.size(0));
    ASSERT_EQ(img.width, want.size(1));
    EXPECT_TRUE(at::equal(hwc(img), want));
    ++checked;
  }
  // grey, grey+alpha, RGBA, palette+transparency, 16-bit RGB, 16-bit grey, BMP, GIF, RGB.
  EXPECT_EQ(checked, 9);
}

TEST(ImageDecode, JpegCloseToPil) {
  // stb_image and libjpeg (PIL) use different IDCTs and chroma upsampling, so the same JPEG decodes
  // to slightly different pixels; they must still agree to a few levels.
  SafetensorsFile expected(kDir / "expected.safetensors");
  const Image img = load_image(kDir / "photo_64x48.jpg");
  const auto want = expected.tensor("photo_64x48.jpg").to(at::kInt);
  ASSERT_EQ(img.width, 64);
  ASSERT_EQ(img.height, 48);
  const auto diff = (hwc(img).to(at::kInt) - want).abs().to(at::kFloat);
  EXPECT_LE(diff.max().item<float>(), 12.0f);
  EXPECT_LE(diff.mean().item<float>(), 1.5f);
}

TEST(ImageDecode, DecodeFromMemoryEqualsFile) {
  std::ifstream in(kDir / "src_64x48.png", std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  const Image a = decode_image(bytes.data(), bytes.size(), "buffer");
  const Image b = load_image(kDir / "src_64x48.png");
  EXPECT_EQ(a.width, 64);
  EXPECT_EQ(a.height, 48);
  EXPECT_EQ(a.pixels, b.pixels);
}

// Debian's stb_image 2.27 writes past its code-size table for a JPEG Huffman table of more than
// 256 codes (also when the table's header runs past its segment): refused before stb sees it.
// The files are the fuzzer's regression inputs (fuzz/make_corpus.py).
TEST(ImageDecode, JpegHuffmanTableOverflowIsRefused) {
  const fs::path dir =
      fs::path(MAMBAVL_FIXTURES_DIR) / ".." / ".." / "fuzz" / "corpus" / "fuzz_image";
  for (const char* f :
       {"regress_jpeg_dht_4080_codes.jpg", "regress_jpeg_dht_straddling_segment.jpg",
        "regress_jpeg_dht_leading_fill_bytes.jpg"})
    expect_error([&] { load_image(dir / f); }, {f, "corrupt JPEG (a Huffman table declares"});
  // The photo fixture, whose tables are valid, still decodes.
  EXPECT_EQ(load_image(kDir / "photo_64x48.jpg").width, 64);
}

// Debian's stb_image 2.27 allocates an IDAT chunk's declared length before reading it, and
// inflates PNG data into a buffer that grows without bound: both refused before it decodes.
TEST(ImageDecode, PngChunkLengthAndInflateBombAreRefused) {
  const fs::path dir =
      fs::path(MAMBAVL_FIXTURES_DIR) / ".." / ".." / "fuzz" / "corpus" / "fuzz_image";
  expect_error([&] { load_image(dir / "regress_png_idat_length_oom.png"); },
               {"regress_png_idat_length_oom.png", "truncated or corrupt PNG",
                "declares 1409286203 bytes"});
  expect_error([&] { load_image(dir / "regress_png_inflate_bomb.png"); },
               {"regress_png_inflate_bomb.png", "corrupt PNG", "header needs 48",
                "decompression bomb"});
  // Every valid PNG fixture (grey, palette, alpha, 16-bit) still decodes.
  for (const char* f : {"grey_24x17.png", "palette_24x17.png", "rgba_24x17.png",
                        "grey16_24x17.png", "rgb16_24x17.png", "grey_alpha_24x17.png"})
    EXPECT_EQ(load_image(kDir / f).width, 24) << f;
}

// A PNG built here: 8-bit RGB, the given filtered scanline data (filter bytes included) stored
// in uncompressed deflate blocks, so its inflated size is exactly data.size().
static std::vector<uint8_t> stored_png(uint32_t w, uint32_t h, bool interlaced,
                                const std::vector<uint8_t>& data) {
  auto put32 = [](std::vector<uint8_t>& v, uint32_t x) {
    for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
  };
  auto crc = [](const uint8_t* p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; ++i) {
      c ^= p[i];
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
  };
  std::vector<uint8_t> png{0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  auto chunk = [&](const char* type, const std::vector<uint8_t>& d) {
    put32(png, static_cast<uint32_t>(d.size()));
    const size_t start = png.size();
    png.insert(png.end(), type, type + 4);
    png.insert(png.end(), d.begin(), d.end());
    put32(png, crc(png.data() + start, png.size() - start));
  };
  std::vector<uint8_t> ihdr;
  put32(ihdr, w);
  put32(ihdr, h);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, static_cast<uint8_t>(interlaced ? 1 : 0)});
  chunk("IHDR", ihdr);
  std::vector<uint8_t> z{0x78, 0x01};  // zlib header; stored blocks of at most 65535 bytes
  for (size_t off = 0; off == 0 || off < data.size(); off += 65535) {
    const size_t n = std::min<size_t>(65535, data.size() - off);
    z.push_back(off + n >= data.size() ? 1 : 0);
    z.insert(z.end(), {static_cast<uint8_t>(n), static_cast<uint8_t>(n >> 8),
                       static_cast<uint8_t>(~n), static_cast<uint8_t>(~n >> 8)});
    z.insert(z.end(), data.begin() + static_cast<std::ptrdiff_t>(off),
             data.begin() + static_cast<std::ptrdiff_t>(off + n));
  }
  uint32_t a = 1, b = 0;  // Adler-32
  for (uint8_t x : data) {
    a = (a + x) % 65521;
    b = (b + a) % 65521;
  }
  put32(z, (b << 16) | a);
  chunk("IDAT", z);
  chunk("IEND", {});
  return png;
}

// The inflate bound is exact for Adam7: an interlaced PNG decodes to the same pixels as the plain
// one, and data just past the bound (expected + expected / 4 + 65536 bytes) is refused.
TEST(ImageDecode, PngInflateBoundIsExactForInterlacedImages) {
  const uint32_t w = 13, h = 7;
  auto pixel = [](uint32_t x, uint32_t y, int c) {
    return static_cast<uint8_t>(x * 17 + y * 31 + static_cast<uint32_t>(c) * 71);
  };
  std::vector<uint8_t> plain;
  for (uint32_t y = 0; y < h; ++y) {
    plain.push_back(0);  // filter: none
    for (uint32_t x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) plain.push_back(pixel(x, y, c));
  }
  std::vector<uint8_t> adam7;
  const uint32_t x0[7] = {0, 4, 0, 2, 0, 1, 0}, y0[7] = {0, 0, 4, 0, 2, 0, 1};
  const uint32_t dx[7] = {8, 8, 4, 4, 2, 2, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
  for (int p = 0; p < 7; ++p) {
    if (x0[p] >= w || y0[p] >= h) continue;  // an empty pass has no rows
    for (uint32_t y = y0[p]; y < h; y += dy[p]) {
      adam7.push_back(0);
      for (uint32_t x = x0[p]; x < w; x += dx[p])
        for (int c = 0; c < 3; ++c) adam7.push_back(pixel(x, y, c));
    }
  }
  const auto a = stored_png(w, h, false, plain), b = stored_png(w, h, true, adam7);
  const Image ia = decode_image(a.data(), a.size(), "plain.png");
  const Image ib = decode_image(b.data(), b.size(), "adam7.png");
  ASSERT_EQ(ia.width, 13);
  EXPECT_EQ(ia.pixels, ib.pixels);
  EXPECT_EQ(ia.pixels[3 * (2 * w + 5) + 1], pixel(5, 2, 1));
  for (bool interlaced : {false, true}) {
    std::vector<uint8_t> data = interlaced ? adam7 : plain;
    const size_t expected = data.size();
    data.resize(expected + expected / 4 + 65536, 0);  // at the bound: decodes
    const auto ok = stored_png(w, h, interlaced, data);
    EXPECT_EQ(decode_image(ok.data(), ok.size(), "ok.png").pixels, ia.pixels);
    data.push_back(0);  // one byte more: refused
    const auto bad = stored_png(w, h, interlaced, data);
    expect_error([&] { decode_image(bad.data(), bad.size(), "over.png"); },
                 {"over.png", "header needs " + std::to_string(expected), "decompression bomb"});
  }
  // A 4096 x 4096 header over 100 bytes of data: too little to hold it (at most 1032-fold),
  // refused before stb_image allocates the header's 50 MB.
  const auto tiny = stored_png(4096, 4096, false, std::vector<uint8_t>(100, 0));
  expect_error([&] { decode_image(tiny.data(), tiny.size(), "tiny.png"); },
               {"tiny.png", "truncated PNG (111 bytes of compressed image data cannot hold the "
                            "4096 x 4096 image's 50335744 bytes)"});
}

TEST(ImageDecode, Errors) {
  expect_error([] { load_image(kDir / "no_such.png"); }, {"no_such.png", "not found"});
  expect_error([] { load_image(kDir); }, {"images", "is a directory"});
  expect_error([] { load_image("/dev/zero"); }, {"/dev/zero", "is a character device"});
  expect_error([] { load_image(kDir / "empty.png"); }, {"empty.png", "empty"});
  expect_error([] { load_image(kDir / "not_image.txt"); },
               {"not_image.txt", "not a readable image", "stb_image: "});
  expect_error([] { load_image(kDir / "truncated.png"); },
               {"truncated.png", "truncated or corrupt PNG", "declares 7130 bytes"});
  expect_error([] { load_image(kDir / "truncated.jpg"); }, {"truncated.jpg", "truncated JPEG"});
  const uint8_t garbage[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4, 5, 6, 7};
  expect_error([&] { decode_image(garbage, sizeof garbage, "mem.png"); }, {"mem.png"});
  expect_error([&] { decode_image(garbage, 0, "nothing"); }, {"nothing", "empty"});
}

TEST(ImageDecode, TruncatedBmpAndGifAreErrors) {
  // stb_image decodes these without complaint (missing bytes read as 0); we check the length.
  for (const char* name : {"small_24x17.bmp", "small_24x17.gif"}) {
    SCOPED_TRACE(name);
    std::ifstream in(kDir / name, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    ASSERT_GT(bytes.size(), 100u);
    bytes.resize(bytes.size() * 6 / 10);
    expect_error([&] { decode_image(bytes.data(), bytes.size(), name); }, {name, "truncated"});
  }
}

TEST(ImageDecode, PixelLimitCheckedBeforeDecoding) {
  // The header says 30000 x 30000 (900 M pixels, > the default limit); the data is 64 bytes, so
  // only the header check can refuse it this way (decoding would fail differently).
  expect_error([] { load_image(kDir / "bomb.png"); },
               {"bomb.png", "30000 x 30000", "900000000", "178956970", "max_pixels"});
  ImageLimits small;
  small.max_pixels = 64 * 48 - 1;
  expect_error([&] { load_image(kDir / "src_64x48.png", small); },
               {"src_64x48.png", "64 x 48", "3072", "3071"});
  small.max_pixels = 64 * 48;
  EXPECT_EQ(load_image(kDir / "src_64x48.png", small).width, 64);
}

TEST(ImageDecode, HugeHeaderSizesDoNotOverflowThePixelCheck) {
  // A PNG signature and IHDR chunk only (the size check comes before anything else is read).
  auto png_header = [](uint32_t w, uint32_t h) {
    std::vector<uint8_t> b{0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a,
                           0,    0,   0,   13,  'I',  'H',  'D',  'R'};
    for (uint32_t v : {w, h})
      for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(v >> shift));
    b.insert(b.end(), {8, 2, 0, 0, 0, 0, 0, 0, 0});  // 8-bit RGB, a (wrong) CRC
    return b;
  };
  // (2^32 - 1)^2 overflows int64 and read as a negative pixel count, under any limit: it must be
  // refused as too many pixels (the product printed in full).
  const auto huge = png_header(0xFFFFFFFFu, 0xFFFFFFFFu);
  expect_error([&] { decode_image(huge.data(), huge.size(), "huge.png"); },
               {"huge.png", "4294967295 x 4294967295", "18446744065119617025",
                "more than the limit of 178956970", "max_pixels"});
  // 2^31 x 2^31 = 2^62 does fit; 2^32 - 1 x 1 is only long.
  for (auto [w, h] :
       std::vector<std::pair<uint32_t, uint32_t>>{{1u << 31, 1u << 31}, {0xFFFFFFFFu, 1u}}) {
    const auto b = png_header(w, h);
    expect_error(
        [&] { decode_image(b.data(), b.size(), "long.png"); },
        {"long.png", std::to_string(w) + " x " + std::to_string(h), "more than the limit"});
  }
  for (auto [w, h] : std::vector<std::pair<uint32_t, uint32_t>>{{0u, 5u}, {5u, 0u}, {0u, 0u}}) {
    const auto b = png_header(w, h);
    expect_error([&] { decode_image(b.data(), b.size(), "flat.png"); },
                 {"flat.png", "zero size", std::to_string(w) + " x " + std::to_string(h)});
  }
}

// ---------------------------------------------------------------- writing

TEST_F(ImageFiles, SavePngRoundTripsAndLeavesNoTempFile) {
  const Image img = test_pattern(13, 7);
  const fs::path p = dir_ / "out.png";
  save_png(p, img);
  const Image back = load_image(p);
  EXPECT_EQ(back.width, 13);
  EXPECT_EQ(back.height, 7);
  EXPECT_EQ(back.pixels, img.pixels);
  save_png(p, test_pattern(5, 9));  // replaces the file
  EXPECT_EQ(load_image(p).width, 5);
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string(), "out.png");
}

TEST_F(ImageFiles, SavePngErrors) {
  Image bad = test_pattern(4, 4);
  bad.pixels.pop_back();
  expect_error([&] { save_png(dir_ / "bad.png", bad); }, {"bad.png", "47 bytes", "48"});
  expect_error([&] { save_png(dir_ / "bad.png", Image{}); }, {"bad.png", "zero size"});
  expect_error([&] { save_png(dir_ / "no" / "dir" / "x.png", test_pattern(2, 2)); }, {"x.png"});
  EXPECT_FALSE(fs::exists(dir_ / "bad.png"));
}

// ---------------------------------------------------------------- tensors

TEST(ImageTensor, ToTensorLayoutAndRoundTrip) {
  const Image img = test_pattern(5, 3);
  const auto t = to_tensor(img);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{3, 3, 5}));
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 3; ++y)
      for (int64_t x = 0; x < 5; ++x)
        EXPECT_FLOAT_EQ(t[c][y][x].item<float>(),
                        static_cast<float>((x * 37 + y * 11 + c * 91) % 256) / 255.0f);
  EXPECT_EQ(from_tensor(t).pixels, img.pixels);
  // Rounded and clamped on the way back; NaN -> 0.
  auto u = at::full({3, 1, 2}, 0.5f);
  u[0][0][0] = 1.7f;
  u[1][0][1] = -0.2f;
  u[2][0][0] = std::numeric_limits<float>::quiet_NaN();
  const Image v = from_tensor(u);
  EXPECT_EQ(v.pixels, (std::vector<uint8_t>{255, 128, 0, 128, 0, 128}));  // 127.5 -> 128
  expect_error([] { from_tensor(at::zeros({4, 2, 2})); }, {"[3, H, W]", "[4, 2, 2]"});
  expect_error([] { from_tensor(at::zeros({3, 2, 2}, at::kInt)); }, {"floating"});
}

TEST(ImageTensor, AbsurdSizesAreRefusedNotWrappedAround) {
  // width * height * 3 = 3 * 2^64 wraps around to 0 in 64 bits, the size of the empty pixel
  // vector: such an Image must still be refused before anything reads its "pixels".
  Image absurd;
  absurd.width = absurd.height = int64_t{1} << 32;
  expect_error([&] { to_tensor(absurd); },
               {"to_tensor", "4294967296 x 4294967296", "0 bytes", "more than 2^64"});
  expect_error([&] { ImagePreprocess::clip(8)(absurd); },
               {"image preprocessing", "4294967296 x 4294967296"});
  expect_error([&] { check_image(absurd, "mine"); }, {"mine", "4294967296 x 4294967296"});
  Image short_rows = test_pattern(4, 3);
  short_rows.pixels.pop_back();
  expect_error([&] { check_image(short_rows, "mine"); }, {"mine", "35 bytes", "= 36"});
  check_image(test_pattern(4, 3), "mine");
}

// ---------------------------------------------------------------- resizing

struct ResizeCase {
  std::string key;
  Resample mode;
  int64_t w, h;
};

std::vector<ResizeCase> resize_cases() {
  std::vector<ResizeCase> out;
  for (auto [w, h] : std::vector<std::pair<int64_t, int64_t>>{{23, 17}, {72, 55}, {40, 70}})
    for (auto m : {Resample::Nearest, Resample::Bilinear, Resample::Bicubic})
      out.push_back({to_string(m) + "_" + std::to_string(w) + "x" + std::to_string(h), m, w, h});
  return out;
}

TEST(ImageResize, MatchesPil) {
  // PIL resizes 8-bit images in two passes (horizontal, then vertical), rounding and clamping the
  // intermediate to uint8, with fixed-point weights; we filter once in float. Compared on PIL's
  // 8-bit grid (ours clamped and rounded):
  //  - nearest picks the same source pixels: exact;
  //  - bilinear (weights >= 0, no overshoot): the intermediate rounding moves a result by at
  //    most one level;
  //  - bicubic: one level, except next to hard edges where the horizontal pass overshoots and PIL
  //    clips the intermediate before the vertical pass (measured: < 1 % of values, up to 13 levels
  //    on this test card); bounded here at 1 % and 16 levels.
  SafetensorsFile pil(kDir / "resize.safetensors");
  const auto src = to_tensor(load_image(kDir / "src_64x48.png"));  // [3, 48, 64]
  for (const auto& c : resize_cases()) {
    SCOPED_TRACE(c.key);
    const auto ours = resize(src, c.h, c.w, c.mode);
    ASSERT_EQ(ours.sizes(), (std::vector<int64_t>{3, c.h, c.w}));
    const auto want = pil.tensor(c.key).to(at::kInt);  // [h, w, 3]
    const auto diff = (levels(ours) - want).abs();
    const int max_diff = diff.max().item<int>();
    const double frac_over_1 = diff.gt(1).to(at::kDouble).mean().item<double>();
    if (c.mode == Resample::Nearest) {
      EXPECT_EQ(max_diff, 0);
    } else if (c.mode == Resample::Bilinear) {
      EXPECT_LE(max_diff, 1);
    } else {
      EXPECT_LE(frac_over_1, 0.01);
      EXPECT_LE(max_diff, 16);
    }
    // Most values are exactly PIL's.
    EXPECT_LE(diff.gt(0).to(at::kDouble).mean().item<double>(), 0.5);
  }
}

TEST(ImageResize, Uint8MatchesPilWithinOneLevel) {
  // uint8 input is resized in 8 bits, separably, as Pillow does; the fixed-point weights differ
  // slightly, so a value may be one level off (rounding), never more.
  SafetensorsFile pil(kDir / "resize.safetensors");
  const Image img = load_image(kDir / "src_64x48.png");
  const auto src = at::from_blob(const_cast<uint8_t*>(img.pixels.data()), {48, 64, 3}, at::kByte)
                       .permute({2, 0, 1});  // [3, 48, 64] uint8
  for (const auto& c : resize_cases()) {
    SCOPED_TRACE(c.key);
    const auto ours = resize(src, c.h, c.w, c.mode);
    ASSERT_EQ(ours.scalar_type(), at::kByte);
    ASSERT_EQ(ours.sizes(), (std::vector<int64_t>{3, c.h, c.w}));
    const auto diff = (ours.permute({1, 2, 0}).to(at::kInt) - pil.tensor(c.key).to(at::kInt)).abs();
    EXPECT_LE(diff.max().item<int>(), c.mode == Resample::Nearest ? 0 : 1);
    EXPECT_LE(diff.gt(0).to(at::kDouble).mean().item<double>(), 0.1);
    // Float-path agreement: the 8-bit result is the float one within the same bounds.
    const auto f = levels(resize(src.to(at::kFloat).div(255), c.h, c.w, c.mode)).permute({2, 0, 1});
    EXPECT_LE((f - ours.to(at::kInt)).abs().gt(1).to(at::kDouble).mean().item<double>(), 0.01);
  }
}

TEST(ImageResize, BatchEqualsPerImageAndSameSizeIsIdentity) {
  const auto a = to_tensor(load_image(kDir / "src_64x48.png"));
  const auto b = a.flip(-1).contiguous();
  const auto batch = at::stack({a, b});  // [2, 3, 48, 64]
  for (auto m : {Resample::Nearest, Resample::Bilinear, Resample::Bicubic}) {
    SCOPED_TRACE(to_string(m));
    const auto r = resize(batch, 20, 30, m);
    ASSERT_EQ(r.sizes(), (std::vector<int64_t>{2, 3, 20, 30}));
    EXPECT_TRUE(at::allclose(r[0], resize(a, 20, 30, m), 0, 1e-6));
    EXPECT_TRUE(at::allclose(r[1], resize(b, 20, 30, m), 0, 1e-6));
    EXPECT_TRUE(at::equal(resize(a, 48, 64, m), a));
    // Double in, double out.
    EXPECT_EQ(resize(a.to(at::kDouble), 10, 10, m).scalar_type(), at::kDouble);
  }
  expect_error([&] { resize(a[0], 4, 4, Resample::Bicubic); }, {"[C, H, W]", "[48, 64]"});
  expect_error([&] { resize(a, 0, 4, Resample::Bicubic); }, {"positive"});
  expect_error([&] { resize(a.to(at::kInt), 4, 4, Resample::Bicubic); }, {"floating", "uint8"});
}

TEST(ImageResize, ParseResample) {
  for (auto m : {Resample::Nearest, Resample::Bilinear, Resample::Bicubic})
    EXPECT_EQ(parse_resample(to_string(m)), m);
  expect_error([] { parse_resample("lanczos"); }, {"lanczos", "bicubic"});
}

TEST(ImageResize, ResizeShorterTruncatesTheLongerSide) {
  // transformers: shorter side = size, longer = int(size * long / short).
  const auto land = at::rand({3, 48, 64});
  EXPECT_EQ(resize_shorter(land, 32, Resample::Bilinear).sizes(),
            (std::vector<int64_t>{3, 32, 42}));  // 32 * 64 / 48 = 42.67
  EXPECT_EQ(resize_shorter(land.transpose(1, 2), 40, Resample::Bilinear).sizes(),
            (std::vector<int64_t>{3, 53, 40}));  // 40 * 64 / 48 = 53.33
  EXPECT_EQ(resize_shorter(at::rand({2, 3, 10, 10}), 7, Resample::Nearest).sizes(),
            (std::vector<int64_t>{2, 3, 7, 7}));
  EXPECT_EQ(resize_shorter(at::rand({3, 3, 7}), 6, Resample::Bicubic).sizes(),
            (std::vector<int64_t>{3, 6, 14}));  // 6 * 7 / 3 = 14 exactly
}

TEST(ImageResize, ResizeShorterRefusesHugeOutputsBeforeAllocating) {
  // 1 x 1,000,000 passes the decoder's pixel limit; with its shorter side at 224 it would be
  // 224 x 224,000,000 (150 GB in uint8): refused from the computed size, nothing allocated.
  const auto thin = at::zeros({3, 1, 1000000}, at::kByte);
  expect_error([&] { resize_shorter(thin, 224, Resample::Bicubic); },
               {"resize_shorter", "1 x 1000000", "224 x 224000000", "limit of 178956970"});
  expect_error([&] { resize_shorter(thin.transpose(1, 2), 224, Resample::Nearest); },
               {"1000000 x 1", "224000000 x 224"});
  // The limit is on one output image: 32 x 42 = 1344.
  const auto land = at::rand({2, 3, 48, 64});
  EXPECT_EQ(resize_shorter(land, 32, Resample::Bilinear, 32 * 42).sizes(),
            (std::vector<int64_t>{2, 3, 32, 42}));
  expect_error([&] { resize_shorter(land, 32, Resample::Bilinear, 32 * 42 - 1); },
               {"48 x 64", "32 x 42", "1343"});
  // A size whose product with the longer side leaves 64 bits.
  expect_error([&] { resize_shorter(thin, int64_t{1} << 50, Resample::Bicubic); },
               {"resize_shorter", "64 bits"});
}

TEST(ImageCrop, CenterCropOffsetsRoundDown) {
  // Value = y * 100 + x, so the crop's corner tells the offsets.
  const auto grid = (at::arange(9).view({9, 1}) * 100 + at::arange(12).view({1, 12}))
                        .to(at::kFloat)
                        .expand({3, 9, 12});
  const auto c = center_crop(grid, 4, 7);  // top (9-4)/2 = 2, left (12-7)/2 = 2
  ASSERT_EQ(c.sizes(), (std::vector<int64_t>{3, 4, 7}));
  EXPECT_EQ(c[1][0][0].item<float>(), 202.0f);
  EXPECT_EQ(c[2][3][6].item<float>(), 508.0f);
  EXPECT_EQ(center_crop(grid, 9, 12)[0][8][11].item<float>(), 811.0f);
  EXPECT_EQ(center_crop(grid.unsqueeze(0), 6, 10)[0][0][0][0].item<float>(), 101.0f);
  // Offsets of 3.5: down to 3 (torchvision's own center_crop would round to 4).
  EXPECT_EQ(center_crop(grid, 2, 5)[0][0][0].item<float>(), 303.0f);
  expect_error([&] { center_crop(grid, 10, 4); }, {"10 x 4", "9 x 12"});
}

TEST(ImageNormalize, PerChannel) {
  auto x = at::ones({2, 3, 2, 2});
  const auto y = normalize(x, {0.5, 0.25, 0.0}, {0.5, 0.25, 2.0});
  EXPECT_FLOAT_EQ(y[1][0][1][1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(y[0][1][0][0].item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(y[1][2][0][1].item<float>(), 0.5f);
  expect_error([&] { normalize(x, {0, 0, 0}, {1, 0, 1}); }, {"std"});
  expect_error([&] { normalize(at::ones({4, 2, 2}), {0, 0, 0}, {1, 1, 1}); }, {"[4, 2, 2]"});
}

TEST(ImageNormalize, RefusesIntegerInput) {
  // In uint8, mean and std would truncate (0.5 -> 0) and the arithmetic wrap: silent garbage.
  expect_error(
      [] {
        normalize(at::full({3, 2, 2}, 128, at::kByte), {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5});
      },
      {"normalize", "floating-point", "Byte"});
  expect_error(
      [] {
        normalize(at::ones({1, 3, 2, 2}, at::kInt), {0, 0, 0}, {1, 1, 1});
      },
      {"floating-point", "Int"});
  const auto d = normalize(at::full({3, 1, 1}, 0.75, at::kDouble), {0.5, 0.5, 0.5}, {0.25, 0.5, 1});
  EXPECT_EQ(d.scalar_type(), at::kDouble);
  EXPECT_DOUBLE_EQ(d[1][0][0].item<double>(), 0.5);
}

// ---------------------------------------------------------------- preprocessing

// Max |ours - want| over [3, S, S] vs [1, 3, S, S], in 8-bit levels (un-normalised by std).
double max_level_diff(const at::Tensor& ours, const at::Tensor& want, const ImagePreprocess& pp) {
  EXPECT_EQ(want.sizes(), (std::vector<int64_t>{1, 3, pp.size, pp.size}));
  EXPECT_EQ(ours.sizes(), (std::vector<int64_t>{3, pp.size, pp.size}));
  const auto sd = at::tensor(std::vector<double>(pp.std.begin(), pp.std.end())).view({3, 1, 1});
  return ((ours.to(at::kDouble) - want[0].to(at::kDouble)).abs() * sd * 255).max().item<double>();
}

TEST(ImagePreprocessGolden, ClipMatchesTransformers) {
  // transformers 5 CLIPImageProcessor (torchvision backend) resizes the uint8 image with the same
  // ATen 8-bit antialiased kernel we use, center-crops with offsets rounded down and normalises
  // (as x * 1/(255 std) - mean/std in float32): only float round-off may separate us.
  SafetensorsFile hf(kDir / "preprocess.safetensors");
  const Image src = load_image(kDir / "src_64x48.png");
  Image portrait = src;  // transposed: 48 wide, 64 high
  std::swap(portrait.width, portrait.height);
  for (int64_t y = 0; y < 64; ++y)
    for (int64_t x = 0; x < 48; ++x)
      for (int c = 0; c < 3; ++c)
        portrait.pixels[(y * 48 + x) * 3 + c] = src.pixels[(x * 64 + y) * 3 + c];
  struct Case {
    const char* key;
    const Image* img;
    ImagePreprocess pp;
  };
  for (const auto& c : {Case{"clip_s32", &src, ImagePreprocess::clip(32)},
                        Case{"clip_s40", &src, ImagePreprocess::clip(40)},
                        Case{"clip_portrait_s32", &portrait, ImagePreprocess::clip(32)},
                        Case{"siglip_s32", &src, ImagePreprocess::siglip(32)}}) {
    SCOPED_TRACE(c.key);
    const auto ours = c.pp(*c.img);
    const auto want = hf.tensor(c.key);
    EXPECT_LE(max_level_diff(ours, want, c.pp), 0.01);
  }
}

TEST(ImagePreprocessGolden, ClipCloseToPilBackend) {
  // CLIPImageProcessorPil resizes with PIL: fixed-point weights where ATen's 8-bit kernel uses its
  // own, so a value may land one level away (see ImageResize.Uint8MatchesPilWithinOneLevel).
  SafetensorsFile hf(kDir / "preprocess.safetensors");
  const auto pp = ImagePreprocess::clip(32);
  const auto ours = pp(load_image(kDir / "src_64x48.png"));
  EXPECT_LE(max_level_diff(ours, hf.tensor("clip_pil_s32"), pp), 1.0001);
}

// An image whose value changes smoothly but visibly from one pixel to the next.
Image wavy(int64_t w, int64_t h) {
  Image img;
  img.width = w;
  img.height = h;
  img.pixels.resize(static_cast<size_t>(w * h * 3));
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t c = 0; c < 3; ++c)
        img.pixels[static_cast<size_t>((y * w + x) * 3 + c)] = static_cast<uint8_t>(
            std::lround(128 + 60 * std::sin(0.3 * static_cast<double>(x + y) + 2.0 * c)));
  return img;
}

Image transposed(const Image& src) {
  Image t = src;
  std::swap(t.width, t.height);
  for (int64_t y = 0; y < src.height; ++y)
    for (int64_t x = 0; x < src.width; ++x)
      for (int64_t c = 0; c < 3; ++c)
        t.pixels[static_cast<size_t>((x * t.width + y) * 3 + c)] =
            src.pixels[static_cast<size_t>((y * src.width + x) * 3 + c)];
  return t;
}

TEST(ImagePreprocessCrop, ExtremeAspectRatiosAreBoundedAndCloseToTheExactCrop) {
  // "crop" resizes the whole image to shorter side = size, then crops. For 80000 x 3 at 32 that
  // is 32 x 853333 (27 M pixels, over ImagePreprocess::kExactCropPixels but still affordable
  // here): the bounded path, which resizes only the span under the crop, stays within one
  // output pixel's shift of the exact result.
  const auto pp = ImagePreprocess::clip(32);
  const Image wide = wavy(80000, 3);
  ASSERT_GT(int64_t{32} * (32 * 80000 / 3), ImagePreprocess::kExactCropPixels);
  const Image tall = transposed(wide);
  for (const Image* img : {&wide, &tall}) {
    SCOPED_TRACE(std::to_string(img->width) + " x " + std::to_string(img->height));
    const auto x =
        hwc(*img).permute({2, 0, 1});  // [3, H, W] uint8, resized whole below (the exact way)
    const auto exact = normalize(
        center_crop(resize_shorter(x, 32, pp.resample, INT64_MAX), 32, 32).to(at::kFloat) / 255.0,
        pp.mean, pp.std);
    const auto ours = pp(*img);
    ASSERT_EQ(ours.sizes(), (std::vector<int64_t>{3, 32, 32}));
    const double diff = max_level_diff(ours, exact.unsqueeze(0), pp);
    EXPECT_LE(diff, 3.0);
  }
  // 1 x 1,000,000 and 1,000,000 x 1 pass the decoder's pixel limit; resized whole at 224 they
  // would take 224 x 224,000,000 pixels (150 GB). A plain colour must come out as that colour.
  const auto pp224 = ImagePreprocess::clip(224);
  for (auto [w, h] : std::vector<std::pair<int64_t, int64_t>>{{1, 1000000}, {1000000, 1}}) {
    SCOPED_TRACE(std::to_string(w) + " x " + std::to_string(h));
    Image plain;
    plain.width = w;
    plain.height = h;
    for (int64_t i = 0; i < w * h; ++i) plain.pixels.insert(plain.pixels.end(), {7, 100, 250});
    const auto out = pp224(plain);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, 224, 224}));
    const auto want =
        normalize(at::tensor({7.0f, 100.0f, 250.0f}).view({3, 1, 1}).expand({3, 224, 224}) / 255.0,
                  pp224.mean, pp224.std);
    EXPECT_LE(max_level_diff(out, want.unsqueeze(0), pp224), 1.0001);
  }
}

TEST(ImagePreprocessConfig, PresetsAndJson) {
  const auto clip = ImagePreprocess::clip();
  EXPECT_EQ(clip.size, 224);
  EXPECT_EQ(clip.mode, "crop");
  EXPECT_EQ(clip.resample, Resample::Bicubic);
  EXPECT_DOUBLE_EQ(clip.mean[0], 0.48145466);
  EXPECT_DOUBLE_EQ(clip.std[2], 0.27577711);
  const auto sig = ImagePreprocess::siglip(384);
  EXPECT_EQ(sig.size, 384);
  EXPECT_EQ(sig.mode, "squash");
  EXPECT_DOUBLE_EQ(sig.mean[1], 0.5);
  EXPECT_DOUBLE_EQ(sig.std[1], 0.5);
  const auto inet = ImagePreprocess::imagenet();
  EXPECT_EQ(inet.mode, "crop");
  EXPECT_DOUBLE_EQ(inet.mean[2], 0.406);
  EXPECT_DOUBLE_EQ(inet.std[0], 0.229);

  for (const auto& p : {clip, sig, inet}) {
    const auto q = ImagePreprocess::from_json(p.to_json(), "cfg.json");
    EXPECT_EQ(q.size, p.size);
    EXPECT_EQ(q.resample, p.resample);
    EXPECT_EQ(q.mode, p.mode);
    EXPECT_EQ(q.mean, p.mean);
    EXPECT_EQ(q.std, p.std);
  }
  const auto partial = ImagePreprocess::from_json({{"size", 64}, {"resample", "bilinear"}}, "c");
  EXPECT_EQ(partial.size, 64);
  EXPECT_EQ(partial.resample, Resample::Bilinear);
  EXPECT_EQ(partial.mode, "crop");

  using J = nlohmann::json;
  expect_error(
      [] {
        ImagePreprocess::from_json(J{{"sise", 3}}, "cfg.json");
      },
      {"cfg.json", "'sise'"});
  expect_error(
      [] {
        ImagePreprocess::from_json(J{{"resample", "lanczos"}}, "cfg.json");
      },
      {"cfg.json", "lanczos"});
  expect_error(
      [] {
        ImagePreprocess::from_json(J{{"mode", "pad"}}, "cfg.json");
      },
      {"cfg.json", "pad"});
  expect_error(
      [] {
        ImagePreprocess::from_json(J{{"size", 0}}, "cfg.json");
      },
      {"cfg.json", "size"});
  expect_error(
      [] {
        ImagePreprocess::from_json(J{{"size", "big"}}, "cfg.json");
      },
      {"cfg.json", "size"});
  expect_error(
      [] {
        ImagePreprocess::from_json(J{{"mean", {0.5, 0.5}}}, "cfg.json");
      },
      {"cfg.json", "mean", "3"});
  expect_error(
      [] {
        ImagePreprocess::from_json(J{{"std", {0.5, 0.0, 0.5}}}, "cfg.json");
      },
      {"cfg.json", "std", "positive"});
  expect_error([] { ImagePreprocess::from_json(J::array(), "cfg.json"); }, {"cfg.json", "object"});
}

TEST(ImagePreprocessBatch, LoadBatch) {
  const auto pp = ImagePreprocess::siglip(16);
  const auto b = load_batch({kDir / "src_64x48.png", kDir / "grey_24x17.png"}, pp);
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  EXPECT_TRUE(at::equal(b[1], pp(load_image(kDir / "grey_24x17.png"))));
  // Grey image: three equal channels before normalisation (same mean / std here).
  EXPECT_TRUE(at::equal(b[1][0], b[1][2]));
  EXPECT_EQ(load_batch({}, pp).sizes(), (std::vector<int64_t>{0, 3, 16, 16}));
  expect_error(
      [&] {
        load_batch({kDir / "src_64x48.png", kDir / "gone.png"}, pp);
      },
      {"gone.png", "not found"});
}

TEST_F(ImageFiles, LoadBatchOfAVeryTallImageIsBounded) {
  // Through the file path: 2 x 300,000 would be 224 x 33,600,000 resized whole.
  Image tall = test_pattern(2, 300000);
  save_png(dir_ / "tall.png", tall);
  const auto pp = ImagePreprocess::clip(224);
  const auto b = load_batch({dir_ / "tall.png"}, pp);
  ASSERT_EQ(b.sizes(), (std::vector<int64_t>{1, 3, 224, 224}));
  EXPECT_TRUE(at::isfinite(b).all().item<bool>());
}

}  // namespace
