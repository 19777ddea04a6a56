#include "experiments/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <sstream>

#include "common/error.h"
#include "experiments/claims.h"
#include "experiments/experiment.h"
#include "io/checkpoint.h"

namespace mambavl::experiments {

namespace fs = std::filesystem;

// --- loading ------------------------------------------------------------------------------------

namespace {

json load_one(const fs::path& dir) {
  const fs::path file = dir / "results.json";
  // Error naming the file, line and column when malformed
  json j = io::read_json_file(file, io::kMaxTextBytes);
  MVL_CHECK(j.is_object(), "report: ", file.string(), ": expected a JSON object");
  json configs = json::object();
  const fs::path cdir = dir / "configs";
  if (fs::is_directory(cdir)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(cdir))
      if (e.is_regular_file() && e.path().extension() == ".json") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) configs[f.stem().string()] = io::read_json_file(f);
  }
  j["_configs"] = std::move(configs);
  j["_dir"] = dir.string();
  return j;
}

}  // namespace

std::vector<json> load_results(const std::vector<fs::path>& dirs) {
  MVL_CHECK(!dirs.empty(), "report: no results folder given");
  std::vector<json> out;
  for (const auto& dir : dirs) {
    MVL_CHECK(fs::exists(dir), "report: no such folder: ", dir.string());
    MVL_CHECK(fs::is_directory(dir), "report: ", dir.string(), " is not a folder");
    if (fs::exists(dir / "results.json")) {
      out.push_back(load_one(dir));
      continue;
    }
    std::vector<fs::path> subs;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_directory() && fs::exists(e.path() / "results.json")) subs.push_back(e.path());
    MVL_CHECK(!subs.empty(), "report: no results.json in ", dir.string(),
              " nor in any of its subfolders");
    std::sort(subs.begin(), subs.end());
    for (const auto& s : subs) out.push_back(load_one(s));
  }
  return out;
}

// --- text helpers -------------------------------------------------------------------------------

std::string html_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&quot;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  return o;
}

std::string script_json(const json& j) {
  // Invalid UTF-8 in a string is replaced rather than failing the whole page.
  const std::string s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string o;
  o.reserve(s.size());
  for (char c : s) switch (c) {  // outside strings JSON has none of these
      case '<':
        o += "\\u003c";
        break;
      case '>':
        o += "\\u003e";
        break;
      case '&':
        o += "\\u0026";
        break;
      default:
        o += c;
    }
  return o;
}

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return "0";  // not "-0"
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

namespace {

// A JSON value as page text (not escaped).
std::string value_text(const json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) return format_number(v.get<double>());
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string get_text(const json& obj, const char* key, const std::string& def = "") {
  if (!obj.is_object() || !obj.contains(key) || obj.at(key).is_null()) return def;
  return value_text(obj.at(key));
}

bool get_number(const json& obj, const char* key, double& out) {
  if (!obj.is_object() || !obj.contains(key) || !obj.at(key).is_number()) return false;
  out = obj.at(key).get<double>();
  return std::isfinite(out);
}

bool get_bool(const json& obj, const char* key) {
  return obj.is_object() && obj.contains(key) && obj.at(key).is_boolean() &&
         obj.at(key).get<bool>();
}

// Adds `s` to `order` the first time it is seen.
void first_seen(std::vector<std::string>& order, std::set<std::string>& seen,
                const std::string& s) {
  if (seen.insert(s).second) order.push_back(s);
}

int clamp_int(double v, int lo, int hi) {
  return static_cast<int>(std::clamp(v, static_cast<double>(lo), static_cast<double>(hi)));
}

// --- Vega specs ---------------------------------------------------------------------------------

const char* kFont = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

json base_spec(const json& plot, int width, int height) {
  json s = {{"width", width},
            {"height", height},
            {"padding", 8},
            {"autosize", {{"type", "pad"}}},
            {"background", "white"},
            {"config",
             {{"axis",
               {{"labelFont", kFont},
                {"titleFont", kFont},
                {"labelFontSize", 11},
                {"titleFontSize", 12},
                {"titleFontWeight", "normal"},
                {"gridColor", "#e5e7eb"}}},
              {"legend",
               {{"labelFont", kFont},
                {"titleFont", kFont},
                {"labelFontSize", 11},
                {"titleFontSize", 12},
                {"labelLimit", 260},
                {"titleLimit", 300}}},
              {"title", {{"font", kFont}, {"fontSize", 14}, {"anchor", "start"}, {"offset", 8}}}}}};
  const std::string title = get_text(plot, "title");
  if (!title.empty()) s["title"] = {{"text", title}};
  return s;
}

json axis(const char* orient, const char* scale, const std::string& title, bool grid) {
  json a = {{"orient", orient}, {"scale", scale}, {"grid", grid}, {"labelOverlap", true}};
  if (!title.empty()) a["title"] = title;
  return a;
}

json color_legend(const char* channel, const std::string& title, const char* type = "symbol") {
  json l = {{channel, "color"}, {"type", type}};
  if (!title.empty()) l["title"] = title;
  return l;
}

json field(const char* scale, const char* f) { return {{"scale", scale}, {"field", f}}; }

json bars_spec(const json& plot) {
  std::vector<std::string> cats, groups;
  std::set<std::string> seen_c, seen_g;
  json rows = json::array();
  for (const auto& r : plot.at("data")) {
    double mean, lo, hi;
    if (!r.is_object() || !r.contains("x") || !get_number(r, "mean", mean)) continue;
    if (!get_number(r, "lo", lo)) lo = mean;
    if (!get_number(r, "hi", hi)) hi = mean;
    const std::string x = get_text(r, "x"), g = get_text(r, "group");
    first_seen(cats, seen_c, x);
    first_seen(groups, seen_g, g);
    rows.push_back({{"x", x}, {"group", g}, {"mean", mean}, {"lo", lo}, {"hi", hi}});
  }
  MVL_CHECK(!rows.empty(), "bars plot: no row with \"x\" and a finite \"mean\"");
  const bool grouped = groups.size() > 1 || !groups[0].empty();
  const int width = clamp_int(cats.size() * (groups.size() * 26.0 + 24) + 40, 320, 900);
  json s = base_spec(plot, width, 240);
  s["data"] = json::array({{{"name", "t"}, {"values", rows}}});
  s["scales"] = json::array(
      {{{"name", "x"},
        {"type", "band"},
        {"domain", cats},
        {"range", "width"},
        {"paddingInner", 0.25},
        {"paddingOuter", 0.15}},
       {{"name", "xo"},
        {"type", "band"},
        {"domain", groups},
        {"range", {{"signal", "[0, bandwidth('x')]"}}},
        {"paddingInner", 0.08}},
       {{"name", "y"},
        {"type", "linear"},
        {"domain", {{"data", "t"}, {"fields", {"lo", "hi", "mean"}}}},
        {"range", "height"},
        {"nice", true},
        {"zero", true}},
       {{"name", "color"}, {"type", "ordinal"}, {"domain", groups}, {"range", "category"}}});
  json xaxis = axis("bottom", "x", get_text(plot, "x_label"), false);
  if (cats.size() > 4) xaxis.update({{"labelAngle", -25}, {"labelAlign", "right"}});
  xaxis["labelLimit"] = 160;
  xaxis["labelOverlap"] = false;  // every category named (rotated when many)
  s["axes"] = json::array({xaxis, axis("left", "y", get_text(plot, "y_label"), true)});
  if (grouped) s["legends"] = json::array({color_legend("fill", "")});
  const std::string left = "scale('x', datum.x) + scale('xo', datum.group)";
  const std::string mid = left + " + bandwidth('xo') / 2";
  const json fill = grouped ? field("color", "group") : json{{"value", "#4c78a8"}};
  json tip = {
      {"signal",
       "{'': datum.x + (datum.group ? ' / ' + datum.group : ''), 'mean': format(datum.mean, "
       "'.4~g'), 'mean - std .. mean + std': format(datum.lo, '.4~g') + ' .. ' + "
       "format(datum.hi, '.4~g')}"}};
  json bar = {{"type", "rect"},
              {"name", "bars"},
              {"from", {{"data", "t"}}},
              {"encode",
               {{"enter",
                 {{"x", {{"signal", left}}},
                  {"width", {{"scale", "xo"}, {"band", 1}}},
                  {"y", field("y", "mean")},
                  {"y2", {{"scale", "y"}, {"value", 0}}},
                  {"fill", fill},
                  {"tooltip", tip}}}}}};
  auto rule = [&](json x, json x2, const char* y, const char* y2) {
    json enter = {{"x", std::move(x)},
                  {"y", field("y", y)},
                  {"stroke", {{"value", "#111827"}}},
                  {"strokeWidth", {{"value", 1.4}}}};
    if (!x2.is_null()) enter["x2"] = std::move(x2);
    if (y2) enter["y2"] = field("y", y2);
    return json{{"type", "rule"}, {"from", {{"data", "t"}}}, {"encode", {{"enter", enter}}}};
  };
  const json cap_l = {{"signal", mid + " - 4"}}, cap_r = {{"signal", mid + " + 4"}};
  s["marks"] = json::array({bar, rule({{"signal", mid}}, nullptr, "lo", "hi"),
                            rule(cap_l, cap_r, "lo", nullptr), rule(cap_l, cap_r, "hi", nullptr)});
  return s;
}

json lines_spec(const json& plot) {
  const bool log_x = get_bool(plot, "log_x"), log_y = get_bool(plot, "log_y");
  std::vector<std::string> series;
  std::set<std::string> seen;
  struct Row {
    size_t s;
    double x, y, lo, hi;
    bool band;
  };
  std::vector<Row> pts;
  for (const auto& r : plot.at("data")) {
    double x, y, lo, hi;
    if (!get_number(r, "x", x) || !get_number(r, "y", y)) continue;
    if ((log_x && x <= 0) || (log_y && y <= 0)) continue;
    const bool band = get_number(r, "lo", lo) && get_number(r, "hi", hi) && (!log_y || lo > 0);
    const std::string name = get_text(r, "series");
    first_seen(series, seen, name);
    const size_t si = std::find(series.begin(), series.end(), name) - series.begin();
    pts.push_back({si, x, y, band ? lo : y, band ? hi : y, band});
  }
  MVL_CHECK(!pts.empty(), "lines plot: no row with finite \"x\" and \"y\"",
            log_x || log_y ? " (> 0 on log axes)" : "");
  std::stable_sort(pts.begin(), pts.end(),
                   [](const Row& a, const Row& b) { return a.s != b.s ? a.s < b.s : a.x < b.x; });
  const bool any_band = std::any_of(pts.begin(), pts.end(), [](const Row& r) { return r.band; });
  json rows = json::array();
  std::map<size_t, int> per_series;
  for (const Row& r : pts) {
    json row = {{"x", r.x}, {"y", r.y}, {"series", series[r.s]}};
    if (any_band) row.update({{"lo", r.lo}, {"hi", r.hi}});
    rows.push_back(std::move(row));
    ++per_series[r.s];
  }
  int most = 0;
  for (auto& [k, n] : per_series) most = std::max(most, n);
  json s = base_spec(plot, 460, 260);
  s["data"] = json::array({{{"name", "t"}, {"values", rows}}});
  json ydomain = {{"data", "t"},
                  {"fields", any_band ? json::array({"y", "lo", "hi"}) : json::array({"y"})}};
  s["scales"] = json::array(
      {{{"name", "x"},
        {"type", log_x ? "log" : "linear"},
        {"domain", {{"data", "t"}, {"field", "x"}}},
        {"range", "width"},
        {"zero", false},
        {"nice", false},
        {"padding", log_x ? 8 : 0}},
       {{"name", "y"},
        {"type", log_y ? "log" : "linear"},
        {"domain", ydomain},
        {"range", "height"},
        {"zero", false},
        {"nice", !log_y},
        {"padding", log_y ? 8 : 0}},
       {{"name", "color"}, {"type", "ordinal"}, {"domain", series}, {"range", "category"}}});
  s["axes"] = json::array({axis("bottom", "x", get_text(plot, "x_label"), false),
                           axis("left", "y", get_text(plot, "y_label"), true)});
  if (series.size() > 1 || !series[0].empty())
    s["legends"] = json::array({color_legend("stroke", "")});
  const json xy = {{"x", field("x", "x")}, {"y", field("y", "y")}};
  json inner = json::array();
  if (any_band)
    inner.push_back({{"type", "area"},
                     {"from", {{"data", "s"}}},
                     {"encode",
                      {{"enter",
                        {{"x", field("x", "x")},
                         {"y", field("y", "lo")},
                         {"y2", field("y", "hi")},
                         {"fill", field("color", "series")},
                         {"fillOpacity", {{"value", 0.18}}}}}}}});
  json line_enter = xy;
  line_enter.update({{"stroke", field("color", "series")}, {"strokeWidth", {{"value", 2}}}});
  inner.push_back({{"type", "line"},
                   {"name", "lines"},
                   {"from", {{"data", "s"}}},
                   {"encode", {{"enter", line_enter}}}});
  if (most <= 40) {
    json sym = xy;
    sym.update({{"fill", field("color", "series")},
                {"size", {{"value", 28}}},
                {"tooltip",
                 {{"signal",
                   "{'': datum.series, 'x': format(datum.x, '.4~g'), 'y': format(datum.y, "
                   "'.4~g')}"}}}});
    inner.push_back({{"type", "symbol"}, {"from", {{"data", "s"}}}, {"encode", {{"enter", sym}}}});
  }
  s["marks"] =
      json::array({{{"type", "group"},
                    {"from", {{"facet", {{"name", "s"}, {"data", "t"}, {"groupby", "series"}}}}},
                    {"marks", inner}}});
  return s;
}

json heatmap_spec(const json& plot) {
  std::set<double> xs, ys;
  json rows = json::array();
  for (const auto& r : plot.at("data")) {
    double x, y, v;
    if (!get_number(r, "x", x) || !get_number(r, "y", y) || !get_number(r, "value", v)) continue;
    xs.insert(x);
    ys.insert(y);
    rows.push_back({{"x", x}, {"y", y}, {"value", v}});
  }
  MVL_CHECK(!rows.empty(), "heatmap plot: no row with finite \"x\", \"y\" and \"value\"");
  const int width = clamp_int(xs.size() * 16.0, 280, 760);
  const int height = clamp_int(ys.size() * 12.0, 140, 420);
  json s = base_spec(plot, width, height);
  s["data"] = json::array({{{"name", "t"}, {"values", rows}}});
  s["scales"] = json::array({{{"name", "x"},
                              {"type", "band"},
                              {"domain", std::vector<double>(xs.begin(), xs.end())},
                              {"range", "width"},
                              {"padding", 0}},
                             {{"name", "y"},
                              {"type", "band"},
                              {"domain", std::vector<double>(ys.begin(), ys.end())},
                              {"range", "height"},
                              {"padding", 0}},
                             {{"name", "color"},
                              {"type", "linear"},
                              {"scheme", "viridis"},
                              {"domain", {{"data", "t"}, {"field", "value"}}},
                              {"zero", false},
                              {"nice", false}}});
  s["axes"] = json::array({axis("bottom", "x", get_text(plot, "x_label"), false),
                           axis("left", "y", get_text(plot, "y_label"), false)});
  s["legends"] = json::array({color_legend("fill", get_text(plot, "value_label"), "gradient")});
  s["marks"] = json::array(
      {{{"type", "rect"},
        {"name", "cells"},
        {"from", {{"data", "t"}}},
        {"encode",
         {{"enter",
           {{"x", field("x", "x")},
            {"width", {{"scale", "x"}, {"band", 1}}},
            {"y", field("y", "y")},
            {"height", {{"scale", "y"}, {"band", 1}}},
            {"fill", field("color", "value")},
            {"tooltip",
             {{"signal",
               "{'x': datum.x, 'y': datum.y, 'value': format(datum.value, '.4~g')}"}}}}}}}}});
  return s;
}

json scaling_spec(const json& plot) {
  std::vector<std::string> labels;
  std::set<std::string> seen;
  std::map<std::string, std::string> label_of;  // series -> label with its fitted slope
  json fit_rows = json::array();
  if (plot.contains("fits") && plot.at("fits").is_array())
    for (const auto& f : plot.at("fits")) {
      double e, c, x0, x1;
      if (!get_number(f, "exponent", e) || !get_number(f, "coefficient", c) ||
          !get_number(f, "x_min", x0) || !get_number(f, "x_max", x1) || c <= 0 || x0 <= 0 ||
          x1 < x0)
        continue;
      const std::string name = get_text(f, "series");
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3g", e);
      const std::string label = name + (name.empty() ? "" : " ") + "(slope " + buf + ")";
      label_of[name] = label;
      const int n = x1 > x0 ? 24 : 1;
      for (int i = 0; i < n; ++i) {
        const double x = n == 1 ? x0 : x0 * std::pow(x1 / x0, static_cast<double>(i) / (n - 1));
        fit_rows.push_back(
            {{"x", x}, {"y", c * std::pow(x, e)}, {"series", name}, {"label", label}});
      }
    }
  json pts = json::array();
  for (const auto& r : plot.at("data")) {
    double x, y;
    if (!get_number(r, "x", x) || !get_number(r, "y", y) || x <= 0 || y <= 0) continue;
    const std::string name = get_text(r, "series");
    const auto it = label_of.find(name);
    const std::string label = it == label_of.end() ? name : it->second;
    first_seen(labels, seen, label);
    pts.push_back({{"x", x}, {"y", y}, {"series", name}, {"label", label}});
  }
  for (const auto& r : fit_rows) first_seen(labels, seen, r.at("label").get<std::string>());
  MVL_CHECK(!pts.empty() || !fit_rows.empty(),
            "scaling plot: no point with finite x, y > 0 and no usable fit");
  json s = base_spec(plot, 460, 280);
  s["data"] =
      json::array({{{"name", "pts"}, {"values", pts}}, {{"name", "fit"}, {"values", fit_rows}}});
  auto log_scale = [](const char* name, const char* f, const char* range) {
    return json{{"name", name},
                {"type", "log"},
                {"domain",
                 {{"fields", json::array({{{"data", "pts"}, {"field", f}},
                                          {{"data", "fit"}, {"field", f}}})}}},
                {"range", range},
                {"nice", false},
                {"zero", false},
                {"padding", 10}};  // pixels: the end points clear of the frame
  };
  s["scales"] = json::array(
      {log_scale("x", "x", "width"),
       log_scale("y", "y", "height"),
       {{"name", "color"}, {"type", "ordinal"}, {"domain", labels}, {"range", "category"}}});
  auto log_title = [&](const char* key) {
    const std::string t = get_text(plot, key);
    return t.empty() ? t : t + " (log)";
  };
  s["axes"] = json::array({axis("bottom", "x", log_title("x_label"), true),
                           axis("left", "y", log_title("y_label"), true)});
  // One legend for both marks (points filled, fitted lines stroked with the same colours).
  if (labels.size() > 1 || !labels[0].empty()) {
    json legend = {{"fill", "color"}, {"stroke", "color"}, {"symbolType", "circle"}};
    if (!fit_rows.empty()) legend["title"] = "fitted y = c·x^slope";
    s["legends"] = json::array({legend});
  }
  s["marks"] =
      json::array({{{"type", "group"},
                    {"from", {{"facet", {{"name", "f"}, {"data", "fit"}, {"groupby", "series"}}}}},
                    {"marks", json::array({{{"type", "line"},
                                            {"name", "fits"},
                                            {"from", {{"data", "f"}}},
                                            {"encode",
                                             {{"enter",
                                               {{"x", field("x", "x")},
                                                {"y", field("y", "y")},
                                                {"stroke", field("color", "label")},
                                                {"strokeWidth", {{"value", 1.8}}},
                                                {"strokeDash", {{"value", {6, 3}}}}}}}}}})}},
                   {{"type", "symbol"},
                    {"name", "points"},
                    {"from", {{"data", "pts"}}},
                    {"encode",
                     {{"enter",
                       {{"x", field("x", "x")},
                        {"y", field("y", "y")},
                        {"fill", field("color", "label")},
                        {"size", {{"value", 44}}},
                        {"tooltip",
                         {{"signal",
                           "{'': datum.series, 'x': format(datum.x, '.4~g'), 'y': format(datum.y, "
                           "'.4~g')}"}}}}}}}}});
  return s;
}

}  // namespace

json vega_spec(const json& plot) {
  MVL_CHECK(plot.is_object() && plot.contains("type") && plot.at("type").is_string(),
            "plot: needs a string \"type\"");
  MVL_CHECK(plot.contains("data") && plot.at("data").is_array(), "plot \"", get_text(plot, "title"),
            "\": needs a \"data\" array");
  const std::string type = plot.at("type");
  if (type == "bars") return bars_spec(plot);
  if (type == "lines") return lines_spec(plot);
  if (type == "heatmap") return heatmap_spec(plot);
  if (type == "scaling") return scaling_spec(plot);
  MVL_FAIL("plot \"", get_text(plot, "title"), "\": unknown type \"", type,
           "\" (bars, lines, heatmap, scaling)");
}

// --- the page -----------------------------------------------------------------------------------

namespace {

const char* kCss = R"(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  margin:0 auto;max-width:1200px;padding:12px 24px 48px;color:#1f2937;background:#fff}
h1{font-size:24px;margin:12px 0 4px}
h2{font-size:20px;margin:40px 0 6px;padding-bottom:4px;border-bottom:2px solid #e5e7eb}
h2 small{font-weight:normal;color:#6b7280;font-size:14px}
h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #e5e7eb;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.plots{display:flex;flex-wrap:wrap;gap:14px;margin:10px 0}
.plot{border:1px solid #e5e7eb;border-radius:6px;padding:4px;background:#fff;min-height:60px}
details{margin:6px 0}summary{cursor:pointer;color:#374151}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:8px;overflow:auto;font-size:12px;
  max-height:480px;margin:4px 0}
.v{padding:1px 8px;border-radius:10px;font-size:12px;white-space:nowrap}
.v-supported{background:#dcfce7;color:#166534}.v-not-supported{background:#fee2e2;color:#991b1b}
.v-inconclusive{background:#fef9c3;color:#854d0e}.v-not-run{background:#e5e7eb;color:#374151}
.muted{color:#6b7280}.warn{color:#991b1b}
nav{margin:8px 0 0;line-height:1.9}nav a{margin-right:14px;color:#1d4ed8}
#mvl-log:empty{display:none}#mvl-log{color:#991b1b;border-color:#fca5a5}
)";

// Before Vega: counts uncaught errors, console.error and console.warn calls, and lists them in
// the page (#mvl-log) so a reader sees them too.
const char* kErrorJs = R"(var mvl = {errors: 0, warnings: 0};
(function () {
  function log(kind, args) {
    var el = document.getElementById('mvl-log');
    if (el) el.textContent += kind + ': ' + Array.prototype.map.call(args, String).join(' ') +
                              '\n';
  }
  window.onerror = function (msg) { mvl.errors++; log('error', [msg]); };
  window.addEventListener('unhandledrejection', function (e) {
    mvl.errors++; log('error', ['unhandled rejection', e.reason]);
  });
  var ce = console.error, cw = console.warn;
  console.error = function () {
    mvl.errors++; log('error', arguments); return ce.apply(console, arguments);
  };
  console.warn = function () {
    mvl.warnings++; log('warning', arguments); return cw.apply(console, arguments);
  };
})();
)";

// After the plots' containers: one SVG Vega view per plot, then the body's data-* attributes.
const char* kRenderJs = R"((function () {
  var plots = JSON.parse(document.getElementById('mvl-specs').textContent);
  var body = document.body, rendered = 0;
  body.setAttribute('data-plots', String(plots.length));
  // One view at a time, so that an error is charged to the plot that raised it.
  function draw(p) {
    var el = document.getElementById(p.id), before = mvl.errors;
    function check() {
      var ok = mvl.errors === before && el.querySelector('svg .role-mark') !== null;
      if (ok) rendered++;
      el.setAttribute('data-rendered', ok ? '1' : '0');
    }
    try {
      var view = new vega.View(vega.parse(p.spec), {renderer: 'svg', container: el, hover: true});
      return view.runAsync().then(check, function (e) {
        console.error('plot ' + p.id + ': ' + e);
        check();
      });
    } catch (e) {
      console.error('plot ' + p.id + ': ' + e);
      check();
      return Promise.resolve();
    }
  }
  plots.reduce(function (done, p) {
    return done.then(function () { return draw(p); });
  }, Promise.resolve()).then(function () {
    body.setAttribute('data-rendered', String(rendered));
    body.setAttribute('data-errors', String(mvl.errors));
    body.setAttribute('data-warnings', String(mvl.warnings));
    body.setAttribute('data-done', '1');
  });
})();
)";

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

std::string esc_value(const json& v) { return html_escape(value_text(v)); }

// <td>, right-aligned for numbers.
std::string td(const json& v) {
  return std::string(v.is_number() ? "<td class=\"n\">" : "<td>") + esc_value(v) + "</td>";
}

// Every row and column of a table. Columns: the usual keys of experiment.h's tables in a reading
// order, then the others by name (a JSON object keeps its keys sorted).
std::string html_table(const json& rows) {
  static const std::vector<std::string> usual = {"variant", "series", "seed",  "metric", "step",
                                                 "x",       "y",      "value", "mean",   "std",
                                                 "min",     "max",    "n"};
  std::set<std::string> keys;
  for (const auto& r : rows)
    if (r.is_object())
      for (auto& [k, v] : r.items()) keys.insert(k);
  std::vector<std::string> cols;
  for (const auto& k : usual)
    if (keys.count(k)) cols.push_back(k);
  for (const auto& k : keys)
    if (std::find(usual.begin(), usual.end(), k) == usual.end()) cols.push_back(k);
  std::ostringstream o;
  o << "<table><thead><tr>";
  for (const auto& c : cols) o << "<th>" << html_escape(c) << "</th>";
  o << "</tr></thead><tbody>\n";
  for (const auto& r : rows) {
    o << "<tr>";
    if (r.is_object()) {
      for (const auto& c : cols) o << (r.contains(c) ? td(r.at(c)) : "<td></td>");
    } else {
      o << "<td colspan=\"" << std::max<size_t>(cols.size(), 1) << "\">" << esc_value(r) << "</td>";
    }
    o << "</tr>\n";
  }
  o << "</tbody></table>\n";
  return o.str();
}

// The summary table: mean ± std, min, max, n per variant and metric.
std::string summary_table(const json& rows) {
  std::ostringstream o;
  o << "<table><thead><tr><th>variant</th><th>metric</th><th>mean ± std</th><th>min</th>"
       "<th>max</th><th>n</th></tr></thead><tbody>\n";
  for (const auto& r : rows) {
    if (!r.is_object()) continue;
    auto cell = [&](const char* k) { return r.contains(k) ? td(r.at(k)) : "<td></td>"; };
    std::string ms;
    if (r.contains("mean")) ms = value_text(r.at("mean"));
    if (r.contains("std")) ms += " ± " + value_text(r.at("std"));
    o << "<tr>" << cell("variant") << cell("metric") << "<td class=\"n\">" << html_escape(ms)
      << "</td>" << cell("min") << cell("max") << cell("n") << "</tr>\n";
  }
  o << "</tbody></table>\n";
  return o.str();
}

// Flattened key paths of a JSON object: {"machine": {"cpu": ..}} -> "machine.cpu".
void flatten(const json& j, const std::string& prefix,
             std::vector<std::pair<std::string, json>>& out) {
  if (j.is_object() && !j.empty()) {
    for (auto& [k, v] : j.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
  } else {
    out.emplace_back(prefix, j);
  }
}

std::string anchor_id(const std::string& name, std::set<std::string>& used) {
  std::string id = "exp-";
  for (char c : name) id += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  std::string u = id;
  for (int k = 2; !used.insert(u).second; ++k) u = id + "-" + std::to_string(k);
  return u;
}

// Learning-curve plots from a "curves" table: per metric, mean over seeds per (variant, step),
// band mean ± std where several seeds.
std::vector<json> curve_plots(const json& curves) {
  std::vector<std::string> metrics;
  std::set<std::string> seen;
  // metric -> (variant, step) -> values
  std::map<std::string, std::map<std::pair<std::string, double>, std::vector<double>>> values;
  std::map<std::string, std::vector<std::string>> variants;
  std::map<std::string, std::set<std::string>> seen_v;
  for (const auto& r : curves) {
    double step, v;
    if (!get_number(r, "step", step) || !get_number(r, "value", v)) continue;
    const std::string m = get_text(r, "metric"), var = get_text(r, "variant");
    first_seen(metrics, seen, m);
    first_seen(variants[m], seen_v[m], var);
    values[m][{var, step}].push_back(v);
  }
  std::vector<json> plots;
  for (const auto& m : metrics) {
    json data = json::array();
    for (const auto& var : variants[m])
      for (const auto& [key, vals] : values[m]) {
        if (key.first != var) continue;
        const Spread sp = spread(vals);
        json row = {{"x", key.second}, {"y", sp.mean}, {"series", var}};
        if (sp.n > 1) row.update({{"lo", sp.mean - sp.std}, {"hi", sp.mean + sp.std}});
        data.push_back(std::move(row));
      }
    plots.push_back({{"type", "lines"},
                     {"title", m + " (learning curves, mean over seeds)"},
                     {"x_label", "step"},
                     {"y_label", m},
                     {"log_x", false},
                     {"log_y", false},
                     {"data", data}});
  }
  return plots;
}

class Page {
 public:
  void experiment(const json& r, const std::string& id);
  std::string finish(const std::vector<json>& ordered, const std::vector<std::string>& ids,
                     const std::vector<Claim>& claims);

 private:
  void plot(const json& decl);
  std::ostringstream body_;
  json specs_ = json::array();
};

void Page::plot(const json& decl) {
  json spec;
  try {
    spec = vega_spec(decl);
  } catch (const Error& e) {
    body_ << "<p class=\"warn\">plot not drawn: " << html_escape(e.what()) << "</p>\n";
    return;
  }
  const std::string id = "plot-" + std::to_string(specs_.size());
  body_ << "<div class=\"plot\" id=\"" << id << "\" data-plot-type=\""
        << html_escape(get_text(decl, "type")) << "\"></div>\n";
  specs_.push_back({{"id", id}, {"spec", std::move(spec)}});
}

void Page::experiment(const json& r, const std::string& id) {
  const std::string name = get_text(r, "experiment", "(unnamed)");
  body_ << "<section class=\"experiment\" id=\"" << id << "\">\n<h2>"
        << html_escape(get_text(r, "title", name)) << " <small>" << html_escape(name)
        << "</small></h2>\n";
  const std::string desc = get_text(r, "description");
  if (!desc.empty()) body_ << "<p>" << html_escape(desc) << "</p>\n";
  body_ << "<p class=\"muted\">scale <b>" << html_escape(get_text(r, "scale", "?"))
        << "</b> · seeds <b>" << html_escape(get_text(r, "seeds", "?")) << "</b>";
  if (get_bool(r, "dry_run")) body_ << " · <b>dry run</b> (configs only, nothing trained)";
  if (r.contains("_dir")) body_ << " · from <code>" << esc_value(r.at("_dir")) << "</code>";
  body_ << "</p>\n";

  // Plots.
  const json tables =
      r.contains("tables") && r.at("tables").is_object() ? r.at("tables") : json::object();
  std::vector<json> plots;
  bool has_lines = false;
  if (r.contains("plots") && r.at("plots").is_array())
    for (const auto& p : r.at("plots")) {
      plots.push_back(p);
      has_lines |= get_text(p, "type") == "lines";
    }
  if (!has_lines && tables.contains("curves") && tables.at("curves").is_array())
    for (auto& p : curve_plots(tables.at("curves"))) plots.push_back(std::move(p));
  if (!plots.empty()) {
    body_ << "<div class=\"plots\">\n";
    for (const auto& p : plots) plot(p);
    body_ << "</div>\n";
  }

  // Tables: summary, metrics, then the others.
  if (tables.contains("summary") && tables.at("summary").is_array() &&
      !tables.at("summary").empty())
    body_ << "<h3>Summary over seeds</h3>\n" << summary_table(tables.at("summary"));
  if (tables.contains("metrics") && tables.at("metrics").is_array() &&
      !tables.at("metrics").empty()) {
    const auto& m = tables.at("metrics");
    body_ << "<h3>Metrics</h3>\n<details" << (m.size() <= 200 ? " open" : "")
          << "><summary>every run's final metrics (" << m.size() << " rows)</summary>\n"
          << html_table(m) << "</details>\n";
  }
  for (auto& [tname, rows] : tables.items()) {
    if (tname == "summary" || tname == "metrics" || !rows.is_array() || rows.empty()) continue;
    body_ << "<h3>Table " << html_escape(tname) << "</h3>\n<details"
          << (rows.size() <= 12 ? " open" : "") << "><summary>" << rows.size()
          << " rows</summary>\n"
          << html_table(rows) << "</details>\n";
  }

  // Other results (top-level keys an experiment set).
  static const std::set<std::string> known = {"experiment", "title",   "description", "scale",
                                              "seeds",      "dry_run", "meta",        "tables",
                                              "plots",      "notes"};
  for (auto& [k, v] : r.items()) {
    if (known.count(k) || k.rfind('_', 0) == 0) continue;
    body_ << "<h3>" << html_escape(k) << "</h3>\n<pre>"
          << html_escape(v.dump(2, ' ', false, json::error_handler_t::replace)) << "</pre>\n";
  }

  if (r.contains("notes") && r.at("notes").is_array() && !r.at("notes").empty()) {
    body_ << "<h3>Notes</h3>\n<ul>\n";
    for (const auto& n : r.at("notes")) body_ << "<li>" << esc_value(n) << "</li>\n";
    body_ << "</ul>\n";
  }

  if (r.contains("_configs") && r.at("_configs").is_object() && !r.at("_configs").empty()) {
    const auto& cfg = r.at("_configs");
    body_ << "<h3>Configs</h3>\n<p class=\"muted\">" << cfg.size()
          << " runs (configs/&lt;name&gt;.json):</p>\n";
    for (auto& [cname, c] : cfg.items())
      body_ << "<details><summary>" << html_escape(cname) << "</summary><pre>"
            << html_escape(c.dump(2, ' ', false, json::error_handler_t::replace))
            << "</pre></details>\n";
  }

  body_ << "<h3>Run</h3>\n";
  if (r.contains("meta") && r.at("meta").is_object()) {
    std::vector<std::pair<std::string, json>> kv;
    flatten(r.at("meta"), "", kv);
    body_ << "<table><tbody>\n";
    for (const auto& [k, v] : kv)
      body_ << "<tr><th>" << html_escape(k) << "</th>" << td(v) << "</tr>\n";
    body_ << "</tbody></table>\n";
  } else {
    body_ << "<p class=\"muted\">no meta recorded</p>\n";
  }
  body_ << "</section>\n";
}

std::string verdict_class(const std::string& v) {
  std::string c = "v v-";
  for (char ch : v) c += std::isalnum(static_cast<unsigned char>(ch)) ? ch : '-';
  return c;
}

std::string Page::finish(const std::vector<json>& ordered, const std::vector<std::string>& ids,
                         const std::vector<Claim>& claims) {
  std::ostringstream o;
  o << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
       "<title>mambavl experiments report</title>\n<style>"
    << kCss << "</style>\n<script>\n"
    << kErrorJs << "</script>\n<script>\n"
    << vega_script() << "</script>\n</head>\n<body>\n";
  o << "<h1>mambavl experiments report</h1>\n<p class=\"muted\">Generated " << now_utc() << " from "
    << ordered.size() << " experiment" << (ordered.size() == 1 ? "" : "s")
    << ". Plots by Vega (inlined); numbers in tables have 6 significant digits (the CSV files of "
       "each results folder have all of them).</p>\n<pre id=\"mvl-log\"></pre>\n<nav><a "
       "href=\"#claims\">Claims</a>";
  for (size_t i = 0; i < ordered.size(); ++i)
    o << "<a href=\"#" << ids[i] << "\">"
      << html_escape(get_text(ordered[i], "title", get_text(ordered[i], "experiment"))) << "</a>";
  o << "</nav>\n";

  o << "<section id=\"claims\">\n<h2>Claims</h2>\n";
  if (claims.empty()) {
    o << "<p class=\"muted\">no claims evaluated</p>\n";
  } else {
    std::map<std::string, int> count;
    for (const auto& c : claims) ++count[c.verdict];
    o << "<p>";
    for (auto& [v, n] : count)
      o << "<span class=\"" << verdict_class(v) << "\">" << n << " " << html_escape(v)
        << "</span> ";
    o << "</p>\n<table><thead><tr><th>claim</th><th>source</th><th>experiment</th><th>verdict</th>"
         "<th>evidence</th></tr></thead><tbody>\n";
    for (const auto& c : claims)
      o << "<tr><td>" << html_escape(c.statement) << " <span class=\"muted\">(" << html_escape(c.id)
        << ")</span></td><td>" << html_escape(c.source) << "</td><td>" << html_escape(c.experiment)
        << "</td><td><span class=\"" << verdict_class(c.verdict) << "\">" << html_escape(c.verdict)
        << "</span></td><td>" << html_escape(c.evidence) << "</td></tr>\n";
    o << "</tbody></table>\n";
  }
  o << "</section>\n";
  o << body_.str();
  o << "<script type=\"application/json\" id=\"mvl-specs\">" << script_json(specs_)
    << "</script>\n<script>\n"
    << kRenderJs << "</script>\n</body>\n</html>\n";
  return o.str();
}

}  // namespace

std::string render_report_html(const std::vector<json>& results) {
  const std::vector<Claim> claims = evaluate_claims(results);
  // The registry's order; experiments it does not know after, as given.
  std::map<std::string, size_t> rank;
  const auto& reg = experiments();
  for (size_t i = 0; i < reg.size(); ++i) rank[reg[i].name] = i;
  std::vector<size_t> order(results.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto rank_of = [&](size_t i) {
    const auto it = rank.find(get_text(results[i], "experiment"));
    return it == rank.end() ? reg.size() : it->second;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return rank_of(a) < rank_of(b); });
  std::vector<json> ordered;
  std::vector<std::string> ids;
  std::set<std::string> used;
  Page page;
  for (size_t i : order) {
    ordered.push_back(results[i]);
    ids.push_back(anchor_id(get_text(results[i], "experiment", "unnamed"), used));
    page.experiment(results[i], ids.back());
  }
  return page.finish(ordered, ids, claims);
}

void write_report(const std::vector<fs::path>& dirs, const fs::path& out_html) {
  const std::string html = render_report_html(load_results(dirs));
  if (out_html.has_parent_path()) fs::create_directories(out_html.parent_path());
  io::write_text_file_atomic(out_html, html);
}

}  // namespace mambavl::experiments
