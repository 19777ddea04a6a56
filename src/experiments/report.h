// `mambavl report DIR...`: one self-contained HTML page (plots by Vega, inlined) from the results
// folders of experiments/experiment.h.
//
// The page needs no other file and no network: Vega (Debian's libjs-vega, embedded in the binary
// at build time: report_assets.cpp) and the plots' data are inside it. Every plot is a Vega view
// rendered to SVG into <div class="plot" id="plot-K">; when all views have run, the page sets on
// <body>: data-plots (plots on the page), data-rendered (those that drew an <svg> with marks and
// raised no error; each container also gets data-rendered="1" or "0"), data-errors (uncaught
// errors + console.error calls, Vega's included), data-warnings (console.warn calls),
// data-done="1". The tests load the page in headless Chromium and check these.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mambavl::experiments {

// The results.json of every folder given; a folder without one is searched one level down (a demo
// folder holds one subfolder per experiment). Error naming the folder when none is found, or a
// results.json that is malformed. Each result gets two extra keys: "_dir" (its folder) and
// "_configs" ({name: the JSON of configs/<name>.json}, by name).
std::vector<nlohmann::json> load_results(const std::vector<std::filesystem::path>& dirs);

// The page: claims table (evaluate_claims), then per experiment (in the order of experiments(),
// unknown ones after, as given) its description, plots, tables of every number, notes, the
// configs' names and the commit / machine. Learning curves: an experiment with a "curves" table
// and no "lines" plot gets one plot per curve metric (mean over seeds, band mean ± std). A plot
// declaration that cannot be drawn shows its problem in the page instead.
std::string render_report_html(const std::vector<nlohmann::json>& results);

// load_results + render_report_html, written atomically to `out_html`.
void write_report(const std::vector<std::filesystem::path>& dirs,
                  const std::filesystem::path& out_html);

// --- parts, exposed for the tests -------------------------------------------------------------

// The Vega specification (JSON) of one plot declaration of experiment.h ("bars", "lines",
// "heatmap", "scaling"); rows with missing or non-finite values (and non-positive ones on log
// axes) are left out. Error naming the problem for an unknown type, or no drawable row.
nlohmann::json vega_spec(const nlohmann::json& plot);

// The Vega modules as one script that defines the global `vega` (View, parse, ...).
std::string vega_script();

// Text for HTML content and attribute values (& < > " ' escaped).
std::string html_escape(const std::string& s);
// JSON text safe inside <script type="application/json"> (<, >, & as \u escapes).
std::string script_json(const nlohmann::json& j);
// A table cell's number as the page shows it: integers in full, others with 6 significant digits.
std::string format_number(double v);

}  // namespace mambavl::experiments
