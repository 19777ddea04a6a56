// Vega for `mambavl report`, inlined into the binary: Debian's libjs-vega ships Vega 5 as one UMD
// file per module (no single bundle), whose browser-global path would overwrite `window.vega` with
// every module. The minified modules are embedded here with .incbin (MAMBAVL_VEGA_DIR comes from
// CMakeLists.txt, as does a hash of the files, so a changed package rebuilds this file) and loaded
// in the page through a small CommonJS shim, in dependency order; then the transforms are
// registered as Vega's own bundle does (vega/index.js), which yields the global `vega` with View
// and parse. Only the modules a static SVG chart needs: no geo / force / hierarchy / voronoi /
// wordcloud (those need d3 modules that the package does not ship).
#include <cctype>
#include <string>
#include <string_view>

#include "common/error.h"
#include "experiments/report.h"

#ifndef MAMBAVL_VEGA_DIR
#error "MAMBAVL_VEGA_DIR (libjs-vega's folder) must be defined by the build"
#endif

// One embedded file: symbols mambavl_vega_<sym>_begin / _end around its bytes.
// clang-format off
#define MVL_VEGA_INCBIN(sym, file)                      \
  __asm__(".pushsection .rodata\n"                      \
          ".balign 16\n"                                \
          ".globl mambavl_vega_" #sym "_begin\n"        \
          ".hidden mambavl_vega_" #sym "_begin\n"       \
          "mambavl_vega_" #sym "_begin:\n"              \
          ".incbin \"" MAMBAVL_VEGA_DIR "/" file "\"\n" \
          ".globl mambavl_vega_" #sym "_end\n"          \
          ".hidden mambavl_vega_" #sym "_end\n"         \
          "mambavl_vega_" #sym "_end:\n"                \
          ".popsection\n");                             \
  extern "C" const char mambavl_vega_##sym##_begin[];   \
  extern "C" const char mambavl_vega_##sym##_end[];
// clang-format on

// Dependency order (each module's require()s come before it).
#define MVL_VEGA_MODULES(X)                                                 \
  X(util, "vega-util", "vega-util.min.js")                                  \
  X(time, "vega-time", "vega-time.min.js")                                  \
  X(format, "vega-format", "vega-format.min.js")                            \
  X(loader, "vega-loader", "vega-loader.min.js")                            \
  X(dataflow, "vega-dataflow", "vega-dataflow.min.js")                      \
  X(statistics, "vega-statistics", "vega-statistics.min.js")                \
  X(scale, "vega-scale", "vega-scale.min.js")                               \
  X(canvas, "vega-canvas", "vega-canvas.min.js")                            \
  X(scenegraph, "vega-scenegraph", "vega-scenegraph.min.js")                \
  X(expression, "vega-expression", "vega-expression.min.js")                \
  X(selections, "vega-selections", "vega-selection.min.js")                 \
  X(event_selector, "vega-event-selector", "vega-event-selector.min.js")    \
  X(functions, "vega-functions", "vega-functions.min.js")                   \
  X(runtime, "vega-runtime", "vega-runtime.min.js")                         \
  X(view, "vega-view", "vega-view.min.js")                                  \
  X(parser, "vega-parser", "vega-parser.min.js")                            \
  X(transforms, "vega-transforms", "vega-transforms.min.js")                \
  X(view_transforms, "vega-view-transforms", "vega-view-transforms.min.js") \
  X(encode, "vega-encode", "vega-encode.min.js")

#define MVL_VEGA_DECLARE(sym, name, file) MVL_VEGA_INCBIN(sym, file)
MVL_VEGA_MODULES(MVL_VEGA_DECLARE)

namespace mambavl::experiments {

namespace {

struct VegaModule {
  const char* name;  // the package name its dependents require()
  const char* file;
  const char* begin;
  const char* end;
};

#define MVL_VEGA_ENTRY(sym, name, file) \
  {name, file, mambavl_vega_##sym##_begin, mambavl_vega_##sym##_end},
const VegaModule kModules[] = {MVL_VEGA_MODULES(MVL_VEGA_ENTRY)};

bool contains_ci(std::string_view s, std::string_view needle) {
  for (size_t i = 0; i + needle.size() <= s.size(); ++i) {
    size_t k = 0;
    while (k < needle.size() && std::tolower(static_cast<unsigned char>(s[i + k])) == needle[k])
      ++k;
    if (k == needle.size()) return true;
  }
  return false;
}

}  // namespace

std::string vega_script() {
  std::string js =
      "/* Vega 5 (Debian libjs-vega, BSD-3-Clause, https://github.com/vega/vega), one module per\n"
      "   function below, loaded through a CommonJS shim. */\n"
      "var vega = (function () {\n"
      "  var mods = {};\n"
      "  function req(name) {\n"
      "    var m = mods[name];\n"
      "    if (!m) throw new Error('vega module not inlined: ' + name);\n"
      "    return m;\n"
      "  }\n"
      "  function load(name, body) { var exports = {}; body(exports, {exports: exports}, req);"
      " mods[name] = exports; }\n";
  for (const VegaModule& m : kModules) {
    std::string_view text(m.begin, static_cast<size_t>(m.end - m.begin));
    // Without the source map comment: the page must not point at any other file.
    const size_t map = text.rfind("//# sourceMappingURL=");
    if (map != std::string_view::npos) text = text.substr(0, map);
    // The text goes inside <script>: it must not close it or open an HTML comment.
    MVL_CHECK(!contains_ci(text, "</script") && !contains_ci(text, "<!--"),
              "report: ", MAMBAVL_VEGA_DIR, "/", m.file,
              " contains </script or <!-- and cannot be inlined");
    js += "  load('";
    js += m.name;
    js += "', function (exports, module, require) {\n";
    js += text;
    js += "\n  });\n";
  }
  js +=
      "  var v = {};\n"
      "  for (var k in mods)  // the transform modules' names (scale, ...) would shadow functions\n"
      "    if (!/transforms|encode/.test(k)) Object.assign(v, mods[k]);\n"
      "  // As vega/index.js: the transforms registered with the dataflow.\n"
      "  Object.assign(mods['vega-dataflow'].transforms, mods['vega-transforms'],\n"
      "                mods['vega-view-transforms'], mods['vega-encode']);\n"
      "  v.transforms = mods['vega-dataflow'].transforms;\n"
      "  v.View = mods['vega-view'].View;\n"
      "  v.parse = mods['vega-parser'].parse;\n"
      "  return v;\n"
      "})();\n";
  return js;
}

}  // namespace mambavl::experiments
