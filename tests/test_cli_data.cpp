// make-data end to end: the written scenes read back (LLaVA JSON, grounding JSONL, PNGs,
// tokenizer) equal the in-memory generator; retrieval JSONL likewise; bad options give one
// `error:` line and exit code 1.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli_run.h"
#include "data/retrieval.h"
#include "data/scenes.h"
#include "data/vl_data.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/tokenizer.h"

using namespace mambavl;
using namespace mambavl::data;
namespace fs = std::filesystem;
using testing_util::CliRun;

namespace {

CliRun run(const std::string& args) { return testing_util::run_cli(args); }

class CliData : public testing_util::TempDirTest {
 protected:
  CliData() : TempDirTest("mambavl_clidata_") {}
};

void expect_error(const CliRun& r, std::initializer_list<std::string> parts) {
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("error:"), std::string::npos) << r.out;
  for (const auto& p : parts)
    EXPECT_NE(r.out.find(p), std::string::npos) << "missing '" << p << "' in: " << r.out;
}

}  // namespace

TEST_F(CliData, ScenesRoundTrip) {
  const fs::path out = dir / "scenes";
  CliRun r =
      run("make-data scenes --n 13 --seed 5 --image-size 48 --max-objects 4 --clutter --out " +
          out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("wrote 13 scenes (5 caption, 4 vqa, 4 grounding)"), std::string::npos)
      << r.out;
  SceneOptions opt;
  opt.image_size = 48;
  opt.max_objects = 4;
  opt.clutter = true;
  const SceneDataset mem(13, 5, opt);

  LlavaJsonDataset llava(out / "data.json");
  ASSERT_EQ(llava.size(), mem.size());
  const auto rows = io::read_json_file(out / "data.json");
  for (int64_t i = 0; i < mem.size(); ++i) {
    const VLExample want = mem.example(i);
    EXPECT_EQ(llava.example(i), want) << i;
    const auto imgs = llava.images(i);
    ASSERT_EQ(imgs.size(), 1u);
    EXPECT_EQ(imgs[0].pixels, mem.images(i)[0].pixels) << i;  // PNG is lossless
    EXPECT_EQ(llava.image_paths(i)[0], out / "images" / (want.id + ".png"));
    // The human turn carries the SPEC §2.3 template, the gpt turn the target.
    const auto& conv = rows[static_cast<size_t>(i)]["conversations"];
    EXPECT_EQ(conv[0]["value"], "<image>\n" + task_prompt(want.task, want.question));
    EXPECT_EQ(conv[1]["value"], want.answers[0]);
  }
  GroundingJsonlDataset g(out / "grounding.jsonl");
  ASSERT_EQ(g.size(), 4);
  for (int64_t k = 0; k < g.size(); ++k) {
    const int64_t i = 3 * k + 2;  // tasks cycle caption, vqa, grounding
    VLExample want = mem.example(i);
    EXPECT_EQ(g.example(k), want) << k;
    EXPECT_EQ(g.images(k)[0].pixels, mem.images(i)[0].pixels);
  }
  // The tokenizer covers every text.
  const io::Tokenizer tok = io::Tokenizer::from_file(out / "tokenizer.json");
  ASSERT_TRUE(tok.eos_id());
  EXPECT_EQ(tok.id_to_token(*tok.eos_id()), "<|endoftext|>");
  const int64_t unk = *tok.unk_id();
  for (int64_t i = 0; i < mem.size(); ++i) {
    const VLExample e = mem.example(i);
    for (const auto& t : e.answers)
      for (int64_t id : tok.encode(t)) EXPECT_NE(id, unk) << t;
    for (int64_t id : tok.encode(task_prompt(e.task, e.question))) EXPECT_NE(id, unk);
  }
  EXPECT_EQ(tok.encode("###").size(), 1u);
  EXPECT_EQ(tok.encode("&&").size(), 1u);
  // No temp files left behind.
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();

  // Same seed again: byte-identical files.
  const fs::path again = dir / "again";
  ASSERT_EQ(
      run("make-data scenes --n 13 --seed 5 --image-size 48 --max-objects 4 --clutter --out " +
          again.string())
          .code,
      0);
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  for (const char* f :
       {"data.json", "grounding.jsonl", "tokenizer.json", "images/scene_000007.png"})
    EXPECT_EQ(slurp(out / f), slurp(again / f)) << f;
}

TEST_F(CliData, ScenesTaskSubset) {
  const fs::path out = dir / "s";
  CliRun r = run("make-data scenes --n 4 --seed 1 --tasks vqa --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  LlavaJsonDataset ds(out / "data.json");
  for (int64_t i = 0; i < ds.size(); ++i) EXPECT_EQ(ds.example(i).task, "vqa");
  std::ifstream g(out / "grounding.jsonl");
  std::string line;
  EXPECT_FALSE(std::getline(g, line));  // no grounding rows: an empty file
}

TEST_F(CliData, RetrievalRoundTrip) {
  const fs::path out = dir / "ret";
  CliRun r =
      run("make-data retrieval --n 10 --seed 3 --lengths 5,7 --query both --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  RetrievalVocab v;
  const auto ex = read_retrieval_jsonl(out / "retrieval.jsonl", v);
  ASSERT_EQ(ex.size(), 10u);
  for (int64_t i = 0; i < 10; ++i) {
    const int64_t n = i % 2 ? 7 : 5;
    const bool first = (i / 2) % 2 == 1;
    EXPECT_EQ(ex[static_cast<size_t>(i)], make_retrieval_example(3, i, n, first, v)) << i;
  }
  const io::Tokenizer tok = io::Tokenizer::from_file(out / "tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), v.vocab_size());
  EXPECT_EQ(tok.eos_id(), v.pad_id());

  // --length and --query before.
  ASSERT_EQ(run("make-data retrieval --n 3 --length 30 --query before --out " + out.string()).code,
            0);
  const auto ex2 = read_retrieval_jsonl(out / "retrieval.jsonl", v);
  ASSERT_EQ(ex2.size(), 3u);
  for (const auto& e : ex2) {
    EXPECT_EQ(e.tokens.size(), 30u);
    EXPECT_TRUE(e.query_first);
  }
}

TEST_F(CliData, ScenesBadOptions) {
  const std::string o = " --out " + (dir / "x").string();
  expect_error(run("make-data scenes --n 3 --tasks caption,poem" + o), {"unknown task \"poem\""});
  expect_error(run("make-data scenes --n 0" + o), {"--n must be in [1"});
  expect_error(run("make-data scenes --n 3 --max-objects 9" + o), {"max_objects"});
  expect_error(run("make-data scenes --n 3 --image-size 8" + o), {"image_size"});
  expect_error(run("make-data scenes --n 3 --tasks caption,," + o), {"empty item"});
  EXPECT_NE(run("make-data scenes --seed 1" + o).code, 0);  // --n is required
  EXPECT_FALSE(fs::exists(dir / "x" / "data.json"));
}

TEST_F(CliData, RetrievalBadOptionsAndHelp) {
  const std::string o = " --out " + (dir / "x").string();
  expect_error(run("make-data retrieval --n 3 --lengths 5,0" + o), {"length 0", "outside"});
  expect_error(run("make-data retrieval --n 3 --lengths 5,x" + o), {"'x' is not an integer"});
  expect_error(run("make-data retrieval --n 3 --length 700" + o), {"length 700"});
  expect_error(run("make-data retrieval --n 3 --max-n 50 --content 10" + o), {"content"});
  EXPECT_NE(run("make-data retrieval --n 3 --query sideways" + o).code, 0);
  EXPECT_FALSE(fs::exists(dir / "x" / "retrieval.jsonl"));
  const CliRun h = run("make-data --help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("scenes"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("retrieval"), std::string::npos) << h.out;
}
