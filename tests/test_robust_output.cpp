// Data the user saved (issue 10): a training command never silently replaces a used output folder
// (train-classifier and train --config refuse it unless --resume or --overwrite), --overwrite keeps
// the old model until the new run has written its own, train-classifier --resume continues a
// killed run bit for bit, and temporaries of killed runs (NAME.tmp.PID, .NAME.old.PID) are removed
// at the start when PID no longer exists, never when it does.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_run.h"
#include "io/atomic_file.h"

extern char** environ;

using namespace mambavl;
namespace fs = std::filesystem;
using testing_util::CliRun;
using testing_util::expect_one_error_line;

namespace {

constexpr int kTimeout = 300;  // seconds per CLI run (they take a few; sanitizer builds more)

CliRun cli(const std::string& args) { return testing_util::run_cli_limited(args, kTimeout); }
// For runs whose standard output is checked (run_cli_limited keeps standard error only).
CliRun cli_out(const std::string& args) { return testing_util::run_cli(args); }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// Every regular file below `dir` (relative path -> bytes) and every entry name (-> "").
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> m;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it) {
    const std::string rel = fs::relative(it->path(), dir).string();
    m[rel] = it->is_regular_file() && !it->is_symlink() ? slurp(it->path()) : "";
  }
  return m;
}

// Names of entries anywhere below `dir` that contain `part`.
std::vector<std::string> entries_with(const fs::path& dir, const std::string& part) {
  std::vector<std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it)
    if (it->path().filename().string().find(part) != std::string::npos)
      out.push_back(fs::relative(it->path(), dir).string());
  return out;
}

// The id of a process that has exited and been reaped.
long long dead_pid() {
  pid_t pid = 0;
  char* argv[] = {const_cast<char*>("true"), nullptr};
  EXPECT_EQ(posix_spawnp(&pid, "true", nullptr, nullptr, argv, environ), 0);
  int st = 0;
  EXPECT_EQ(waitpid(pid, &st, 0), pid);
  return pid;
}

// Starts `mambavl ARGS...` with MAMBAVL_TEST_PAUSE_IN_CHECKPOINT=step (the trainer pauses inside
// the write of that step's checkpoint, leaving `paused` in the temp folder), waits for the pause
// in `ck_dir`, SIGKILLs and reaps it. Returns the child's pid (0 when it never paused).
pid_t run_and_kill_in_checkpoint(const std::vector<std::string>& args, int step,
                                 const fs::path& ck_dir) {
  std::vector<std::string> env_s = {"MAMBAVL_TEST_PAUSE_IN_CHECKPOINT=" + std::to_string(step),
                                    "OMP_NUM_THREADS=1"};
  for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_s = {MAMBAVL_CLI};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, MAMBAVL_CLI, &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    ADD_FAILURE() << "cannot start " << MAMBAVL_CLI;
    return 0;
  }
  char name[32];
  std::snprintf(name, sizeof name, ".step-%08d.tmp.%d", step, static_cast<int>(pid));
  const fs::path paused = ck_dir / name / "paused";
  bool ok = false;
  for (int i = 0; i < kTimeout * 20 && !ok; ++i) {  // polls every 50 ms
    ok = fs::exists(paused);
    int st = 0;
    if (!ok && waitpid(pid, &st, WNOHANG) == pid) {
      ADD_FAILURE() << "the run ended before pausing in the step-" << step << " checkpoint";
      return 0;
    }
    if (!ok) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!ok) ADD_FAILURE() << "the run never paused in the step-" << step << " checkpoint";
  return ok ? pid : 0;
}

class RobustOutput : public testing_util::TempDirTest {
 protected:
  RobustOutput() : TempDirTest("mambavl_robust_out_") {}
};

// 48 synthetic images, a quarter held out: 36 training images, batch 16: 3 steps per epoch.
// (--epochs is given per run: 3 unless said.)
const std::string kClf =
    "train-classifier --arch mambaout --dims 8,16,24,32 --depths 1,1,1,1 --synthetic 48 "
    "--num-classes 4 --image-size 32 --batch 16 --val-fraction 0.25 --threads 1 --no-progress ";

std::vector<std::string> split_args(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::vector<nlohmann::json> log_lines(const fs::path& log) {
  std::vector<nlohmann::json> out;
  std::ifstream f(log);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST(TempNames, OnlyOurPatternWithAPid) {
  EXPECT_EQ(io::temp_name_pid("train_log.jsonl.tmp.123"), 123);
  EXPECT_EQ(io::temp_name_pid(".last.tmp.45"), 45);
  EXPECT_EQ(io::temp_name_pid(".step-00000006.tmp.999"), 999);
  EXPECT_EQ(io::temp_name_pid(".best.old.77"), 77);
  EXPECT_EQ(io::temp_name_pid(".0123456789abcdef.tmp.4242"), 4242);  // the run cache's
  for (const char* no : {"best.old.77", ".tmp.5", "..tmp.5", ".last.tmp.abc", ".last.tmp.",
                         ".last.tmp.012", ".last.tmp.-1", ".last.tmp.12345678901", ".last.tmp",
                         "last", ".last.tmp.12x", "step-00000006", "tmp.5"})
    EXPECT_EQ(io::temp_name_pid(no), -1) << no;
  EXPECT_TRUE(io::process_exists(getpid()));
  EXPECT_FALSE(io::process_exists(dead_pid()));
}

TEST_F(RobustOutput, RemoveStaleTempsKeepsLiveOnes) {
  const long long dead = dead_pid();
  ASSERT_FALSE(io::process_exists(dead));
  const std::string d = std::to_string(dead), me = std::to_string(getpid());
  const fs::path outside = dir / "outside.txt";
  std::ofstream(outside) << "kept";
  const fs::path run = dir / "run";
  fs::create_directories(run / (".last.tmp." + d));
  std::ofstream(run / (".last.tmp." + d) / "model.safetensors") << "half";
  std::ofstream(run / ("train_log.jsonl.tmp." + d)) << "half";
  fs::create_directories(run / (".best.old." + d));
  fs::create_directory_symlink(outside, run / (".final.tmp." + d));
  fs::create_directories(run / (".best.tmp." + me));  // this process: live
  fs::create_directories(run / ".last.tmp.1");        // pid 1 exists in every pid namespace
  fs::create_directories(run / "best");
  std::ofstream(run / ".last.tmp") << "no pid: not ours";
  std::ofstream(run / ("notes.old." + d)) << "not hidden: not ours";
  EXPECT_EQ(io::remove_stale_temps(run), 4);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(run)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{".best.tmp." + me, ".last.tmp", ".last.tmp.1", "best",
                                            "notes.old." + d}));
  EXPECT_EQ(slurp(outside), "kept");  // a symlink goes, never its target
  EXPECT_EQ(io::remove_stale_temps(dir / "missing"), 0);
}

TEST_F(RobustOutput, ClassifierRerunIsRefusedAndTheOldRunKept) {
  const fs::path out = dir / "run";
  CliRun r = cli(kClf + "--epochs 3 --seed 3 --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::exists(out / "best" / "model.safetensors"));
  ASSERT_TRUE(fs::exists(out / "trainer" / "checkpoints" / "step-00000009"));
  const auto before = snapshot(out);
  // Another run (another seed, fewer epochs: a worse model) into the same folder.
  r = cli(kClf + "--seed 4 --epochs 1 --out " + out.string());
  expect_one_error_line(r, {out.string(), "not empty", "--resume", "--overwrite"});
  EXPECT_EQ(snapshot(out), before);  // best/, last/, the log, trainer/: byte for byte
  // --resume and --overwrite together make no sense.
  r = cli(kClf + "--epochs 3 --seed 3 --resume --overwrite --out " + out.string());
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_EQ(snapshot(out), before);
  // A file as --out is refused too.
  std::ofstream(dir / "file") << "x";
  expect_one_error_line(cli(kClf + "--epochs 3 --out " + (dir / "file").string()),
                        {(dir / "file").string(), "not a folder"});
}

// init: a used --out is refused and left byte for byte; --overwrite swaps in a whole new folder
// (nothing of the old model, such as its tokenizer.json, stays mixed into the new one).
TEST_F(RobustOutput, InitRefusesAUsedFolderAndOverwriteReplacesItWhole) {
  const fs::path out = dir / "m";
  const std::string tok = std::string(MAMBAVL_FIXTURES_DIR) + "/tokenizer/bpe-small/tokenizer.json";
  CliRun r = cli("init --preset mamba-tiny --seed 1 --tokenizer " + tok + " --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_TRUE(fs::exists(out / "tokenizer.json"));
  const auto before = snapshot(out);
  r = cli("init --preset pythia-tiny --seed 2 --out " + out.string());
  expect_one_error_line(r, {out.string(), "not empty", "config.json", "--overwrite"});
  EXPECT_EQ(r.out.find("--resume"), std::string::npos) << r.out;  // nothing to continue
  EXPECT_EQ(snapshot(out), before);
  r = cli("init --preset pythia-tiny --seed 2 --overwrite --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(slurp(out / "config.json").find("gpt_neox"), std::string::npos);
  EXPECT_FALSE(fs::exists(out / "tokenizer.json"));  // the old model's: gone with it
  EXPECT_TRUE(entries_with(dir, ".tmp.").empty());
  EXPECT_TRUE(entries_with(dir, ".old.").empty());
  // An empty folder is fine without --overwrite.
  fs::create_directories(dir / "empty");
  EXPECT_EQ(cli("init --preset mamba-tiny --out " + (dir / "empty").string()).code, 0);
  EXPECT_TRUE(fs::exists(dir / "empty" / "model.safetensors"));
}

TEST_F(RobustOutput, ClassifierOverwriteReplacesTheRun) {
  const fs::path out = dir / "run";
  ASSERT_EQ(cli(kClf + "--epochs 3 --seed 3 --out " + out.string()).code, 0);
  const std::string old_best = slurp(out / "best" / "model.safetensors");
  std::ofstream(out / "notes.txt") << "mine";
  CliRun r = cli(kClf + "--seed 4 --epochs 2 --overwrite --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(slurp(out / "best" / "model.safetensors"), old_best);
  const auto lines = log_lines(out / "train_log.jsonl");
  ASSERT_EQ(lines.size(), 2u);  // the new run's epochs only
  EXPECT_EQ(lines.back().at("step"), 6);
  std::vector<std::string> cks;
  for (const auto& e : fs::directory_iterator(out / "trainer" / "checkpoints"))
    cks.push_back(e.path().filename().string());
  std::sort(cks.begin(), cks.end());
  EXPECT_EQ(cks, (std::vector<std::string>{"latest", "step-00000006"}));  // the old run's: gone
  EXPECT_EQ(slurp(out / "notes.txt"), "mine");                              // not ours: left alone
  EXPECT_TRUE(entries_with(out, ".tmp.").empty());
}

TEST_F(RobustOutput, ClassifierResumeAfterKillIsBitIdentical) {
  const fs::path full = dir / "full", out = dir / "killed";
  ASSERT_EQ(cli(kClf + "--epochs 3 --seed 3 --out " + full.string()).code, 0);
  // Killed inside the trainer checkpoint of step 6 (the end of epoch 2): step 3 is the newest
  // complete one; a half-written .step-00000006.tmp.<pid> stays behind.
  const pid_t pid = run_and_kill_in_checkpoint(
      split_args(kClf + "--epochs 3 --seed 3 --out " + out.string()), 6,
      out / "trainer" / "checkpoints");
  ASSERT_NE(pid, 0);
  const std::string stale = ".step-00000006.tmp." + std::to_string(pid);
  ASSERT_TRUE(fs::exists(out / "trainer" / "checkpoints" / stale));
  // A plain rerun is refused.
  expect_one_error_line(cli(kClf + "--epochs 3 --seed 3 --out " + out.string()),
                        {out.string(), "--resume", "--overwrite"});
  // --resume continues from step 3 and ends where the uninterrupted run ended, bit for bit.
  CliRun r = cli_out(kClf + "--epochs 3 --seed 3 --resume --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("trained 9 steps, 3 epochs"), std::string::npos) << r.out;
  for (const char* f : {"last/model.safetensors", "best/model.safetensors",
                        "trainer/checkpoints/step-00000009/optimizer.safetensors"})
    EXPECT_EQ(slurp(out / f), slurp(full / f)) << f;
  const auto a = log_lines(full / "train_log.jsonl"), b = log_lines(out / "train_log.jsonl");
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i)
    for (const char* k : {"epoch", "step", "train_loss", "train_top1", "lr", "val_top1"})
      EXPECT_EQ(a[i].at(k), b[i].at(k)) << k << " epoch " << i + 1;
  EXPECT_FALSE(fs::exists(out / "trainer" / "checkpoints" / stale));  // the killed run's temp
  EXPECT_TRUE(entries_with(out, ".tmp.").empty());
  // Resuming a finished run trains nothing and leaves the models as they are.
  const auto done = snapshot(out / "best");
  r = cli_out(kClf + "--epochs 3 --seed 3 --resume --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("trained 9 steps, 3 epochs"), std::string::npos) << r.out;
  EXPECT_EQ(snapshot(out / "best"), done);
  // Nothing to resume: one error line that says what to do.
  expect_one_error_line(cli(kClf + "--epochs 3 --resume --out " + (dir / "new").string()),
                        {(dir / "new").string(), "nothing to resume", "without --resume"});
  fs::create_directories(dir / "old" / "last");  // e.g. a run from before train-classifier --resume
  expect_one_error_line(cli(kClf + "--epochs 3 --resume --out " + (dir / "old").string()),
                        {(dir / "old").string(), "nothing to resume", "--overwrite"});
}

TEST_F(RobustOutput, StaleTempsAreRemovedAtTheStartLiveOnesKept) {
  const long long dead = dead_pid();
  ASSERT_FALSE(io::process_exists(dead));
  const std::string d = std::to_string(dead), me = std::to_string(getpid());
  // A folder holding only a killed run's temporaries counts as empty.
  const fs::path out = dir / "run";
  fs::create_directories(out / (".last.tmp." + d));
  std::ofstream(out / (".last.tmp." + d) / "model.safetensors") << "half";
  std::ofstream(out / ("train_log.jsonl.tmp." + d)) << "half";
  CliRun r = cli(kClf + "--epochs 1 --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(fs::exists(out / (".last.tmp." + d)));
  EXPECT_FALSE(fs::exists(out / ("train_log.jsonl.tmp." + d)));
  // In a used folder: the dead process's go, the live one's (this test's) stay.
  fs::create_directories(out / (".best.old." + d));
  fs::create_directories(out / (".last.tmp." + d));
  fs::create_directories(out / "trainer" / "checkpoints" / (".step-00000003.tmp." + d));
  fs::create_directories(out / (".best.tmp." + me));
  std::ofstream(out / (".best.tmp." + me) / "x") << "live";
  r = cli(kClf + "--epochs 1 --overwrite --out " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(fs::exists(out / (".best.old." + d)));
  EXPECT_FALSE(fs::exists(out / (".last.tmp." + d)));
  EXPECT_FALSE(fs::exists(out / "trainer" / "checkpoints" / (".step-00000003.tmp." + d)));
  EXPECT_EQ(slurp(out / (".best.tmp." + me) / "x"), "live");
  // A refused run cleans too (before it refuses), and still refuses because of the live one.
  fs::remove_all(out / "best");
  fs::remove_all(out / "last");
  fs::remove_all(out / "trainer");
  fs::remove(out / "train_log.jsonl");
  std::ofstream(out / ("train_log.jsonl.tmp." + d)) << "half";
  expect_one_error_line(cli(kClf + "--epochs 1 --out " + out.string()),
                        {out.string(), ".best.tmp." + me, "--overwrite"});
  EXPECT_FALSE(fs::exists(out / ("train_log.jsonl.tmp." + d)));
  EXPECT_TRUE(fs::exists(out / (".best.tmp." + me) / "x"));
}

TEST_F(RobustOutput, TrainConfigRefusesResumesAndOverwrites) {
  const fs::path out = dir / "run";
  const fs::path run_file = dir / "run.toml";
  std::ofstream(run_file)
      << "kind = \"classifier\"\nout = \"" << out.string() << "\"\n"
      << "[model]\ndims = [8, 16, 24, 32]\ndepths = [1, 1, 1, 1]\nimage_size = 32\n"
      << "[data]\nsource = \"synthetic\"\nn = 24\nnum_classes = 3\nval_fraction = 0.25\n"
      << "[train]\nbatch_size = 6\nsave_every = 2\nprogress = false\n"
      << "[[train.stages]]\nsteps = 4\nlr = 1e-3\n";
  const std::string train = "train --config " + run_file.string() + " --threads 1 ";
  CliRun r = cli(train);
  ASSERT_EQ(r.code, 0) << r.out;
  const fs::path old4 = out / "checkpoints" / "step-00000004";
  ASSERT_TRUE(fs::exists(old4 / "model" / "model.safetensors"));
  const std::string old_model = slurp(old4 / "model" / "model.safetensors");
  const auto before = snapshot(out);

  // A rerun is refused: one line naming the folder and both ways on.
  r = cli(train + "--set model.seed=5");
  expect_one_error_line(r, {out.string(), "not empty", "--resume " + out.string(), "--overwrite"});
  EXPECT_EQ(snapshot(out), before);
  // Resuming another run into this used folder is refused too.
  ASSERT_EQ(cli(train + "--out " + (dir / "other").string()).code, 0);
  r = cli(train + "--resume " + (dir / "other").string());
  expect_one_error_line(r, {out.string(), "not the run resumed from", "--overwrite"});
  EXPECT_EQ(snapshot(out), before);
  // --resume of the finished run in it is fine (nothing left to train).
  r = cli_out(train + "--resume " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("trained 4 steps"), std::string::npos) << r.out;

  // --overwrite, killed inside its first checkpoint: the old model is still complete (moved to
  // replaced-step-N, where `final` points) and is not offered to --resume.
  const pid_t pid = run_and_kill_in_checkpoint(
      split_args(train + "--overwrite --set model.seed=5"), 2, out / "checkpoints");
  ASSERT_NE(pid, 0);
  EXPECT_FALSE(fs::exists(old4));
  EXPECT_EQ(slurp(out / "checkpoints" / "replaced-step-00000004" / "model" / "model.safetensors"),
            old_model);
  EXPECT_EQ(slurp(out / "final" / "model.safetensors"), old_model);
  r = cli(train + "--resume " + out.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("no checkpoint to resume from"), std::string::npos) << r.out;
  // A second --overwrite completes: the replaced run and the killed one's temp folder are gone.
  r = cli(train + "--overwrite --set model.seed=5");
  ASSERT_EQ(r.code, 0) << r.out;
  std::vector<std::string> cks;
  for (const auto& e : fs::directory_iterator(out / "checkpoints"))
    cks.push_back(e.path().filename().string());
  std::sort(cks.begin(), cks.end());
  EXPECT_EQ(cks, (std::vector<std::string>{"latest", "step-00000002", "step-00000004"}));
  EXPECT_NE(slurp(out / "final" / "model.safetensors"), old_model);
  EXPECT_TRUE(entries_with(out, ".tmp.").empty());
}

TEST_F(RobustOutput, TrainConfigFailedStartLeavesNoFolder) {
  // A run that fails before training (here: a missing image folder) leaves the output folder as
  // it found it, so the corrected run needs no --overwrite.
  const fs::path run_file = dir / "run.toml";
  std::ofstream(run_file)
      << "kind = \"classifier\"\nout = \"" << (dir / "run").string() << "\"\n"
      << "[model]\ndims = [8, 16, 24, 32]\ndepths = [1, 1, 1, 1]\nimage_size = 32\n"
      << "num_classes = 3\n[data]\nsource = \"synthetic\"\nn = 12\n"
      << "[train]\nbatch_size = 6\nprogress = false\n[[train.stages]]\nsteps = 1\n";
  const std::string train = "train --config " + run_file.string() + " --threads 1 ";
  const std::string bad = "--set 'data.source=\"folder\"' --set 'data.path=\"" +
                          (dir / "no_images").string() + "\"' ";
  CliRun r = cli(train + bad);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("no_images"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "run"));
  fs::create_directories(dir / "empty");
  r = cli(train + bad + "--out " + (dir / "empty").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(fs::is_empty(dir / "empty"));
  r = cli(train + "--out " + (dir / "empty").string());
  EXPECT_EQ(r.code, 0) << r.out;
  r = cli(train);
  EXPECT_EQ(r.code, 0) << r.out;
}
