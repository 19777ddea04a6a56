// Hostile and careless input to the I/O layer and the command line (issue 10, classes 3 and 4):
// special files where files are expected (FIFO, /dev/zero, a directory), files over their size
// cap, numbers that do not parse or overflow, option errors, bytes that would break the error
// line. Each CLI case runs under a time and address-space limit (tests/cli_run.h) and must give
// exit status 1 and exactly one printable "error:" line naming the file or option.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include "cli_run.h"
#include "common/error.h"
#include "common/parse.h"
#include "io/checkpoint.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "test_util.h"

using namespace mambavl;
namespace fs = std::filesystem;
using testing_util::CliRun;
using testing_util::expect_one_error_line;
using testing_util::run_cli_limited;

using mambavl::testing_util::error_of;

namespace {

class RobustIo : public testing_util::TempDirTest {
 protected:
  RobustIo() : TempDirTest("mambavl_robust_io_") {}
  // A copy of the mamba-tiny fixture folder (config.json + model.safetensors).
  fs::path model_copy(const std::string& name = "model") {
    const fs::path src = fs::path(MAMBAVL_FIXTURES_DIR) / "mamba-tiny";
    const fs::path m = dir / name;
    fs::create_directories(m);
    fs::copy_file(src / "config.json", m / "config.json");
    fs::copy_file(src / "model.safetensors", m / "model.safetensors");
    return m;
  }
  void write(const fs::path& p, const std::string& bytes) {
    std::ofstream f(p, std::ios::binary);
    f << bytes;
  }
  std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
};

}  // namespace

// ---- the library entry points -----------------------------------------------------------------

TEST_F(RobustIo, ReadFileRefusesSpecialFilesAndOversizedFiles) {
  const fs::path fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // A FIFO with no writer: the open must not block (it would hang the test forever).
  std::string m = error_of([&] { io::read_file(fifo, 1 << 20, "config"); });
  EXPECT_NE(m.find(fifo.string()), std::string::npos) << m;
  EXPECT_NE(m.find("FIFO"), std::string::npos) << m;
  m = error_of([&] { io::read_file("/dev/zero", 1 << 20, "config"); });
  EXPECT_NE(m.find("/dev/zero: is a character device"), std::string::npos) << m;
  m = error_of([&] { io::read_file(dir, 1 << 20, "config"); });
  EXPECT_NE(m.find("is a directory, expected a config file"), std::string::npos) << m;
  m = error_of([&] { io::read_file(dir / "missing.json", 1 << 20, "config"); });
  EXPECT_NE(m.find("missing.json: config file not found"), std::string::npos) << m;

  write(dir / "big.json", std::string(5000, ' '));
  m = error_of([&] { io::read_file(dir / "big.json", 4096, "config"); });
  EXPECT_NE(m.find("big.json: config file is 5000 bytes, over the limit of 4096"),
            std::string::npos)
      << m;
  EXPECT_EQ(io::read_file(dir / "big.json", 5000).size(), 5000u);

  EXPECT_FALSE(io::regular_file_exists(dir / "missing.json"));
  EXPECT_TRUE(io::regular_file_exists(dir / "big.json"));
  m = error_of([&] { io::regular_file_exists(dir, "tokenizer"); });
  EXPECT_NE(m.find("is a directory, expected a tokenizer file"), std::string::npos) << m;
}

TEST_F(RobustIo, ParsersOpenOnlyRegularFiles) {
  const fs::path fifo = dir / "model.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::string m = error_of([&] { io::SafetensorsFile f(fifo); });
  EXPECT_NE(m.find("model.safetensors: is a FIFO"), std::string::npos) << m;
  m = error_of([&] { io::read_json_file("/dev/zero"); });
  EXPECT_NE(m.find("/dev/zero: is a character device"), std::string::npos) << m;
  m = error_of([&] { io::Tokenizer::from_file(dir); });
  EXPECT_NE(m.find("is a directory"), std::string::npos) << m;
  fs::create_directories(dir / "tok" / "tokenizer.json");
  // A folder named tokenizer.json is not "no tokenizer": say what is there.
  m = error_of([&] { io::Tokenizer::find_in(dir / "tok"); });
  EXPECT_NE(m.find("tokenizer.json: is a directory, expected a tokenizer file"),
            std::string::npos)
      << m;
  // A JSON file over the cap is refused before it is read.
  write(dir / "config.json", "{\"a\": \"" + std::string(3000, 'x') + "\"}");
  m = error_of([&] { io::read_json_file(dir / "config.json", 1024); });
  EXPECT_NE(m.find("over the limit of 1024"), std::string::npos) << m;
}

TEST(RobustParse, Int64WithRangeNamesTheField) {
  EXPECT_EQ(parse_int64("42", "--x"), 42);
  EXPECT_EQ(parse_int64("+7", "--x"), 7);
  EXPECT_EQ(parse_int64("-9223372036854775808", "--x"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(parse_int64("9223372036854775807", "--x"), std::numeric_limits<int64_t>::max());
  EXPECT_EQ(error_of([] { parse_int64("-", "--ids"); }), "--ids: '-' is not an integer");
  EXPECT_EQ(error_of([] { parse_int64("", "--ids"); }), "--ids: '' is not an integer");
  EXPECT_EQ(error_of([] { parse_int64("12a", "--ids"); }), "--ids: '12a' is not an integer");
  EXPECT_EQ(error_of([] { parse_int64("9223372036854775808", "--ids"); }),
            "--ids: '9223372036854775808' is out of range (-9223372036854775808 to "
            "9223372036854775807)");
  EXPECT_EQ(error_of([] { parse_int64("-1", "--ids", 0); }),
            "--ids: '-1' is out of range (0 to 9223372036854775807)");
  EXPECT_EQ(error_of([] { parse_int64("5", "--n", 1, 4); }), "--n: '5' is out of range (1 to 4)");
}

TEST(RobustParse, PrintableKeepsUtf8AndEscapesTheRest) {
  EXPECT_EQ(printable("plain text"), "plain text");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe4\xb8\xad"), "caf\xc3\xa9 \xe4\xb8\xad");  // é, 中 kept
  EXPECT_EQ(printable("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(printable("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");       // not UTF-8
  EXPECT_EQ(printable("\xc3"), "\\xc3");                 // truncated sequence
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");         // overlong '/'
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a surrogate
  EXPECT_EQ(printable("\xc2\x85"), "\\xc2\\x85");         // C1 control NEL
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
}

// ---- the command line -------------------------------------------------------------------------

TEST_F(RobustIo, CliFifoAsConfigOrWeightsFailsAtOnce) {
  fs::path m = model_copy();
  fs::remove(m / "config.json");
  ASSERT_EQ(::mkfifo((m / "config.json").c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  CliRun r = run_cli_limited("info --model " + q(m), 30);
  expect_one_error_line(r, {(m / "config.json").string(), "FIFO"});
  // Time is bounded by run_cli_limited (a hang is killed after 30 s: exit 137, not 1).
  (void)t0;

  m = model_copy("model2");
  fs::remove(m / "model.safetensors");
  ASSERT_EQ(::mkfifo((m / "model.safetensors").c_str(), 0600), 0);
  r = run_cli_limited("generate --model " + q(m) + " --ids 1,2 --max-new-tokens 2", 30);
  expect_one_error_line(r, {(m / "model.safetensors").string(), "FIFO"});
}

TEST_F(RobustIo, CliDevZeroAndDirectoriesAsFiles) {
  fs::path m = model_copy();
  fs::remove(m / "config.json");
  fs::create_symlink("/dev/zero", m / "config.json");
  CliRun r = run_cli_limited("info --model " + q(m), 30);
  expect_one_error_line(r, {(m / "config.json").string(), "character device"});

  m = model_copy("model2");
  fs::remove(m / "config.json");
  fs::create_directories(m / "config.json");
  r = run_cli_limited("info --model " + q(m), 30);
  expect_one_error_line(r, {(m / "config.json").string(), "is a directory"});

  m = model_copy("model3");
  fs::create_directories(m / "tokenizer.json");
  r = run_cli_limited("generate --model " + q(m) + " --prompt hi --max-new-tokens 2", 30);
  expect_one_error_line(r, {(m / "tokenizer.json").string(), "is a directory"});

  const fs::path tok = fs::path(MAMBAVL_FIXTURES_DIR) / "tokenizer" / "bpe-small" / "tokenizer.json";
  r = run_cli_limited("tokenize --tokenizer " + q(tok) + " --file " + q(dir), 30);
  expect_one_error_line(r, {dir.string(), "is a directory"});
  r = run_cli_limited("tokenize --tokenizer " + q(dir) + " --text hi", 30);
  expect_one_error_line(r, {dir.string(), "is a directory"});
}

TEST_F(RobustIo, CliNumbersAndOptionErrorsAreOneLineExitOne) {
  const fs::path m = model_copy();
  CliRun r = run_cli_limited("generate --model " + q(m) + " --ids - --max-new-tokens 1", 30);
  expect_one_error_line(r, {"--ids", "'-' is not an integer"});
  r = run_cli_limited(
      "generate --model " + q(m) + " --ids 1,99999999999999999999 --max-new-tokens 1", 30);
  expect_one_error_line(r, {"--ids", "out of range"});
  // Option-parser errors: exit 1 (not CLI11's 104-114), "error:" first, no 309-digit bound.
  r = run_cli_limited("generate --model " + q(m) + " --ids 1 --max-new-tokens -5", 30);
  expect_one_error_line(r, {"--max-new-tokens", "must be >= 0"});
  EXPECT_LT(r.out.size(), 200u) << r.out;
  r = run_cli_limited("generate --model " + q(m) + " --ids 1 --threads 100000", 30);
  expect_one_error_line(r, {"--threads", "1024"});
  r = run_cli_limited("generate --model " + q(m) + " --ids 1 --no-such-option", 30);
  expect_one_error_line(r, {"--no-such-option", "mambavl generate --help"});
  r = run_cli_limited("eval-classifier --model " + q(m) + " --synthetic 1e11", 30);
  expect_one_error_line(r, {"--synthetic"});
  r = run_cli_limited("no-such-command", 30);
  expect_one_error_line(r, {"no-such-command"});
  // Help is not an error.
  r = run_cli_limited("generate --help", 30);
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(RobustIo, CliErrorLineEscapesNewlinesAndRawBytes) {
  // A class folder whose name holds a newline, with an "image" of raw non-UTF-8 bytes and CRs.
  const fs::path data = dir / "data";
  const fs::path cls = data / "bad\nname";
  fs::create_directories(cls);
  fs::create_directories(data / "other");
  write(cls / "x.png", std::string("\x89PNG\r\n\x1a\n\xff\xfe\r\r junk \x1b[2J", 22));
  fs::copy_file(fs::path(MAMBAVL_FIXTURES_DIR) / "images" / "photo_64x48.jpg",
                data / "other" / "y.jpg");
  CliRun r = run_cli_limited("train-classifier --arch mambaout --data " + q(data) + " --out " +
                                 q(dir / "out") + " --epochs 1",
                             60);
  expect_one_error_line(r, {"bad\\nname"});
  for (char c : r.out) {
    const auto u = static_cast<unsigned char>(c);
    EXPECT_TRUE(u == '\n' || (u >= 0x20 && u < 0x7f)) << "unprintable byte " << int(u) << ": "
                                                      << r.out;
  }
}
