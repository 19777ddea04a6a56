#include "io/checkpoint.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "common/error.h"
#include "common/shape.h"
#include "io/atomic_file.h"
#include "io/json_util.h"
#include "io/safetensors.h"
#include "io/file.h"

namespace mambavl::io {

namespace {

std::string read_text_file(const std::filesystem::path& path, uint64_t max_bytes) {
  return read_file(path, max_bytes, "JSON");
}

// Line and column (1-based) of the character at 0-based byte index `pos`.
std::pair<size_t, size_t> line_col(const std::string& text, size_t pos) {
  pos = std::min(pos, text.size());
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < pos; ++i)
    if (text[i] == '\n') ++line, line_start = i + 1;
  return {line, pos - line_start + 1};
}

// At most `limit` names, then "... and N more".
std::string name_list(const std::vector<std::string>& names, size_t limit = 10) {
  std::ostringstream s;
  for (size_t i = 0; i < names.size() && i < limit; ++i)
    s << (i ? ", " : "") << "'" << names[i] << "'";
  if (names.size() > limit) s << " ... and " << names.size() - limit << " more";
  return s.str();
}

bool is_integral_like(const std::string& dtype) {
  return dtype[0] == 'I' || dtype[0] == 'U' || dtype == "BOOL";
}

}  // namespace

nlohmann::json read_json_file(const std::filesystem::path& path, uint64_t max_bytes) {
  const std::string text = read_text_file(path, max_bytes);
  try {
    return parse_json_bounded(text.begin(), text.end(), 512, path.string() + ": invalid JSON: ");
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based: the position of the offending character (text.size() + 1 at the end).
    const size_t pos = e.byte == 0 ? 0 : e.byte - 1;
    auto [line, col] = line_col(text, pos);
    MVL_FAIL(path.string(), ":", line, ":", col, ": invalid JSON: ", e.what());
  } catch (const nlohmann::json::exception& e) {
    MVL_FAIL(path.string(), ": invalid JSON: ", e.what());
  }
}

void write_text_file_atomic(const std::filesystem::path& path, const std::string& text) {
  AtomicFileWriter out(path);
  out.write(text.data(), text.size());
  out.commit();
}

void write_json_file(const std::filesystem::path& path, const nlohmann::json& j) {
  write_text_file_atomic(path, j.dump(2) + "\n");
}

struct CheckpointFolder::Impl {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, size_t> where;  // tensor name -> index into files

  const SafetensorsFile& file(const std::filesystem::path& dir, const std::string& name) const {
    auto it = where.find(name);
    MVL_CHECK(it != where.end(), dir.string(), ": checkpoint has no tensor named '", name, "'");
    return *files[it->second];
  }
};

CheckpointFolder::CheckpointFolder(const std::filesystem::path& dir)
    : dir_(dir), impl_(std::make_unique<Impl>()) {
  namespace fs = std::filesystem;
  const std::string at = dir.string() + ": ";
  std::error_code ec;
  MVL_CHECK(fs::is_directory(dir, ec), at, "not a directory (expected a model folder)");

  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) {
    // As Hugging Face does, a single file wins over an index next to it.
    impl_->files.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& n : impl_->files[0]->names()) impl_->where.emplace(n, 0);
    return;
  }
  if (!fs::exists(index, ec)) {
    std::string msg = at + "no model.safetensors or model.safetensors.index.json (expected a " +
                      "Hugging Face style folder with safetensors weights)";
    for (const char* bin : {"pytorch_model.bin", "pytorch_model.bin.index.json"})
      if (fs::exists(dir / bin, ec))
        msg += std::string("; found ") + bin +
               ", which is not supported: convert the checkpoint to safetensors first";
    throw Error(msg);
  }

  const nlohmann::json j = read_json_file(index);
  const std::string iat = index.string() + ": ";
  MVL_CHECK(j.is_object() && j.contains("weight_map"), iat, "missing \"weight_map\"");
  const auto& wm = j["weight_map"];
  MVL_CHECK(wm.is_object(), iat, "\"weight_map\" must be an object of tensor name -> shard file");

  std::map<std::string, size_t> shard_index;  // shard file name -> files index
  std::vector<std::pair<std::string, std::string>> mapping;
  for (const auto& [name, v] : wm.items()) {
    MVL_CHECK(v.is_string(), iat, "weight_map entry for '", name, "' must be a file name string");
    const std::string shard = v.get<std::string>();
    const fs::path rel(shard);
    bool safe = !shard.empty() && rel.is_relative();
    for (const auto& part : rel) safe = safe && part != "..";
    MVL_CHECK(safe, iat, "weight_map entry for '", name, "' names shard '", shard,
              "', which is not a file inside the folder");
    mapping.emplace_back(name, shard);
    if (shard_index.count(shard)) continue;
    const fs::path sp = dir / rel;
    MVL_CHECK(fs::exists(sp, ec), iat, "shard '", shard, "' (holding tensor '", name,
              "') does not exist in ", dir.string());
    shard_index.emplace(shard, impl_->files.size());
    impl_->files.push_back(std::make_unique<SafetensorsFile>(sp));
  }

  // A tensor stored in two shards is ambiguous, whatever the index says.
  std::unordered_map<std::string, size_t> holder;
  for (size_t i = 0; i < impl_->files.size(); ++i)
    for (const auto& n : impl_->files[i]->names()) {
      auto [it, fresh] = holder.emplace(n, i);
      MVL_CHECK(fresh, at, "tensor '", n,
                "' is stored in two shards: ", impl_->files[it->second]->path().filename().string(),
                " and ", impl_->files[i]->path().filename().string());
    }
  for (const auto& [name, shard] : mapping) {
    const size_t i = shard_index.at(shard);
    MVL_CHECK(impl_->files[i]->contains(name), iat, "tensor '", name, "' is mapped to shard '",
              shard, "' but that file does not contain it");
    impl_->where.emplace(name, i);
  }
}

CheckpointFolder::~CheckpointFolder() = default;

std::vector<std::string> CheckpointFolder::names() const {
  std::vector<std::string> out;
  out.reserve(impl_->where.size());
  for (const auto& kv : impl_->where) out.push_back(kv.first);
  return out;
}

bool CheckpointFolder::contains(const std::string& name) const {
  return impl_->where.count(name) != 0;
}

at::Tensor CheckpointFolder::tensor(const std::string& name) const {
  return impl_->file(dir_, name).tensor(name);
}

at::Tensor CheckpointFolder::view(const std::string& name) const {
  return impl_->file(dir_, name).view(name);
}

void CheckpointFolder::read_into(const std::string& name, at::Tensor& dst) const {
  impl_->file(dir_, name).read_into(name, dst);
}

std::vector<int64_t> CheckpointFolder::shape(const std::string& name) const {
  return impl_->file(dir_, name).entry(name).shape;
}

std::string CheckpointFolder::dtype(const std::string& name) const {
  return impl_->file(dir_, name).entry(name).dtype;
}

std::filesystem::path CheckpointFolder::file_of(const std::string& name) const {
  return impl_->file(dir_, name).path();
}

void load_module(torch::nn::Module& module, const CheckpointFolder& ckpt, const LoadOptions& opt) {
  struct Plan {
    std::string name, key;
    at::Tensor target;
    at::ScalarType dtype;  // what the target holds after loading
  };
  struct Target {
    std::string name;
    at::Tensor t;
    bool param;
  };
  std::vector<Target> targets;
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    targets.push_back({p.key(), p.value(), true});
  for (const auto& b : module.named_buffers(/*recurse=*/true))
    targets.push_back({b.key(), b.value(), false});

  // Validate everything before touching the module, so a failed load leaves it unchanged.
  std::vector<Plan> plan;
  std::vector<std::string> missing;
  std::set<std::string> consumed;
  for (auto& tg : targets) {
    const std::string& name = tg.name;
    const at::Tensor& target = tg.t;
    std::vector<std::string> keys =
        opt.keys_for ? opt.keys_for(name) : std::vector<std::string>{name};
    const std::string* found = nullptr;
    for (const auto& k : keys)
      if (ckpt.contains(k)) {
        found = &k;
        break;
      }
    if (found == nullptr) {
      if (!(opt.allow_missing && opt.allow_missing(name)))
        missing.push_back(
            keys.size() == 1 && keys[0] == name ? name : name + " (tried " + name_list(keys) + ")");
      continue;
    }
    const std::string& key = *found;
    const std::string file = ckpt.file_of(key).string();
    const auto shape = ckpt.shape(key);
    const auto want = target.sizes().vec();
    MVL_CHECK(shape == want, file, ": tensor '", key, "' has shape ", shape_str(shape),
              " but the model expects ", shape_str(want), " for parameter '", name, "'");
    const std::string dt = ckpt.dtype(key);
    if (at::isFloatingType(target.scalar_type()))
      MVL_CHECK(!is_integral_like(dt), file, ": tensor '", key, "' is stored as ", dt,
                " but parameter '", name, "' is floating point (",
                c10::toString(target.scalar_type()), ")");
    else
      MVL_CHECK(is_integral_like(dt), file, ": tensor '", key, "' is stored as ", dt,
                " but parameter '", name, "' is ", c10::toString(target.scalar_type()));
    at::ScalarType dtype = target.scalar_type();
    if (tg.param && opt.dtype_for && at::isFloatingType(dtype)) dtype = opt.dtype_for(name, dtype);
    consumed.insert(key);
    plan.push_back({name, key, target, dtype});
  }

  std::vector<std::string> unexpected;
  for (const auto& n : ckpt.names())
    if (!consumed.count(n) && !(opt.ignore_extra && opt.ignore_extra(n))) unexpected.push_back(n);
  if (!missing.empty() || !unexpected.empty()) {
    std::ostringstream msg;
    msg << ckpt.dir().string() << ": checkpoint does not match the model:";
    if (!missing.empty())
      msg << " " << missing.size() << " missing tensor(s): " << name_list(missing) << ";";
    if (!unexpected.empty())
      msg << " " << unexpected.size()
          << " unexpected tensor(s) in the checkpoint: " << name_list(unexpected) << ";";
    std::string s = msg.str();
    s.pop_back();
    throw Error(s);
  }

  at::NoGradGuard no_grad;
  for (auto& p : plan) {
    if (!p.target.device().is_cpu()) {
      p.target.set_data(ckpt.tensor(p.key).to(p.target.device(), p.dtype));
      continue;
    }
    // set_data, not copy_: the placeholder's storage is released (never touched if it was
    // uninitialised), so the weights are not held twice.
    if (ckpt.dtype(p.key) == safetensors_dtype(p.dtype)) {
      p.target.set_data(ckpt.view(p.key));
    } else {
      at::Tensor t = at::empty(p.target.sizes(), at::TensorOptions().dtype(p.dtype));
      ckpt.read_into(p.key, t);
      p.target.set_data(t);
    }
  }
}

void save_module(const torch::nn::Module& module, const std::filesystem::path& dir,
                 const std::function<std::string(const std::string&)>& rename,
                 at::ScalarType dtype) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    std::string key = rename ? rename(name) : name;
    if (key.empty()) return;  // rename may drop a tensor (e.g. a tied weight)
    at::Tensor v = t.detach();
    if (dtype != at::ScalarType::Undefined && at::isFloatingType(v.scalar_type())) v = v.to(dtype);
    out.emplace_back(std::move(key), std::move(v));
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) add(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) add(b.key(), b.value());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  MVL_CHECK(!ec, dir.string(), ": cannot create folder: ", ec.message());
  // "format": "pt" is what Hugging Face loaders expect in the metadata.
  save_safetensors(dir / "model.safetensors", out, {{"format", "pt"}});
}

}  // namespace mambavl::io
