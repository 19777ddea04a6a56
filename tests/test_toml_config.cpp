// Training config files (train/toml_config.h): TOML -> JSON, --set overrides, unknown keys, and
// a whole trainer config read from a TOML file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_run.h"
#include "common/error.h"
#include "test_util.h"
#include "train/toml_config.h"
#include "train/trainer.h"

using namespace mambavl;
using mambavl::testing_util::expect_error;
namespace fs = std::filesystem;

namespace {

class TomlConfig : public testing_util::TempDirTest {
 protected:
  TomlConfig() : TempDirTest("mambavl_toml_") {}
  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir / name;
    std::ofstream(p) << text;
    return p;
  }
};

const char* kRun = R"(# a two-stage VLM run
[model]
preset = "mamba-vl-tiny"

[train]
batch_size = 8
grad_accum = 2
seed = 3
precision = "auto"
no_decay = ["norm", "bias"]

[[train.stages]]
name = "align"
steps = 100
lr = 1e-3
freeze = ["vision_tower", "language_model"]

[[train.stages]]
name = "tune"
epochs = 1.5
lr = 2e-5
warmup_ratio = 0.03
)";

}  // namespace

TEST_F(TomlConfig, LoadsTablesArraysAndScalars) {
  const auto j = train::load_toml(write("run.toml", kRun));
  EXPECT_EQ(j.at("model").at("preset"), "mamba-vl-tiny");
  const auto& t = j.at("train");
  EXPECT_TRUE(t.at("batch_size").is_number_integer());
  EXPECT_EQ(t.at("batch_size"), 8);
  EXPECT_EQ(t.at("no_decay"), nlohmann::json({"norm", "bias"}));
  ASSERT_TRUE(t.at("stages").is_array());
  ASSERT_EQ(t.at("stages").size(), 2u);
  EXPECT_TRUE(t.at("stages")[0].at("lr").is_number_float());
  EXPECT_DOUBLE_EQ(t.at("stages")[0].at("lr").get<double>(), 1e-3);
  EXPECT_EQ(t.at("stages")[0].at("freeze")[1], "language_model");
  EXPECT_DOUBLE_EQ(t.at("stages")[1].at("epochs").get<double>(), 1.5);
  const auto bools = train::parse_toml("a = true\nb = false\n[x.y]\nz = -4\n", "inline");
  EXPECT_EQ(bools, nlohmann::json::parse(R"({"a": true, "b": false, "x": {"y": {"z": -4}}})"));

  // The whole trainer config from the file.
  const auto c = train::TrainerConfig::from_json(t, "run.toml", "train");
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_EQ(c.grad_accum, 2);
  EXPECT_EQ(c.precision, "auto");
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[0].name, "align");
  EXPECT_EQ(c.stages[0].steps, 100);
  EXPECT_EQ(c.stages[0].freeze, (std::vector<std::string>{"vision_tower", "language_model"}));
  EXPECT_DOUBLE_EQ(c.stages[1].lr, 2e-5);
}

TEST_F(TomlConfig, SyntaxErrorsNameFileLineAndColumn) {
  const fs::path p = write("bad.toml", "[train]\nbatch_size = 8\nlr = = 3\n");
  expect_error([&] { train::load_toml(p); }, {"bad.toml:3:", "TOML syntax error"});
  const fs::path dup = write("dup.toml", "a = 1\na = 2\n");
  expect_error([&] { train::load_toml(dup); }, {"dup.toml:2:"});
  const fs::path date = write("date.toml", "[train]\nstart = 1979-05-27\n");
  expect_error([&] { train::load_toml(date); }, {"date.toml", "train.start", "dates"});
  expect_error([&] { train::load_toml(dir / "missing.toml"); }, {"missing.toml", "not found"});
}

TEST_F(TomlConfig, OverridesSetNestedValues) {
  nlohmann::json j = train::load_toml(write("run.toml", kRun));
  train::apply_overrides(j,
                         {"train.batch_size=16", "train.stages.1.lr=5e-5",
                          "train.stages.0.freeze=[\"vision_tower\"]", "train.stages.0.name=stage1",
                          "train.progress = false", "model.preset=\"x y\"", "new.table.key=3"});
  EXPECT_EQ(j.at("train").at("batch_size"), 16);
  EXPECT_DOUBLE_EQ(j.at("train").at("stages")[1].at("lr").get<double>(), 5e-5);
  EXPECT_EQ(j.at("train").at("stages")[0].at("freeze"), nlohmann::json({"vision_tower"}));
  EXPECT_EQ(j.at("train").at("stages")[0].at("name"), "stage1");  // a bare word is a string
  EXPECT_EQ(j.at("train").at("progress"), false);
  EXPECT_EQ(j.at("model").at("preset"), "x y");
  EXPECT_EQ(j.at("new").at("table").at("key"), 3);
  // The overridden config still parses, with the new values.
  const auto c = train::TrainerConfig::from_json(j.at("train"), "run.toml", "train");
  EXPECT_EQ(c.batch_size, 16);
  EXPECT_DOUBLE_EQ(c.stages[1].lr, 5e-5);

  expect_error([&] { train::apply_overrides(j, {"train.batch_size"}); },
               {"--set 'train.batch_size'", "key=value"});
  expect_error([&] { train::apply_overrides(j, {"train.stages.5.lr=1"}); },
               {"train.stages.5.lr=1", "index 5", "out of range"});
  expect_error([&] { train::apply_overrides(j, {"train.batch_size.x=1"}); },
               {"train.batch_size.x=1", "'train.batch_size' is a value"});
  expect_error([&] { train::apply_overrides(j, {"train.no_decay=[1,"}); },
               {"train.no_decay=[1,", "not valid TOML"});
  expect_error([&] { train::apply_overrides(j, {"train..x=1"}); }, {"empty component"});
}

TEST_F(TomlConfig, UnknownKeysAreErrorsNamingFileAndKey) {
  nlohmann::json j = train::load_toml(write("run.toml", kRun));
  j["train"]["stages"][1]["lrr"] = 1;
  expect_error([&] { train::TrainerConfig::from_json(j.at("train"), "run.toml", "train"); },
               {"run.toml", "unknown key", "'train.stages.1.lrr'", "warmup_ratio"});
  expect_error(
      [&] {
        train::check_keys(nlohmann::json{{"a", 1}, {"b", 2}, {"c", 3}}, {"a"}, "f.toml", "sec");
      },
      {"f.toml", "'sec.b'", "'sec.c'", "allowed in 'sec': a"});
  expect_error([&] { train::check_keys(nlohmann::json(3), {"a"}, "f.toml", "sec"); },
               {"f.toml", "'sec' must be a table"});
  train::check_keys(nlohmann::json{{"a", 1}}, {"a", "b"}, "f.toml", "");  // fine
  // Wrong types name the key too.
  nlohmann::json t = train::load_toml(write("run2.toml", kRun)).at("train");
  t["stages"][0]["steps"] = 1.5;
  expect_error([&] { train::TrainerConfig::from_json(t, "run.toml", "train"); },
               {"'train.stages.0.steps'", "integer"});
}
