// `mambavl bench scan`: times the fused CPU selective scan against the LibTorch reference, forward
// only (no grad) and forward + backward (all eight gradients), as used by a Mamba layer: D, z,
// delta_bias and softplus on. Prints median ms, the fused/reference speed ratio and the achieved
// bandwidth (bytes of the inputs and outputs each pass must move / time).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"
#include "cli/cli_common.h"
#include "common/error.h"
#include "kernels/selective_scan.h"

namespace mambavl::bench {

namespace {

using kernels::Backend;

struct ScanBenchOpts {
  int64_t batch = 1, dim = 1536, state = 16, len = 1024, ref_len = 256;
  std::string dtype = "f32";
  int repeats = 5, threads = 0;
  bool no_ref = false;
};

// Median wall time of f() in ms over `repeats` runs, after one warm-up run if `warmup`.
double time_ms(const std::function<void()>& f, int repeats, bool warmup = true) {
  if (warmup) f();
  std::vector<double> ts;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ts.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

struct ScanCase {
  kernels::SelectiveScanArgs args;
  std::vector<at::Tensor> leaves;
  at::Tensor gy;  // [B, D, L] incoming gradient of y
};

ScanCase make_case(const ScanBenchOpts& o, int64_t L, at::ScalarType dt) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
  const int64_t B = o.batch, D = o.dim, N = o.state;
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  ScanCase c;
  c.args.u = at::randn({B, D, L}, gen, f32).to(dt);              // [B, D, L]
  c.args.delta = (at::randn({B, D, L}, gen, f32) - 2.0).to(dt);  // [B, D, L]
  c.args.A = -at::arange(1, N + 1, f32).repeat({D, 1});          // [D, N]  (S4D-real init)
  c.args.B = at::randn({B, N, L}, gen, f32).to(dt);              // [B, N, L]
  c.args.C = at::randn({B, N, L}, gen, f32).to(dt);              // [B, N, L]
  c.args.D = at::ones({D}, f32);                                 // [D]
  c.args.z = at::randn({B, D, L}, gen, f32).to(dt);              // [B, D, L]
  c.args.delta_bias = at::randn({D}, gen, f32) * 0.1;            // [D]
  c.args.delta_softplus = true;
  c.gy = at::randn({B, D, L}, gen, f32).to(dt);  // [B, D, L]
  return c;
}

void set_requires_grad(ScanCase& c) {
  kernels::SelectiveScanArgs& a = c.args;
  for (at::Tensor* t : {&a.u, &a.delta, &a.A, &a.B, &a.C, &*a.D, &*a.z, &*a.delta_bias}) {
    t->set_requires_grad(true);
    c.leaves.push_back(*t);
  }
}

double forward_ms(const ScanCase& c, Backend be, int repeats, bool warmup = true) {
  at::NoGradGuard ng;
  return time_ms([&] { kernels::selective_scan(c.args, be); }, repeats, warmup);
}

double forward_backward_ms(const ScanCase& c, Backend be, int repeats, bool warmup = true) {
  return time_ms(
      [&] {
        at::Tensor y = kernels::selective_scan(c.args, be).y;
        torch::autograd::grad({y}, c.leaves, {c.gy});
      },
      repeats, warmup);
}

// Bytes a pass must move at least once: inputs read and outputs written (fp32 for A, D,
// delta_bias; `es` bytes for the [B, D, L] and [B, N, L] tensors). Forward: u, delta, z, B, C in,
// y out. Backward: the same inputs and gy in, gu, gdelta, gz, gB, gC (+ small gA, gD, gbias) out.
struct Bytes {
  double fwd, bwd;
};
Bytes scan_bytes(const ScanBenchOpts& o, double es) {
  const double bdl = double(o.batch) * o.dim * o.len, bnl = double(o.batch) * o.state * o.len;
  const double small = 4.0 * (double(o.dim) * o.state + 2.0 * o.dim);
  const double fwd = es * (3 * bdl + 2 * bnl) + small + es * bdl;
  const double bwd = es * (4 * bdl + 2 * bnl) + small + es * (3 * bdl + 2 * bnl) + small;
  return {fwd, bwd};
}

void run_scan_bench(const ScanBenchOpts& o) {
  MVL_CHECK(o.dtype == "f32" || o.dtype == "bf16", "bench scan: --dtype must be f32 or bf16, got '",
            o.dtype, "'");
  MVL_CHECK(o.batch > 0 && o.dim > 0 && o.state > 0 && o.len > 0 && o.repeats > 0 && o.ref_len > 0,
            "bench scan: --batch, --dim, --state, --len, --ref-len and --repeats must be positive");
  if (o.threads > 0) at::set_num_threads(o.threads);
  const at::ScalarType dt = o.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  const double es = dt == at::kBFloat16 ? 2.0 : 4.0;
  const int64_t ref_len = std::min(o.ref_len, o.len);

  std::printf(
      "bench scan: B=%lld D=%lld N=%lld L=%lld dtype=%s threads=%d repeats=%d "
      "(D, z, delta_bias, softplus on)\n",
      (long long)o.batch, (long long)o.dim, (long long)o.state, (long long)o.len, o.dtype.c_str(),
      at::get_num_threads(), o.repeats);

  ScanCase fused = make_case(o, o.len, dt);
  const double f_fwd = forward_ms(fused, Backend::Fused, o.repeats);
  set_requires_grad(fused);
  const double f_fb = forward_backward_ms(fused, Backend::Fused, o.repeats);
  const Bytes by = scan_bytes(o, es);

  // The reference is slow (a LibTorch op per time step, O(B*D*N*L) memory, and a backward that
  // grows faster than L): one run, no warm-up, at --ref-len (default 256). The ratio compares it
  // with the fused kernel timed at that same length.
  double r_fwd = 0, r_fb = 0, fr_fwd = f_fwd, fr_fb = f_fb;
  if (!o.no_ref) {
    const int rr = std::max(1, o.repeats / 5);
    ScanCase ref = make_case(o, ref_len, dt);
    r_fwd = forward_ms(ref, Backend::Reference, rr, false);
    set_requires_grad(ref);
    r_fb = forward_backward_ms(ref, Backend::Reference, rr, false);
    if (ref_len != o.len) {
      ScanCase fr = make_case(o, ref_len, dt);
      fr_fwd = forward_ms(fr, Backend::Fused, o.repeats);
      set_requires_grad(fr);
      fr_fb = forward_backward_ms(fr, Backend::Fused, o.repeats);
    }
  }

  std::printf("%-18s %12s %10s   | at L=%-6lld %12s %14s %8s\n", "pass", "fused ms", "GB/s",
              (long long)ref_len, "fused ms", "reference ms", "ratio");
  auto row = [&](const char* name, double f, double bytes, double fr, double r) {
    std::printf("%-18s %12.3f %10.2f   | ", name, f, bytes / (f * 1e6));
    if (o.no_ref) {
      std::printf("%11s %12s %14s %8s\n", "", "-", "-", "-");
    } else {
      std::printf("%11s %12.3f %14.3f %7.1fx\n", "", fr, r, r / fr);
    }
  };
  row("forward", f_fwd, by.fwd, fr_fwd, r_fwd);
  row("forward+backward", f_fb, by.fwd + by.bwd, fr_fb, r_fb);
}

}  // namespace

void add_scan_bench(CLI::App& bench) {
  auto o = std::make_shared<ScanBenchOpts>();
  CLI::App* sub =
      bench.add_subcommand("scan", "selective scan: fused CPU kernel vs LibTorch reference");
  sub->add_option("--batch", o->batch, "batch size B")->capture_default_str();
  sub->add_option("--dim", o->dim, "channels D (d_inner)")->capture_default_str();
  sub->add_option("--state", o->state, "state size N")->capture_default_str();
  sub->add_option("--len", o->len, "sequence length L")->capture_default_str();
  sub->add_option("--ref-len", o->ref_len,
                  "L for the reference comparison (the reference is slow; capped at --len)")
      ->capture_default_str();
  sub->add_option("--dtype", o->dtype, "f32 or bf16 (u, delta, B, C, z)")->capture_default_str();
  sub->add_option("--repeats", o->repeats, "timed runs (median reported)")->capture_default_str();
  cli::add_threads_option(*sub, o->threads, "intra-op threads (0: LibTorch default)")
      ->capture_default_str();
  sub->add_flag("--no-ref", o->no_ref, "skip the reference");
  sub->callback([o] { run_scan_bench(*o); });
}

}  // namespace mambavl::bench
