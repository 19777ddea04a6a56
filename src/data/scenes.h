// Built-in synthetic scenes (SPEC §3 "Built-in data"): coloured shapes on a canvas with captions,
// VQA pairs and grounding boxes, so vision-language training runs with no download.
// Deterministic: every image and text is a function of (seed, index, options) only, computed with
// our own integer RNG (data/synth_draw.h), so it is identical on every machine.
//
// A scene: 1..8 objects, each a shape (circle, square, triangle, cross) in a colour (red, green,
// blue, yellow, cyan, magenta; saturated, far apart in RGB) and a size (small: radius 7-10 % of
// the side, large: 15-20 %) on a grey background (plain or with light pixel noise). No two objects
// share all of (size, colour, shape), so "the <size> <colour> <shape>" always names one object;
// objects never overlap (their boxes keep a 2-pixel gap). With `clutter`, grey dots and thin grey
// strokes (never object colours) are drawn under the objects.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/vl_data.h"
#include "io/image.h"

namespace mambavl::data {

struct SceneOptions {
  int64_t image_size = 64;                   // square canvas, pixels, in [16, 4096]
  int64_t min_objects = 1, max_objects = 3;  // 1 <= min <= max <= 8
  bool clutter = false;  // small grey noise dots / thin grey strokes that are not objects
  // Example i gets tasks[i % tasks.size()]; each one of "caption", "vqa", "grounding".
  std::vector<std::string> tasks = {"caption", "vqa", "grounding"};
};
// Error (naming the field) unless the options are valid.
void check_scene_options(const SceneOptions& opt);

struct SceneObject {
  std::string shape, colour, size;  // "circle", "red", "small"
  // Normalised [x1, y1, x2, y2]: exactly the drawn pixels' extent, pixel edges / image_size
  // (a pixel column x spans [x / S, (x + 1) / S)).
  std::array<double, 4> box;
};
struct Scene {
  io::Image image;  // RGB, image_size x image_size
  std::vector<SceneObject> objects;
};

// The vocabularies of the scenes (what the words above can be).
const std::vector<std::string>& scene_shapes();   // circle, square, triangle, cross
const std::vector<std::string>& scene_colours();  // red, green, blue, yellow, cyan, magenta
std::array<uint8_t, 3> scene_colour_rgb(const std::string& colour);  // Error if unknown

// Scene `index` of the stream `seed`: the image and its objects.
Scene render_scene(uint64_t seed, int64_t index, const SceneOptions& opt);
// Only the objects (no pixels): the same as render_scene(...).objects, cheaper.
std::vector<SceneObject> scene_objects(uint64_t seed, int64_t index, const SceneOptions& opt);

// The example of scene `index` (task opt.tasks[index % size]); id = scene_id(index), one image.
//  caption: question "", answers = several phrasings (answers[0] the canonical one, e.g.
//    "a large red circle left of a small blue square."), so CIDEr-D has multiple references.
//  vqa: one question with a single-word or number answer: colour / shape / size of a uniquely
//    described object ("what colour is the small circle?"), counts ("how many circles are
//    there?" -> "2"), relative position ("is the red circle left of the blue square?" -> yes/no;
//    "where is the red circle relative to the blue square?" -> left/right/above/below, asked only
//    when one direction clearly dominates), existence ("is there a green triangle?" -> yes/no).
//  grounding: question "the <size> <colour> <shape>" (unique in the scene), box = its box,
//    answers = {format_box(box) + "."}.
VLExample scene_example(uint64_t seed, int64_t index, const SceneOptions& opt);
std::string scene_id(int64_t index);  // "scene_000017"

// n scenes of stream `seed`. name(i) = "scenes#i".
class SceneDataset : public VLDataset {
 public:
  SceneDataset(int64_t n, uint64_t seed, SceneOptions opt = {});
  int64_t size() const override { return n_; }
  VLExample example(int64_t i) const override;
  std::vector<io::Image> images(int64_t i) const override;
  std::string name(int64_t i) const override;
  const SceneOptions& options() const { return opt_; }
  uint64_t seed() const { return seed_; }

 private:
  int64_t n_;
  uint64_t seed_;
  SceneOptions opt_;
};

// Every word / punctuation the scene texts (captions, questions, answers, box text) and the
// SPEC §2.3 prompt templates can produce (plus "<image>"), as texts for building the word-level
// tokenizer (make_wordlevel_tokenizer_json).
std::vector<std::string> scene_texts_for_vocabulary();

}  // namespace mambavl::data
