// `mambavl bench vision`: images/s of each connector type x scan mode on realistic patch grids
// (random weights, forward only, inference mode), in one table with the matmul FLOPs per image and
// the achieved GFLOP/s (compare with the fp32 GEMM rate measured in the same run). Encoders get
// their own table: images/s of each encoder preset at each size (see encoder_bench_entries), at
// each of --encoder-batches and --encoder-dtypes, ViTs with their matmul FLOPs per image and the
// share of the fp32 GEMM rate (bf16 too is compared with the fp32 rate: without AMX, bf16
// matmuls run through the fp32 GEMM, models/bf16_gemm.h).
#include "bench_vision.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "common/error.h"
#include "models/bf16_gemm.h"
#include "models/connector.h"
#include "models/mambaout.h"
#include "models/vision.h"
#include "models/vit.h"
#include "common/sysinfo.h"

namespace mambavl::bench {
using namespace ::mambavl::sys;

namespace {

using clock = std::chrono::steady_clock;

const std::vector<std::string>& encoder_names() {
  static const std::vector<std::string> names = {
      "clip-vit-b16",  "clip-vit-l14",  "siglip-so400m-14", "eva02-l14",    "mambaout-femto",
      "mambaout-kobe", "mambaout-tiny", "mambaout-small",   "mambaout-base"};
  return names;
}

struct VisionBenchOptions {
  cli::RuntimeOptions rt;
  int64_t iters = 3;
  int64_t batch = 1;
  std::vector<std::string> types{"mlp", "vss_mlp", "vss_l2"};
  std::vector<std::string> scans{"bsm", "csm"};
  std::vector<std::string> cases{"clip-l-336>mamba-2.8b", "16x16-768"};
  bool plain = false;  // also time the shared mixer without hoisted projections
  std::vector<std::string> encoders = encoder_names();
  std::vector<int64_t> sizes{224, 384};
  std::vector<int64_t> encoder_batches;     // empty: --batch
  std::vector<std::string> encoder_dtypes;  // empty: --dtype
};

// A patch grid and the widths on both sides of the connector.
struct GridCase {
  std::string name;
  int64_t gh, gw, d_vision, d_lm;
};

const std::vector<GridCase>& grid_cases() {
  static const std::vector<GridCase> cases = {
      // CLIP ViT-L/14 at 336 px (24x24 patches, width 1024) -> Mamba-2.8B (d_model 2560): VL-Mamba.
      {"clip-l-336>mamba-2.8b", 24, 24, 1024, 2560},
      // A small 16x16 grid of width 768 (ViT-B/16 at 256 px) -> a 768-wide LM (mamba-130m).
      {"16x16-768", 16, 16, 768, 768},
  };
  return cases;
}

const GridCase& find_case(const std::string& name) {
  for (const auto& c : grid_cases())
    if (c.name == name) return c;
  std::vector<std::string> names;
  for (const auto& c : grid_cases()) names.push_back(c.name);
  MVL_FAIL("bench vision: unknown case '", name, "' (known: ", join(names), ")");
}

// FLOPs of one image through a connector as computed: matmuls, plus ~9*d_inner*N per token and
// order for the selective scan (element-wise ops are not counted). With `hoisted` (shared mixer),
// in_proj / out_proj run once instead of once per order.
double connector_flops(const models::ConnectorConfig& c, int64_t L, bool hoisted) {
  const double mlp = 2.0 * L * (c.d_vision * c.d_lm + c.d_lm * c.d_lm);  // linear_1, linear_2
  if (!c.has_vss()) return mlp;
  const auto m = c.mixer_config();
  const double d = m.d_model, Di = m.d_inner, R = m.dt_rank, N = m.d_state;
  const double K = static_cast<double>(c.orders().size());
  const double proj = 2.0 * (d * 2 * Di + Di * d) * L;  // in_proj + out_proj
  const double per_order = (2.0 * (Di * (R + 2 * N) + R * Di) + 9.0 * Di * N) * L;  // x/dt, scan
  return mlp + (hoisted ? proj : K * proj) + K * per_order;
}

double time_per_iter(const std::function<void()>& f, int64_t iters) {
  f();  // warm-up: first touch of weights and activations, thread pool, BLAS init
  const auto t0 = clock::now();
  for (int64_t i = 0; i < iters; ++i) f();
  return std::chrono::duration<double>(clock::now() - t0).count() / static_cast<double>(iters);
}

// The compute dtype of --dtype (the runtime option), for connectors and encoders alike.
at::ScalarType runtime_dtype(const VisionBenchOptions& o) {
  return o.rt.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
}

void cast_connector(models::ConnectorImpl& c, at::ScalarType dt) {
  at::NoGradGuard ng;
  for (auto& p : c.named_parameters()) {
    const std::string& k = p.key();
    const bool keep_fp32 = k.ends_with("A_log") || k.ends_with(".D");  // SPEC §1.1
    if (!keep_fp32) p.value().set_data(p.value().to(dt));
  }
}

void bench_connectors(const VisionBenchOptions& o, double gemm_gflops) {
  if (o.types.empty() || o.cases.empty()) {
    std::printf("\nconnectors: none selected (--types / --cases)\n");
    return;
  }
  std::printf("\nconnectors: batch %lld, %lld timed iterations, forward only, dtype %s\n",
              static_cast<long long>(o.batch), static_cast<long long>(o.iters), o.rt.dtype.c_str());
  std::printf("%-22s %-8s %-4s %-8s %8s %10s %10s %12s %8s\n", "case", "type", "scan", "mixer",
              "grid", "ms/batch", "images/s", "GFLOP/image", "% GEMM");
  const at::ScalarType dt = runtime_dtype(o);
  for (const auto& case_name : o.cases) {
    const GridCase& gc = find_case(case_name);
    const int64_t L = gc.gh * gc.gw;
    for (const auto& type : o.types) {
      for (const auto& scan : o.scans) {
        if (type == "mlp" && scan != o.scans.front()) continue;  // no scan in the MLP
        models::ConnectorConfig cfg;
        cfg.type = type;
        cfg.d_vision = gc.d_vision;
        cfg.d_lm = gc.d_lm;
        cfg.scan = scan;
        cfg.validate("--types / --scans");
        models::ConnectorImpl conn(cfg, /*seed=*/0);
        if (dt != at::kFloat) cast_connector(conn, dt);
        c10::InferenceMode guard;
        at::manual_seed(1);
        const at::Tensor v = at::randn({o.batch, L, gc.d_vision}).to(dt);  // [B, H*W, C]
        std::vector<bool> hoist_modes = {true};
        if (o.plain && conn.vss) hoist_modes.push_back(false);
        for (bool hoist : hoist_modes) {
          if (conn.vss) conn.vss->hoist_projections = hoist;
          const double s = time_per_iter([&] { conn.forward(v, gc.gh, gc.gw); }, o.iters);
          const double flops = connector_flops(cfg, L, conn.vss && hoist);
          const double gflops = flops * static_cast<double>(o.batch) / s / 1e9;
          std::printf("%-22s %-8s %-4s %-8s %8s %10.1f %10.2f %12.2f %7.0f%%\n", gc.name.c_str(),
                      type.c_str(), conn.vss ? scan.c_str() : "-",
                      conn.vss ? (hoist ? "hoisted" : "plain") : "-",
                      (std::to_string(gc.gh) + "x" + std::to_string(gc.gw)).c_str(), s * 1e3,
                      static_cast<double>(o.batch) / s, flops / 1e9, 100.0 * gflops / gemm_gflops);
          std::fflush(stdout);
        }
      }
    }
  }
}

// =============================================================================================
// ENCODERS: every vision encoder of the three seed systems at its paper size (random weights),
// timed at each of --sizes: ViTs interpolate their position embeddings to the grid, MambaOut is
// fully convolutional.
std::unique_ptr<models::VisionEncoder> make_encoder(const std::string& name, int64_t size) {
  const std::string mo = "mambaout-";
  if (name.rfind(mo, 0) == 0)
    return models::make_mambaout_encoder_preset(name.substr(mo.size()), 1);
  return models::make_vit_encoder_preset(name, size, 1);
}

std::vector<EncoderBenchEntry> encoder_bench_entries(const std::vector<std::string>& names,
                                                     const std::vector<int64_t>& sizes) {
  std::vector<EncoderBenchEntry> out;
  for (const auto& n : names)
    for (int64_t s : sizes)
      out.push_back({n + "@" + std::to_string(s), [n, s] { return make_encoder(n, s); }, s});
  return out;
}
// =============================================================================================

// Matmul FLOPs of one image through all blocks of a ViT on a gh x gw grid: patch embedding (a
// conv, counted as its GEMM), q/k/v/out projections, MLP (SwiGLU: three matrices), attention
// scores and weighted sum. Element-wise ops, norms and softmax are not counted.
double vit_flops(const models::ViTConfig& c, int64_t gh, int64_t gw) {
  const double T = static_cast<double>(c.num_prefix() + gh * gw);
  const double d = static_cast<double>(c.hidden_size), h = static_cast<double>(c.intermediate_size);
  const double mlp = (c.layout == models::ViTLayout::EVA02 ? 3.0 : 2.0) * d * h;
  const double per_layer = 2.0 * T * (4.0 * d * d + mlp) + 4.0 * T * T * d;
  const double p = static_cast<double>(c.patch_size);
  return static_cast<double>(c.num_layers) * per_layer +
         2.0 * static_cast<double>(gh * gw) * d * 3.0 * p * p;
}

void bench_encoders(const std::vector<EncoderBenchEntry>& entries, const VisionBenchOptions& o,
                    double gemm_gflops) {
  if (entries.empty()) {
    std::printf("\nencoders: none selected (--encoders)\n");
    return;
  }
  const std::vector<int64_t> batches =
      o.encoder_batches.empty() ? std::vector<int64_t>{o.batch} : o.encoder_batches;
  const std::vector<std::string> dtypes =
      o.encoder_dtypes.empty() ? std::vector<std::string>{o.rt.dtype} : o.encoder_dtypes;
  std::printf(
      "\nencoders: %lld timed iterations, forward only; %% GEMM = matmul GFLOP/s / the fp32 GEMM "
      "rate (ViTs; bf16 weights without AMX compute in fp32: %s)\n",
      static_cast<long long>(o.iters),
      models::bf16_via_f32(at::empty({1, 1}, at::kBFloat16), at::empty({1, 1}, at::kBFloat16),
                           models::kBf16ViaF32MinRows)
          ? "yes"
          : "no");
  std::printf("%-22s %5s %5s %8s %8s %10s %10s %12s %8s\n", "encoder", "dtype", "batch", "image",
              "grid", "ms/batch", "images/s", "GFLOP/image", "% GEMM");
  for (const auto& e : entries) {
    for (const auto& dname : dtypes) {
      const at::ScalarType dt = dname == "bf16" ? at::kBFloat16 : at::kFloat;
      auto enc = e.make();
      enc->to_dtype(dt);  // weights in the compute dtype (SSM A_log / D stay fp32)
      const auto* vit = dynamic_cast<const models::ViTEncoder*>(enc.get());
      for (int64_t batch : batches) {
        c10::InferenceMode guard;
        at::manual_seed(2);
        const at::Tensor images = at::randn({batch, 3, e.image_size, e.image_size}).to(dt);
        models::VisionFeatures f;
        const double s = time_per_iter([&] { f = enc->encode(images); }, o.iters);
        const double ips = static_cast<double>(batch) / s;
        const std::string grid = std::to_string(f.grid_h) + "x" + std::to_string(f.grid_w);
        std::printf("%-22s %5s %5lld %8lld %8s %10.1f %10.2f", e.name.c_str(), dname.c_str(),
                    static_cast<long long>(batch), static_cast<long long>(e.image_size),
                    grid.c_str(), s * 1e3, ips);
        if (vit) {
          const double flops = vit_flops(vit->config(), f.grid_h, f.grid_w);
          std::printf(" %12.2f %7.0f%%\n", flops / 1e9, 100.0 * flops * ips / 1e9 / gemm_gflops);
        } else {
          std::printf(" %12s %8s\n", "-", "-");
        }
        std::fflush(stdout);
      }
    }
  }
}

void run(const VisionBenchOptions& o) {
  cli::apply_runtime_options(o.rt);
  std::printf("bench vision: %s\n", machine_summary().c_str());
  const double gemm = measure_gemm_gflops();
  std::printf(
      "measured now: fp32 GEMM %.1f GFLOP/s (1024x768x3072); %% GEMM = achieved matmul "
      "GFLOP/s / that\n",
      gemm);
  bench_connectors(o, gemm);
  bench_encoders(encoder_bench_entries(o.encoders, o.sizes), o, gemm);
}

}  // namespace

void add_vision_bench(CLI::App& bench) {
  auto o = std::make_shared<VisionBenchOptions>();
  std::vector<std::string> case_names;
  for (const auto& c : grid_cases()) case_names.push_back(c.name);
  auto* c = bench.add_subcommand(
      "vision", "Connector (and encoder) images/s on realistic patch grids (random weights)");
  c->add_option("--iters", o->iters, "Timed iterations per row (after one warm-up)")
      ->check(cli::Positive)
      ->capture_default_str();
  c->add_option("--batch", o->batch, "Images per forward")
      ->check(cli::Positive)
      ->capture_default_str();
  c->add_option("--types", o->types, "Connector types (empty string: none): mlp, vss_mlp, vss_l2")
      ->delimiter(',')
      ->check(CLI::IsMember({"mlp", "vss_mlp", "vss_l2", ""}));
  c->add_option("--scans", o->scans, "Scan modes: bsm, csm")
      ->delimiter(',')
      ->check(CLI::IsMember({"bsm", "csm"}));
  c->add_option("--cases", o->cases, "Grid / width cases: " + join(case_names))
      ->delimiter(',')
      ->check(CLI::IsMember(case_names));
  c->add_flag("--plain", o->plain,
              "Also time each VSS connector with the plain shared mixer (in_proj / out_proj run "
              "per order instead of hoisted)");
  c->add_option("--encoders", o->encoders,
                "Encoders to time (empty string: none): " + join(encoder_names()))
      ->delimiter(',')
      ->check(CLI::IsMember(encoder_names()) | CLI::IsMember(std::vector<std::string>{""}));
  c->add_option("--sizes", o->sizes, "Square image sizes for the encoders")
      ->delimiter(',')
      ->check(cli::Positive);
  c->add_option("--encoder-batches", o->encoder_batches,
                "Images per forward for the encoders, e.g. 1,8 (default: --batch)")
      ->delimiter(',')
      ->check(cli::Positive);
  c->add_option("--encoder-dtypes", o->encoder_dtypes,
                "Encoder weight / compute dtypes, e.g. f32,bf16 (default: --dtype)")
      ->delimiter(',')
      ->check(CLI::IsMember({"f32", "bf16"}));
  cli::add_runtime_options(*c, o->rt);
  c->callback([o]() {
    std::erase(o->encoders, std::string());
    std::erase(o->types, std::string());
    run(*o);
  });
}

}  // namespace mambavl::bench
