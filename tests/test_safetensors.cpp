#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::io;
namespace fs = std::filesystem;

namespace {

// A fresh folder per test, removed afterwards.
class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / ("mvl_st_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path file(const std::string& name) const { return dir_ / name; }

  // Writes u64 `n` (little-endian), then `header`, then `data`.
  fs::path raw(const std::string& name, uint64_t n, const std::string& header,
               const std::string& data = "") const {
    fs::path p = file(name);
    std::ofstream out(p, std::ios::binary);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
    return p;
  }
  // Same, with n = header.size().
  fs::path raw(const std::string& name, const std::string& header,
               const std::string& data = "") const {
    return raw(name, header.size(), header, data);
  }

  std::vector<std::string> leftover_temp_files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".tmp.") != std::string::npos)
        out.push_back(e.path().filename().string());
    return out;
  }

  fs::path dir_;
};

// Runs fn, which must throw mambavl::Error whose message contains every one of `parts`.
using testing_util::expect_error;

// Opening `path` must fail with a message naming the file and containing `parts`.
void expect_open_error(const fs::path& path, std::initializer_list<std::string> parts) {
  expect_error([&] { SafetensorsFile f(path); }, {path.filename().string()});
  expect_error([&] { SafetensorsFile f(path); }, parts);
}

std::string bytes_of(const at::Tensor& t) {
  return std::string(static_cast<const char*>(t.const_data_ptr()), t.nbytes());
}

}  // namespace

TEST_F(Safetensors, RoundTripEveryDtypeExact) {
  at::manual_seed(7);
  std::vector<std::pair<std::string, at::Tensor>> ts = {
      {"f64", at::randn({3, 5}, at::kDouble)},
      {"f32", at::randn({4, 2, 3}, at::kFloat)},
      {"f16", at::randn({7}, at::kFloat).to(at::kHalf)},
      {"bf16", at::randn({2, 9}, at::kFloat).to(at::kBFloat16)},
      {"i64", at::tensor({std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0},
                          std::numeric_limits<int64_t>::max()})},
      {"i32", at::tensor({std::numeric_limits<int32_t>::min(), -5, 0, 123456789})},
      {"i16", at::arange(-300, 300, 37, at::kShort)},
      {"i8", at::arange(-128, 128, 1, at::kChar)},
      {"u8", at::arange(0, 256, 1, at::kInt).to(at::kByte).reshape({16, 16})},
      {"bool", at::tensor({1, 0, 0, 1, 1}, at::kByte).to(at::kBool)},
  };
  fs::path p = file("all.safetensors");
  save_safetensors(p, ts);
  SafetensorsFile f(p);
  EXPECT_EQ(f.names().size(), ts.size());
  const std::map<std::string, std::string> want_dtype = {
      {"f64", "F64"}, {"f32", "F32"}, {"f16", "F16"}, {"bf16", "BF16"}, {"i64", "I64"},
      {"i32", "I32"}, {"i16", "I16"}, {"i8", "I8"},   {"u8", "U8"},     {"bool", "BOOL"}};
  for (const auto& [name, t] : ts) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(f.contains(name));
    EXPECT_EQ(f.entry(name).dtype, want_dtype.at(name));
    EXPECT_EQ(f.entry(name).shape, t.sizes().vec());
    at::Tensor r = f.tensor(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type());
    EXPECT_EQ(r.sizes(), t.sizes());
    EXPECT_EQ(bytes_of(r), bytes_of(t));  // bit exact, NaN-safe
  }
}

TEST_F(Safetensors, TensorIsOwnedAndOutlivesFile) {
  fs::path p = file("own.safetensors");
  save_safetensors(p, {{"x", at::arange(6, at::kFloat)}});
  at::Tensor t;
  {
    SafetensorsFile f(p);
    t = f.tensor("x");
  }
  fs::remove(p);
  t.add_(1);  // writable, independent of the (gone) mapping
  EXPECT_TRUE(at::equal(t, at::arange(1, 7, at::kFloat)));
}

TEST_F(Safetensors, NonContiguousInputIsWrittenInLogicalOrder) {
  at::Tensor base = at::arange(12, at::kFloat).reshape({3, 4});
  fs::path p = file("nc.safetensors");
  save_safetensors(p, {{"t", base.t()}, {"s", base.index({at::indexing::Slice(), 1})}});
  SafetensorsFile f(p);
  EXPECT_TRUE(at::equal(f.tensor("t"), base.t().contiguous()));
  EXPECT_TRUE(at::equal(f.tensor("s"), at::tensor({1.f, 5.f, 9.f})));
}

TEST_F(Safetensors, MetadataRoundTrip) {
  fs::path p = file("meta.safetensors");
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "h\u00e9llo \"quoted\"\n"}};
  save_safetensors(p, {{"x", at::ones({2})}}, meta);
  SafetensorsFile f(p);
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.names(), std::vector<std::string>{"x"});
}

TEST_F(Safetensors, EmptyTensorsAndScalars) {
  fs::path p = file("empty.safetensors");
  save_safetensors(p, {{"scalar", at::scalar_tensor(2.5, at::kFloat)},
                       {"empty", at::empty({0}, at::kFloat)},
                       {"empty3", at::empty({2, 0, 3}, at::kHalf)},
                       {"iscalar", at::scalar_tensor(-9, at::kLong)}});
  SafetensorsFile f(p);
  at::Tensor s = f.tensor("scalar");
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<float>(), 2.5f);
  EXPECT_EQ(f.entry("scalar").shape, std::vector<int64_t>{});
  EXPECT_EQ(f.tensor("iscalar").item<int64_t>(), -9);
  EXPECT_EQ(f.tensor("empty").sizes(), at::IntArrayRef({0}));
  at::Tensor e3 = f.tensor("empty3");
  EXPECT_EQ(e3.sizes(), at::IntArrayRef({2, 0, 3}));
  EXPECT_EQ(e3.scalar_type(), at::kHalf);
  EXPECT_EQ(f.entry("empty3").begin, f.entry("empty3").end);
}

TEST_F(Safetensors, NoTensorsAtAll) {
  fs::path p = file("none.safetensors");
  save_safetensors(p, {});
  SafetensorsFile f(p);
  EXPECT_TRUE(f.names().empty());
  EXPECT_TRUE(f.metadata().empty());
}

TEST_F(Safetensors, WriterLayoutHeaderPaddedAndTensorsAligned) {
  fs::path p = file("layout.safetensors");
  save_safetensors(p, {{"a", at::ones({3}, at::kByte)},
                       {"b", at::ones({1}, at::kDouble)},
                       {"c", at::ones({3}, at::kHalf)},
                       {"d", at::ones({1}, at::kFloat)}});
  std::ifstream in(p, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(all[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_GE(all.size(), 8 + n);
  const std::string header = all.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  const size_t close = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos)
      << "padding must be spaces";
  SafetensorsFile f(p);
  uint64_t total = 0;
  for (const auto& name : f.names()) {
    const auto& e = f.entry(name);
    const auto size = at::elementSize(scalar_type_from_safetensors(e.dtype));
    EXPECT_EQ(e.begin % size, 0u) << name;
    total += e.end - e.begin;
  }
  EXPECT_EQ(all.size(), 8 + n + total);  // no gaps, nothing trailing
}

TEST_F(Safetensors, ReadsUnalignedSpans) {
  // A U8 first pushes the F32 and F64 to odd offsets; the reader must copy, not reinterpret.
  std::string data = "\x07";
  float fv[2] = {1.5f, -2.25f};
  double dv = 3.125;
  data.append(reinterpret_cast<const char*>(fv), 8);
  data.append(reinterpret_cast<const char*>(&dv), 8);
  fs::path p = raw("unaligned.safetensors",
                   R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                   R"("f":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},)"
                   R"("d":{"dtype":"F64","shape":[],"data_offsets":[9,17]}} )",
                   data);
  SafetensorsFile f(p);
  EXPECT_EQ(f.tensor("u").item<uint8_t>(), 7);
  EXPECT_TRUE(at::equal(f.tensor("f"), at::tensor({1.5f, -2.25f})));
  EXPECT_EQ(f.tensor("d").item<double>(), 3.125);
}

// Written by the Python `safetensors` library (dev/make_safetensors_fixture.py); the formulas
// below are the ones in that script.
TEST_F(Safetensors, ReadsFileWrittenByReferenceLibrary) {
  SafetensorsFile f(fs::path(MAMBAVL_FIXTURES_DIR) / "safetensors/reference.safetensors");
  EXPECT_EQ(f.names(), (std::vector<std::string>{"bf16", "f16", "f32", "i64", "scalar"}));
  EXPECT_EQ(f.metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"source", "mambavl-fixture"}}));
  at::Tensor f32 = f.tensor("f32");
  ASSERT_EQ(f32.scalar_type(), at::kFloat);
  ASSERT_EQ(f32.sizes(), at::IntArrayRef({3, 4}));
  for (int i = 0; i < 12; ++i) EXPECT_EQ(f32.view({-1})[i].item<float>(), i * 0.25f - 1.0f) << i;

  at::Tensor f16 = f.tensor("f16");
  ASSERT_EQ(f16.scalar_type(), at::kHalf);
  ASSERT_EQ(f16.sizes(), at::IntArrayRef({2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(f16.view({-1})[i].item<float>(), i * 0.5f - 1.5f) << i;

  at::Tensor bf16 = f.tensor("bf16");
  ASSERT_EQ(bf16.scalar_type(), at::kBFloat16);
  ASSERT_EQ(bf16.sizes(), at::IntArrayRef({8}));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(bf16[i].item<float>(), (i - 4) * 0.125f) << i;

  at::Tensor i64 = f.tensor("i64");
  ASSERT_EQ(i64.scalar_type(), at::kLong);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(i64[i].item<int64_t>(), i * 1000000007 - 2) << i;

  at::Tensor s = f.tensor("scalar");
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.item<float>(), 3.5f);
}

TEST_F(Safetensors, AbsentTensorNamesFileAndTensor) {
  fs::path p = file("x.safetensors");
  save_safetensors(p, {{"a", at::ones({1})}});
  SafetensorsFile f(p);
  EXPECT_FALSE(f.contains("b"));
  expect_error([&] { f.entry("b"); }, {"x.safetensors", "'b'"});
  expect_error([&] { f.tensor("b"); }, {"x.safetensors", "'b'"});
}

TEST_F(Safetensors, DtypeNames) {
  EXPECT_EQ(scalar_type_from_safetensors("BF16"), at::kBFloat16);
  EXPECT_EQ(scalar_type_from_safetensors("BOOL"), at::kBool);
  EXPECT_EQ(safetensors_dtype(at::kHalf), "F16");
  EXPECT_EQ(safetensors_dtype(at::kChar), "I8");
  expect_error([] { scalar_type_from_safetensors("F8_E4M3"); }, {"F8_E4M3"});
  expect_error([] { safetensors_dtype(at::kComplexFloat); }, {"ComplexFloat"});
}

// ---- hostile / corrupt files: every one a mambavl::Error naming file and problem --------------

TEST_F(Safetensors, MissingFile) { expect_open_error(file("nope.safetensors"), {"not found"}); }

TEST_F(Safetensors, EmptyAndTinyFiles) {
  fs::path p = file("empty.safetensors");
  std::ofstream(p, std::ios::binary).close();
  expect_open_error(p, {"0 bytes", "too small"});
  fs::path q = file("tiny.safetensors");
  std::ofstream(q, std::ios::binary) << std::string("\x02\x00\x00", 3);
  expect_open_error(q, {"3 bytes", "too small"});
}

TEST_F(Safetensors, HeaderCutShort) {
  // Says 100 header bytes, has 20.
  fs::path p = raw("cut.safetensors", 100, R"({"a":{"dtype":"F32",)");
  expect_open_error(p, {"header length 100", "exceeds the file size"});
}

TEST_F(Safetensors, HeaderLengthHuge) {
  fs::path p = raw("huge.safetensors", uint64_t{1} << 63, "{}");
  expect_open_error(p, {"header length 9223372036854775808", "exceeds the file size"});
  fs::path q = raw("max.safetensors", std::numeric_limits<uint64_t>::max(), "{}");
  expect_open_error(q, {"exceeds the file size"});
}

TEST_F(Safetensors, HeaderLengthOverLimit) {
  // A sparse file big enough to hold a 100 MB + 8 header: the limit, not the size, must trip.
  const uint64_t n = 100ull * 1000 * 1000 + 8;
  fs::path p = raw("big.safetensors", n, "{");
  fs::resize_file(p, 8 + n);
  expect_open_error(p, {"exceeds the limit"});
}

TEST_F(Safetensors, HeaderNotJson) {
  expect_open_error(raw("nj.safetensors", "{not json}"), {"not valid JSON"});
  expect_open_error(raw("nj2.safetensors", R"({"a":{"dtype":"F32")"), {"not valid JSON"});
  expect_open_error(raw("nj3.safetensors", std::string("{\0}", 3)), {"not valid JSON"});
}

TEST_F(Safetensors, HeaderNotObject) {
  expect_open_error(raw("arr.safetensors", "[1, 2]  "), {"must be a JSON object", "array"});
  expect_open_error(raw("num.safetensors", "42"), {"must be a JSON object", "number"});
}

TEST_F(Safetensors, DeeplyNestedHeaderDoesNotCrash) {
  const size_t depth = 200000;
  std::string h(depth, '[');
  h.append(depth, ']');
  expect_open_error(raw("deep.safetensors", h), {"header: JSON nested deeper than 16 levels"});
  std::string o = R"({"a":)";
  o.append(depth, '[').append(depth, ']').append("}");
  expect_open_error(raw("deep2.safetensors", o), {"JSON nested deeper than 16 levels"});
}

TEST_F(Safetensors, EntryNotObjectOrMissingField) {
  expect_open_error(raw("e1.safetensors", R"({"w":[1]})"), {"tensor 'w'", "JSON object"});
  expect_open_error(raw("e2.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})", "abcd"),
                    {"tensor 'w'", "missing field 'data_offsets'"});
  expect_open_error(raw("e3.safetensors", R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "abcd"),
                    {"tensor 'w'", "missing field 'dtype'"});
  expect_open_error(
      raw("e4.safetensors", R"({"w":{"dtype":3,"shape":[1],"data_offsets":[0,4]}})", "abcd"),
      {"tensor 'w'", "dtype must be a string"});
}

TEST_F(Safetensors, UnknownDtype) {
  expect_open_error(raw("f8.safetensors",
                        R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", "abcd"),
                    {"tensor 'w'", "unsupported dtype 'F8_E4M3'"});
  expect_open_error(raw("c64.safetensors",
                        R"({"w":{"dtype":"C64","shape":[],"data_offsets":[0,8]}})", "abcdefgh"),
                    {"tensor 'w'", "unsupported dtype 'C64'"});
}

TEST_F(Safetensors, BadShape) {
  expect_open_error(
      raw("neg.safetensors", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd"),
      {"tensor 'w'", "negative dimension -1"});
  expect_open_error(raw("frac.safetensors",
                        R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd"),
                    {"tensor 'w'", "shape", "non-negative integers", "1.5"});
  expect_open_error(
      raw("str.safetensors", R"({"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}})", "abcd"),
      {"tensor 'w'", "non-negative integers"});
  expect_open_error(
      raw("obj.safetensors", R"({"w":{"dtype":"F32","shape":4,"data_offsets":[0,4]}})", "abcd"),
      {"tensor 'w'", "shape must be an array"});
  expect_open_error(
      raw("big.safetensors",
          R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,4]}})", "abcd"),
      {"tensor 'w'", "does not fit in int64"});
}

TEST_F(Safetensors, ShapeProductOverflow) {
  // 2^32 * 2^32 elements: the product wraps to 0 in 64 bits, which would match an empty span.
  expect_open_error(
      raw("ovf.safetensors",
          R"({"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"),
      {"tensor 'w'", "overflow"});
  // 2^62 elements fit, 2^62 * 4 bytes do not.
  expect_open_error(
      raw("ovf2.safetensors",
          R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})"),
      {"tensor 'w'", "overflow"});
}

TEST_F(Safetensors, SpanSizeMismatch) {
  fs::path p =
      raw("model.safetensors",
          R"({"backbone.norm_f.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})",
          std::string(12, '\0'));
  expect_open_error(p, {"model.safetensors: tensor 'backbone.norm_f.weight': shape [4] x F32 = 16 "
                        "bytes but data_offsets span 12 bytes"});
}

TEST_F(Safetensors, BadOffsets) {
  expect_open_error(raw("oor.safetensors",
                        R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", "abcdefgh"),
                    {"tensor 'w'", "out of range", "8 bytes"});
  expect_open_error(raw("rev.safetensors",
                        R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", "abcdefgh"),
                    {"tensor 'w'", "begin > end"});
  expect_open_error(
      raw("neg.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "abcd"),
      {"tensor 'w'", "non-negative integers"});
  expect_open_error(
      raw("one.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "abcd"),
      {"tensor 'w'", "data_offsets must be an array [begin, end]"});
  // end near 2^64: must not wrap around in the range check.
  expect_open_error(raw("wrap.safetensors",
                        R"({"w":{"dtype":"U8","shape":[4],)"
                        R"("data_offsets":[18446744073709551611,18446744073709551615]}})",
                        "abcd"),
                    {"tensor 'w'", "out of range"});
}

TEST_F(Safetensors, OverlappingSpans) {
  expect_open_error(raw("ov.safetensors",
                        R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(12, '\0')),
                    {"overlap", "'a'", "'b'"});
  // The overlap is with a span that is not the immediate predecessor (an empty span between).
  expect_open_error(raw("ov2.safetensors",
                        R"({"a":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},)"
                        R"("e":{"dtype":"U8","shape":[0],"data_offsets":[5,5]},)"
                        R"("c":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                        std::string(10, '\0')),
                    {"overlap", "'a'", "'c'"});
  // Identical spans.
  expect_open_error(raw("ov3.safetensors",
                        R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                        std::string(4, '\0')),
                    {"overlap"});
}

TEST_F(Safetensors, BadMetadata) {
  expect_open_error(raw("m1.safetensors", R"({"__metadata__":{"format":1}})"),
                    {"__metadata__", "'format'", "must be a string"});
  expect_open_error(raw("m2.safetensors", R"({"__metadata__":["pt"]})"),
                    {"__metadata__ must be an object"});
  expect_open_error(raw("m3.safetensors", R"({"__metadata__":{"a":{"b":"c"}}})"),
                    {"__metadata__", "'a'", "must be a string"});
}

TEST_F(Safetensors, BoolBytesMustBeZeroOrOne) {
  fs::path p = raw("bool.safetensors", R"({"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                   std::string("\x01\x00\x02", 3));
  SafetensorsFile f(p);
  expect_error([&] { f.tensor("b"); }, {"bool.safetensors", "tensor 'b'", "byte value 2"});
}

// ---- writer ----------------------------------------------------------------------------------

TEST_F(Safetensors, SaveOverExistingFileLeavesNoTempFile) {
  fs::path p = file("over.safetensors");
  save_safetensors(p, {{"old", at::zeros({100})}});
  save_safetensors(p, {{"new", at::ones({3})}});
  SafetensorsFile f(p);
  EXPECT_EQ(f.names(), std::vector<std::string>{"new"});
  EXPECT_TRUE(leftover_temp_files().empty());
}

TEST_F(Safetensors, FailedSaveKeepsOldFileAndLeavesNoTempFile) {
  fs::path p = file("keep.safetensors");
  save_safetensors(p, {{"old", at::arange(4, at::kFloat)}});
  // Rejected before anything is written: an unsupported dtype / a repeated name.
  expect_error(
      [&] {
        save_safetensors(p, {{"c", at::zeros({2}, at::kComplexFloat)}});
      },
      {"keep.safetensors", "tensor 'c'", "ComplexFloat"});
  expect_error(
      [&] {
        save_safetensors(p, {{"a", at::zeros({1})}, {"a", at::zeros({1})}});
      },
      {"keep.safetensors", "'a' given twice"});
  expect_error(
      [&] {
        save_safetensors(p, {{"__metadata__", at::zeros({1})}});
      },
      {"keep.safetensors", "reserved"});
  SafetensorsFile f(p);
  EXPECT_TRUE(at::equal(f.tensor("old"), at::arange(4, at::kFloat)));
  EXPECT_TRUE(leftover_temp_files().empty());
}

TEST_F(Safetensors, FailedRenameRemovesTempFile) {
  // The target is a non-empty folder: everything is written, then the rename fails.
  fs::path p = file("target.safetensors");
  fs::create_directories(p / "inside");
  expect_error(
      [&] {
        save_safetensors(p, {{"x", at::ones({8})}});
      },
      {"target.safetensors", "cannot rename"});
  EXPECT_TRUE(leftover_temp_files().empty());
  EXPECT_TRUE(fs::is_directory(p / "inside"));
}

TEST_F(Safetensors, SaveIntoMissingFolderFails) {
  fs::path p = file("no/such/dir/x.safetensors");
  expect_error(
      [&] {
        save_safetensors(p, {{"x", at::ones({1})}});
      },
      {"x.safetensors", "cannot create temporary file"});
}
