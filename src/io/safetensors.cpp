#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>

#include "common/error.h"
#include "common/shape.h"
#include "io/atomic_file.h"
#include "io/file.h"
#include "io/json_util.h"

namespace mambavl::io {

// The format is little-endian; tensor bytes are copied verbatim into ATen storage.
static_assert(std::endian::native == std::endian::little, "safetensors IO assumes little-endian");

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // as the reference library

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  uint64_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8},    {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},
    {"BF16", at::kBFloat16, 2}, {"I64", at::kLong, 8},  {"I32", at::kInt, 4},
    {"I16", at::kShort, 2},     {"I8", at::kChar, 1},   {"U8", at::kByte, 1},
    {"BOOL", at::kBool, 1},
};

const DtypeInfo* find_dtype(const std::string& s) {
  for (const auto& d : kDtypes)
    if (s == d.name) return &d;
  return nullptr;
}

// JSON value -> short description for messages ("a string", "-3", ...), never huge.
std::string describe(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Parses and validates one tensor entry of the header.
TensorEntry parse_entry(const std::string& where, const std::string& name, const nlohmann::json& v,
                        uint64_t buffer_size) {
  const std::string at = where + "tensor '" + name + "': ";
  MVL_CHECK(v.is_object(), at, "entry must be a JSON object, got ", describe(v));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    MVL_CHECK(v.contains(field), at, "missing field '", field, "'");

  TensorEntry e;
  const auto& dt = v["dtype"];
  MVL_CHECK(dt.is_string(), at, "dtype must be a string, got ", describe(dt));
  e.dtype = dt.get<std::string>();
  const DtypeInfo* info = find_dtype(e.dtype);
  MVL_CHECK(info != nullptr, at, "unsupported dtype '", e.dtype,
            "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");

  const auto& sh = v["shape"];
  MVL_CHECK(sh.is_array(), at, "shape must be an array, got ", describe(sh));
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : sh) {
    MVL_CHECK(d.is_number_integer(), at, "shape ", describe(sh),
              " must contain non-negative integers, got ", describe(d));
    MVL_CHECK(d.is_number_unsigned() || d.get<int64_t>() >= 0, at, "shape ", describe(sh),
              " has negative dimension ", describe(d));
    uint64_t u = d.get<uint64_t>();
    MVL_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), at, "shape ",
              describe(sh), " has dimension ", u, " that does not fit in int64");
    e.shape.push_back(static_cast<int64_t>(u));
    overflow = overflow || __builtin_mul_overflow(numel, u, &numel);
  }
  uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, info->size, &nbytes);
  MVL_CHECK(!overflow, at, "shape ", shape_str(e.shape), " x ", e.dtype,
            " overflows 64-bit byte count");
  MVL_CHECK(numel <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), at, "shape ",
            shape_str(e.shape), " has too many elements");

  const auto& off = v["data_offsets"];
  MVL_CHECK(off.is_array() && off.size() == 2, at,
            "data_offsets must be an array [begin, end], got ", describe(off));
  for (const auto& o : off)
    MVL_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0), at,
              "data_offsets ", describe(off), " must be non-negative integers");
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  MVL_CHECK(e.begin <= e.end, at, "data_offsets [", e.begin, ", ", e.end, "] has begin > end");
  MVL_CHECK(nbytes == e.end - e.begin, at, "shape ", shape_str(e.shape), " x ", e.dtype, " = ",
            nbytes, " bytes but data_offsets span ", e.end - e.begin, " bytes");
  MVL_CHECK(e.end <= buffer_size, at, "data_offsets [", e.begin, ", ", e.end,
            "] out of range: the data buffer has ", buffer_size, " bytes");
  return e;
}

}  // namespace

at::ScalarType scalar_type_from_safetensors(const std::string& dtype) {
  const DtypeInfo* info = find_dtype(dtype);
  MVL_CHECK(info != nullptr, "unsupported safetensors dtype '", dtype,
            "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  return info->type;
}

std::string safetensors_dtype(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d.name;
  MVL_FAIL("dtype ", c10::toString(t), " cannot be stored in safetensors by mambavl ",
           "(supported: float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool)");
}

struct SafetensorsFile::Mapping {
  uint8_t* addr = nullptr;
  size_t size = 0;
  int fd = -1;  // kept open: tensor() / read_into() pread from it
  std::mutex mu;
  std::unordered_map<uint64_t, int64_t> views;  // file offset of a tensor -> its live views

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, size);
    if (fd >= 0) ::close(fd);
  }

  // The last view of the tensor at file bytes [begin, end) is gone: drop the pages that lie
  // wholly inside it (no other tensor has bytes there; copy-on-write pages are discarded too).
  void release(uint64_t begin, uint64_t end) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = views.find(begin);
    if (it == views.end() || --it->second > 0) return;
    views.erase(it);
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t lo = (begin + page - 1) / page * page, hi = end / page * page;
    if (hi > lo) ::madvise(addr + lo, hi - lo, MADV_DONTNEED);
  }
};

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : path_(path) {
  const std::string where = path.string() + ": ";
  // A regular file only (checked on the descriptor; a FIFO never blocks the open).
  uint64_t size = 0;
  auto map = std::make_shared<Mapping>();
  map->fd = open_regular_file(path, "safetensors", &size);  // closed by ~Mapping on any error
  MVL_CHECK(size >= 8, where, "file is ", size, " bytes, too small for the 8-byte header length");
  // Private (copy-on-write) and writable: tensors viewing it may be written (training) without
  // the file ever changing. Every span is checked against the file length below, before any
  // view is made, so no view reaches past the end of the file.
  void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, map->fd, 0);
  MVL_CHECK(m != MAP_FAILED, where, "mmap failed: ", std::strerror(errno));
  map->addr = static_cast<uint8_t*>(m);
  map->size = size;

  const uint8_t* bytes = map->addr;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  MVL_CHECK(n <= size - 8, where, "header length ", n, " exceeds the file size (", size,
            " bytes, so at most ", size - 8, ")");
  MVL_CHECK(n <= kMaxHeaderBytes, where, "header length ", n, " exceeds the limit of ",
            kMaxHeaderBytes, " bytes");
  const uint64_t buffer_size = size - 8 - n;
  data_offset_ = 8 + n;

  nlohmann::json header;
  try {
    // A valid header nests 3 deep ({name: {shape: [..]}}); allow some slack.
    header = parse_json_bounded(bytes + 8, bytes + 8 + n, 16, where + "header: ");
  } catch (const nlohmann::json::exception& e) {
    MVL_FAIL(where, "header is not valid JSON: ", e.what());
  }
  MVL_CHECK(header.is_object(), where, "header must be a JSON object, got ", header.type_name());

  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      MVL_CHECK(v.is_object(), where, "__metadata__ must be an object of strings, got ",
                v.type_name());
      for (const auto& [k, s] : v.items()) {
        MVL_CHECK(s.is_string(), where, "__metadata__ value for '", k, "' must be a string, got ",
                  describe(s));
        metadata_[k] = s.get<std::string>();
      }
      continue;
    }
    entries_.emplace(name, parse_entry(where, name, v, buffer_size));
  }

  std::vector<std::pair<const std::string*, const TensorEntry*>> spans;
  spans.reserve(entries_.size());
  for (const auto& [name, e] : entries_) spans.emplace_back(&name, &e);
  std::sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin
                                              : a.second->end < b.second->end;
  });
  // Empty spans occupy no bytes and cannot overlap anything; `last` is the non-empty span with
  // the largest end so far (spans sorted by begin overlap iff one begins before that end).
  const std::pair<const std::string*, const TensorEntry*>* last = nullptr;
  for (const auto& cur : spans) {
    const auto& [cn, c] = cur;
    if (c->begin == c->end) continue;
    if (last != nullptr) {
      const auto& [pn, p] = *last;
      MVL_CHECK(c->begin >= p->end, where, "tensor '", *cn, "': data_offsets [", c->begin, ", ",
                c->end, "] overlap those of tensor '", *pn, "' [", p->begin, ", ", p->end, "]");
    }
    if (last == nullptr || c->end > last->second->end) last = &cur;
  }
  map_ = std::move(map);
}

SafetensorsFile::~SafetensorsFile() = default;

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

const TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  MVL_CHECK(it != entries_.end(), path_.string(), ": no tensor named '", name, "'");
  return it->second;
}

namespace {

// Anything but 0/1 in an ATen bool is undefined behaviour: reject it.
void check_bool_bytes(const uint8_t* p, uint64_t n, uint64_t first, const std::string& file,
                      const std::string& name) {
  for (uint64_t i = 0; i < n; ++i)
    MVL_CHECK(p[i] <= 1, file, ": tensor '", name, "': BOOL element ", first + i,
              " has byte value ", static_cast<int>(p[i]), " (must be 0 or 1)");
}

}  // namespace

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorEntry& e = entry(name);
  at::Tensor t =
      at::empty(e.shape, at::TensorOptions().dtype(scalar_type_from_safetensors(e.dtype)));
  read_into(name, t);
  return t;
}

void SafetensorsFile::read_into(const std::string& name, at::Tensor& dst) const {
  const TensorEntry& e = entry(name);
  const DtypeInfo* info = find_dtype(e.dtype);
  const uint64_t nbytes = e.end - e.begin, numel = nbytes / info->size;
  const std::string at = path_.string() + ": tensor '" + name + "': ";
  MVL_CHECK(dst.defined() && dst.device().is_cpu() && dst.is_contiguous() &&
                static_cast<uint64_t>(dst.numel()) == numel,
            at, "read_into needs a contiguous CPU tensor of ", numel, " elements");
  if (nbytes == 0) return;
  const bool same = dst.scalar_type() == info->type;
  // Converting: 8 MB of stored elements at a time through a bounce buffer.
  const uint64_t chunk = same ? nbytes : std::min<uint64_t>(nbytes, (8u << 20) / info->size * info->size);
  std::vector<uint8_t> bounce(same ? 0 : chunk);
  at::Tensor flat = dst.view({-1});
  for (uint64_t off = 0; off < nbytes; off += chunk) {
    const uint64_t len = std::min(chunk, nbytes - off);
    uint8_t* buf = same ? static_cast<uint8_t*>(dst.data_ptr()) + off : bounce.data();
    for (uint64_t got = 0; got < len;) {
      const ssize_t r = ::pread(map_->fd, buf + got, len - got,
                                static_cast<off_t>(data_offset_ + e.begin + off + got));
      if (r < 0 && errno == EINTR) continue;
      MVL_CHECK(r >= 0, at, "read failed: ", std::strerror(errno));
      MVL_CHECK(r > 0, at, "the file ended at byte ", data_offset_ + e.begin + off + got,
                " while reading (was it truncated after it was opened?)");
      got += static_cast<uint64_t>(r);
    }
    if (e.dtype == "BOOL") check_bool_bytes(buf, len, off, path_.string(), name);
    if (!same) {
      const int64_t first = static_cast<int64_t>(off / info->size);
      const int64_t count = static_cast<int64_t>(len / info->size);
      flat.narrow(0, first, count).copy_(at::from_blob(buf, {count}, at::dtype(info->type)));
    }
  }
}

bool SafetensorsFile::viewable(const std::string& name) const {
  const TensorEntry& e = entry(name);
  const uint64_t off = data_offset_ + e.begin;  // the mapping starts page-aligned
  return e.end > e.begin && off % find_dtype(e.dtype)->size == 0;
}

at::Tensor SafetensorsFile::view(const std::string& name) const {
  if (!viewable(name)) return tensor(name);
  const TensorEntry& e = entry(name);
  const uint64_t begin = data_offset_ + e.begin, end = data_offset_ + e.end;
  uint8_t* p = map_->addr + begin;
  if (e.dtype == "BOOL") check_bool_bytes(p, end - begin, 0, path_.string(), name);
  {
    std::lock_guard<std::mutex> lock(map_->mu);
    ++map_->views[begin];
  }
  std::shared_ptr<Mapping> keep = map_;
  try {
    return at::from_blob(
        p, e.shape, [keep, begin, end](void*) { keep->release(begin, end); },
        at::TensorOptions().dtype(scalar_type_from_safetensors(e.dtype)));
  } catch (...) {
    map_->release(begin, end);
    throw;
  }
}

bool SafetensorsFile::in_mapping(const void* p) const {
  const auto* b = static_cast<const uint8_t*>(p);
  return b >= map_->addr && b < map_->addr + map_->size;
}

void save_safetensors(const std::filesystem::path& path,
                      const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::string where = path.string() + ": ";
  struct Item {
    const std::string* name;
    std::string dtype;
    uint64_t elem;
    at::Tensor t;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    MVL_CHECK(!name.empty(), where, "tensor names must be non-empty");
    MVL_CHECK(name != "__metadata__", where, "'__metadata__' is reserved, not a tensor name");
    MVL_CHECK(seen.insert(name).second, where, "tensor '", name, "' given twice");
    MVL_CHECK(t.defined(), where, "tensor '", name, "' is undefined");
    std::string dt;
    try {
      dt = safetensors_dtype(t.scalar_type());
    } catch (const Error& e) {
      MVL_FAIL(where, "tensor '", name, "': ", e.what());
    }
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    items.push_back({&name, dt, static_cast<uint64_t>(c.element_size()), c});
  }
  // Larger elements first (stable, so the given order holds within a size), as the reference
  // library does: with the 8-byte-aligned header every tensor then starts aligned to its element.
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return a.elem > b.elem; });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  uint64_t offset = 0;
  for (const auto& it : items) {
    const uint64_t nbytes = static_cast<uint64_t>(it.t.nbytes());
    header[*it.name] = {{"dtype", it.dtype},
                        {"shape", it.t.sizes().vec()},
                        {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  MVL_CHECK(text.size() <= kMaxHeaderBytes, where, "header would be ", text.size(),
            " bytes, over the limit of ", kMaxHeaderBytes);

  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  AtomicFileWriter out(path);
  out.write(len, sizeof len);
  out.write(text.data(), text.size());
  for (const auto& it : items)
    if (it.t.nbytes() > 0) out.write(it.t.const_data_ptr(), it.t.nbytes());
  out.commit();
}

}  // namespace mambavl::io
