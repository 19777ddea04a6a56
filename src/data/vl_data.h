// Vision-language training data (SPEC §2.3, §3): one example type for every task, the dataset
// readers (LLaVA conversation JSON, RefCOCO-style grounding JSONL, plain text for LM training).
// The built-in generators live in scenes.h (synthetic scenes) and retrieval.h (retrieval task).
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/image.h"
#include "io/tokenizer.h"

namespace mambavl::data {

// One exchange of a conversation; `human` may contain "<image>" markers.
struct Turn {
  std::string human, gpt;
  bool operator==(const Turn&) const = default;
};

struct VLExample {
  std::string id;
  std::string task;  // "caption" | "vqa" | "grounding" | "mc" | "chat"
  // vqa / mc: the question (mc: with its options); grounding: the referring phrase; caption: "".
  std::string question;
  // answers[0] = the training target text; all of them = references for evaluation
  // (grounding: answers[0] == format_box(*box) + ".").
  std::vector<std::string> answers;
  std::optional<std::array<double, 4>> box;  // grounding: normalised [x1, y1, x2, y2] in [0, 1]
  std::vector<Turn> turns;  // task "chat" only: the LLaVA multi-turn conversation, in order
  int64_t num_images = 0;   // images of this example (0 = text-only)
  bool operator==(const VLExample&) const = default;
};

// The tasks a VLExample can have, in the order above.
const std::vector<std::string>& vl_tasks();

// "[0.12,0.34,0.56,0.78]": 2 decimals, no spaces, each value clamped to [0, 1] first (NaN -> 0).
std::string format_box(const std::array<double, 4>& box);

// What a dataset does with a row whose image file does not exist.
enum class MissingImage { Fail, Skip };
MissingImage parse_missing_image(const std::string& s);  // "fail" | "skip"

class VLDataset {
 public:
  virtual ~VLDataset() = default;
  virtual int64_t size() const = 0;
  // Error for i outside [0, size()).
  virtual VLExample example(int64_t i) const = 0;
  // The example's images, decoded RGB (io/image.h), in "<image>" order. Errors name the file.
  virtual std::vector<io::Image> images(int64_t i) const = 0;
  // For messages: "data.json row 17", "scenes#17".
  virtual std::string name(int64_t i) const = 0;
};

// LLaVA conversation JSON:
//   [{"id": "...", "image": "a.png" | ["a.png", "b.png"] (absent or null: a text-only row),
//     "conversations": [{"from": "human", "value": "<image>\n..."}, {"from": "gpt", "value":
//     "..."},
//                       ...]}, ...]
// Multi-turn: roles alternate human, gpt, human, gpt, ... and end with gpt ("user" / "assistant"
// are accepted for "human" / "gpt"). The number of "<image>" markers in the human turns must equal
// the number of images (gpt turns may not contain one). Image paths are relative to `image_root`
// (default: the JSON file's folder) unless absolute. "id" may be a string or an integer (absent:
// the row number).
// Rows may carry our extra fields (make-data writes them): "task" (one of vl_tasks() except
// "chat"), "question" (string, default ""), "answers" (non-empty array of strings; default: the
// last gpt turn, or for grounding format_box(box) + "."), "box" ([x1, y1, x2, y2] normalised,
// 0 <= x1 < x2 <= 1, same for y; required for "grounding", allowed only there). Then example()
// returns that structured task (turns empty); otherwise task "chat" with the turns, question ""
// and answers = {the last gpt turn}.
// Rows are numbered from 0 (their index in the array). Errors name the file and the row: malformed
// JSON (with line and column), non-alternating roles, "<image>" count != image count, missing
// fields, wrong types, unknown tasks, bad boxes. A missing image file (checked at load time):
// MissingImage::Fail -> Error naming the row and the path; Skip -> the row is dropped and counted
// (skipped_missing()), and one warning on stderr says how many rows were skipped.
class LlavaJsonDataset : public VLDataset {
 public:
  LlavaJsonDataset(const std::filesystem::path& json, std::filesystem::path image_root = {},
                   MissingImage missing = MissingImage::Fail, const io::ImageLimits& limits = {});
  int64_t size() const override { return static_cast<int64_t>(rows_.size()); }
  VLExample example(int64_t i) const override;
  std::vector<io::Image> images(int64_t i) const override;
  std::string name(int64_t i) const override;
  // The resolved image paths of example i.
  const std::vector<std::filesystem::path>& image_paths(int64_t i) const;
  int64_t skipped_missing() const { return skipped_; }

 private:
  struct Row {
    int64_t row;  // index in the file's array
    VLExample ex;
    std::vector<std::filesystem::path> images;
  };
  std::string file_;
  std::vector<Row> rows_;
  io::ImageLimits limits_;
  int64_t skipped_ = 0;
};

// Grounding JSONL (RefCOCO style), one JSON object per line (blank lines are ignored):
//   {"image": path, "phrase" (or "sentence"): text,
//    "bbox": [x, y, w, h] in pixels (COCO; normalised by the image size, read from "width" /
//            "height" when given, else from the image file's header)
//    or "box": [x1, y1, x2, y2] normalised, optional "id" (string or integer; default "line N")}.
// Task "grounding": question = the phrase, answers = {format_box(box) + "."}, num_images = 1.
// Lines are numbered from 1. Errors name the file and line number (malformed JSON, missing or
// wrongly typed fields, both or neither of bbox / box, boxes outside the image or empty). Missing
// image files: as LlavaJsonDataset.
class GroundingJsonlDataset : public VLDataset {
 public:
  GroundingJsonlDataset(const std::filesystem::path& jsonl, std::filesystem::path image_root = {},
                        MissingImage missing = MissingImage::Fail,
                        const io::ImageLimits& limits = {});
  int64_t size() const override { return static_cast<int64_t>(rows_.size()); }
  VLExample example(int64_t i) const override;
  std::vector<io::Image> images(int64_t i) const override;
  std::string name(int64_t i) const override;
  const std::filesystem::path& image_path(int64_t i) const;
  int64_t skipped_missing() const { return skipped_; }

 private:
  struct Row {
    int64_t line;  // 1-based
    VLExample ex;
    std::filesystem::path image;
  };
  std::string file_;
  std::vector<Row> rows_;
  io::ImageLimits limits_;
  int64_t skipped_ = 0;
};

// Plain text files for LM training: the concatenation of the files' token ids (eos appended after
// each file: the tokenizer's eos_id(), else "<|endoftext|>"; Error if it has neither), cut into
// consecutive non-overlapping chunks of seq_len + 1 ids (inputs = chunk[0..seq_len), targets =
// chunk[1..seq_len]); the last partial chunk is dropped. Errors: no files, seq_len < 1, an
// unreadable file or invalid UTF-8 (naming the file), fewer than seq_len + 1 tokens in all.
class TextDataset {
 public:
  TextDataset(const std::vector<std::filesystem::path>& files, const io::Tokenizer& tok,
              int64_t seq_len);
  int64_t size() const { return num_chunks_; }
  int64_t seq_len() const { return seq_len_; }
  int64_t num_tokens() const { return static_cast<int64_t>(ids_.size()); }  // all files, with eos
  // Chunk i: seq_len + 1 ids. Error for i outside [0, size()).
  std::vector<int64_t> chunk(int64_t i) const;

 private:
  std::vector<int64_t> ids_;
  int64_t seq_len_ = 0, num_chunks_ = 0;
};

// The SPEC §2.3 prompt templates, as the text of a human turn after "<image>\n":
//  caption: "Provide a one-sentence caption for the provided image.\n"
//  vqa: "Answer the question using a single word or phrase.\nQuestion: <q>\nAnswer: "
//  grounding: "Locate the region that is described by:\n<phrase>\n"
// Error for other tasks.
std::string task_prompt(const std::string& task, const std::string& question);

// Counts the non-overlapping occurrences of "<image>" in `text`.
int64_t count_image_markers(const std::string& text);

}  // namespace mambavl::data
