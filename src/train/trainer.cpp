#include "train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <torch/nn/module.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>

#include "common/error.h"
#include "common/mix64.h"
#include "common/progress.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "train/lr_schedule.h"
#include "train/toml_config.h"

namespace mambavl::train {

namespace fs = std::filesystem;

namespace {

// The splitmix64 generator: the next output of the stream whose state is `x` (advanced).
uint64_t splitmix64(uint64_t& x) {
  const uint64_t r = mix64(x);
  x += 0x9E3779B97F4A7C15ull;
  return r;
}

uint64_t mix(uint64_t seed, uint64_t a) { return mix64(seed ^ (a * 0xD6E8FEB86659FD93ull)); }

uint64_t stage_seed(uint64_t seed, int64_t stage) {
  return stage == 0 ? seed : mix(seed, 0x57A6E000ull + static_cast<uint64_t>(stage));
}

uint64_t micro_seed(uint64_t sseed, int64_t global_step, int64_t micro) {
  return mix(mix(sseed, 0x5EED0000ull + static_cast<uint64_t>(global_step)),
             static_cast<uint64_t>(micro));
}

double seconds_now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

void fsync_path(const fs::path& p, bool dir) {
  const int fd = ::open(p.c_str(), dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void fsync_tree(const fs::path& root) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec)) continue;
    if (it->is_regular_file(ec))
      fsync_path(it->path(), false);
    else if (it->is_directory(ec))
      fsync_path(it->path(), true);
  }
  fsync_path(root, true);
}

std::string to_hex(const at::Tensor& bytes) {
  const at::Tensor b = bytes.contiguous();
  const uint8_t* p = b.data_ptr<uint8_t>();
  static const char* digits = "0123456789abcdef";
  std::string out(static_cast<size_t>(b.numel()) * 2, '0');
  for (int64_t i = 0; i < b.numel(); ++i) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  return out;
}

at::Tensor from_hex(const std::string& s, const std::string& where) {
  MVL_CHECK(s.size() % 2 == 0, where, ": malformed RNG state");
  at::Tensor t = at::empty({static_cast<int64_t>(s.size() / 2)}, at::kByte);
  uint8_t* p = t.data_ptr<uint8_t>();
  auto nib = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    MVL_FAIL(where, ": malformed RNG state");
  };
  for (size_t i = 0; i < s.size() / 2; ++i)
    p[i] = static_cast<uint8_t>(nib(s[2 * i]) * 16 + nib(s[2 * i + 1]));
  return t;
}

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

// Step folders of a run replaced by --overwrite, until its first checkpoint: replaced-step-N.
const std::string kReplacedPrefix = "replaced-";

// Points `link` at `target` (a relative symlink), swapped in by rename; best effort.
void replace_symlink(const fs::path& link, const fs::path& target) {
  const fs::path tmp = link.parent_path() / ("." + link.filename().string() + ".tmp." +
                                             std::to_string(::getpid()));
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_directory_symlink(target, tmp, ec);
  if (!ec) fs::rename(tmp, link, ec);
  if (ec) fs::remove(tmp, ec);
}

// step-<digits> (no temp marker) -> step; -1 otherwise.
int64_t parse_step_dir(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step-") != 0) return -1;
  const std::string digits = name.substr(5);
  if (digits.empty() || digits.size() > 15) return -1;
  for (char c : digits)
    if (c < '0' || c > '9') return -1;
  return std::stoll(digits);
}

// bf16 autocast on CPU around the forward pass.
class AutocastBf16 {
 public:
  AutocastBf16()
      : prev_enabled_(at::autocast::is_autocast_enabled(at::kCPU)),
        prev_dtype_(at::autocast::get_autocast_dtype(at::kCPU)) {
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
    at::autocast::increment_nesting();
  }
  ~AutocastBf16() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCPU, prev_enabled_);
    at::autocast::set_autocast_dtype(at::kCPU, prev_dtype_);
  }
  AutocastBf16(const AutocastBf16&) = delete;
  AutocastBf16& operator=(const AutocastBf16&) = delete;

 private:
  bool prev_enabled_;
  at::ScalarType prev_dtype_;
};

// AdamW as torch.optim.AdamW(fused=True) (decoupled decay, bias correction), with its state keyed
// by parameter name so that it can be saved and restored exactly. Contiguous CPU float tensors go
// through ATen's fused kernel (one pass over parameter, gradient and both moments; about 10x the
// separate ops), anything else through the same formula as separate ops.
struct AdamState {
  at::Tensor exp_avg, exp_avg_sq;
  int64_t step = 0;
  at::Tensor step_t;  // float scalar mirror of `step` for the fused kernel
};

struct Param {
  std::string name;
  at::Tensor tensor;
  double weight_decay = 0;
};

void adamw_step(std::vector<Param>& params, std::map<std::string, AdamState>& state, double lr,
                const TrainerConfig& cfg) {
  at::NoGradGuard ng;
  const double b1 = cfg.adam_beta1, b2 = cfg.adam_beta2;
  struct Group {
    std::vector<at::Tensor> p, g, m, v, steps;
  };
  std::map<double, Group> fused;  // by weight decay
  for (Param& p : params) {
    const at::Tensor& grad = p.tensor.grad();
    if (!grad.defined()) continue;
    AdamState& st = state[p.name];
    if (!st.exp_avg.defined()) {
      st.exp_avg = at::zeros_like(p.tensor, at::MemoryFormat::Contiguous);
      st.exp_avg_sq = at::zeros_like(p.tensor, at::MemoryFormat::Contiguous);
    }
    st.step += 1;
    const at::ScalarType t = p.tensor.scalar_type();
    const bool can_fuse = p.tensor.device().is_cpu() && (t == at::kFloat || t == at::kDouble) &&
                          grad.scalar_type() == t && st.exp_avg.scalar_type() == t &&
                          p.tensor.is_contiguous() && grad.is_contiguous() &&
                          st.exp_avg.is_contiguous() && st.exp_avg_sq.is_contiguous();
    if (can_fuse) {
      if (!st.step_t.defined()) st.step_t = at::zeros({}, at::kFloat);
      st.step_t.fill_(static_cast<double>(st.step));
      Group& gr = fused[p.weight_decay];
      gr.p.push_back(p.tensor);
      gr.g.push_back(grad);
      gr.m.push_back(st.exp_avg);
      gr.v.push_back(st.exp_avg_sq);
      gr.steps.push_back(st.step_t);
      continue;
    }
    if (p.weight_decay != 0) p.tensor.mul_(1 - lr * p.weight_decay);
    const double bc1 = 1 - std::pow(b1, static_cast<double>(st.step));
    const double bc2 = 1 - std::pow(b2, static_cast<double>(st.step));
    st.exp_avg.mul_(b1).add_(grad, 1 - b1);
    st.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
    const at::Tensor denom = (st.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(cfg.adam_eps);
    p.tensor.addcdiv_(st.exp_avg, denom, -lr / bc1);
  }
  for (auto& [wd, gr] : fused)
    at::_fused_adamw_(gr.p, gr.g, gr.m, gr.v, {}, gr.steps, lr, b1, b2, wd, cfg.adam_eps,
                      /*amsgrad=*/false, /*maximize=*/false);
}

void save_optimizer(const fs::path& file, const std::map<std::string, AdamState>& state) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, st] : state) {
    if (!st.exp_avg.defined()) continue;
    tensors.emplace_back(name + ".exp_avg", st.exp_avg);
    tensors.emplace_back(name + ".exp_avg_sq", st.exp_avg_sq);
    tensors.emplace_back(name + ".step", at::tensor({st.step}, at::kLong));
  }
  io::save_safetensors(file, tensors, {{"format", "mambavl-adamw"}});
}

std::map<std::string, AdamState> load_optimizer(const fs::path& file,
                                                const std::map<std::string, at::Tensor>& params) {
  std::map<std::string, AdamState> out;
  if (!fs::exists(file)) return out;
  io::SafetensorsFile f(file);
  const std::string suffix = ".exp_avg";
  for (const std::string& key : f.names()) {
    if (key.size() <= suffix.size() ||
        key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string name = key.substr(0, key.size() - suffix.size());
    auto it = params.find(name);
    MVL_CHECK(it != params.end(), file.string(), ": optimizer state for '", name,
              "', which the model does not have (a checkpoint of another model?)");
    AdamState st;
    st.exp_avg = f.tensor(key);
    st.exp_avg_sq = f.tensor(name + ".exp_avg_sq");
    const at::Tensor step = f.tensor(name + ".step");
    MVL_CHECK(step.numel() == 1, file.string(), ": '", name, ".step' must hold one number");
    st.step = step.to(at::kLong).reshape({-1})[0].item<int64_t>();
    const at::Tensor& p = it->second;
    MVL_CHECK(st.exp_avg.sizes() == p.sizes() && st.exp_avg_sq.sizes() == p.sizes(), file.string(),
              ": optimizer state of '", name, "' has shape ", st.exp_avg.sizes(),
              " but the parameter has ", p.sizes());
    st.exp_avg = st.exp_avg.to(p.options()).contiguous();
    st.exp_avg_sq = st.exp_avg_sq.to(p.options()).contiguous();
    out[name] = std::move(st);
  }
  return out;
}

// The numbers of `m` (a JSON object) multiplied by w and added into `acc`.
void add_metrics(nlohmann::json& acc, const nlohmann::json& m, double w) {
  if (!m.is_object()) return;
  if (!acc.is_object()) acc = nlohmann::json::object();
  for (const auto& item : m.items()) {
    if (!item.value().is_number()) continue;
    const double v = item.value().get<double>() * w;
    if (acc.contains(item.key()) && acc[item.key()].is_number())
      acc[item.key()] = acc[item.key()].get<double>() + v;
    else
      acc[item.key()] = v;
  }
}

void append_line(const fs::path& file, const nlohmann::json& j) {
  std::ofstream f(file, std::ios::app);
  MVL_CHECK(f.good(), file.string(), ": cannot append to the training log");
  f << j.dump() << "\n";
  f.flush();
}

void validate(const TrainerConfig& cfg) {
  MVL_CHECK(!cfg.stages.empty(), "trainer config: no stages (add at least one [[stages]] table)");
  MVL_CHECK(cfg.batch_size >= 1, "trainer config: batch_size must be >= 1, got ", cfg.batch_size);
  MVL_CHECK(cfg.grad_accum >= 1, "trainer config: grad_accum must be >= 1, got ", cfg.grad_accum);
  MVL_CHECK(cfg.batch_size % cfg.grad_accum == 0, "trainer config: batch_size ", cfg.batch_size,
            " is not divisible by grad_accum ", cfg.grad_accum);
  MVL_CHECK(cfg.grad_clip >= 0 && std::isfinite(cfg.grad_clip),
            "trainer config: grad_clip must be >= 0 (0 = off), got ", cfg.grad_clip);
  MVL_CHECK(cfg.adam_beta1 >= 0 && cfg.adam_beta1 < 1 && cfg.adam_beta2 >= 0 && cfg.adam_beta2 < 1,
            "trainer config: adam betas must be in [0, 1)");
  MVL_CHECK(cfg.adam_eps > 0, "trainer config: adam_eps must be > 0");
  MVL_CHECK(cfg.log_every >= 0, "trainer config: log_every must be >= 0");
  MVL_CHECK(cfg.save_every >= 0, "trainer config: save_every must be >= 0");
  MVL_CHECK(cfg.keep_last >= 0, "trainer config: keep_last must be >= 0 (0 = keep all)");
  MVL_CHECK(cfg.stop_at_step >= 0, "trainer config: stop_at_step must be >= 0 (0 = off)");
  for (size_t i = 0; i < cfg.stages.size(); ++i) {
    const StageConfig& s = cfg.stages[i];
    const std::string w = "trainer config: stage " + std::to_string(i) + " ('" + s.name + "'): ";
    MVL_CHECK(s.steps > 0 || (s.epochs > 0 && std::isfinite(s.epochs)), w,
              "give steps > 0 or epochs > 0");
    MVL_CHECK(s.steps >= 0, w, "steps must be >= 0");
    MVL_CHECK(s.lr > 0 && std::isfinite(s.lr), w, "lr must be > 0, got ", s.lr);
    MVL_CHECK(s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1, w, "min_lr_ratio must be in [0, 1]");
    MVL_CHECK(s.warmup_ratio >= 0 && s.warmup_ratio <= 1, w, "warmup_ratio must be in [0, 1]");
    MVL_CHECK(s.weight_decay >= 0 && std::isfinite(s.weight_decay), w, "weight_decay must be >= 0");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public helpers

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = mix(seed, 0x5151 + static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t r = splitmix64(state);
    const auto j = static_cast<int64_t>(
        (static_cast<unsigned __int128>(r) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

bool no_decay_param(const std::string& name, int64_t dim,
                    const std::vector<std::string>& patterns) {
  if (dim <= 1) return true;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('.', start);
    if (end == std::string::npos) end = name.size();
    const std::string comp = name.substr(start, end - start);
    for (const std::string& p : patterns) {
      if (p.empty()) continue;
      if (comp == p) return true;
      if (p.size() >= 3 && comp.find(p) != std::string::npos) return true;
    }
    start = end + 1;
  }
  return false;
}

bool is_frozen(const std::string& name, const std::vector<std::string>& prefixes) {
  for (const std::string& p : prefixes) {
    if (p.empty()) continue;
    if (p.back() == '.') {
      if (name.compare(0, p.size(), p) == 0) return true;
    } else if (name == p || (name.size() > p.size() && name.compare(0, p.size(), p) == 0 &&
                             name[p.size()] == '.')) {
      return true;
    }
  }
  return false;
}

int64_t stage_steps(const StageConfig& s, int64_t num_samples, int64_t batch_size) {
  if (s.steps > 0) return s.steps;
  const int64_t per_epoch = (num_samples + batch_size - 1) / batch_size;
  return std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(s.epochs * static_cast<double>(per_epoch) - 1e-9)));
}

bool cpu_has_native_bf16() {
  static const bool has = [] {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
      if (line.compare(0, 5, "flags") != 0) continue;
      std::istringstream s(line);
      std::string w;
      while (s >> w)
        if (w == "avx512_bf16" || w == "amx_bf16") return true;
      return false;
    }
    return false;
  }();
  return has;
}

std::string resolve_precision(const std::string& precision, bool warn) {
  if (precision == "fp32") return "fp32";
  MVL_CHECK(precision == "bf16" || precision == "auto", "trainer config: precision must be fp32, ",
            "bf16 or auto, got '", precision, "'");
  if (cpu_has_native_bf16()) return "bf16";
  if (precision == "bf16" && warn)
    std::fprintf(stderr,
                 "warning: precision bf16 asked for, but this CPU has no native bf16 arithmetic "
                 "(avx512_bf16 / amx_bf16): training in fp32\n");
  return "fp32";
}

fs::path find_checkpoint(const fs::path& dir) {
  if (fs::exists(dir / "trainer_state.json")) return dir;
  const fs::path ck = dir / "checkpoints";
  int64_t best = -1;
  fs::path found;
  std::error_code ec;
  if (fs::is_directory(ck, ec)) {
    for (const auto& e : fs::directory_iterator(ck, ec)) {
      const int64_t s = parse_step_dir(e.path().filename().string());
      if (s < 0 || !fs::exists(e.path() / "trainer_state.json")) continue;
      if (s > best) {
        best = s;
        found = e.path();
      }
    }
  }
  MVL_CHECK(best >= 0, dir.string(),
            ": no checkpoint to resume from (expected a checkpoint folder with trainer_state.json, "
            "or a run folder with checkpoints/step-*)");
  return found;
}

bool path_within(const fs::path& path, const fs::path& dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  if (ec) p = fs::absolute(path).lexically_normal();
  fs::path d = fs::weakly_canonical(fs::absolute(dir, ec), ec);
  if (ec) d = fs::absolute(dir).lexically_normal();
  if (!d.has_filename()) d = d.parent_path();
  auto pi = p.begin();
  for (auto di = d.begin(); di != d.end(); ++di, ++pi)
    if (pi == p.end() || *pi != *di) return false;
  return true;
}

bool check_output_folder(const fs::path& dir, const fs::path& resume, bool overwrite,
                         const std::string& resume_hint) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return true;
  MVL_CHECK(fs::is_directory(dir, ec), dir.string(),
            ": the output folder is a file, not a folder; choose another --out");
  io::remove_stale_temps(dir);
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    names.push_back(it->path().filename().string());
  MVL_CHECK(!ec, dir.string(), ": cannot list the output folder: ", ec.message());
  if (names.empty()) return true;
  if (overwrite) return false;
  std::sort(names.begin(), names.end());
  std::string listed;
  for (size_t i = 0; i < names.size() && i < 4; ++i) listed += (i ? ", " : "") + names[i];
  if (names.size() > 4) listed += ", ... (" + std::to_string(names.size()) + " entries)";
  if (!resume.empty()) {
    MVL_CHECK(path_within(resume, dir), dir.string(), ": the output folder is not empty (it holds ",
              listed, ") and is not the run resumed from (", resume.string(),
              "); pass --overwrite to replace it, or choose another folder");
    return false;
  }
  MVL_FAIL(dir.string(), ": the output folder is not empty (it holds ", listed, "); pass ",
           resume_hint.empty() ? "" : resume_hint + " to continue it or ",
           "--overwrite to replace it (or choose another folder)");
}

void write_dir_atomically(const fs::path& dir_in,
                          const std::function<void(const fs::path&)>& fill) {
  const fs::path dir = dir_in.has_filename() ? dir_in : dir_in.parent_path();
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  const std::string base = "." + dir.filename().string();
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = parent / (base + ".tmp." + pid);
  try {
    fs::create_directories(parent);
    io::remove_stale_temps(parent);  // of killed runs; never those of live processes
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    fill(tmp);
    fsync_tree(tmp);
    if (!fs::exists(dir)) {
      fs::rename(tmp, dir);
    } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
      fs::remove_all(tmp);  // now holds the previous folder
    } else {
      // No atomic exchange on this filesystem: move the old one aside first (a crash in between
      // leaves it in .<name>.old.<pid>).
      const fs::path old = parent / (base + ".old." + pid);
      fs::remove_all(old);
      fs::rename(dir, old);
      fs::rename(tmp, dir);
      fs::remove_all(old);
    }
    fsync_path(parent, true);
  } catch (const fs::filesystem_error& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    MVL_FAIL(dir.string(), ": cannot write the folder: ", e.code().message());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

// ---------------------------------------------------------------------------------------------
// Config

StageConfig StageConfig::from_json(const nlohmann::json& j, const std::string& file,
                                   const std::string& section) {
  check_keys(j,
             {"name", "steps", "epochs", "lr", "min_lr_ratio", "warmup_ratio", "warmup_steps",
              "weight_decay", "freeze"},
             file, section);
  StageConfig s;
  s.name = get_or<std::string>(j, "name", s.name, file, section);
  s.steps = get_or<int64_t>(j, "steps", s.steps, file, section);
  s.epochs = get_or<double>(j, "epochs", s.epochs, file, section);
  s.lr = get_or<double>(j, "lr", s.lr, file, section);
  s.min_lr_ratio = get_or<double>(j, "min_lr_ratio", s.min_lr_ratio, file, section);
  s.warmup_ratio = get_or<double>(j, "warmup_ratio", s.warmup_ratio, file, section);
  s.warmup_steps = get_or<int64_t>(j, "warmup_steps", s.warmup_steps, file, section);
  s.weight_decay = get_or<double>(j, "weight_decay", s.weight_decay, file, section);
  s.freeze = get_or<std::vector<std::string>>(j, "freeze", s.freeze, file, section);
  MVL_CHECK(s.steps > 0 || s.epochs > 0, file, ": '", section, "' needs steps > 0 or epochs > 0");
  MVL_CHECK(s.steps >= 0 && s.epochs >= 0, file, ": '", section,
            "': steps and epochs must be >= 0");
  return s;
}

nlohmann::json StageConfig::to_json() const {
  return {{"name", name},
          {"steps", steps},
          {"epochs", epochs},
          {"lr", lr},
          {"min_lr_ratio", min_lr_ratio},
          {"warmup_ratio", warmup_ratio},
          {"warmup_steps", warmup_steps},
          {"weight_decay", weight_decay},
          {"freeze", freeze}};
}

TrainerConfig TrainerConfig::from_json(const nlohmann::json& j, const std::string& file,
                                       const std::string& section) {
  check_keys(j,
             {"stages", "batch_size", "grad_accum", "grad_clip", "precision", "no_decay",
              "adam_beta1", "adam_beta2", "adam_eps", "seed", "log_every", "eval_every",
              "save_every", "keep_last", "stop_at_step", "out_dir", "progress"},
             file, section);
  TrainerConfig c;
  const std::string sk = section.empty() ? "stages" : section + ".stages";
  MVL_CHECK(j.contains("stages"), file, ": missing '", sk,
            "' (one [[stages]] table per stage, e.g. steps = 100, lr = 1e-3)");
  const nlohmann::json& st = j.at("stages");
  MVL_CHECK(st.is_array() && !st.empty(), file, ": '", sk,
            "' must be a non-empty array of tables ([[stages]])");
  for (size_t i = 0; i < st.size(); ++i)
    c.stages.push_back(StageConfig::from_json(st[i], file, sk + "." + std::to_string(i)));
  c.batch_size = get_or<int64_t>(j, "batch_size", c.batch_size, file, section);
  c.grad_accum = get_or<int64_t>(j, "grad_accum", c.grad_accum, file, section);
  c.grad_clip = get_or<double>(j, "grad_clip", c.grad_clip, file, section);
  c.precision = get_or<std::string>(j, "precision", c.precision, file, section);
  c.no_decay = get_or<std::vector<std::string>>(j, "no_decay", c.no_decay, file, section);
  c.adam_beta1 = get_or<double>(j, "adam_beta1", c.adam_beta1, file, section);
  c.adam_beta2 = get_or<double>(j, "adam_beta2", c.adam_beta2, file, section);
  c.adam_eps = get_or<double>(j, "adam_eps", c.adam_eps, file, section);
  c.seed = get_or<uint64_t>(j, "seed", c.seed, file, section);
  c.log_every = get_or<int64_t>(j, "log_every", c.log_every, file, section);
  c.eval_every = get_or<int64_t>(j, "eval_every", c.eval_every, file, section);
  c.save_every = get_or<int64_t>(j, "save_every", c.save_every, file, section);
  c.keep_last = get_or<int64_t>(j, "keep_last", c.keep_last, file, section);
  c.stop_at_step = get_or<int64_t>(j, "stop_at_step", c.stop_at_step, file, section);
  c.out_dir = get_or<std::string>(j, "out_dir", c.out_dir.string(), file, section);
  c.progress = get_or<bool>(j, "progress", c.progress, file, section);
  MVL_CHECK(c.precision == "fp32" || c.precision == "bf16" || c.precision == "auto", file, ": '",
            section.empty() ? std::string("precision") : section + ".precision",
            "' must be fp32, bf16 or auto, got '", c.precision, "'");
  try {
    validate(c);
  } catch (const Error& e) {
    MVL_FAIL(file, ": ", e.what());
  }
  return c;
}

nlohmann::json TrainerConfig::to_json() const {
  nlohmann::json st = nlohmann::json::array();
  for (const auto& s : stages) st.push_back(s.to_json());
  return {{"stages", st},
          {"batch_size", batch_size},
          {"grad_accum", grad_accum},
          {"grad_clip", grad_clip},
          {"precision", precision},
          {"no_decay", no_decay},
          {"adam_beta1", adam_beta1},
          {"adam_beta2", adam_beta2},
          {"adam_eps", adam_eps},
          {"seed", seed},
          {"log_every", log_every},
          {"eval_every", eval_every},
          {"save_every", save_every},
          {"keep_last", keep_last},
          {"stop_at_step", stop_at_step},
          {"out_dir", out_dir.string()},
          {"progress", progress}};
}

// ---------------------------------------------------------------------------------------------
// The trainer

namespace {

// Where training stands: saved in trainer_state.json, restored by --resume.
struct Position {
  int64_t global_step = 0, stage = 0, stage_step = 0, epoch = 0, pos = 0;
  double elapsed = 0;
  // Sums over the steps since the last log line.
  double log_loss = 0, log_units = 0, log_grad_norm = 0;
  int64_t log_steps = 0;
  nlohmann::json log_metrics = nlohmann::json::object();
};

void restore_requires_grad(const std::vector<std::pair<at::Tensor, bool>>& flags) {
  for (const auto& [t, f] : flags) t.requires_grad_(f);
}

}  // namespace

TrainerResult train(TrainTask& task, const TrainerConfig& cfg, const fs::path& resume,
                    const std::function<void(int64_t, double, double)>& on_step) {
  TrainerHooks hooks;
  if (on_step) hooks.on_step = [&on_step](const StepInfo& s) { on_step(s.step, s.loss, s.lr); };
  return train(task, cfg, resume, hooks);
}

TrainerResult train(TrainTask& task, const TrainerConfig& cfg, const fs::path& resume,
                    const TrainerHooks& hooks) {
  validate(cfg);
  const int64_t n = task.num_samples();
  MVL_CHECK(n > 0, task.kind(), " training: the training set is empty");
  const std::string precision = resolve_precision(cfg.precision);
  const bool bf16 = precision == "bf16";
  const int64_t num_stages = static_cast<int64_t>(cfg.stages.size());
  std::vector<int64_t> steps_of(num_stages);
  for (int64_t k = 0; k < num_stages; ++k)
    steps_of[k] = stage_steps(cfg.stages[k], n, cfg.batch_size);

  torch::nn::Module& module = task.module();
  std::vector<std::pair<std::string, at::Tensor>> named;
  std::map<std::string, at::Tensor> by_name;
  std::vector<std::pair<at::Tensor, bool>> orig_flags;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    named.emplace_back(item.key(), item.value());
    by_name[item.key()] = item.value();
    orig_flags.emplace_back(item.value(), item.value().requires_grad());
  }
  MVL_CHECK(!named.empty(), task.kind(), " training: the model has no parameters");
  for (int64_t k = 0; k < num_stages; ++k) {
    for (const std::string& p : cfg.stages[k].freeze) {
      const bool any = std::any_of(named.begin(), named.end(),
                                   [&](const auto& np) { return is_frozen(np.first, {p}); });
      MVL_CHECK(any, "stage '", cfg.stages[k].name, "': freeze prefix '", p,
                "' matches no parameter (parameter names start with e.g. '", named.front().first,
                "')");
    }
  }

  const nlohmann::json identity = task.identity();
  Position at_;
  std::map<std::string, AdamState> opt_state;
  at::manual_seed(cfg.seed);

  // Resume.
  if (!resume.empty()) {
    const fs::path ck = find_checkpoint(resume);
    const fs::path state_file = ck / "trainer_state.json";
    const nlohmann::json st = io::read_json_file(state_file);
    const std::string where = state_file.string();
    try {
      MVL_CHECK(st.value("identity", nlohmann::json()) == identity, where,
                ": this checkpoint is of another model: it holds ",
                st.value("identity", nlohmann::json()).dump(), " but the task is ", identity.dump(),
                "; resume only with the model it was trained from");
      at_.global_step = st.at("global_step").get<int64_t>();
      at_.stage = st.at("stage").get<int64_t>();
      at_.stage_step = st.at("stage_step").get<int64_t>();
      at_.epoch = st.at("epoch").get<int64_t>();
      at_.pos = st.at("pos").get<int64_t>();
      at_.elapsed = st.value("elapsed", 0.0);
      const auto& lg = st.at("log");
      at_.log_loss = lg.at("loss").get<double>();
      at_.log_units = lg.at("units").get<double>();
      at_.log_grad_norm = lg.at("grad_norm").get<double>();
      at_.log_steps = lg.at("steps").get<int64_t>();
      at_.log_metrics = lg.value("metrics", nlohmann::json::object());
      MVL_CHECK(at_.stage >= 0 && at_.stage <= num_stages, where, ": stage ", at_.stage,
                " but the config has ", num_stages, " stages");
      MVL_CHECK(at_.pos >= 0 && at_.pos <= n, where, ": data position ", at_.pos,
                " is outside the ", n, " training samples (another data set?)");
      if (st.contains("config") && st.at("config") != cfg.to_json()) {
        nlohmann::json a = st.at("config"), b = cfg.to_json();
        a.erase("out_dir");
        b.erase("out_dir");
        for (const char* key : {"progress", "stop_at_step"}) {
          a.erase(key);
          b.erase(key);
        }
        if (a != b)
          std::fprintf(stderr,
                       "warning: resuming %s with a different trainer config than it was written "
                       "with; the run will not equal an uninterrupted one\n",
                       ck.string().c_str());
      }
      const at::Tensor rng = from_hex(st.at("rng_cpu").get<std::string>(), where);
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(rng);
    } catch (const nlohmann::json::exception& e) {
      MVL_FAIL(where, ": malformed trainer state: ", e.what());
    }
    task.load_weights(ck / "model");
    if (at_.stage < num_stages && at_.stage_step < steps_of[at_.stage] && at_.stage_step > 0)
      opt_state = load_optimizer(ck / "optimizer.safetensors", by_name);
  }

  // Output folder.
  const bool write = !cfg.out_dir.empty();
  const fs::path ck_root = cfg.out_dir / "checkpoints";
  const fs::path log_file = cfg.out_dir / "train_log.jsonl";
  // With overwrite, another run's step folders are renamed to replaced-step-N (not checkpoints to
  // resume from any more, but still there) and removed once this run's first checkpoint exists.
  bool drop_old_checkpoints = false;
  if (write) {
    // Temporaries of killed runs (never those of live processes: another run may be writing).
    io::remove_stale_temps(cfg.out_dir);
    io::remove_stale_temps(ck_root);
    // A fresh run does not mix its checkpoints with an earlier run's; a resumed one drops the
    // checkpoints after the resumed step (an abandoned continuation).
    std::error_code ec;
    std::vector<fs::path> old;
    bool replaced = false;  // replaced-step-N folders of an earlier, interrupted overwrite
    for (fs::directory_iterator it(ck_root, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (parse_step_dir(name) >= 0) old.push_back(it->path());
      if (name.rfind(kReplacedPrefix, 0) == 0 && parse_step_dir(name.substr(9)) >= 0)
        replaced = true;
    }
    std::sort(old.begin(), old.end());
    if (cfg.overwrite) {
      drop_old_checkpoints = !old.empty() || replaced;
    } else if (!old.empty()) {
      MVL_CHECK(!resume.empty(), old.back().string(),
                ": the output folder already holds a run's checkpoints; continue it with --resume ",
                cfg.out_dir.string(), ", replace it with --overwrite, or use another output folder");
      MVL_CHECK(path_within(resume, cfg.out_dir), cfg.out_dir.string(),
                ": the output folder holds another run's checkpoints (",
                old.back().filename().string(), ", ...), not the one resumed from (",
                resume.string(), "); replace them with --overwrite, or use another output folder");
    }
  }
  if (hooks.on_start) hooks.on_start();
  if (write) {
    std::error_code ec;
    if (drop_old_checkpoints) {
      // Out of find_checkpoint's sight, still on disk; `final` follows them.
      std::vector<fs::path> steps;
      for (fs::directory_iterator it(ck_root, ec), end; !ec && it != end; it.increment(ec))
        if (parse_step_dir(it->path().filename().string()) >= 0) steps.push_back(it->path());
      for (const fs::path& from : steps) {
        const fs::path to = ck_root / (kReplacedPrefix + from.filename().string());
        fs::remove_all(to, ec);  // an older replaced folder of the same step
        fs::rename(from, to, ec);
        MVL_CHECK(!ec, from.string(), ": cannot move the replaced run's checkpoint aside to ",
                  to.string(), ": ", ec.message());
      }
      const fs::path link = cfg.out_dir / "final";
      if (fs::is_symlink(link, ec)) {
        const fs::path target = fs::read_symlink(link, ec);
        std::vector<fs::path> parts(target.begin(), target.end());
        if (!ec && parts.size() == 3 && parts[0] == "checkpoints" &&
            parse_step_dir(parts[1].string()) >= 0)
          replace_symlink(link, fs::path("checkpoints") / (kReplacedPrefix + parts[1].string()) /
                                    parts[2]);
      }
    } else if (!resume.empty()) {
      std::vector<fs::path> later;
      for (fs::directory_iterator it(ck_root, ec), end; !ec && it != end; it.increment(ec))
        if (parse_step_dir(it->path().filename().string()) > at_.global_step)
          later.push_back(it->path());
      for (const fs::path& l : later) fs::remove_all(l, ec);
    }
    fs::create_directories(ck_root);
    nlohmann::json c = cfg.to_json();
    c["resolved_precision"] = precision;
    c["num_samples"] = n;
    c["stage_steps"] = steps_of;
    io::write_json_file(cfg.out_dir / "config.json", c);
    // Keep the log lines up to the resumed step (a crash may have logged beyond the checkpoint).
    std::string kept;
    if (!resume.empty() && fs::exists(log_file)) {
      std::ifstream f(log_file);
      std::string line;
      while (std::getline(f, line)) {
        try {
          const auto j = nlohmann::json::parse(line);
          if (j.value("step", int64_t{-1}) <= at_.global_step) kept += line + "\n";
        } catch (const nlohmann::json::exception&) {
        }
      }
    }
    io::write_text_file_atomic(log_file, kept);
  }

  TrainerResult result;
  result.steps = at_.global_step;
  module.train();
  const double t_start = seconds_now() - at_.elapsed;
  double t_log = seconds_now();

  auto save_checkpoint = [&](const Position& p) {
    const fs::path dir = ck_root / step_dir_name(p.global_step);
    nlohmann::json state = {{"format", "mambavl-trainer-1"},
                            {"kind", task.kind()},
                            {"global_step", p.global_step},
                            {"stage", p.stage},
                            {"stage_name", p.stage < num_stages ? cfg.stages[p.stage].name : ""},
                            {"stage_step", p.stage_step},
                            {"epoch", p.epoch},
                            {"pos", p.pos},
                            {"elapsed", seconds_now() - t_start},
                            {"log",
                             {{"loss", p.log_loss},
                              {"units", p.log_units},
                              {"grad_norm", p.log_grad_norm},
                              {"steps", p.log_steps},
                              {"metrics", p.log_metrics}}},
                            {"identity", identity},
                            {"config", cfg.to_json()}};
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      state["rng_cpu"] = to_hex(gen.get_state());
    }
    write_dir_atomically(dir, [&](const fs::path& tmp) {
      task.save_model(tmp / "model");
      // Test hook: pause inside the write of this step's checkpoint (the kill -9 test).
      if (const char* pause_at = std::getenv("MAMBAVL_TEST_PAUSE_IN_CHECKPOINT");
          pause_at && std::atoll(pause_at) == p.global_step) {
        std::ofstream(tmp / "paused") << ::getpid() << "\n";
        for (;;) ::pause();
      }
      save_optimizer(tmp / "optimizer.safetensors", opt_state);
      io::write_json_file(tmp / "trainer_state.json", state);
    });
    io::write_text_file_atomic(ck_root / "latest", step_dir_name(p.global_step) + "\n");
    result.final_checkpoint = dir;
    if (drop_old_checkpoints) {
      // --overwrite: this run has a complete checkpoint now; the replaced run's go (its `final`
      // link points into them: it goes too; this run's is made at the end).
      drop_old_checkpoints = false;
      std::error_code ec;
      std::vector<fs::path> gone;
      for (fs::directory_iterator it(ck_root, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().filename().string().rfind(kReplacedPrefix, 0) == 0)
          gone.push_back(it->path());
      for (const fs::path& g : gone) fs::remove_all(g, ec);
      if (fs::is_symlink(cfg.out_dir / "final", ec)) fs::remove(cfg.out_dir / "final", ec);
    }
    // Rotation: keep the keep_last newest step folders.
    if (cfg.keep_last > 0) {
      std::vector<std::pair<int64_t, fs::path>> all;
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(ck_root, ec)) {
        const int64_t s = parse_step_dir(e.path().filename().string());
        if (s >= 0) all.emplace_back(s, e.path());
      }
      std::sort(all.begin(), all.end());
      for (size_t i = 0; i + static_cast<size_t>(cfg.keep_last) < all.size(); ++i)
        if (all[i].second != dir) fs::remove_all(all[i].second, ec);
    }
  };

  auto run_eval = [&](const Position& p) {
    nlohmann::json ev = task.evaluate();
    module.train();
    if (ev.is_null()) return;
    result.last_eval = ev;
    if (write)
      append_line(log_file,
                  {{"step", p.global_step}, {"stage", cfg.stages[p.stage].name}, {"eval", ev}});
    if (cfg.progress)
      std::fprintf(stderr, "eval at step %lld: %s\n", static_cast<long long>(p.global_step),
                   ev.dump().c_str());
  };

  try {
    for (; at_.stage < num_stages; ++at_.stage, at_.stage_step = 0, at_.epoch = 0, at_.pos = 0) {
      const int64_t k = at_.stage;
      const StageConfig& sc = cfg.stages[k];
      const int64_t total = steps_of[k];
      if (at_.stage_step >= total) continue;  // resumed at the end of this stage
      if (at_.stage_step == 0) opt_state.clear();
      const uint64_t sseed = stage_seed(cfg.seed, k);

      // Freezing and parameter groups.
      std::vector<Param> params;
      for (size_t i = 0; i < named.size(); ++i) {
        const auto& [name, t] = named[i];
        const bool trainable = orig_flags[i].second && !is_frozen(name, sc.freeze);
        t.requires_grad_(trainable);
        if (!trainable) continue;
        params.push_back(
            {name, t, no_decay_param(name, t.dim(), cfg.no_decay) ? 0.0 : sc.weight_decay});
      }
      MVL_CHECK(!params.empty(), "stage '", sc.name, "': every parameter is frozen");

      WarmupCosineSchedule sched;
      sched.base_lr = sc.lr;
      sched.total_steps = total;
      sched.warmup_steps = std::min<int64_t>(
          total,
          sc.warmup_steps >= 0
              ? sc.warmup_steps
              : static_cast<int64_t>(std::llround(sc.warmup_ratio * static_cast<double>(total))));
      sched.min_lr_ratio = sc.min_lr_ratio;

      std::optional<ProgressBar> bar;
      if (cfg.progress) {
        ProgressBar::Options po;
        po.unit = "step";
        std::string label = sc.name;
        if (num_stages > 1)
          label = "stage " + std::to_string(k + 1) + "/" + std::to_string(num_stages) + " " + label;
        bar.emplace(label, total - at_.stage_step, po);
      }
      const double t_stage = seconds_now();
      double stage_units = 0;

      std::vector<int64_t> order = epoch_order(n, sseed, at_.epoch);
      const int64_t micro = cfg.batch_size / cfg.grad_accum;
      bool evaluated_at_end = false;
      while (at_.stage_step < total) {
        if (cfg.stop_at_step > 0 && at_.global_step >= cfg.stop_at_step) break;
        const int64_t take = std::min(cfg.batch_size, n - at_.pos);
        const std::vector<int64_t> batch(order.begin() + at_.pos, order.begin() + at_.pos + take);
        const double lr = sched.lr_at(at_.stage_step);
        for (Param& p : params) p.tensor.mutable_grad() = at::Tensor();

        StepInfo info;
        info.step = at_.global_step + 1;
        info.stage = k;
        info.stage_step = at_.stage_step + 1;
        info.epoch = at_.epoch;
        info.lr = lr;
        info.samples = take;
        info.metrics = nlohmann::json::object();
        for (int64_t b = 0, m = 0; b < take; b += micro, ++m) {
          const std::vector<int64_t> chunk(batch.begin() + b,
                                           batch.begin() + std::min(take, b + micro));
          StepResult r;
          {
            std::optional<AutocastBf16> ac;
            if (bf16) ac.emplace();
            r = task.forward(chunk, micro_seed(sseed, at_.global_step, m));
          }
          MVL_CHECK(r.loss.defined() && r.loss.numel() == 1, task.kind(),
                    " task: forward returned no scalar loss");
          MVL_CHECK(r.loss.requires_grad(), task.kind(), " task, stage '", sc.name,
                    "': the loss does not depend on any trainable parameter (is everything it "
                    "uses frozen?)");
          const at::Tensor loss = r.loss.to(at::kFloat).reshape({});
          const double lv = loss.item<double>();
          MVL_CHECK(std::isfinite(lv), "training diverged: the loss is ", lv, " at step ",
                    info.step, " (stage '", sc.name, "', lr ", lr,
                    "); try a lower learning rate or gradient clipping");
          const double w = static_cast<double>(chunk.size()) / static_cast<double>(take);
          if (w == 1.0)
            loss.backward();
          else
            (loss * w).backward();
          info.loss += w * lv;
          info.units += r.units;
          add_metrics(info.metrics, r.metrics, w);
        }

        // Global gradient norm (as torch::nn::utils::clip_grad_norm_), clipping.
        {
          at::NoGradGuard ng;
          std::vector<at::Tensor> norms;
          for (const Param& p : params)
            if (p.tensor.grad().defined()) norms.push_back(p.tensor.grad().norm(2).to(at::kFloat));
          if (!norms.empty()) {
            const at::Tensor total_norm = at::stack(norms).norm(2);
            info.grad_norm = total_norm.item<double>();
            if (cfg.grad_clip > 0) {
              const double coef = cfg.grad_clip / (info.grad_norm + 1e-6);
              if (coef < 1)
                for (Param& p : params)
                  if (p.tensor.grad().defined()) p.tensor.mutable_grad().mul_(coef);
            }
          }
        }
        adamw_step(params, opt_state, lr, cfg);

        ++at_.global_step;
        ++at_.stage_step;
        at_.pos += take;
        result.step_losses.push_back(info.loss);
        result.steps = at_.global_step;
        at_.log_loss += info.loss;
        at_.log_units += info.units;
        at_.log_grad_norm += info.grad_norm;
        at_.log_steps += 1;
        add_metrics(at_.log_metrics, info.metrics, 1.0);
        stage_units += info.units;
        if (hooks.on_step) hooks.on_step(info);

        const bool stage_end = at_.stage_step == total;
        if (at_.pos >= n) {
          if (hooks.on_epoch_end) hooks.on_epoch_end({k, at_.epoch, at_.global_step, false});
          ++at_.epoch;
          at_.pos = 0;
          if (!stage_end) order = epoch_order(n, sseed, at_.epoch);
        } else if (stage_end && at_.pos > 0 && hooks.on_epoch_end) {
          hooks.on_epoch_end({k, at_.epoch, at_.global_step, true});
        }

        if (bar) {
          bar->set_field("loss", at_.log_loss / static_cast<double>(at_.log_steps), 4);
          const double dt = seconds_now() - t_stage;
          char buf[48];
          std::snprintf(buf, sizeof buf, "%.1f", dt > 0 ? stage_units / dt : 0.0);
          bar->set_field(task.unit() + "/s", buf);
          std::snprintf(buf, sizeof buf, "%.2e", lr);
          bar->set_field("lr", buf);
          bar->advance(1);
        }

        if (cfg.log_every > 0 ? (at_.global_step % cfg.log_every == 0 || stage_end) : stage_end) {
          const double now = seconds_now();
          const double dt = now - t_log;
          const double ls = static_cast<double>(at_.log_steps);
          nlohmann::json line = {{"step", at_.global_step},
                                 {"stage", sc.name},
                                 {"epoch", info.epoch},
                                 {"loss", at_.log_loss / ls},
                                 {"lr", lr},
                                 {"grad_norm", at_.log_grad_norm / ls},
                                 {"units_per_second", dt > 0 ? at_.log_units / dt : 0.0},
                                 {task.unit() + "_per_second", dt > 0 ? at_.log_units / dt : 0.0},
                                 {"elapsed", now - t_start}};
          for (const auto& item : at_.log_metrics.items())
            line[item.key()] = item.value().get<double>() / ls;
          if (write) append_line(log_file, line);
          at_.log_loss = at_.log_units = at_.log_grad_norm = 0;
          at_.log_steps = 0;
          at_.log_metrics = nlohmann::json::object();
          t_log = now;
        }
        if (stage_end && bar) bar->finish();  // before the end-of-stage evaluation prints
        if (cfg.eval_every > 0 && at_.global_step % cfg.eval_every == 0) {
          run_eval(at_);
          evaluated_at_end = stage_end;
        }
        if (stage_end && cfg.eval_every >= 0 && !evaluated_at_end) run_eval(at_);
        const bool stop = cfg.stop_at_step > 0 && at_.global_step >= cfg.stop_at_step;
        if (write &&
            ((cfg.save_every > 0 && at_.global_step % cfg.save_every == 0) || stage_end || stop)) {
          save_checkpoint(at_);
        }
      }
      if (bar) bar->finish();
      if (cfg.stop_at_step > 0 && at_.global_step >= cfg.stop_at_step) break;
    }
  } catch (...) {
    restore_requires_grad(orig_flags);
    throw;
  }
  restore_requires_grad(orig_flags);
  module.train();

  if (result.final_checkpoint.empty() && !resume.empty()) {
    // Nothing left to run (resumed at the end): the final checkpoint is the resumed one.
    result.final_checkpoint = find_checkpoint(resume);
  }
  if (write && !result.final_checkpoint.empty() &&
      result.final_checkpoint.parent_path() == ck_root) {
    // out_dir/final -> checkpoints/step-…/model (relative symlink, swapped in by rename).
    const fs::path link = cfg.out_dir / "final";
    const fs::path tmp = cfg.out_dir / (".final.tmp." + std::to_string(::getpid()));
    std::error_code ec;
    fs::remove(tmp, ec);
    fs::create_directory_symlink(
        fs::path("checkpoints") / result.final_checkpoint.filename() / "model", tmp, ec);
    if (!ec && !(fs::is_directory(link) && !fs::is_symlink(link))) fs::rename(tmp, link, ec);
    if (ec) fs::remove(tmp, ec);
  }
  return result;
}

}  // namespace mambavl::train
