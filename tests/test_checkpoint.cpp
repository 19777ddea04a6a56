#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace mambavl;
using namespace mambavl::io;
namespace fs = std::filesystem;

namespace {

struct SubImpl : torch::nn::Module {
  SubImpl() {
    proj = register_module("proj", torch::nn::Linear(3, 2));
    scale = register_buffer("scale", at::ones({2}));
    steps = register_buffer("steps", at::zeros({1}, at::kLong));
  }
  torch::nn::Linear proj{nullptr};
  at::Tensor scale, steps;
};
TORCH_MODULE(Sub);

// Parameters/buffers: fc.weight [3,4], fc.bias [3], sub.proj.weight [2,3], sub.proj.bias [2],
// sub.scale [2] (float buffer), sub.steps [1] (int64 buffer).
struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    sub = register_module("sub", Sub());
  }
  torch::nn::Linear fc{nullptr};
  Sub sub{nullptr};
};
TORCH_MODULE(Net);

// Fills every parameter and buffer with seeded values, so two nets differ.
void randomize(torch::nn::Module& m, uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard g;
  for (auto& p : m.named_parameters()) p.value().copy_(at::randn(p.value().sizes()));
  for (auto& b : m.named_buffers()) {
    if (at::isFloatingType(b.value().scalar_type()))
      b.value().copy_(at::randn(b.value().sizes()));
    else
      b.value().copy_(at::randint(1000, b.value().sizes(), at::kLong));
  }
}

std::map<std::string, at::Tensor> state(const torch::nn::Module& m) {
  std::map<std::string, at::Tensor> s;
  for (const auto& p : m.named_parameters()) s[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers()) s[b.key()] = b.value().detach().clone();
  return s;
}

void expect_same_state(const std::map<std::string, at::Tensor>& a,
                       const std::map<std::string, at::Tensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    EXPECT_TRUE(at::equal(v, b.at(k))) << k;
  }
}

using testing_util::expect_error;

class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / ("mvl_ckpt_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path sub(const std::string& name) const {
    fs::path p = dir_ / name;
    fs::create_directories(p);
    return p;
  }
  static void write(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::binary) << text;
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  static bool has_temp_files(const fs::path& d) {
    for (const auto& e : fs::directory_iterator(d))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
    return false;
  }

  // Two shards (a, b | c) and an index mapping them, in folder `name`.
  fs::path sharded(const std::string& name) const {
    fs::path d = sub(name);
    save_safetensors(d / "model-00001-of-00002.safetensors",
                     {{"a", at::arange(3, at::kFloat)}, {"b", at::ones({2, 2}, at::kBFloat16)}});
    save_safetensors(d / "model-00002-of-00002.safetensors", {{"c", at::arange(4, at::kLong)}});
    write_json_file(d / "model.safetensors.index.json",
                    {{"metadata", {{"total_size", 40}}},
                     {"weight_map",
                      {{"a", "model-00001-of-00002.safetensors"},
                       {"b", "model-00001-of-00002.safetensors"},
                       {"c", "model-00002-of-00002.safetensors"}}}});
    return d;
  }

  fs::path dir_;
};

}  // namespace

// ---- JSON files ------------------------------------------------------------------------------

TEST_F(Checkpoint, ReadJsonFile) {
  write(dir_ / "c.json", R"({"d_model": 16, "name": "x"})");
  nlohmann::json j = read_json_file(dir_ / "c.json");
  EXPECT_EQ(j["d_model"], 16);
  EXPECT_EQ(j["name"], "x");
}

TEST_F(Checkpoint, ReadJsonErrorNamesFileLineAndColumn) {
  //                 line 1  line 2       line 3: '?' is column 8
  write(dir_ / "config.json", "{\n  \"a\": 1,\n  \"b\": ?\n}\n");
  expect_error([&] { read_json_file(dir_ / "config.json"); }, {"config.json:3:8:", "invalid JSON"});
  write(dir_ / "trunc.json", "{\n  \"a\": [1, 2");
  expect_error([&] { read_json_file(dir_ / "trunc.json"); }, {"trunc.json:2:", "invalid JSON"});
  write(dir_ / "empty.json", "");
  expect_error([&] { read_json_file(dir_ / "empty.json"); }, {"empty.json:1:1:"});
}

TEST_F(Checkpoint, ReadJsonDeepNestingIsAnErrorNotACrash) {
  write(dir_ / "deep.json", std::string(300000, '[') + std::string(300000, ']'));
  expect_error([&] { read_json_file(dir_ / "deep.json"); }, {"deep.json", "nested deeper than"});
  write(dir_ / "ok.json", std::string(100, '[') + std::string(100, ']'));
  EXPECT_TRUE(read_json_file(dir_ / "ok.json").is_array());
}

TEST_F(Checkpoint, ReadJsonMissingFile) {
  expect_error([&] { read_json_file(dir_ / "absent.json"); }, {"absent.json", "not found"});
}

TEST_F(Checkpoint, WriteJsonAndTextAtomically) {
  fs::path p = dir_ / "out.json";
  write(p, "old contents that are longer than the new ones ...................");
  nlohmann::json j = {{"a", {1, 2, 3}}, {"b", "\u00e9"}};
  write_json_file(p, j);
  EXPECT_EQ(read_json_file(p), j);
  EXPECT_EQ(read(p).back(), '\n');
  write_text_file_atomic(dir_ / "t.txt", "hello\n");
  write_text_file_atomic(dir_ / "t.txt", "bye");
  EXPECT_EQ(read(dir_ / "t.txt"), "bye");
  EXPECT_FALSE(has_temp_files(dir_));
  expect_error([&] { write_text_file_atomic(dir_ / "missing/t.txt", "x"); }, {"t.txt"});
}

// ---- CheckpointFolder ------------------------------------------------------------------------

TEST_F(Checkpoint, SingleFileFolder) {
  fs::path d = sub("single");
  save_safetensors(d / "model.safetensors", {{"w", at::arange(6, at::kHalf).reshape({2, 3})}});
  CheckpointFolder c(d);
  EXPECT_EQ(c.dir(), d);
  EXPECT_EQ(c.names(), std::vector<std::string>{"w"});
  EXPECT_TRUE(c.contains("w"));
  EXPECT_EQ(c.shape("w"), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c.dtype("w"), "F16");
  EXPECT_EQ(c.file_of("w").filename(), "model.safetensors");
  EXPECT_TRUE(at::equal(c.tensor("w"), at::arange(6, at::kHalf).reshape({2, 3})));
  expect_error([&] { c.tensor("v"); }, {d.string(), "'v'"});
  expect_error([&] { c.shape("v"); }, {d.string(), "'v'"});
}

TEST_F(Checkpoint, ShardedFolder) {
  fs::path d = sharded("sharded");
  CheckpointFolder c(d);
  EXPECT_EQ(c.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(c.file_of("a").filename(), "model-00001-of-00002.safetensors");
  EXPECT_EQ(c.file_of("c").filename(), "model-00002-of-00002.safetensors");
  EXPECT_EQ(c.dtype("b"), "BF16");
  EXPECT_TRUE(at::equal(c.tensor("a"), at::arange(3, at::kFloat)));
  EXPECT_TRUE(at::equal(c.tensor("c"), at::arange(4, at::kLong)));
}

TEST_F(Checkpoint, ShardedFolderMissingShard) {
  fs::path d = sharded("missing_shard");
  fs::remove(d / "model-00002-of-00002.safetensors");
  expect_error([&] { CheckpointFolder c(d); },
               {"model.safetensors.index.json", "model-00002-of-00002.safetensors",
                "does not exist", "'c'"});
}

TEST_F(Checkpoint, ShardedFolderTensorListedButAbsent) {
  fs::path d = sharded("absent");
  nlohmann::json idx = read_json_file(d / "model.safetensors.index.json");
  idx["weight_map"]["ghost"] = "model-00002-of-00002.safetensors";
  write_json_file(d / "model.safetensors.index.json", idx);
  expect_error([&] { CheckpointFolder c(d); },
               {"model.safetensors.index.json", "tensor 'ghost'",
                "model-00002-of-00002.safetensors", "does not contain it"});
}

TEST_F(Checkpoint, ShardedFolderDuplicateTensor) {
  fs::path d = sharded("dup");
  save_safetensors(d / "model-00002-of-00002.safetensors",
                   {{"c", at::arange(4, at::kLong)}, {"a", at::zeros({3})}});
  expect_error([&] { CheckpointFolder c(d); },
               {d.string(), "tensor 'a'", "two shards", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"});
}

TEST_F(Checkpoint, ShardedFolderBadIndex) {
  fs::path d = sharded("bad_index");
  write_json_file(d / "model.safetensors.index.json", {{"metadata", nlohmann::json::object()}});
  expect_error([&] { CheckpointFolder c(d); },
               {"model.safetensors.index.json", "missing \"weight_map\""});
  write_json_file(d / "model.safetensors.index.json",
                  {{"weight_map", {{"a", "../escape.safetensors"}}}});
  expect_error([&] { CheckpointFolder c(d); }, {"'../escape.safetensors'", "not a file inside"});
  write_json_file(d / "model.safetensors.index.json", {{"weight_map", {{"a", 3}}}});
  expect_error([&] { CheckpointFolder c(d); }, {"weight_map entry for 'a'"});
  write(d / "model.safetensors.index.json", "{\"weight_map\": {\n\"a\": }");
  expect_error([&] { CheckpointFolder c(d); }, {"model.safetensors.index.json:2:"});
}

TEST_F(Checkpoint, CorruptShardNamesShardFile) {
  fs::path d = sharded("corrupt");
  write(d / "model-00002-of-00002.safetensors", std::string("\x04\0\0\0\0\0\0\0nope", 12));
  expect_error([&] { CheckpointFolder c(d); },
               {"model-00002-of-00002.safetensors", "not valid JSON"});
}

TEST_F(Checkpoint, EmptyFolder) {
  fs::path d = sub("empty");
  expect_error([&] { CheckpointFolder c(d); },
               {d.string(), "no model.safetensors or model.safetensors.index.json"});
}

TEST_F(Checkpoint, PytorchBinOnlyFolder) {
  fs::path d = sub("bin");
  write(d / "pytorch_model.bin", "PK\x03\x04 not really a zip");
  write(d / "config.json", "{}");
  expect_error([&] { CheckpointFolder c(d); }, {d.string(), "no model.safetensors",
                                                "pytorch_model.bin", "not supported", "convert"});
}

TEST_F(Checkpoint, NotAFolder) {
  expect_error([&] { CheckpointFolder c(dir_ / "nowhere"); }, {"nowhere", "not a directory"});
}

// ---- load_module / save_module ----------------------------------------------------------------

TEST_F(Checkpoint, ModuleRoundTrip) {
  Net a, b;
  randomize(*a, 1);
  randomize(*b, 2);
  fs::path d = dir_ / "net";  // save_module creates the folder
  save_module(*a, d);
  EXPECT_FALSE(has_temp_files(d));
  CheckpointFolder c(d);
  EXPECT_EQ(c.names(), (std::vector<std::string>{"fc.bias", "fc.weight", "sub.proj.bias",
                                                 "sub.proj.weight", "sub.scale", "sub.steps"}));
  EXPECT_EQ(SafetensorsFile(d / "model.safetensors").metadata().at("format"), "pt");
  load_module(*b, c);
  expect_same_state(state(*a), state(*b));
  EXPECT_TRUE(b->fc->weight.requires_grad());  // still a trainable parameter
}

TEST_F(Checkpoint, ModuleLoadsFromShards) {
  Net a, b;
  randomize(*a, 3);
  randomize(*b, 4);
  std::vector<std::pair<std::string, at::Tensor>> s1, s2;
  nlohmann::json wm = nlohmann::json::object();
  for (const auto& [k, v] : state(*a)) {
    const bool first = k.rfind("fc.", 0) == 0;
    (first ? s1 : s2).emplace_back(k, v);
    wm[k] = first ? "s1.safetensors" : "s2.safetensors";
  }
  fs::path d = sub("shards");
  save_safetensors(d / "s1.safetensors", s1);
  save_safetensors(d / "s2.safetensors", s2);
  write_json_file(d / "model.safetensors.index.json", {{"weight_map", wm}});
  load_module(*b, CheckpointFolder(d));
  expect_same_state(state(*a), state(*b));
}

TEST_F(Checkpoint, ModuleMissingTensor) {
  Net a, b;
  randomize(*a, 5);
  randomize(*b, 6);
  auto s = state(*a);
  s.erase("sub.proj.bias");
  fs::path d = sub("missing");
  save_safetensors(d / "model.safetensors", {s.begin(), s.end()});
  const auto before = state(*b);
  expect_error([&] { load_module(*b, CheckpointFolder(d)); },
               {d.string(), "1 missing tensor(s)", "'sub.proj.bias'"});
  expect_same_state(before, state(*b));  // a failed load changes nothing

  LoadOptions opt;
  opt.allow_missing = [](const std::string& n) { return n == "sub.proj.bias"; };
  load_module(*b, CheckpointFolder(d), opt);
  EXPECT_TRUE(at::equal(b->fc->weight, a->fc->weight));
  EXPECT_TRUE(at::equal(b->sub->proj->bias, before.at("sub.proj.bias")));  // kept
}

TEST_F(Checkpoint, ModuleMissingListIsTruncated) {
  struct Many : torch::nn::Module {
    Many() {
      for (int i = 0; i < 13; ++i) register_parameter(mambavl::detail::cat("p", i), at::zeros({1}));
    }
  } m;
  fs::path d = sub("many");
  save_safetensors(d / "model.safetensors", {{"p0", at::ones({1})}});
  expect_error([&] { load_module(m, CheckpointFolder(d)); },
               {"12 missing tensor(s)", "'p1'", "... and 2 more"});
}

TEST_F(Checkpoint, ModuleExtraTensor) {
  Net a, b;
  randomize(*a, 7);
  auto s = state(*a);
  s["rotary.inv_freq"] = at::ones({4});
  fs::path d = sub("extra");
  save_safetensors(d / "model.safetensors", {s.begin(), s.end()});
  expect_error([&] { load_module(*b, CheckpointFolder(d)); },
               {d.string(), "1 unexpected tensor(s)", "'rotary.inv_freq'"});
  LoadOptions opt;
  opt.ignore_extra = [](const std::string& k) { return k.find("inv_freq") != std::string::npos; };
  load_module(*b, CheckpointFolder(d), opt);
  expect_same_state(state(*a), state(*b));
}

TEST_F(Checkpoint, ModuleWrongShape) {
  Net a, b;
  auto s = state(*a);
  s["sub.proj.weight"] = at::zeros({3, 2});
  fs::path d = sub("shape");
  save_safetensors(d / "model.safetensors", {s.begin(), s.end()});
  const auto before = state(*b);
  expect_error([&] { load_module(*b, CheckpointFolder(d)); },
               {(d / "model.safetensors").string() +
                ": tensor 'sub.proj.weight' has shape [3, 2] but the model expects [2, 3] for "
                "parameter 'sub.proj.weight'"});
  expect_same_state(before, state(*b));
}

TEST_F(Checkpoint, ModuleBf16StoredIntoFp32) {
  Net a, b;
  randomize(*a, 8);
  randomize(*b, 9);
  fs::path d = dir_ / "bf16";
  save_module(*a, d, {}, at::kBFloat16);
  CheckpointFolder c(d);
  EXPECT_EQ(c.dtype("fc.weight"), "BF16");
  EXPECT_EQ(c.dtype("sub.steps"), "I64");  // integer buffers are not converted
  load_module(*b, c);
  EXPECT_EQ(b->fc->weight.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(b->fc->weight, a->fc->weight.to(at::kBFloat16).to(at::kFloat)));
  EXPECT_FALSE(at::equal(b->fc->weight, a->fc->weight));  // really went through bf16
  EXPECT_TRUE(at::equal(b->sub->steps, a->sub->steps));
}

TEST_F(Checkpoint, ModuleIntegerStoredForFloatParameter) {
  Net a, b;
  auto s = state(*a);
  s["fc.bias"] = at::arange(3, at::kInt);
  fs::path d = sub("int");
  save_safetensors(d / "model.safetensors", {s.begin(), s.end()});
  expect_error([&] { load_module(*b, CheckpointFolder(d)); },
               {"model.safetensors", "tensor 'fc.bias'", "I32", "floating point"});
  s["fc.bias"] = at::zeros({3});
  s["sub.steps"] = at::zeros({1});
  save_safetensors(d / "model.safetensors", {s.begin(), s.end()});
  expect_error([&] { load_module(*b, CheckpointFolder(d)); },
               {"tensor 'sub.steps'", "F32", "Long"});
}

TEST_F(Checkpoint, ModuleRenameAndKeysFor) {
  Net a, b;
  randomize(*a, 10);
  randomize(*b, 11);
  fs::path d = dir_ / "renamed";
  save_module(*a, d, [](const std::string& n) { return "model." + n; });
  CheckpointFolder c(d);
  EXPECT_TRUE(c.contains("model.fc.weight"));
  EXPECT_FALSE(c.contains("fc.weight"));
  expect_error([&] { load_module(*b, c); }, {"missing", "unexpected", "'model.fc.weight'"});
  LoadOptions opt;
  opt.keys_for = [](const std::string& n) { return std::vector<std::string>{n, "model." + n}; };
  load_module(*b, c, opt);
  expect_same_state(state(*a), state(*b));
}

TEST_F(Checkpoint, SaveModuleRenameCanDropAndMustStayUnique) {
  Net a;
  fs::path d = dir_ / "drop";
  save_module(*a, d, [](const std::string& n) { return n.rfind("sub.", 0) == 0 ? "" : n; });
  EXPECT_EQ(CheckpointFolder(d).names(), (std::vector<std::string>{"fc.bias", "fc.weight"}));
  expect_error([&] { save_module(*a, d, [](const std::string&) { return std::string("same"); }); },
               {"model.safetensors", "'same' given twice"});
  EXPECT_EQ(CheckpointFolder(d).names().size(), 2u);  // old file intact
}
