#include "experiments/runner.h"

#include <ATen/Parallel.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"

extern char** environ;

namespace mambavl::experiments {

namespace fs = std::filesystem;

namespace {

struct Child {
  pid_t pid = -1;
  size_t index = 0;
  std::chrono::steady_clock::time_point start;
};

// The cache key of a run: its config without "out", and the commit of this binary (a code
// change must not reuse runs of the old code).
std::string config_key(const json& config) {
  json c = config;
  c.erase("out");
  c["_mambavl_commit"] = build_commit();
  return content_hash(c);
}

// Sends SIGTERM to the children still running when run_all leaves by an exception, and reaps them,
// so no orphan keeps training (and writing into runs/ or the cache) behind the caller's back.
struct ChildGuard {
  std::vector<Child>& running;
  ~ChildGuard() {
    for (const auto& c : running) kill(c.pid, SIGTERM);
    for (const auto& c : running) {
      int st = 0;
      while (waitpid(c.pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
  }
};

fs::path self_exe(const ExperimentOptions& opt) {
  if (!opt.exe.empty()) return opt.exe;
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  MVL_CHECK(!ec, "experiment: cannot find this program's path (/proc/self/exe): ", ec.message());
  return p;
}

std::string fmt_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

// A short "k v, k v" of the scalar leaves of an eval object (for the progress line).
std::string eval_brief(const json& ev) {
  std::vector<std::string> parts;
  std::function<void(const json&, const std::string&)> walk = [&](const json& j,
                                                                  const std::string& prefix) {
    for (auto& [k, v] : j.items()) {
      if (k == "n" || k == "correct" || k == "unparseable" || k == "pos_accuracy") continue;
      const std::string name = prefix.empty() ? k : prefix + "." + k;
      if (v.is_object()) {
        walk(v, name);
      } else if (v.is_number_float()) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s %.3f", name.c_str(), v.get<double>());
        parts.push_back(buf);
      }
    }
  };
  if (ev.is_object()) walk(ev, "");
  return join(parts);
}


pid_t spawn_run(const fs::path& exe, const fs::path& config, int threads, const fs::path& log) {
  // --overwrite: the run folder is ours (emptied by the runner) but already holds stderr.log.
  std::vector<std::string> args = {exe.string(), "train", "--config", config.string(),
                                   "--overwrite"};
  if (threads > 0) {
    args.push_back("--threads");
    args.push_back(std::to_string(threads));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  // The child's OpenMP / MKL pools follow --threads; keep the environment otherwise.
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  MVL_CHECK(rc == 0, "experiment: cannot start ", exe.string(), ": ", std::strerror(rc));
  return pid;
}

std::string tail_of(const fs::path& file, size_t max_lines) {
  std::ifstream f(file);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(f, line)) {
    lines.push_back(line);
    if (lines.size() > max_lines) lines.erase(lines.begin());
  }
  return join(lines, " | ");
}

}  // namespace

std::string content_hash(const json& j) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 of the compact JSON text
  for (unsigned char ch : j.dump()) h = (h ^ ch) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

RunOutcome read_run(const fs::path& dir, const std::string& name) {
  RunOutcome o;
  o.name = name;
  o.dir = dir;
  const fs::path log = dir / "train_log.jsonl";
  std::ifstream f(log);
  MVL_CHECK(f, log.string(), ": missing (the run did not finish)");
  std::string line;
  int64_t ln = 0;
  while (std::getline(f, line)) {
    ++ln;
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const std::exception& e) {
      MVL_FAIL(log.string(), ":", ln, ": malformed JSON line");
    }
    if (j.contains("eval")) {
      o.evals.push_back(j);
      o.final_eval = j.at("eval");
    } else {
      o.steps.push_back(j);
    }
  }
  return o;
}

std::vector<RunOutcome> run_all(const std::vector<RunSpec>& runs, const ExperimentOptions& opt,
                                const std::string& experiment) {
  std::vector<RunOutcome> out(runs.size());
  std::map<std::string, size_t> names;
  for (size_t i = 0; i < runs.size(); ++i)
    MVL_CHECK(names.emplace(runs[i].name, i).second, "experiment ", experiment,
              ": two runs named '", runs[i].name, "'");
  const fs::path exe = self_exe(opt);
  const fs::path runs_dir = opt.out / "runs", cfg_dir = opt.out / "configs";
  fs::create_directories(runs_dir);
  fs::create_directories(cfg_dir);
  // Cache entries half-copied by killed experiments (.KEY.tmp.PID of dead processes).
  if (!opt.cache.empty()) io::remove_stale_temps(opt.cache);

  // Write every config (exactly what the child runs) and resolve cache hits.
  std::vector<size_t> todo;
  std::vector<fs::path> cfg_path(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunSpec& r = runs[i];
    json cfg = r.config;
    cfg["out"] = (runs_dir / r.name).string();
    if (!cfg.contains("train")) cfg["train"] = json::object();
    cfg["train"]["progress"] = false;
    cfg_path[i] = cfg_dir / (r.name + ".json");
    io::write_json_file(cfg_path[i], cfg);
    out[i].name = r.name;
    out[i].dir = runs_dir / r.name;
    if (opt.dry_run) continue;
    if (!opt.cache.empty()) {
      const fs::path hit = opt.cache / config_key(cfg) / "train_log.jsonl";
      std::error_code ec;
      if (fs::exists(hit, ec) && !(r.keep_model && !fs::exists(hit.parent_path() / "final"))) {
        fs::remove_all(out[i].dir, ec);
        fs::create_directories(out[i].dir);
        fs::copy_file(hit, out[i].dir / "train_log.jsonl", fs::copy_options::overwrite_existing);
        if (r.keep_model)
          fs::copy(hit.parent_path() / "final", out[i].dir / "final",
                   fs::copy_options::recursive | fs::copy_options::copy_symlinks);
        out[i] = read_run(out[i].dir, r.name);
        out[i].cached = true;
        log_line(opt, experiment, "reused (same config ran before): " + r.label);
        continue;
      }
    }
    todo.push_back(i);
  }
  if (opt.dry_run || todo.empty()) return out;

  const int hw = std::max(1u, std::thread::hardware_concurrency());
  int jobs = opt.jobs > 0 ? opt.jobs : hw;
  jobs = std::max(1, std::min<int>(jobs, static_cast<int>(todo.size())));
  const int total_threads = opt.threads > 0 ? opt.threads : hw;
  const int threads = std::max(1, total_threads / jobs);

  MVL_CHECK(opt.device == "cpu", "experiment ", experiment, ": --device ", opt.device,
            ": the training runs of this experiment run on the CPU only (the trainer has no "
            "device option yet); use --device cpu");
  std::vector<Child> running;
  ChildGuard guard{running};
  size_t next = 0, finished = 0;
  std::vector<std::string> failures;
  auto start_next = [&] {
    const size_t i = todo[next++];
    std::error_code ec;
    fs::remove_all(out[i].dir, ec);
    fs::create_directories(out[i].dir);
    Child c;
    c.index = i;
    c.start = std::chrono::steady_clock::now();
    c.pid = spawn_run(exe, cfg_path[i], threads, out[i].dir / "stderr.log");
    running.push_back(c);
  };
  while (next < todo.size() && static_cast<int>(running.size()) < jobs) start_next();
  while (!running.empty()) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      MVL_FAIL("experiment ", experiment, ": waitpid failed: ", std::strerror(errno));
    }
    auto it = std::find_if(running.begin(), running.end(), [&](const Child& c) { return c.pid == pid; });
    if (it == running.end()) continue;  // not ours
    const Child c = *it;
    running.erase(it);
    const size_t i = c.index;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - c.start).count();
    ++finished;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {
      const std::string how =
          WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status)) + "; "
                              : "exit status " + std::to_string(WEXITSTATUS(status)) + "; ";
      failures.push_back(runs[i].name + " (" + how + (out[i].dir / "stderr.log").string() +
                         ": " + tail_of(out[i].dir / "stderr.log", 3) + ")");
      log_line(opt, experiment,
               std::to_string(finished) + "/" + std::to_string(todo.size()) + " FAILED " +
                   runs[i].label);
    } else {
      out[i] = read_run(out[i].dir, runs[i].name);
      out[i].seconds = secs;
      // The model is needed only when asked for; checkpoints never.
      // `final` is a symlink into checkpoints/: kept, it becomes the model folder itself.
      std::error_code ec;
      const fs::path fin = out[i].dir / "final";
      if ((runs[i].keep_model || opt.keep_models) && fs::is_symlink(fin, ec)) {
        const fs::path target = fs::canonical(fin, ec);
        if (!ec) {
          fs::remove(fin, ec);
          fs::rename(target, fin, ec);
        }
        MVL_CHECK(!ec, "experiment ", experiment, ": cannot keep the model of run ", runs[i].name,
                  " (", fin.string(), "): ", ec.message());
      } else {
        fs::remove(fin, ec);
      }
      fs::remove_all(out[i].dir / "checkpoints", ec);
      log_line(opt, experiment,
               std::to_string(finished) + "/" + std::to_string(todo.size()) + " " + runs[i].label +
                   " (" + fmt_seconds(secs) + ")" +
                   (out[i].final_eval.is_null() ? "" : ": " + eval_brief(out[i].final_eval)));
      if (!opt.cache.empty()) {
        json cfg = io::read_json_file(cfg_path[i]);
        // Filled in a temp folder, then renamed into place: an entry is complete or absent.
        const std::string key = config_key(cfg);
        const fs::path dst = opt.cache / key;
        const fs::path tmp = opt.cache / ("." + key + ".tmp." + std::to_string(getpid()));
        fs::remove_all(tmp, ec);
        fs::create_directories(tmp);
        fs::copy_file(out[i].dir / "train_log.jsonl", tmp / "train_log.jsonl");
        if (fs::exists(out[i].dir / "final", ec))
          fs::copy(out[i].dir / "final", tmp / "final", fs::copy_options::recursive);
        if (fs::exists(dst, ec))
          fs::remove_all(tmp, ec);  // another process cached the same run meanwhile
        else
          fs::rename(tmp, dst);
      }
    }
    if (failures.empty() && next < todo.size()) start_next();
  }
  MVL_CHECK(failures.empty(), "experiment ", experiment, ": ", failures.size(),
            " run(s) failed: ", join(failures, "; "));
  return out;
}

}  // namespace mambavl::experiments
