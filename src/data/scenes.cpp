#include "data/scenes.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "common/error.h"
#include "data/synth_draw.h"

namespace mambavl::data {

namespace {

using synth::Stream;

struct ShapeDef {
  const char* name;
  const char* plural;
  size_t raster;  // synth::inside shape index
};
constexpr std::array<ShapeDef, 4> kShapes{{{"circle", "circles", synth::kCircle},
                                           {"square", "squares", synth::kSquare},
                                           {"triangle", "triangles", synth::kTriangle},
                                           {"cross", "crosses", synth::kCross}}};
struct ColourDef {
  const char* name;
  uint8_t rgb[3];
};
constexpr std::array<ColourDef, 6> kColours{{{"red", {220, 40, 40}},
                                             {"green", {40, 190, 60}},
                                             {"blue", {50, 80, 230}},
                                             {"yellow", {230, 210, 40}},
                                             {"cyan", {40, 210, 220}},
                                             {"magenta", {210, 50, 210}}}};
constexpr std::array<const char*, 9> kNumberWords{"zero", "one", "two",   "three", "four",
                                                  "five", "six", "seven", "eight"};
constexpr int64_t kMaxObjects = 8;
constexpr int64_t kGap = 2;  // pixels between object boxes

// Independent streams per purpose, all keyed by the scene index.
enum Purpose : uint64_t { kLayout = 1, kPixels = 2, kText = 3 };
Stream stream(uint64_t seed, int64_t index, Purpose p) {
  return Stream(synth::mix64(seed) + p * 0x632BE59BD9B4E019ull, static_cast<uint64_t>(index));
}

struct Placed {
  size_t shape, colour;
  bool large;
  int64_t cx, cy, r;
  int64_t x0, y0, x1, y1;  // drawn pixel extent, inclusive
};

struct Layout {
  int64_t size;
  int64_t grey[3];
  int64_t noise;  // pixel noise amplitude (0: plain)
  std::vector<Placed> objects;
};

Layout make_layout(uint64_t seed, int64_t index, const SceneOptions& opt) {
  Stream rng = stream(seed, index, kLayout);
  const int64_t S = opt.image_size;
  Layout L;
  L.size = S;
  const int64_t g = rng.range(90, 150);
  for (auto& c : L.grey) c = g + rng.range(-6, 6);
  L.noise = rng.range(0, 1) ? 6 : 0;
  const int64_t count = rng.range(opt.min_objects, opt.max_objects);
  for (int64_t k = 0; k < count; ++k) {
    bool placed = false;
    for (int attempt = 0; attempt < 200 && !placed; ++attempt) {
      Placed p;
      p.shape = static_cast<size_t>(rng.range(0, kShapes.size() - 1));
      p.colour = static_cast<size_t>(rng.range(0, kColours.size() - 1));
      p.large = rng.range(0, 1) == 1;
      p.r = p.large ? rng.range(S * 15 / 100, S * 20 / 100) : rng.range(S * 7 / 100, S * 10 / 100);
      p.r = std::max<int64_t>(p.r, p.large ? 5 : 2);
      p.cx = rng.range(p.r, S - 1 - p.r);
      p.cy = rng.range(p.r, S - 1 - p.r);
      bool clash = false;
      for (const auto& q : L.objects)
        clash = clash || (q.shape == p.shape && q.colour == p.colour && q.large == p.large);
      if (clash) continue;
      p.x0 = p.y0 = S;
      p.x1 = p.y1 = -1;
      for (int64_t dy = -p.r; dy <= p.r; ++dy)
        for (int64_t dx = -p.r; dx <= p.r; ++dx)
          if (synth::inside(kShapes[p.shape].raster, dx, dy, p.r)) {
            p.x0 = std::min(p.x0, p.cx + dx);
            p.x1 = std::max(p.x1, p.cx + dx);
            p.y0 = std::min(p.y0, p.cy + dy);
            p.y1 = std::max(p.y1, p.cy + dy);
          }
      for (const auto& q : L.objects)
        clash = clash || !(p.x1 + kGap < q.x0 || q.x1 + kGap < p.x0 || p.y1 + kGap < q.y0 ||
                           q.y1 + kGap < p.y0);
      if (clash) continue;
      L.objects.push_back(p);
      placed = true;
    }
    if (!placed) break;  // the canvas is full: fewer objects
  }
  return L;
}

SceneObject to_object(const Placed& p, int64_t S) {
  const double s = static_cast<double>(S);
  return SceneObject{kShapes[p.shape].name,
                     kColours[p.colour].name,
                     p.large ? "large" : "small",
                     {p.x0 / s, p.y0 / s, (p.x1 + 1) / s, (p.y1 + 1) / s}};
}

// ---- texts

std::string full_desc(const Placed& o) {
  return std::string(o.large ? "large " : "small ") + kColours[o.colour].name + " " +
         kShapes[o.shape].name;
}
std::string a_full(const Placed& o) { return "a " + full_desc(o); }

// Attribute masks for descriptions.
enum Attr { kShapeA = 1, kColourA = 2, kSizeA = 4 };
bool same_under(const Placed& a, const Placed& b, int attrs) {
  return (!(attrs & kShapeA) || a.shape == b.shape) &&
         (!(attrs & kColourA) || a.colour == b.colour) && (!(attrs & kSizeA) || a.large == b.large);
}
bool unique_under(const std::vector<Placed>& objs, size_t i, int attrs) {
  for (size_t j = 0; j < objs.size(); ++j)
    if (j != i && same_under(objs[i], objs[j], attrs)) return false;
  return true;
}
// "the [size] [colour] shape|object" with exactly `attrs`.
std::string desc(const Placed& o, int attrs) {
  std::string s = "the";
  if (attrs & kSizeA) s += o.large ? " large" : " small";
  if (attrs & kColourA) s += std::string(" ") + kColours[o.colour].name;
  s += (attrs & kShapeA) ? std::string(" ") + kShapes[o.shape].name : std::string(" object");
  return s;
}
// The first of `options` under which object i is unique; -1 if none.
int first_unique(const std::vector<Placed>& objs, size_t i, std::initializer_list<int> options) {
  for (int a : options)
    if (unique_under(objs, i, a)) return a;
  return -1;
}
// Shortest unique description naming the shape.
std::string min_desc(const std::vector<Placed>& objs, size_t i) {
  const int a = first_unique(
      objs, i, {kShapeA, kColourA | kShapeA, kSizeA | kShapeA, kSizeA | kColourA | kShapeA});
  return desc(objs[i], a);
}

std::string list_and(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k > 0) s += k + 1 == parts.size() ? " and " : ", ";
    s += parts[k];
  }
  return s;
}

// Direction of a relative to b along the dominant axis ("left of" etc.).
std::string dominant_rel(const Placed& a, const Placed& b) {
  const int64_t dx = b.cx - a.cx, dy = b.cy - a.cy;
  if (std::llabs(dx) >= std::llabs(dy)) return dx >= 0 ? "left of" : "right of";
  return dy >= 0 ? "above" : "below";
}

std::vector<std::string> captions(const std::vector<Placed>& objs_in) {
  std::vector<Placed> objs = objs_in;
  std::stable_sort(objs.begin(), objs.end(), [](const Placed& a, const Placed& b) {
    return a.cx != b.cx ? a.cx < b.cx : a.cy < b.cy;
  });
  const size_t n = objs.size();
  std::vector<std::string> full, plain, rev_full;
  for (const auto& o : objs) {
    full.push_back(a_full(o));
    plain.push_back(std::string("a ") + kColours[o.colour].name + " " + kShapes[o.shape].name);
  }
  rev_full.assign(full.rbegin(), full.rend());
  std::vector<std::string> refs;
  if (n == 2)
    refs.push_back(full[0] + " " + dominant_rel(objs[0], objs[1]) + " " + full[1] + ".");
  else
    refs.push_back(list_and(full) + ".");
  refs.push_back("there is " + list_and(full) + ".");
  refs.push_back(std::string(kNumberWords[n]) + (n == 1 ? " shape: " : " shapes: ") +
                 list_and(full) + ".");
  refs.push_back(list_and(plain) + ".");
  if (n == 2)
    refs.push_back(full[1] + " " + dominant_rel(objs[1], objs[0]) + " " + full[0] + ".");
  else if (n == 1)
    refs.push_back(full[0] + " on a grey background.");
  else
    refs.push_back(list_and(rev_full) + ".");
  std::vector<std::string> out;
  for (auto& r : refs)
    if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  return out;
}

struct QA {
  std::string q, a;
};

// One VQA pair, or nothing when question type `t` does not fit the scene.
std::optional<QA> try_question(int t, const std::vector<Placed>& objs, Stream& rng, int64_t S) {
  const size_t n = objs.size();
  const size_t pick = static_cast<size_t>(rng.range(0, static_cast<int64_t>(n) - 1));
  const int64_t thr = std::max<int64_t>(S / 8, 2);
  auto pair = [&](auto&& ok) -> std::optional<std::pair<size_t, size_t>> {
    // Ordered pairs (a, b), a != b, starting at a random one.
    const size_t m = n * n, start = static_cast<size_t>(rng.range(0, static_cast<int64_t>(m) - 1));
    for (size_t k = 0; k < m; ++k) {
      const size_t a = (start + k) % m / n, b = (start + k) % m % n;
      if (a != b && ok(objs[a], objs[b])) return std::make_pair(a, b);
    }
    return std::nullopt;
  };
  switch (t) {
    case 0: {  // colour of an object described without its colour
      for (size_t k = 0; k < n; ++k) {
        const size_t i = (pick + k) % n;
        const int a = first_unique(objs, i, {kShapeA, kSizeA | kShapeA});
        if (a >= 0)
          return QA{"what colour is " + desc(objs[i], a) + "?", kColours[objs[i].colour].name};
      }
      return std::nullopt;
    }
    case 1: {  // shape of an object described without its shape
      for (size_t k = 0; k < n; ++k) {
        const size_t i = (pick + k) % n;
        const int a = first_unique(objs, i, {kColourA, kSizeA | kColourA});
        if (a >= 0)
          return QA{"what shape is " + desc(objs[i], a) + "?", kShapes[objs[i].shape].name};
      }
      return std::nullopt;
    }
    case 2: {  // size of an object described without its size
      for (size_t k = 0; k < n; ++k) {
        const size_t i = (pick + k) % n;
        const int a = first_unique(objs, i, {kShapeA, kColourA | kShapeA});
        if (a >= 0)
          return QA{"what size is " + desc(objs[i], a) + "?", objs[i].large ? "large" : "small"};
      }
      return std::nullopt;
    }
    case 3: {  // counts
      const int64_t kind = rng.range(0, 2);
      int64_t c = 0;
      if (kind == 0) {
        const size_t s = static_cast<size_t>(rng.range(0, kShapes.size() - 1));
        for (const auto& o : objs) c += o.shape == s;
        return QA{std::string("how many ") + kShapes[s].plural + " are there?", std::to_string(c)};
      }
      if (kind == 1) {
        const size_t col = static_cast<size_t>(rng.range(0, kColours.size() - 1));
        for (const auto& o : objs) c += o.colour == col;
        return QA{std::string("how many ") + kColours[col].name + " objects are there?",
                  std::to_string(c)};
      }
      return QA{"how many objects are there?", std::to_string(n)};
    }
    case 4: {  // left / right yes-no
      auto p =
          pair([&](const Placed& a, const Placed& b) { return std::llabs(b.cx - a.cx) >= thr; });
      if (!p) return std::nullopt;
      const auto& [a, b] = *p;
      const bool ask_left = rng.range(0, 1) == 0;
      const bool is_left = objs[b].cx > objs[a].cx;
      return QA{"is " + min_desc(objs, a) + (ask_left ? " left of " : " right of ") +
                    min_desc(objs, b) + "?",
                is_left == ask_left ? "yes" : "no"};
    }
    case 5: {  // above / below yes-no
      auto p =
          pair([&](const Placed& a, const Placed& b) { return std::llabs(b.cy - a.cy) >= thr; });
      if (!p) return std::nullopt;
      const auto& [a, b] = *p;
      const bool ask_above = rng.range(0, 1) == 0;
      const bool is_above = objs[b].cy > objs[a].cy;
      return QA{
          "is " + min_desc(objs, a) + (ask_above ? " above " : " below ") + min_desc(objs, b) + "?",
          is_above == ask_above ? "yes" : "no"};
    }
    case 6: {  // where is a relative to b: one direction clearly dominates
      auto p = pair([&](const Placed& a, const Placed& b) {
        const int64_t dx = std::llabs(b.cx - a.cx), dy = std::llabs(b.cy - a.cy);
        return (dx >= thr && 2 * dy <= dx) || (dy >= thr && 2 * dx <= dy);
      });
      if (!p) return std::nullopt;
      const auto& [a, b] = *p;
      const int64_t dx = objs[b].cx - objs[a].cx, dy = objs[b].cy - objs[a].cy;
      const std::string ans = std::llabs(dx) > std::llabs(dy) ? (dx > 0 ? "left" : "right")
                                                              : (dy > 0 ? "above" : "below");
      return QA{"where is " + min_desc(objs, a) + " relative to " + min_desc(objs, b) + "?", ans};
    }
    default: {  // existence of a colour + shape (any size)
      size_t s, col;
      if (rng.range(0, 1) == 0) {
        s = objs[pick].shape;
        col = objs[pick].colour;
      } else {
        s = static_cast<size_t>(rng.range(0, kShapes.size() - 1));
        col = static_cast<size_t>(rng.range(0, kColours.size() - 1));
      }
      bool present = false;
      for (const auto& o : objs) present = present || (o.shape == s && o.colour == col);
      return QA{std::string("is there a ") + kColours[col].name + " " + kShapes[s].name + "?",
                present ? "yes" : "no"};
    }
  }
}

constexpr int kQuestionTypes = 8;

}  // namespace

void check_scene_options(const SceneOptions& opt) {
  MVL_CHECK(opt.image_size >= 16 && opt.image_size <= 4096,
            "scenes: image_size must be in [16, 4096], got ", opt.image_size);
  MVL_CHECK(
      opt.min_objects >= 1 && opt.min_objects <= opt.max_objects && opt.max_objects <= kMaxObjects,
      "scenes: need 1 <= min_objects <= max_objects <= ", kMaxObjects, ", got min ",
      opt.min_objects, ", max ", opt.max_objects);
  MVL_CHECK(!opt.tasks.empty(), "scenes: the task list is empty (give caption, vqa, grounding)");
  for (const auto& t : opt.tasks)
    MVL_CHECK(t == "caption" || t == "vqa" || t == "grounding", "scenes: unknown task \"", t,
              "\" (scene tasks: caption, vqa, grounding)");
}

const std::vector<std::string>& scene_shapes() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> r;
    for (const auto& s : kShapes) r.push_back(s.name);
    return r;
  }();
  return v;
}

const std::vector<std::string>& scene_colours() {
  static const std::vector<std::string> v = [] {
    std::vector<std::string> r;
    for (const auto& c : kColours) r.push_back(c.name);
    return r;
  }();
  return v;
}

std::array<uint8_t, 3> scene_colour_rgb(const std::string& colour) {
  for (const auto& c : kColours)
    if (colour == c.name) return {c.rgb[0], c.rgb[1], c.rgb[2]};
  MVL_FAIL("scenes: unknown colour \"", colour, "\" (known: ", join(scene_colours()), ")");
}

std::vector<SceneObject> scene_objects(uint64_t seed, int64_t index, const SceneOptions& opt) {
  check_scene_options(opt);
  const Layout L = make_layout(seed, index, opt);
  std::vector<SceneObject> out;
  for (const auto& p : L.objects) out.push_back(to_object(p, L.size));
  return out;
}

Scene render_scene(uint64_t seed, int64_t index, const SceneOptions& opt) {
  check_scene_options(opt);
  const Layout L = make_layout(seed, index, opt);
  const int64_t S = L.size;
  Stream rng = stream(seed, index, kPixels);
  Scene scene;
  io::Image& img = scene.image;
  img.width = img.height = S;
  img.pixels.resize(static_cast<size_t>(S * S * 3));
  auto put = [&](int64_t x, int64_t y, const int64_t rgb[3]) {
    if (x < 0 || y < 0 || x >= S || y >= S) return;
    for (int c = 0; c < 3; ++c)
      img.pixels[static_cast<size_t>((y * S + x) * 3 + c)] = synth::clamp8(rgb[c]);
  };
  // Background: grey, optionally with light per-pixel noise.
  for (int64_t y = 0; y < S; ++y)
    for (int64_t x = 0; x < S; ++x) {
      int64_t px[3] = {L.grey[0], L.grey[1], L.grey[2]};
      if (L.noise > 0) {
        const uint64_t bits = rng.next();
        for (int c = 0; c < 3; ++c)
          px[c] += static_cast<int64_t>((bits >> (16 * c)) & 0xFFFF) % (2 * L.noise + 1) - L.noise;
      }
      put(x, y, px);
    }
  // Clutter: grey dots and thin grey strokes (darker or lighter than the background).
  if (opt.clutter) {
    auto tone = [&]() {
      const int64_t v = rng.range(0, 1) ? rng.range(20, 60) : rng.range(190, 240);
      return std::array<int64_t, 3>{v, v, v};
    };
    const int64_t dots = rng.range(3, 8);
    for (int64_t k = 0; k < dots; ++k) {
      const auto t = tone();
      const int64_t x = rng.range(0, S - 1), y = rng.range(0, S - 1), w = rng.range(1, 2);
      for (int64_t dy = 0; dy < w; ++dy)
        for (int64_t dx = 0; dx < w; ++dx) put(x + dx, y + dy, t.data());
    }
    const int64_t strokes = rng.range(1, 3);
    for (int64_t k = 0; k < strokes; ++k) {
      const auto t = tone();
      const int64_t x0 = rng.range(0, S - 1), y0 = rng.range(0, S - 1);
      const int64_t len = rng.range(S / 4, S / 2), dir = rng.range(0, 3);
      static constexpr int64_t kDx[4] = {1, 0, 1, 1}, kDy[4] = {0, 1, 1, -1};
      for (int64_t s = 0; s < len; ++s) put(x0 + kDx[dir] * s, y0 + kDy[dir] * s, t.data());
    }
  }
  // Objects, flat colour.
  for (const auto& p : L.objects) {
    const auto& c = kColours[p.colour].rgb;
    const int64_t rgb[3] = {c[0], c[1], c[2]};
    for (int64_t dy = -p.r; dy <= p.r; ++dy)
      for (int64_t dx = -p.r; dx <= p.r; ++dx)
        if (synth::inside(kShapes[p.shape].raster, dx, dy, p.r)) put(p.cx + dx, p.cy + dy, rgb);
    scene.objects.push_back(to_object(p, S));
  }
  return scene;
}

std::string scene_id(int64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "scene_%06lld", static_cast<long long>(index));
  return buf;
}

VLExample scene_example(uint64_t seed, int64_t index, const SceneOptions& opt) {
  check_scene_options(opt);
  const Layout L = make_layout(seed, index, opt);
  const auto& objs = L.objects;
  Stream rng = stream(seed, index, kText);
  VLExample ex;
  ex.id = scene_id(index);
  ex.num_images = 1;
  ex.task = opt.tasks[static_cast<size_t>(index % static_cast<int64_t>(opt.tasks.size()))];
  if (ex.task == "caption") {
    ex.answers = captions(objs);
  } else if (ex.task == "vqa") {
    std::optional<QA> qa;
    for (int attempt = 0; attempt < 16 && !qa; ++attempt)
      qa = try_question(static_cast<int>(rng.range(0, kQuestionTypes - 1)), objs, rng, L.size);
    if (!qa) qa = QA{"how many objects are there?", std::to_string(objs.size())};
    ex.question = qa->q;
    ex.answers = {qa->a};
  } else {  // grounding
    const auto& o = objs[static_cast<size_t>(rng.range(0, static_cast<int64_t>(objs.size()) - 1))];
    ex.question = "the " + full_desc(o);
    ex.box = to_object(o, L.size).box;
    ex.answers = {format_box(*ex.box) + "."};
  }
  return ex;
}

SceneDataset::SceneDataset(int64_t n, uint64_t seed, SceneOptions opt)
    : n_(n), seed_(seed), opt_(std::move(opt)) {
  MVL_CHECK(n > 0, "scenes: the number of examples must be positive, got ", n);
  check_scene_options(opt_);
}

VLExample SceneDataset::example(int64_t i) const {
  MVL_CHECK(i >= 0 && i < n_, "scenes: index ", i, " out of range for ", n_, " scenes");
  return scene_example(seed_, i, opt_);
}

std::vector<io::Image> SceneDataset::images(int64_t i) const {
  MVL_CHECK(i >= 0 && i < n_, "scenes: index ", i, " out of range for ", n_, " scenes");
  std::vector<io::Image> v;
  v.push_back(render_scene(seed_, i, opt_).image);
  return v;
}

std::string SceneDataset::name(int64_t i) const { return "scenes#" + std::to_string(i); }

std::vector<std::string> scene_texts_for_vocabulary() {
  std::vector<std::string> t;
  t.push_back("<image>\n" + task_prompt("caption", ""));
  t.push_back(task_prompt("vqa", "what colour is the object?"));
  t.push_back(task_prompt("grounding", "the small red circle"));
  t.push_back(format_box({0.12, 0.34, 0.56, 0.78}) + ".");
  std::string words;
  for (const auto& s : kShapes) words += std::string(s.name) + " " + s.plural + " ";
  for (const auto& c : kColours) words += std::string(c.name) + " ";
  for (const char* w : kNumberWords) words += std::string(w) + " ";
  t.push_back(words);
  t.push_back("a the large small object objects shape shapes: there is are and , .");
  t.push_back("what colour shape size is the ? how many objects are there?");
  t.push_back("is the left of right of above below the ? where is relative to");
  t.push_back("is there a ? yes no left right above below");
  t.push_back("on a grey background.");
  return t;
}

}  // namespace mambavl::data
