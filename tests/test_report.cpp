// `mambavl report`'s engine (experiments/report.h): results folders written with
// experiments::Results (every plot type, three experiments, text that needs escaping) are loaded
// and turned into one HTML page, whose structure is checked here; when Chromium is installed the
// page is also loaded headless: no console output, every plot rendered to an SVG with its marks,
// and a screenshot (test-output/report.png next to this binary, or $MAMBAVL_TEST_OUTPUT).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "cli_run.h"
#include "common/error.h"
#include "experiments/claims.h"
#include "experiments/experiment.h"
#include "experiments/report.h"
#include "io/checkpoint.h"
#include "test_util.h"

namespace ex = mambavl::experiments;
namespace fs = std::filesystem;
using mambavl::testing_util::expect_error;
using nlohmann::json;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

const std::string kNasty = "</script><b>bold</b> & 'q' \"dq\"";

// Three experiments in `root` (one subfolder each), given out of the registry's order. Returns the
// number of plots the page must draw (one declaration is of an unknown type: not drawn).
int write_fixture(const fs::path& root) {
  {  // retrieval (known): grouped bars, a heatmap, learning curves from the curves table
    ex::ExperimentOptions opt;
    opt.out = root / "retrieval";
    opt.scale = "micro";
    opt.seeds = 2;
    opt.command = "mambavl experiment retrieval --seeds 2 " + kNasty;
    fs::create_directories(opt.out / "configs");
    ex::Results r("retrieval", "Retrieval " + kNasty, "Needle retrieval <i>by position</i> & more",
                  opt);
    const double vals[2][2][2] = {{{0.625, 0.71}, {0.75, 0.123456789}}, {{0.5, 0.55}, {0.9, 1.05}}};
    const char* variants[2] = {"mamba", "pythia <tf>"};
    const char* metrics[2] = {"accuracy", "loss"};
    for (int v = 0; v < 2; ++v)
      for (int m = 0; m < 2; ++m)
        for (int s = 0; s < 2; ++s) r.add_metric(variants[v], s, metrics[m], vals[v][m][s]);
    for (int v = 0; v < 2; ++v)
      for (int s = 0; s < 2; ++s)
        for (int step = 0; step <= 50; step += 10)
          r.add_curve(variants[v], s, "loss", step, 2.0 / (1 + step * (v + 1)) + 0.05 * s);
    r.add_plot({{"type", "bars"},
                {"title", "Accuracy and loss " + kNasty},
                {"x_label", "model"},
                {"y_label", "value"},
                {"data", r.bars_data({"accuracy", "loss"}, true)}});
    json heat = json::array();
    for (int step = 0; step < 30; step += 5)
      for (int pos = 0; pos < 16; ++pos)
        heat.push_back({{"x", step}, {"y", pos}, {"value", std::sin(step * 0.1 + pos * 0.3)}});
    r.add_plot({{"type", "heatmap"},
                {"title", "Accuracy by needle position"},
                {"x_label", "step"},
                {"y_label", "position"},
                {"value_label", "accuracy"},
                {"data", heat}});
    for (const auto& row : heat) r.add_row("heatmap", row);
    r.add_note("note with " + kNasty);
    r.add_config("mamba-seed0", {{"model", "mamba"}, {"lr", 0.001}, {"comment", kNasty}});
    r.add_config("pythia-seed0", {{"model", "pythia"}, {"lr", 0.0005}});
    r.write();
  }
  {  // efficiency (known, last in the registry): scaling with fits, log-axis lines with a band
    ex::ExperimentOptions opt;
    opt.out = root / "efficiency";
    opt.scale = "micro";
    ex::Results r("efficiency", "Efficiency", "Time and memory against sequence length.", opt);
    json pts = json::array(), lines = json::array();
    for (double x : {256.0, 512.0, 1024.0, 2048.0}) {
      pts.push_back({{"x", x}, {"y", 0.01 * x}, {"series", "mamba"}});
      pts.push_back({{"x", x}, {"y", 1e-5 * x * x}, {"series", "transformer"}});
      lines.push_back(
          {{"x", x}, {"y", 0.02 * x}, {"lo", 0.018 * x}, {"hi", 0.022 * x}, {"series", "mamba"}});
      lines.push_back({{"x", x}, {"y", 2e-5 * x * x}, {"series", "transformer"}});
    }
    lines.push_back({{"x", 0.0}, {"y", 1.0}, {"series", "mamba"}});  // not drawable on log axes
    r.add_plot({{"type", "scaling"},
                {"title", "Time per token"},
                {"x_label", "sequence length"},
                {"y_label", "ms"},
                {"data", pts},
                {"fits",
                 {{{"series", "mamba"},
                   {"exponent", 1.0},
                   {"coefficient", 0.01},
                   {"x_min", 256},
                   {"x_max", 2048}},
                  {{"series", "transformer"},
                   {"exponent", 2.0},
                   {"coefficient", 1e-5},
                   {"x_min", 256},
                   {"x_max", 2048}}}}});
    r.add_plot({{"type", "lines"},
                {"title", "Memory"},
                {"x_label", "sequence length"},
                {"y_label", "MB"},
                {"log_x", true},
                {"log_y", true},
                {"data", lines}});
    r.add_metric("mamba", 0, "ms_per_token", 3.25);
    r.add_metric("transformer", 0, "ms_per_token", 9.5);
    r.add_row("fits", {{"series", "mamba"}, {"exponent", 1.0}, {"coefficient", 0.01}});
    r.write();
  }
  {  // an experiment the registry does not know: ungrouped bars, a plot of an unknown type
    ex::ExperimentOptions opt;
    opt.out = root / "custom";
    opt.scale = "micro";
    ex::Results r("custom-x", "Custom <b>x</b>", "", opt);
    r.add_metric("a", 0, "score", 1.5);
    r.add_metric("b", 0, "score", -0.25);
    r.add_metric("a", 0, "tokens", 1234567);
    r.add_metric("a", 0, "tiny", 2.5e-7);
    r.add_plot({{"type", "bars"}, {"title", "Scores"}, {"data", r.bars_data({"score"}, false)}});
    r.add_plot({{"type", "pie"}, {"title", "Unsupported"}, {"data", json::array({1, 2})}});
    // Degenerate but drawable: one point, one constant cell, points without a fit.
    r.add_plot({{"type", "lines"}, {"title", "One point"}, {"data", {{{"x", 3}, {"y", 1}}}}});
    r.add_plot({{"type", "heatmap"},
                {"title", "One cell"},
                {"data", {{{"x", 0}, {"y", 0}, {"value", 0.5}}}}});
    r.add_plot({{"type", "scaling"},
                {"title", "No fit"},
                {"data", {{{"x", 10}, {"y", 1}}, {{"x", 100}, {"y", 10}}}}});
    r.write();
  }
  // retrieval: bars, heatmap, loss curves; efficiency: scaling, lines; custom: bars, lines,
  // heatmap, scaling
  return 9;
}

class ReportTest : public mambavl::testing_util::TempDirTest {
 protected:
  ReportTest() : TempDirTest("mvl_report_") {}
};

// The page without the inlined Vega script (whose code mentions URLs, e.g. the SVG namespace).
std::string page_without_vega(std::string html) {
  const std::string vega = ex::vega_script();
  const size_t p = html.find(vega);
  EXPECT_NE(p, std::string::npos) << "the Vega script is not inlined verbatim";
  if (p != std::string::npos) html.erase(p, vega.size());
  return html;
}

TEST_F(ReportTest, LoadResultsFindsExperimentsOneLevelDownWithTheirConfigs) {
  write_fixture(dir);
  const auto all = ex::load_results({dir});
  ASSERT_EQ(all.size(), 3u);
  std::map<std::string, json> by_name;
  for (const auto& r : all) by_name[r.at("experiment")] = r;
  ASSERT_TRUE(by_name.count("retrieval") && by_name.count("efficiency") &&
              by_name.count("custom-x"));
  const json& cfg = by_name["retrieval"].at("_configs");
  ASSERT_EQ(cfg.size(), 2u);
  EXPECT_EQ(cfg.at("mamba-seed0").at("comment"), kNasty);
  EXPECT_DOUBLE_EQ(cfg.at("pythia-seed0").at("lr").get<double>(), 0.0005);
  EXPECT_TRUE(by_name["efficiency"].at("_configs").empty());
  EXPECT_EQ(by_name["efficiency"].at("_dir"), (dir / "efficiency").string());

  const auto one = ex::load_results({dir / "custom", dir / "efficiency"});
  ASSERT_EQ(one.size(), 2u);
  EXPECT_EQ(one[0].at("experiment"), "custom-x");
  EXPECT_EQ(one[1].at("experiment"), "efficiency");
}

TEST_F(ReportTest, LoadResultsErrorsNameTheFolderOrFile) {
  expect_error([&] { ex::load_results({dir / "missing"}); },
               {"no such folder", (dir / "missing").string()});
  std::ofstream(dir / "file.txt") << "x";
  expect_error([&] { ex::load_results({dir / "file.txt"}); }, {"not a folder"});
  fs::create_directories(dir / "empty" / "sub");
  expect_error([&] { ex::load_results({dir / "empty"}); },
               {(dir / "empty").string(), "no results.json"});
  fs::create_directories(dir / "bad");
  std::ofstream(dir / "bad" / "results.json") << "{\"experiment\": \"x\", \"tables\": [1, 2";
  expect_error([&] { ex::load_results({dir / "bad"}); },
               {(dir / "bad" / "results.json").string(), "invalid JSON"});
  // Found one level down, too.
  expect_error([&] { ex::load_results({dir}); }, {"results.json", "invalid JSON"});
  expect_error([&] { ex::load_results({}); }, {"no results folder"});
}

TEST(ReportText, EscapesAndNumbers) {
  EXPECT_EQ(ex::html_escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
  const json j = {{"s", "</script><!-- & -->"}, {"n", 1.5}};
  const std::string sj = ex::script_json(j);
  EXPECT_EQ(sj.find('<'), std::string::npos);
  EXPECT_EQ(sj.find('>'), std::string::npos);
  EXPECT_EQ(sj.find('&'), std::string::npos);
  EXPECT_EQ(json::parse(sj), j);  // still the same JSON
  EXPECT_EQ(ex::format_number(3), "3");
  EXPECT_EQ(ex::format_number(-0.0), "0");
  EXPECT_EQ(ex::format_number(-1234567), "-1234567");
  EXPECT_EQ(ex::format_number(0.123456789), "0.123457");
  EXPECT_EQ(ex::format_number(2.5e-7), "2.5e-07");
  EXPECT_EQ(ex::format_number(1e20), "1e+20");
  EXPECT_EQ(ex::format_number(std::nan("")), "NaN");
}

TEST(ReportVega, SpecsOfEveryPlotType) {
  // bars: grouped -> offset scale over the groups and a legend; error bars from lo to hi.
  const json bars =
      ex::vega_spec({{"type", "bars"},
                     {"data",
                      {{{"x", "a"}, {"group", "g1"}, {"mean", 1.0}, {"lo", 0.5}, {"hi", 1.5}},
                       {{"x", "a"}, {"group", "g2"}, {"mean", 2.0}, {"lo", 1.5}, {"hi", 2.5}},
                       {{"x", "b"}, {"group", "g1"}, {"mean", 3.0}},
                       {{"x", "c"}, {"group", "g1"}, {"mean", nullptr}}}}});  // no mean: left out
  ASSERT_EQ(bars.at("data")[0].at("values").size(), 3u);
  EXPECT_EQ(bars.at("data")[0].at("values")[2].at("lo"), 3.0);  // no spread: lo = hi = mean
  EXPECT_EQ(bars.at("scales")[0].at("domain"), json({"a", "b"}));
  EXPECT_EQ(bars.at("scales")[1].at("domain"), json({"g1", "g2"}));
  EXPECT_EQ(bars.at("legends").size(), 1u);
  EXPECT_EQ(bars.at("marks").size(), 4u);  // bars, error bar, two caps
  const json ungrouped = ex::vega_spec({{"type", "bars"}, {"data", {{{"x", "a"}, {"mean", 1.0}}}}});
  EXPECT_FALSE(ungrouped.contains("legends"));

  // lines on log axes: rows not > 0 left out, sorted by x per series, band where lo/hi given.
  const json lines = ex::vega_spec({{"type", "lines"},
                                    {"log_x", true},
                                    {"log_y", true},
                                    {"data",
                                     {{{"x", 10}, {"y", 2}, {"series", "s"}, {"lo", 1}, {"hi", 3}},
                                      {{"x", 1}, {"y", 1}, {"series", "s"}},
                                      {{"x", 0}, {"y", 1}, {"series", "s"}},
                                      {{"x", 5}, {"y", -1}, {"series", "s"}}}}});
  const json& lv = lines.at("data")[0].at("values");
  ASSERT_EQ(lv.size(), 2u);
  EXPECT_EQ(lv[0].at("x"), 1.0);
  EXPECT_EQ(lv[1].at("lo"), 1.0);
  EXPECT_EQ(lines.at("scales")[0].at("type"), "log");
  EXPECT_EQ(lines.at("scales")[1].at("type"), "log");
  const json lin = ex::vega_spec({{"type", "lines"}, {"data", {{{"x", 0}, {"y", -1}}}}});
  EXPECT_EQ(lin.at("scales")[0].at("type"), "linear");
  EXPECT_EQ(lin.at("scales")[1].at("domain").at("fields"), json::array({"y"}));  // no band
  EXPECT_EQ(lines.at("scales")[1].at("domain").at("fields"), json::array({"y", "lo", "hi"}));

  // heatmap: band scales over the sorted distinct x and y, a gradient legend.
  const json heat = ex::vega_spec({{"type", "heatmap"},
                                   {"value_label", "acc"},
                                   {"data",
                                    {{{"x", 20}, {"y", 3}, {"value", 0.5}},
                                     {{"x", 10}, {"y", 1}, {"value", 0.1}},
                                     {{"x", 20}, {"y", 1}, {"value", 0.9}}}}});
  EXPECT_EQ(heat.at("scales")[0].at("domain"), json({10.0, 20.0}));
  EXPECT_EQ(heat.at("scales")[1].at("domain"), json({1.0, 3.0}));
  EXPECT_EQ(heat.at("legends")[0].at("type"), "gradient");
  EXPECT_EQ(heat.at("legends")[0].at("title"), "acc");

  // scaling: the fitted line y = c x^e sampled from x_min to x_max; the slope in the legend.
  const json sc = ex::vega_spec(
      {{"type", "scaling"},
       {"data", {{{"x", 4}, {"y", 2}, {"series", "m"}}, {{"x", 16}, {"y", 4}, {"series", "m"}}}},
       {"fits",
        {{{"series", "m"},
          {"exponent", 0.5},
          {"coefficient", 1.0},
          {"x_min", 4},
          {"x_max", 16}}}}});
  const json& fit = sc.at("data")[1].at("values");
  ASSERT_GE(fit.size(), 2u);
  EXPECT_DOUBLE_EQ(fit.front().at("x").get<double>(), 4.0);
  EXPECT_DOUBLE_EQ(fit.front().at("y").get<double>(), 2.0);
  EXPECT_NEAR(fit.back().at("x").get<double>(), 16.0, 1e-9);
  EXPECT_NEAR(fit.back().at("y").get<double>(), 4.0, 1e-9);
  EXPECT_EQ(sc.at("scales")[2].at("domain"), json({"m (slope 0.5)"}));
  EXPECT_EQ(sc.at("data")[0].at("values")[0].at("label"), "m (slope 0.5)");
  const json nofit = ex::vega_spec({{"type", "scaling"}, {"data", {{{"x", 4}, {"y", 2}}}}});
  EXPECT_TRUE(nofit.at("data")[1].at("values").empty());
  EXPECT_FALSE(nofit.contains("legends"));  // one unnamed series: nothing to tell apart

  expect_error(
      [] {
        ex::vega_spec({{"type", "pie"}, {"data", json::array()}});
      },
      {"unknown type", "pie"});
  expect_error([] { ex::vega_spec({{"type", "bars"}}); }, {"data"});
  expect_error(
      [] {
        ex::vega_spec({{"type", "heatmap"}, {"data", {{{"x", 1}}}}});
      },
      {"heatmap", "no row"});
}

TEST_F(ReportTest, PageHasEveryNumberEscapedTextAndNoExternalResource) {
  const int plots = write_fixture(dir);
  const fs::path out = dir / "page" / "report.html";
  ex::write_report({dir / "custom", dir / "efficiency", dir / "retrieval"}, out);
  ASSERT_TRUE(fs::is_regular_file(out));
  const std::string html = read_file(out);
  const auto results = ex::load_results({dir});

  // Vega inlined; the page's own part references nothing outside it.
  EXPECT_NE(html.find("load('vega-view'"), std::string::npos);
  EXPECT_EQ(html.find("sourceMappingURL"), std::string::npos);
  const std::string own = page_without_vega(html);
  for (const char* bad : {"http://", "https://", "src=", "<link", "@import", "url("})
    EXPECT_EQ(own.find(bad), std::string::npos) << bad;
  std::smatch m;
  EXPECT_FALSE(std::regex_search(html, m, std::regex(R"((src|href)\s*=\s*["']?\s*(https?:)?//)")))
      << m.str();

  // Text escaped: four scripts (error counter, Vega, the specs, the renderer) and nothing else.
  EXPECT_EQ(count(html, "<script"), 4u);
  EXPECT_EQ(count(html, "</script"), 4u);
  EXPECT_EQ(own.find("<b>bold"), std::string::npos);
  EXPECT_NE(own.find("Retrieval &lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; &#39;q&#39;"),
            std::string::npos);
  EXPECT_NE(own.find("note with &lt;/script&gt;"), std::string::npos);
  EXPECT_NE(own.find("Custom &lt;b&gt;x&lt;/b&gt;"), std::string::npos);

  // The registry's order (retrieval ... efficiency), the unknown experiment last.
  const size_t pr = html.find("id=\"exp-retrieval\""), pe = html.find("id=\"exp-efficiency\""),
               pc = html.find("id=\"exp-custom-x\"");
  ASSERT_NE(pr, std::string::npos);
  ASSERT_NE(pe, std::string::npos);
  ASSERT_NE(pc, std::string::npos);
  EXPECT_LT(pr, pe);
  EXPECT_LT(pe, pc);

  // Every number of every metrics table, every summary line, every heatmap cell.
  for (const auto& r : results) {
    const json& t = r.at("tables");
    for (const auto& row : t.at("metrics"))
      EXPECT_NE(
          own.find("<td class=\"n\">" + ex::format_number(row.at("value").get<double>()) + "</td>"),
          std::string::npos)
          << row.dump();
    for (const auto& row : t.at("summary")) {
      const std::string ms = ex::format_number(row.at("mean").get<double>()) + " ± " +
                             ex::format_number(row.at("std").get<double>());
      EXPECT_NE(own.find(">" + ms + "<"), std::string::npos) << ms;
    }
    if (t.contains("heatmap"))
      for (const auto& row : t.at("heatmap"))
        EXPECT_NE(own.find("<td class=\"n\">" + ex::format_number(row.at("value").get<double>()) +
                           "</td>"),
                  std::string::npos);
    // The commit and the machine.
    EXPECT_NE(own.find(ex::html_escape(r.at("meta").at("commit").get<std::string>())),
              std::string::npos);
    EXPECT_NE(own.find(ex::html_escape(r.at("meta").at("machine").at("cpu").get<std::string>())),
              std::string::npos);
  }
  EXPECT_NE(own.find("1234567"), std::string::npos);
  EXPECT_NE(own.find("0.123457"), std::string::npos);
  EXPECT_NE(own.find("2.5e-07"), std::string::npos);

  // Columns in reading order (JSON keeps an object's keys sorted).
  EXPECT_NE(own.find("<tr><th>variant</th><th>seed</th><th>metric</th><th>value</th></tr>"),
            std::string::npos);

  // Configs: names and (escaped) content.
  EXPECT_NE(own.find("<summary>mamba-seed0</summary>"), std::string::npos);
  EXPECT_NE(own.find("&quot;comment&quot;: &quot;&lt;/script&gt;"), std::string::npos);

  // Plots: one container each; the undrawable one explained instead.
  EXPECT_EQ(count(own, "<div class=\"plot\""), static_cast<size_t>(plots));
  EXPECT_NE(own.find("plot not drawn: plot &quot;Unsupported&quot;: unknown type"),
            std::string::npos);

  // Claims: the table when evaluate_claims has verdicts, else the note.
  const auto claims = ex::evaluate_claims(results);
  if (claims.empty()) {
    EXPECT_NE(own.find("no claims evaluated"), std::string::npos);
  } else {
    for (const auto& c : claims) EXPECT_NE(own.find(ex::html_escape(c.id)), std::string::npos);
  }
}

// --- headless Chromium --------------------------------------------------------------------------

std::string find_chromium() {
  if (const char* e = std::getenv("MAMBAVL_CHROMIUM"); e && *e) return e;
  for (const char* name : {"chromium", "chromium-browser", "google-chrome", "chrome"}) {
    const std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return name;
  }
  return "";
}

fs::path output_dir() {
  if (const char* e = std::getenv("MAMBAVL_TEST_OUTPUT"); e && *e) return e;
  return fs::read_symlink("/proc/self/exe").parent_path() / "test-output";
}

std::map<std::string, std::string> body_attributes(const std::string& dom) {
  std::map<std::string, std::string> a;
  std::smatch m;
  if (!std::regex_search(dom, m, std::regex("<body([^>]*)>"))) return a;
  const std::string attrs = m[1];
  const std::regex kv(R"re(([\w-]+)="([^"]*)")re");
  for (auto it = std::sregex_iterator(attrs.begin(), attrs.end(), kv); it != std::sregex_iterator();
       ++it)
    a[(*it)[1]] = (*it)[2];
  return a;
}

TEST_F(ReportTest, ChromiumRendersEveryPlotWithoutConsoleOutput) {
  const std::string chromium = find_chromium();
  if (chromium.empty())
    GTEST_SKIP() << "no chromium binary found (apt-get install chromium, or set MAMBAVL_CHROMIUM)";
  const int plots = write_fixture(dir);
  const fs::path page = dir / "report.html";
  ex::write_report({dir}, page);
  const std::string flags =
      " --headless --no-sandbox --disable-gpu --no-first-run --no-default-browser-check"
      " --disable-extensions --enable-logging=stderr --v=0 --virtual-time-budget=20000"
      " --user-data-dir=" +
      (dir / "profile").string() + " ";
  const std::string url = "file://" + page.string();

  // The DOM after the page's scripts ran, and the browser's log (console messages included).
  const fs::path dom_file = dir / "dom.html", log_file = dir / "chromium.log";
  const std::string cmd = "timeout 120 " + chromium + flags + "--dump-dom '" + url + "' > '" +
                          dom_file.string() + "' 2> '" + log_file.string() + "'";
  const int rc = std::system(cmd.c_str());
  const std::string dom = read_file(dom_file), log = read_file(log_file);
  ASSERT_EQ(rc, 0) << cmd << "\n" << log;

  std::string console;
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);)
    if (line.find(":CONSOLE") != std::string::npos) console += line + "\n";
  EXPECT_TRUE(console.empty()) << "console output:\n" << console;

  auto attrs = body_attributes(dom);
  ASSERT_EQ(attrs["data-done"], "1") << "the page's renderer did not finish; log:\n" << log;
  EXPECT_EQ(attrs["data-errors"], "0");
  EXPECT_EQ(attrs["data-warnings"], "0");
  EXPECT_EQ(attrs["data-plots"], std::to_string(plots));
  EXPECT_EQ(attrs["data-rendered"], std::to_string(plots));

  // Each plot container holds an SVG with its named marks and as many mark items as data rows.
  const std::map<std::string, std::vector<std::string>> marks = {{"bars", {"role-mark bars"}},
                                                                 {"lines", {"role-mark lines"}},
                                                                 {"heatmap", {"role-mark cells"}},
                                                                 {"scaling", {"role-mark points"}}};
  const std::regex open(R"re(<div class="plot" id="(plot-\d+)" data-plot-type="(\w+)")re");
  std::vector<std::pair<size_t, std::pair<std::string, std::string>>> found;
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), open); it != std::sregex_iterator();
       ++it)
    found.push_back({static_cast<size_t>(it->position()), {(*it)[1], (*it)[2]}});
  ASSERT_EQ(found.size(), static_cast<size_t>(plots));
  std::map<std::string, int> types;
  for (size_t i = 0; i < found.size(); ++i) {
    const size_t end = i + 1 < found.size() ? found[i + 1].first : dom.size();
    const std::string part = dom.substr(found[i].first, end - found[i].first);
    const auto& [id, type] = found[i].second;
    ++types[type];
    EXPECT_EQ(count(part, "<svg"), 1u) << id;
    EXPECT_NE(part.find("data-rendered=\"1\""), std::string::npos) << id;
    for (const auto& mk : marks.at(type)) EXPECT_NE(part.find(mk), std::string::npos) << id << mk;
    EXPECT_GE(count(part, "<path"), 4u) << id;
  }
  EXPECT_EQ(types["bars"], 2);
  EXPECT_EQ(types["heatmap"], 2);
  EXPECT_EQ(types["lines"], 3);
  EXPECT_EQ(types["scaling"], 2);
  EXPECT_NE(dom.find("role-mark fits"), std::string::npos);  // the fitted lines
  // The heatmap: one rect per cell (6 steps x 16 positions).
  const size_t h = dom.find("role-mark cells");
  ASSERT_NE(h, std::string::npos);
  EXPECT_GE(count(dom.substr(h, dom.find("role-mark", h + 10) - h), "<path"), 96u);

  // A screenshot, kept with the page for a person to look at.
  const fs::path outdir = output_dir();
  fs::create_directories(outdir);
  const fs::path png = outdir / "report.png";
  fs::remove(png);
  fs::copy_file(page, outdir / "report.html", fs::copy_options::overwrite_existing);
  const std::string shot = "timeout 120 " + chromium + flags + "--hide-scrollbars" +
                           " --window-size=1280,7000 --screenshot='" + png.string() + "' '" + url +
                           "' > /dev/null 2>&1";
  ASSERT_EQ(std::system(shot.c_str()), 0) << shot;
  ASSERT_TRUE(fs::is_regular_file(png));
  const std::string img = read_file(png);
  ASSERT_GT(img.size(), 24u);
  EXPECT_EQ(img.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(img[at])) << 24) | (uint32_t(uint8_t(img[at + 1])) << 16) |
           (uint32_t(uint8_t(img[at + 2])) << 8) | uint32_t(uint8_t(img[at + 3]));
  };
  EXPECT_EQ(be32(16), 1280u);  // IHDR width, height
  EXPECT_EQ(be32(20), 7000u);
  EXPECT_GT(img.size(), 50000u) << "the screenshot looks blank";
  std::cout << "[report] screenshot: " << png.string()
            << "\n[report] page: " << (outdir / "report.html").string() << std::endl;
}

}  // namespace
