// `mambavl bench gemv`: the decode step's matrix-vector products alone, streamed the way the fused
// decode streams them (the decode team, one phase per matrix, chunks of rows from a counter), on
// the matrices of a Mamba stack of the given shape: GB/s of weights read and its share of the read
// bandwidth measured in the same run, per weight type, kernel level and chunk size. Separates the
// row kernels' efficiency from the rest of a decode step (scan, norms, barriers per phase).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench.h"
#include "common/cpu.h"
#include "common/error.h"
#include "common/sysinfo.h"
#include "kernels/gemv.h"
#include "kernels/thread_team.h"

namespace mambavl::bench {

namespace {

struct GemvBenchOptions {
  int64_t d_model = 768, layers = 24, vocab = 50280, d_state = 16;
  std::vector<std::string> dtypes{"f32", "bf16", "int8"};
  std::vector<std::string> levels;  // empty: every level this CPU has
  std::vector<int64_t> chunk_kb{0};  // 0: the kernels' own choice (gemv_chunk_rows)
  std::vector<int64_t> batches{1};  // > 1: the batch kernels (gemm_small) beside at::linear
  int steps = 20, threads = 0;
};

// One dtype's copy of the stack: per layer in_proj [2E, D], x_proj [R + 2N, E], dt_proj [E, R],
// out_proj [D, E] (E = 2D, R = ceil(D / 16)), then the head [V, D]; as Mamba's decode reads them.
struct Stack {
  std::vector<at::Tensor> dense;             // fp32 / bf16
  std::vector<kernels::Int8Matrix> int8;     // int8
  std::vector<kernels::MatrixRef> refs;
  int64_t bytes = 0, max_rows = 0, max_cols = 0;
};

Stack make_stack(const GemvBenchOptions& o, const std::string& dtype) {
  const int64_t D = o.d_model, E = 2 * D, R = (D + 15) / 16, N = o.d_state;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t l = 0; l < o.layers; ++l) {
    shapes.push_back({2 * E, D});
    shapes.push_back({R + 2 * N, E});
    shapes.push_back({E, R});
    shapes.push_back({D, E});
  }
  shapes.push_back({o.vocab, D});
  Stack s;
  at::manual_seed(0);
  for (auto [rows, cols] : shapes) {
    at::Tensor w = at::randn({rows, cols}, at::kFloat) * (1.0 / std::sqrt(static_cast<double>(cols)));
    if (dtype == "int8") {
      s.int8.push_back(kernels::quantize_int8(w));
      s.bytes += rows * cols + rows * 4;
    } else {
      s.dense.push_back(dtype == "bf16" ? w.to(at::kBFloat16).contiguous() : w);
      s.bytes += rows * cols * s.dense.back().element_size();
    }
    s.max_rows = std::max(s.max_rows, rows);
    s.max_cols = std::max(s.max_cols, cols);
  }
  for (auto& w : s.dense) s.refs.push_back(kernels::MatrixRef::of(w));
  for (auto& w : s.int8) s.refs.push_back(kernels::MatrixRef::of(w));
  return s;
}

int64_t chunk_rows(const kernels::MatrixRef& W, int64_t kb) {
  if (kb <= 0) return kernels::gemv_chunk_rows(W);
  const int64_t bytes = W.kind == kernels::MatrixRef::F32 ? 4 : W.kind == kernels::MatrixRef::BF16 ? 2 : 1;
  return std::max<int64_t>(4, kb * 1024 / std::max<int64_t>(W.cols * bytes, 1) / 4 * 4);
}

// Seconds per pass over the stack (median of `steps` passes after one warm-up pass).
double time_pass(const Stack& s, int64_t kb, int steps) {
  std::vector<float> x(static_cast<size_t>(s.max_cols), 0.5f), y(static_cast<size_t>(s.max_rows));
  kernels::QuantizedVector xq;
  xq.set(x.data(), s.max_cols);
  std::vector<int64_t> rows_per_chunk;
  for (const auto& W : s.refs) rows_per_chunk.push_back(chunk_rows(W, kb));
  std::vector<double> times;
  auto lease = kernels::decode_team();
  for (int step = 0; step <= steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    lease.team->run([&](kernels::ThreadTeam::Member& m) {
      for (size_t j = 0; j < s.refs.size(); ++j) {
        const auto& W = s.refs[j];
        const int64_t cr = rows_per_chunk[j];
        m.for_chunks((W.rows + cr - 1) / cr, [&](int64_t c) {
          kernels::gemv_rows(W, x.data(), &xq, y.data(), nullptr, c * cr,
                             std::min(W.rows, (c + 1) * cr));
        });
      }
    });
    const auto t1 = std::chrono::steady_clock::now();
    if (step > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Batch M > 1: seconds per pass of kernels::gemm_small (the batch kernels LinearImpl uses for up to
// kSmallBatchRows rows) or, with `aten`, of at::linear (MKL / oneDNN) on the same weights.
double time_batch_pass(const Stack& s, int64_t M, bool aten, int steps) {
  at::Tensor X = at::randn({M, s.max_cols}, at::kFloat);
  std::vector<float> y(static_cast<size_t>(M * s.max_rows));
  std::vector<at::Tensor> dense;  // at::linear: int8 dequantised once, outside the timing
  if (aten)
    for (size_t j = 0; j < s.refs.size(); ++j)
      dense.push_back(s.dense.empty() ? (s.int8[j].q.to(at::kFloat) * s.int8[j].scale.unsqueeze(1))
                                      : s.dense[j]);
  std::vector<double> times;
  for (int step = 0; step <= steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t j = 0; j < s.refs.size(); ++j) {
      const auto& W = s.refs[j];
      at::Tensor x = X.narrow(1, 0, W.cols).contiguous();
      if (aten) {
        at::Tensor xin = dense[j].scalar_type() == at::kFloat ? x : x.to(dense[j].scalar_type());
        (void)at::linear(xin, dense[j]);
      } else {
        kernels::gemm_small(W, x.data_ptr<float>(), M, y.data(), nullptr);
      }
    }
    const auto t1 = std::chrono::steady_clock::now();
    if (step > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void run(const GemvBenchOptions& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  c10::InferenceMode guard;
  const double bw = sys::measure_read_bandwidth_gbs();
  std::printf("bench gemv: %s\n", sys::machine_summary().c_str());
  std::printf(
      "Mamba stack D=%lld, %lld layers, vocab %lld: the decode step's matrix-vector products, "
      "streamed as the fused decode streams them (decode team of %d threads)\n",
      static_cast<long long>(o.d_model), static_cast<long long>(o.layers),
      static_cast<long long>(o.vocab), kernels::decode_team().team->size());
  std::printf("measured now: read bandwidth %.1f GB/s (bound: GB/s of weights read per pass)\n", bw);
  std::printf("%-6s %-7s %5s %9s %10s %9s %9s %8s %9s %13s\n", "dtype", "level", "batch", "chunk KB",
              "weights MB", "ms/pass", "GB/s", "% bound", "GFLOP/s", "at::linear ms");
  std::vector<cpu::Isa> levels;
  if (o.levels.empty()) {
    for (cpu::Isa isa : {cpu::Isa::Avx512, cpu::Isa::Avx2, cpu::Isa::Scalar})
      if (static_cast<int>(isa) <= static_cast<int>(cpu::best_isa())) levels.push_back(isa);
  } else {
    for (const auto& l : o.levels) levels.push_back(cpu::parse_isa(l));
  }
  const cpu::Isa saved = cpu::active_isa();
  for (const auto& dtype : o.dtypes) {
    MVL_CHECK(dtype == "f32" || dtype == "bf16" || dtype == "int8",
              "bench gemv: --dtypes takes f32, bf16, int8; got '", dtype, "'");
    const Stack s = make_stack(o, dtype);
    for (cpu::Isa isa : levels) {
      cpu::set_active_isa(isa);
      for (int64_t M : o.batches) {
        // FLOPs per pass: 2 per weight and vector.
        const double flops = 2.0 * static_cast<double>(M) *
                             static_cast<double>(dtype == "int8" ? s.bytes : s.bytes / (dtype == "f32" ? 4 : 2));
        if (M == 1) {
          for (int64_t kb : o.chunk_kb) {
            const double t = time_pass(s, kb, o.steps);
            const double gbs = static_cast<double>(s.bytes) / t / 1e9;
            std::printf("%-6s %-7s %5d %9s %10.1f %9.2f %9.1f %7.0f%% %9.1f %13s\n", dtype.c_str(),
                        cpu::isa_name(isa), 1, kb > 0 ? std::to_string(kb).c_str() : "auto",
                        static_cast<double>(s.bytes) / 1e6, t * 1e3, gbs, 100.0 * gbs / bw,
                        flops / t / 1e9, "-");
            std::fflush(stdout);
          }
          continue;
        }
        const double t = time_batch_pass(s, M, /*aten=*/false, o.steps);
        const double ta = isa == levels.front() ? time_batch_pass(s, M, /*aten=*/true, o.steps) : 0.0;
        const double gbs = static_cast<double>(s.bytes) / t / 1e9;
        std::printf("%-6s %-7s %5lld %9s %10.1f %9.2f %9.1f %7.0f%% %9.1f %13s\n", dtype.c_str(),
                    cpu::isa_name(isa), static_cast<long long>(M), "auto",
                    static_cast<double>(s.bytes) / 1e6, t * 1e3, gbs, 100.0 * gbs / bw,
                    flops / t / 1e9, ta > 0 ? std::to_string(ta * 1e3).substr(0, 6).c_str() : "-");
        std::fflush(stdout);
      }
    }
  }
  cpu::set_active_isa(saved);
}

}  // namespace

void add_gemv_bench(CLI::App& bench) {
  auto o = std::make_shared<GemvBenchOptions>();
  auto* c = bench.add_subcommand(
      "gemv",
      "Decode matrix-vector products alone (a Mamba stack's matrices, f32 / bf16 / int8, every "
      "kernel level): GB/s against the read bandwidth measured in the same run");
  c->add_option("--d-model", o->d_model, "Model width D (mamba-130m: 768)")
      ->capture_default_str()
      ->check(CLI::Range(16, 16384));
  c->add_option("--layers", o->layers, "Layers")->capture_default_str()->check(CLI::Range(1, 256));
  c->add_option("--vocab", o->vocab, "Head rows (vocabulary)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  c->add_option("--dtypes", o->dtypes, "Weight types: f32, bf16, int8")->capture_default_str();
  c->add_option("--levels", o->levels, "Kernel levels (scalar, avx2, avx512; default: all this CPU has)");
  c->add_option("--chunk-kb", o->chunk_kb,
                "Weight KB per chunk of rows a thread takes (0: the kernels' own choice)")
      ->capture_default_str();
  c->add_option("--batches", o->batches,
                "Vectors per product: 1 streams as the fused decode does; M > 1 times the batch "
                "kernels (gemm_small) and, beside them, at::linear on the same weights")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  c->add_option("--steps", o->steps, "Timed passes (median)")->capture_default_str()->check(CLI::Range(1, 100000));
  c->add_option("--threads", o->threads, "Threads (default: all cores)")->check(CLI::Range(0, 1024));
  c->callback([o] { run(*o); });
}

}  // namespace mambavl::bench
