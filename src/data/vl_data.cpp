#include "data/vl_data.h"

#include <stb/stb_image.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/json_util.h"
#include "io/file.h"

namespace mambavl::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kMaxJsonDepth = 64;
const std::string kImageMarker = "<image>";

void check_index(int64_t i, int64_t n, const std::string& what) {
  MVL_CHECK(i >= 0 && i < n, what, ": index ", i, " out of range for a dataset of ", n,
            " examples");
}

std::string read_whole_file(const fs::path& path) {
  return io::read_file(path, io::kMaxTextBytes, "dataset");
}

// "string" / "integer" / ... for messages.
std::string type_name(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_null()) return "null";
  if (v.is_array()) return "an array";
  return "an object";
}

// The id field (string or integer), or `dflt` when absent / null.
std::string get_id(const json& row, const std::string& dflt, const std::string& at) {
  auto it = row.find("id");
  if (it == row.end() || it->is_null()) return dflt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  MVL_FAIL(at, "\"id\" must be a string or an integer, got ", type_name(*it));
}

// [x1, y1, x2, y2] normalised; Error unless 4 finite numbers with 0 <= x1 < x2 <= 1 (same for y).
std::array<double, 4> parse_norm_box(const json& v, const std::string& at, const char* key) {
  MVL_CHECK(v.is_array() && v.size() == 4, at, "\"", key,
            "\" must be an array of 4 numbers [x1, y1, x2, y2] normalised to [0, 1], got ",
            v.dump());
  std::array<double, 4> b{};
  for (size_t k = 0; k < 4; ++k) {
    MVL_CHECK(v[k].is_number(), at, "\"", key, "\"[", k, "] must be a number, got ",
              type_name(v[k]));
    b[k] = v[k].get<double>();
    MVL_CHECK(std::isfinite(b[k]) && b[k] >= 0.0 && b[k] <= 1.0, at, "\"", key, "\"[", k,
              "] = ", v[k].dump(),
              " is outside [0, 1] (\"box\" is normalised by the image size; give pixel boxes as "
              "COCO \"bbox\": [x, y, w, h])");
  }
  MVL_CHECK(b[0] < b[2] && b[1] < b[3], at, "\"", key, "\" ", v.dump(),
            " is empty or inverted (need x1 < x2 and y1 < y2)");
  return b;
}

fs::path resolve(const fs::path& root, const std::string& p) {
  const fs::path q(p);
  return q.is_absolute() ? q : root / q;
}

std::vector<io::Image> load_images(const std::vector<fs::path>& paths, const std::string& where,
                                   const io::ImageLimits& limits) {
  std::vector<io::Image> out;
  out.reserve(paths.size());
  for (const auto& p : paths) {
    try {
      out.push_back(io::load_image(p, limits));
    } catch (const Error& e) {
      MVL_FAIL(where, ": ", e.what());
    }
  }
  return out;
}

void warn_skipped(const std::string& file, int64_t skipped, int64_t kept) {
  if (skipped == 0) return;
  std::fprintf(stderr,
               "warning: %s: skipped %lld row(s) whose image file is missing (%lld rows kept)\n",
               file.c_str(), static_cast<long long>(skipped), static_cast<long long>(kept));
}

}  // namespace

const std::vector<std::string>& vl_tasks() {
  static const std::vector<std::string> k{"caption", "vqa", "grounding", "mc", "chat"};
  return k;
}

std::string format_box(const std::array<double, 4>& box) {
  std::string s = "[";
  for (size_t k = 0; k < 4; ++k) {
    double v = box[k];
    v = std::isnan(v) ? 0.0 : std::clamp(v, 0.0, 1.0);
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    s += (k ? "," : "");
    s += buf;
  }
  return s + "]";
}

MissingImage parse_missing_image(const std::string& s) {
  if (s == "fail") return MissingImage::Fail;
  if (s == "skip") return MissingImage::Skip;
  MVL_FAIL("missing-image policy must be \"fail\" or \"skip\", got \"", s, "\"");
}

std::string task_prompt(const std::string& task, const std::string& question) {
  if (task == "caption") return "Provide a one-sentence caption for the provided image.\n";
  if (task == "vqa")
    return "Answer the question using a single word or phrase.\nQuestion: " + question +
           "\nAnswer: ";
  if (task == "grounding") return "Locate the region that is described by:\n" + question + "\n";
  MVL_FAIL("no prompt template for task \"", task, "\" (templates: caption, vqa, grounding)");
}

int64_t count_image_markers(const std::string& text) {
  int64_t n = 0;
  for (size_t at = text.find(kImageMarker); at != std::string::npos;
       at = text.find(kImageMarker, at + kImageMarker.size()))
    ++n;
  return n;
}

// ---------------------------------------------------------------- LlavaJsonDataset

LlavaJsonDataset::LlavaJsonDataset(const fs::path& json_path, fs::path image_root,
                                   MissingImage missing, const io::ImageLimits& limits)
    : file_(json_path.string()), limits_(limits) {
  if (image_root.empty()) image_root = json_path.parent_path();
  const json doc = io::read_json_file(json_path, io::kMaxTextBytes);
  MVL_CHECK(doc.is_array(), file_,
            ": expected a JSON array of rows [{\"id\", \"image\", \"conversations\": [...]}, ...], "
            "got ",
            type_name(doc));
  for (size_t r = 0; r < doc.size(); ++r) {
    const std::string at = file_ + " row " + std::to_string(r) + ": ";
    const json& row = doc[r];
    MVL_CHECK(row.is_object(), at, "expected an object, got ", type_name(row));
    Row out;
    out.row = static_cast<int64_t>(r);
    VLExample& ex = out.ex;
    ex.id = get_id(row, std::to_string(r), at);

    // Images.
    std::vector<std::string> image_names;
    if (auto it = row.find("image"); it != row.end() && !it->is_null()) {
      if (it->is_string()) {
        image_names.push_back(it->get<std::string>());
      } else if (it->is_array()) {
        for (size_t k = 0; k < it->size(); ++k) {
          MVL_CHECK((*it)[k].is_string(), at, "\"image\"[", k, "] must be a file name string, got ",
                    type_name((*it)[k]));
          image_names.push_back((*it)[k].get<std::string>());
        }
      } else {
        MVL_FAIL(at, "\"image\" must be a file name or an array of file names, got ",
                 type_name(*it));
      }
    }
    for (const auto& n : image_names) MVL_CHECK(!n.empty(), at, "\"image\" has an empty file name");
    ex.num_images = static_cast<int64_t>(image_names.size());

    // Conversation.
    auto conv = row.find("conversations");
    MVL_CHECK(
        conv != row.end(), at,
        "missing \"conversations\" (a list of {\"from\": \"human\"|\"gpt\", \"value\": ...})");
    MVL_CHECK(conv->is_array(), at, "\"conversations\" must be an array, got ", type_name(*conv));
    MVL_CHECK(!conv->empty() && conv->size() % 2 == 0, at, "\"conversations\" has ", conv->size(),
              " turns; it needs human/gpt pairs (an even, non-zero number, ending with gpt)");
    int64_t markers = 0;
    for (size_t t = 0; t < conv->size(); t += 2) {
      Turn turn;
      for (size_t k = 0; k < 2; ++k) {
        const json& m = (*conv)[t + k];
        const std::string mat = at + "conversations[" + std::to_string(t + k) + "]: ";
        MVL_CHECK(m.is_object(), mat, "expected an object {\"from\", \"value\"}, got ",
                  type_name(m));
        auto from = m.find("from");
        auto value = m.find("value");
        MVL_CHECK(from != m.end() && from->is_string(), mat,
                  "\"from\" must be the string \"human\" or \"gpt\"",
                  from == m.end() ? " (missing)" : ", got " + from->dump());
        MVL_CHECK(value != m.end() && value->is_string(), mat, "\"value\" must be a string",
                  value == m.end() ? " (missing)" : ", got " + type_name(*value));
        const std::string f = from->get<std::string>();
        const bool human = f == "human" || f == "user";
        const bool gpt = f == "gpt" || f == "assistant";
        MVL_CHECK(human || gpt, mat, "unknown role \"", f, "\" (expected \"human\" or \"gpt\")");
        MVL_CHECK(human == (k == 0), mat, "roles must alternate human, gpt, human, gpt, ...; turn ",
                  t + k, " is \"", f, "\"");
        const std::string v = value->get<std::string>();
        if (human) {
          markers += count_image_markers(v);
          turn.human = v;
        } else {
          MVL_CHECK(count_image_markers(v) == 0, mat, "a gpt turn contains \"<image>\"");
          turn.gpt = v;
        }
      }
      ex.turns.push_back(std::move(turn));
    }
    MVL_CHECK(markers == ex.num_images, at, "the human turns contain ", markers,
              " \"<image>\" marker(s) but the row has ", ex.num_images,
              " image(s); they must match (one marker where each image goes)");

    // Our structured extra fields.
    if (auto task = row.find("task"); task != row.end() && !task->is_null()) {
      MVL_CHECK(task->is_string(), at, "\"task\" must be a string, got ", type_name(*task));
      ex.task = task->get<std::string>();
      MVL_CHECK(
          ex.task == "caption" || ex.task == "vqa" || ex.task == "grounding" || ex.task == "mc", at,
          "unknown \"task\" \"", ex.task,
          "\" (expected caption, vqa, grounding or mc; leave it out for a chat row)");
      if (auto q = row.find("question"); q != row.end() && !q->is_null()) {
        MVL_CHECK(q->is_string(), at, "\"question\" must be a string, got ", type_name(*q));
        ex.question = q->get<std::string>();
      }
      if (auto b = row.find("box"); b != row.end() && !b->is_null()) {
        MVL_CHECK(ex.task == "grounding", at, "\"box\" is only allowed with task \"grounding\"");
        ex.box = parse_norm_box(*b, at, "box");
      }
      MVL_CHECK(ex.task != "grounding" || ex.box, at,
                "task \"grounding\" needs \"box\": [x1, y1, x2, y2] normalised");
      if (auto a = row.find("answers"); a != row.end() && !a->is_null()) {
        MVL_CHECK(a->is_array() && !a->empty(), at,
                  "\"answers\" must be a non-empty array of strings, got ", a->dump());
        for (size_t k = 0; k < a->size(); ++k) {
          MVL_CHECK((*a)[k].is_string(), at, "\"answers\"[", k, "] must be a string, got ",
                    type_name((*a)[k]));
          ex.answers.push_back((*a)[k].get<std::string>());
        }
      } else {
        ex.answers.push_back(ex.task == "grounding" ? format_box(*ex.box) + "."
                                                    : ex.turns.back().gpt);
      }
      ex.turns.clear();
    } else {
      for (const char* k : {"question", "answers", "box"})
        MVL_CHECK(!row.contains(k), at, "\"", k, "\" needs \"task\" (caption, vqa, grounding, mc)");
      ex.task = "chat";
      ex.answers.push_back(ex.turns.back().gpt);
    }

    for (const auto& n : image_names) out.images.push_back(resolve(image_root, n));
    bool present = true;
    for (const auto& p : out.images) {
      std::error_code ec;
      if (fs::is_regular_file(p, ec)) continue;
      MVL_CHECK(missing == MissingImage::Skip, at, "image file ", p.string(),
                " does not exist (fix the path or --image-root, or skip such rows with the "
                "missing-image policy \"skip\")");
      present = false;
    }
    if (!present) {
      ++skipped_;
      continue;
    }
    rows_.push_back(std::move(out));
  }
  warn_skipped(file_, skipped_, size());
}

VLExample LlavaJsonDataset::example(int64_t i) const {
  check_index(i, size(), file_);
  return rows_[static_cast<size_t>(i)].ex;
}

const std::vector<fs::path>& LlavaJsonDataset::image_paths(int64_t i) const {
  check_index(i, size(), file_);
  return rows_[static_cast<size_t>(i)].images;
}

std::vector<io::Image> LlavaJsonDataset::images(int64_t i) const {
  return load_images(image_paths(i), name(i), limits_);
}

std::string LlavaJsonDataset::name(int64_t i) const {
  check_index(i, size(), file_);
  return file_ + " row " + std::to_string(rows_[static_cast<size_t>(i)].row);
}

// ---------------------------------------------------------------- GroundingJsonlDataset

GroundingJsonlDataset::GroundingJsonlDataset(const fs::path& jsonl, fs::path image_root,
                                             MissingImage missing, const io::ImageLimits& limits)
    : file_(jsonl.string()), limits_(limits) {
  if (image_root.empty()) image_root = jsonl.parent_path();
  const std::string text = read_whole_file(jsonl);
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string at = file_ + ":" + std::to_string(line_no) + ": ";
    json row;
    try {
      row = io::parse_json_bounded(line.begin(), line.end(), kMaxJsonDepth, at);
    } catch (const json::parse_error& e) {
      MVL_FAIL(at, "invalid JSON at column ", e.byte, ": ", e.what(),
               " (each line must be one JSON object)");
    }
    MVL_CHECK(row.is_object(), at, "expected a JSON object, got ", type_name(row));

    Row out;
    out.line = line_no;
    VLExample& ex = out.ex;
    ex.task = "grounding";
    ex.num_images = 1;
    ex.id = get_id(row, "line " + std::to_string(line_no), at);
    auto img = row.find("image");
    MVL_CHECK(img != row.end() && img->is_string() && !img->get<std::string>().empty(), at,
              "\"image\" must be a file name string",
              img == row.end() ? " (missing)" : ", got " + img->dump());
    out.image = resolve(image_root, img->get<std::string>());

    auto phrase = row.find("phrase");
    if (phrase == row.end()) phrase = row.find("sentence");
    MVL_CHECK(phrase != row.end(), at, "missing \"phrase\" (or \"sentence\"): the referring text");
    MVL_CHECK(phrase->is_string() && !phrase->get<std::string>().empty(), at,
              "the referring phrase must be a non-empty string, got ", phrase->dump());
    ex.question = phrase->get<std::string>();

    const bool has_bbox = row.contains("bbox") && !row["bbox"].is_null();
    const bool has_box = row.contains("box") && !row["box"].is_null();
    MVL_CHECK(has_bbox != has_box, at,
              has_bbox ? "both \"bbox\" and \"box\" given; give one"
                       : "missing the box: \"bbox\": [x, y, w, h] in pixels (COCO) or \"box\": "
                         "[x1, y1, x2, y2] normalised");

    std::error_code ec;
    const bool present = fs::is_regular_file(out.image, ec);
    MVL_CHECK(present || missing == MissingImage::Skip, at, "image file ", out.image.string(),
              " does not exist (fix the path or the image root, or skip such rows with the "
              "missing-image policy \"skip\")");
    if (!present) {
      ++skipped_;
      continue;
    }

    if (has_box) {
      ex.box = parse_norm_box(row["box"], at, "box");
    } else {
      const json& b = row["bbox"];
      MVL_CHECK(b.is_array() && b.size() == 4, at,
                "\"bbox\" must be an array of 4 numbers [x, y, w, h] in pixels, got ", b.dump());
      double v[4];
      for (size_t k = 0; k < 4; ++k) {
        MVL_CHECK(b[k].is_number() && std::isfinite(b[k].get<double>()), at, "\"bbox\"[", k,
                  "] must be a finite number, got ", b[k].dump());
        v[k] = b[k].get<double>();
      }
      double W = 0, H = 0;
      const bool has_w = row.contains("width"), has_h = row.contains("height");
      MVL_CHECK(has_w == has_h, at, "give both \"width\" and \"height\" or neither");
      if (has_w) {
        for (const char* k : {"width", "height"})
          MVL_CHECK(row[k].is_number() && row[k].get<double>() >= 1 && row[k].get<double>() <= 1e6,
                    at, "\"", k, "\" must be a positive number of pixels, got ", row[k].dump());
        W = row["width"].get<double>();
        H = row["height"].get<double>();
      } else {
        int w = 0, h = 0, comp = 0;
        MVL_CHECK(stbi_info(out.image.c_str(), &w, &h, &comp) && w > 0 && h > 0, at,
                  "cannot read the size of image ", out.image.string(),
                  " (not a PNG / JPEG / BMP / GIF?); give \"width\" and \"height\" in the row");
        W = w;
        H = h;
      }
      MVL_CHECK(v[2] > 0 && v[3] > 0, at, "\"bbox\" ", b.dump(),
                " has no area (w and h must be > 0)");
      // COCO boxes may stick out by a fraction of a pixel; more than one pixel is an error.
      MVL_CHECK(v[0] >= -1 && v[1] >= -1 && v[0] + v[2] <= W + 1 && v[1] + v[3] <= H + 1, at,
                "\"bbox\" ", b.dump(), " [x, y, w, h] lies outside the ", W, " x ", H, " image");
      std::array<double, 4> n{v[0] / W, v[1] / H, (v[0] + v[2]) / W, (v[1] + v[3]) / H};
      for (double& x : n) x = std::clamp(x, 0.0, 1.0);
      MVL_CHECK(n[0] < n[2] && n[1] < n[3], at, "\"bbox\" ", b.dump(),
                " is empty inside the image");
      ex.box = n;
    }
    ex.answers = {format_box(*ex.box) + "."};
    rows_.push_back(std::move(out));
  }
  warn_skipped(file_, skipped_, size());
}

VLExample GroundingJsonlDataset::example(int64_t i) const {
  check_index(i, size(), file_);
  return rows_[static_cast<size_t>(i)].ex;
}

const fs::path& GroundingJsonlDataset::image_path(int64_t i) const {
  check_index(i, size(), file_);
  return rows_[static_cast<size_t>(i)].image;
}

std::vector<io::Image> GroundingJsonlDataset::images(int64_t i) const {
  return load_images({image_path(i)}, name(i), limits_);
}

std::string GroundingJsonlDataset::name(int64_t i) const {
  check_index(i, size(), file_);
  return file_ + ":" + std::to_string(rows_[static_cast<size_t>(i)].line);
}

// ---------------------------------------------------------------- TextDataset

TextDataset::TextDataset(const std::vector<fs::path>& files, const io::Tokenizer& tok,
                         int64_t seq_len)
    : seq_len_(seq_len) {
  MVL_CHECK(!files.empty(), "text dataset: no files given");
  MVL_CHECK(seq_len >= 1 && seq_len <= (int64_t{1} << 24),
            "text dataset: seq_len must be in [1, 16777216], got ", seq_len);
  std::optional<int64_t> eos = tok.eos_id();
  if (!eos) eos = tok.token_to_id("<|endoftext|>");
  MVL_CHECK(eos, "text dataset: tokenizer ", tok.origin(),
            " has no end-of-text token (no eos_token in tokenizer_config.json and no "
            "\"<|endoftext|>\"); it is needed to separate the files");
  for (const auto& f : files) {
    const std::string text = read_whole_file(f);
    std::vector<int64_t> ids;
    try {
      ids = tok.encode(text);
    } catch (const Error& e) {
      MVL_FAIL(f.string(), ": ", e.what());
    }
    ids_.insert(ids_.end(), ids.begin(), ids.end());
    ids_.push_back(*eos);
  }
  num_chunks_ = static_cast<int64_t>(ids_.size()) / (seq_len + 1);
  MVL_CHECK(num_chunks_ > 0, "text dataset: the ", files.size(), " file(s) give ", ids_.size(),
            " tokens (with one end-of-text per file), fewer than one chunk of seq_len + 1 = ",
            seq_len + 1, "; add text or lower the sequence length");
}

std::vector<int64_t> TextDataset::chunk(int64_t i) const {
  check_index(i, num_chunks_, "text dataset");
  const auto b = ids_.begin() + i * (seq_len_ + 1);
  return std::vector<int64_t>(b, b + seq_len_ + 1);
}

}  // namespace mambavl::data
