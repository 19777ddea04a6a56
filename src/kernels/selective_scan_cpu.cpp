// Fused CPU selective scan: forward, backward (as a torch::autograd::Function) and the one-step
// decode update. See selective_scan.h for the math.
//
// Layout of the work: a task owns one batch row b and a block of up to kW consecutive channels of
// one group g (so B/C are shared by all its lanes); the channels are the SIMD lanes (kW = 16 with
// AVX-512, 8 with AVX2), and the loop over time and state runs inside. Time is processed in chunks
// of kScanChunk steps: inputs of a chunk are transposed into small [T][kW] fp32 tiles (bf16
// converted on the way), the recurrence runs on the tiles, and outputs are transposed back. B and C
// are transposed once per call to [B, G, L, N] fp32 (no D factor), so one step's N values are
// adjacent. Backward: tasks own (b, g, a slice of the group's blocks) so that the gB/gC sums over
// channels accumulate in a per-task [N, L] buffer, reduced over slices at the end.
//
// Backward memory: the forward pass checkpoints the state h at the start of every chunk
// ([B, L/T, N, D] fp32, i.e. B*D*L*N/64 floats); backward walks the chunks in reverse, recomputes
// the T states of one chunk from its checkpoint into a per-thread [T][N][kW] buffer, and runs the
// adjoint recurrence over it. Nothing of size B*D*N*L is ever held (transient backward buffers:
// per-thread tiles plus [B, G, slices, N, L] partial gB/gC).
#include "kernels/selective_scan_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/autograd.h>

#include <algorithm>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/error.h"
#include "kernels/simd_math.h"

// 64-byte vectors on an AVX2 build: all vector helpers are inlined, the ABI note is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace mambavl::kernels::detail {

namespace {

using simd::kW;
using simd::load;
using simd::splat;
using simd::store;
using simd::vf;
constexpr int64_t kT = kScanChunk;

bool fused_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

// Read-only view of a contiguous fp32 or bf16 tensor (or nothing).
struct In {
  const void* p = nullptr;
  bool bf16 = false;
  explicit operator bool() const { return p != nullptr; }
};
In in_of(const at::Tensor& t) {
  if (!t.defined()) return {};
  return {t.data_ptr(), t.scalar_type() == at::kBFloat16};
}
// Writable view of a contiguous fp32 or bf16 tensor (or nothing).
struct Out {
  void* p = nullptr;
  bool bf16 = false;
  explicit operator bool() const { return p != nullptr; }
};
Out out_of(const at::Tensor& t) {
  if (!t.defined()) return {};
  return {t.data_ptr(), t.scalar_type() == at::kBFloat16};
}

// fp32 contiguous copy (or the tensor itself) of a small parameter; undefined stays undefined.
at::Tensor f32(const std::optional<at::Tensor>& t) {
  if (!t || !t->defined()) return {};
  return t->to(at::kFloat).contiguous();
}

// dst[t][lane] = src[row0 + lane, t0 + t] of a [rows, L] matrix; zero for lanes >= nw.
template <class S>
void load_tile_t(const S* src, int64_t row0, int nw, int64_t L, int64_t t0, int tn, float* dst) {
  for (int lane = 0; lane < kW; ++lane) {
    float* d = dst + lane;
    if (lane >= nw) {
      for (int t = 0; t < tn; ++t) d[t * kW] = 0.f;
      continue;
    }
    const S* s = src + (row0 + lane) * L + t0;
    for (int t = 0; t < tn; ++t) d[t * kW] = static_cast<float>(s[t]);
  }
}
void load_tile(In src, int64_t row0, int nw, int64_t L, int64_t t0, int tn, float* dst) {
  if (!src) {
    std::fill(dst, dst + tn * kW, 0.f);
  } else if (src.bf16) {
    load_tile_t(static_cast<const c10::BFloat16*>(src.p), row0, nw, L, t0, tn, dst);
  } else {
    load_tile_t(static_cast<const float*>(src.p), row0, nw, L, t0, tn, dst);
  }
}
template <class S>
void store_tile_t(S* dst, int64_t row0, int nw, int64_t L, int64_t t0, int tn, const float* src) {
  for (int lane = 0; lane < nw; ++lane) {
    const float* s = src + lane;
    S* d = dst + (row0 + lane) * L + t0;
    for (int t = 0; t < tn; ++t) d[t] = static_cast<S>(s[t * kW]);
  }
}
void store_tile(Out dst, int64_t row0, int nw, int64_t L, int64_t t0, int tn, const float* src) {
  if (dst.bf16) {
    store_tile_t(static_cast<c10::BFloat16*>(dst.p), row0, nw, L, t0, tn, src);
  } else {
    store_tile_t(static_cast<float*>(dst.p), row0, nw, L, t0, tn, src);
  }
}
// The problem, with every tensor contiguous; B/C of the [B, N, L] layout are seen as G = 1.
struct Problem {
  int64_t Bn, D, L, N, G;
  int64_t dg;   // channels per group
  int64_t nbg;  // kW-channel blocks per group
  int64_t nck;  // time chunks
  In u, delta, z;
  const float* Bt;    // [B, G, L, N] fp32: B transposed so that one step's N values are adjacent
  const float* Ct;    // [B, G, L, N]
  const float* A;     // [D, N]
  const float* Dv;    // [D] or null
  const float* bias;  // [D] or null
  bool softplus;
};

// Keeps the contiguous / fp32 tensors a Problem points into alive.
struct Holder {
  at::Tensor u, delta, z, B, C, A, D, bias;
};

Problem make_problem(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                     const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
                     const std::optional<at::Tensor>& z,
                     const std::optional<at::Tensor>& delta_bias, bool softplus, Holder& h) {
  h.u = u.contiguous();
  h.delta = delta.contiguous();
  h.z = z && z->defined() ? z->contiguous() : at::Tensor();
  // [B, N, L] / [B, G, N, L] -> [B, G, L, N] fp32 (small: no D), read by every channel block.
  auto bc_t = [&](const at::Tensor& t) {
    const int64_t G = t.dim() == 4 ? t.size(1) : 1;
    return t.to(at::kFloat)
        .reshape({t.size(0), G, A.size(1), u.size(2)})
        .transpose(2, 3)
        .contiguous();
  };
  h.B = bc_t(B);
  h.C = bc_t(C);
  h.A = f32(A);
  h.D = f32(D);
  h.bias = f32(delta_bias);
  Problem p;
  p.Bn = u.size(0);
  p.D = u.size(1);
  p.L = u.size(2);
  p.N = A.size(1);
  p.G = B.dim() == 4 ? B.size(1) : 1;
  p.dg = p.D / p.G;
  p.nbg = (p.dg + kW - 1) / kW;
  p.nck = (p.L + kT - 1) / kT;
  p.u = in_of(h.u);
  p.delta = in_of(h.delta);
  p.z = in_of(h.z);
  p.Bt = h.B.data_ptr<float>();
  p.Ct = h.C.data_ptr<float>();
  p.A = h.A.data_ptr<float>();
  p.Dv = h.D.defined() ? h.D.data_ptr<float>() : nullptr;
  p.bias = h.bias.defined() ? h.bias.data_ptr<float>() : nullptr;
  p.softplus = softplus;
  return p;
}

// Per-block constants: A as [N][kW], D and delta_bias as vectors (zero in padded lanes).
struct BlockConst {
  std::vector<float> A;  // [N][kW]
  vf Dv{}, bias{};
  void fill(const Problem& p, int64_t d0, int nw) {
    A.assign(p.N * kW, 0.f);
    float dv[kW] = {}, bv[kW] = {};
    for (int lane = 0; lane < nw; ++lane) {
      for (int64_t n = 0; n < p.N; ++n) A[n * kW + lane] = p.A[(d0 + lane) * p.N + n];
      if (p.Dv) dv[lane] = p.Dv[d0 + lane];
      if (p.bias) bv[lane] = p.bias[d0 + lane];
    }
    Dv = load(dv);
    bias = load(bv);
  }
};

// Per-thread tiles of one chunk.
struct Tiles {
  std::vector<float> u, delta, dt, du, z, y;
  const float* Bt = nullptr;  // [T][N] of the current chunk, inside Problem::Bt
  const float* Ct = nullptr;
  // backward only
  std::vector<float> gout, gy, gu, gz, hs, dA;
  Tiles(int64_t N, bool backward) {
    for (auto* v : {&u, &delta, &dt, &du, &z, &y}) v->assign(kT * kW, 0.f);
    if (backward) {
      for (auto* v : {&gout, &gy, &gu, &gz}) v->assign(kT * kW, 0.f);
      hs.assign(kT * N * kW, 0.f);
      dA.assign(kT * N * kW, 0.f);
    }
  }
};

// Loads the inputs of chunk [t0, t0 + tn) of block (b, g, d0, nw) and computes dt, dt * u.
// delta keeps the pre-softplus value delta + bias (for softplus' derivative).
void load_chunk(const Problem& p, const BlockConst& bc, int64_t b, int64_t g, int64_t d0, int nw,
                int64_t t0, int tn, Tiles& s) {
  const int64_t row0 = b * p.D + d0;
  load_tile(p.u, row0, nw, p.L, t0, tn, s.u.data());
  load_tile(p.delta, row0, nw, p.L, t0, tn, s.delta.data());
  if (p.z) load_tile(p.z, row0, nw, p.L, t0, tn, s.z.data());
  const int64_t bcbase = ((b * p.G + g) * p.L + t0) * p.N;
  s.Bt = p.Bt + bcbase;
  s.Ct = p.Ct + bcbase;
  for (int t = 0; t < tn; ++t) {
    const vf x = load(&s.delta[t * kW]) + bc.bias;
    const vf dt = p.softplus ? simd::softplus(x) : x;
    store(&s.delta[t * kW], x);
    store(&s.dt[t * kW], dt);
    store(&s.du[t * kW], dt * load(&s.u[t * kW]));
  }
}

// The recurrence over one chunk: h [N][kW] in/out; y[t] = sum_n h_t[n] * C[t][n]. With kSave,
// also keeps every h_t and exp(dt * A) ([T][N][kW]) for the backward pass.
template <bool kSave>
void scan_chunk(int64_t N, int tn, const float* A, Tiles& s, float* h) {
  for (int t = 0; t < tn; ++t) {
    const vf dt = load(&s.dt[t * kW]);
    const vf du = load(&s.du[t * kW]);
    const float* Bt = s.Bt + t * N;
    const float* Ct = s.Ct + t * N;
    vf y{};
    for (int64_t n = 0; n < N; ++n) {
      const vf dA = simd::exp(dt * load(A + n * kW));
      const vf hv = dA * load(h + n * kW) + du * Bt[n];
      store(h + n * kW, hv);
      y += hv * Ct[n];
      if constexpr (kSave) {
        store(&s.hs[(t * N + n) * kW], hv);
        store(&s.dA[(t * N + n) * kW], dA);
      }
    }
    store(&s.y[t * kW], y);
  }
}

struct ForwardOut {
  Out y;        // [B, D, L] in u's dtype
  float* last;  // [B, D, N] or null
  float* ckpt;  // [B, nck, N, D] (state at the start of each chunk) or null
};

void forward_block(const Problem& p, int64_t b, int64_t g, int64_t j, Tiles& s, BlockConst& bc,
                   std::vector<float>& h, const ForwardOut& o) {
  const int64_t d0 = g * p.dg + j * kW;
  const int nw = static_cast<int>(std::min<int64_t>(kW, p.dg - j * kW));
  bc.fill(p, d0, nw);
  std::fill(h.begin(), h.end(), 0.f);
  for (int64_t c = 0; c < p.nck; ++c) {
    const int64_t t0 = c * kT;
    const int tn = static_cast<int>(std::min<int64_t>(kT, p.L - t0));
    if (o.ckpt) {
      float* ck = o.ckpt + ((b * p.nck + c) * p.N) * p.D + d0;
      for (int64_t n = 0; n < p.N; ++n) std::copy_n(&h[n * kW], nw, ck + n * p.D);
    }
    load_chunk(p, bc, b, g, d0, nw, t0, tn, s);
    scan_chunk<false>(p.N, tn, bc.A.data(), s, h.data());
    for (int t = 0; t < tn; ++t) {
      const vf u = load(&s.u[t * kW]);
      vf y = load(&s.y[t * kW]) + bc.Dv * u;
      if (p.z) {
        const vf z = load(&s.z[t * kW]);
        y = y * (z * simd::sigmoid(z));
      }
      store(&s.y[t * kW], y);
    }
    store_tile(o.y, b * p.D + d0, nw, p.L, t0, tn, s.y.data());
  }
  if (o.last) {
    for (int lane = 0; lane < nw; ++lane)
      for (int64_t n = 0; n < p.N; ++n) o.last[(b * p.D + d0 + lane) * p.N + n] = h[n * kW + lane];
  }
}

void run_forward(const Problem& p, const ForwardOut& o) {
  const int64_t ntasks = p.Bn * p.G * p.nbg;
  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
    Tiles s(p.N, false);
    BlockConst bc;
    std::vector<float> h(p.N * kW);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t j = i % p.nbg, g = (i / p.nbg) % p.G, b = i / (p.nbg * p.G);
      forward_block(p, b, g, j, s, bc, h, o);
    }
  });
}

struct BackwardIO {
  In gout;             // [B, D, L] grad of y (u's dtype) or nothing
  const float* glast;  // [B, D, N] grad of last_state or null
  const float* ckpt;   // [B, nck, N, D]
  Out gu, gdelta, gz;  // [B, D, L]
  float* gA;           // [B, D, N] per-batch partial
  float* gD;           // [B, D] per-batch partial
  float* gbias;        // [B, D] per-batch partial
  float* gB;           // [B, G, S, N, L] per-slice partial
  float* gC;           // [B, G, S, N, L]
  int64_t S;           // slices of the blocks of a group
};

void backward_block(const Problem& p, int64_t b, int64_t g, int64_t j, Tiles& s, BlockConst& bc,
                    std::vector<float>& gh, std::vector<float>& gA, std::vector<float>& h0,
                    std::vector<float>& h, float* gBp, float* gCp, const BackwardIO& io) {
  const int64_t N = p.N, L = p.L;
  const int64_t d0 = g * p.dg + j * kW;
  const int nw = static_cast<int>(std::min<int64_t>(kW, p.dg - j * kW));
  const int64_t row0 = b * p.D + d0;
  bc.fill(p, d0, nw);
  std::fill(gh.begin(), gh.end(), 0.f);
  std::fill(gA.begin(), gA.end(), 0.f);
  if (io.glast) {
    for (int lane = 0; lane < nw; ++lane)
      for (int64_t n = 0; n < N; ++n) gh[n * kW + lane] = io.glast[(row0 + lane) * N + n];
  }
  vf gD{}, gbias{};
  const float* A = bc.A.data();
  for (int64_t c = p.nck - 1; c >= 0; --c) {
    const int64_t t0 = c * kT;
    const int tn = static_cast<int>(std::min<int64_t>(kT, L - t0));
    // State at the start of the chunk, from the forward checkpoint.
    std::fill(h0.begin(), h0.end(), 0.f);
    const float* ck = io.ckpt + ((b * p.nck + c) * N) * p.D + d0;
    for (int64_t n = 0; n < N; ++n) std::copy_n(ck + n * p.D, nw, &h0[n * kW]);
    std::copy(h0.begin(), h0.end(), h.begin());
    load_chunk(p, bc, b, g, d0, nw, t0, tn, s);
    scan_chunk<true>(N, tn, A, s, h.data());
    load_tile(io.gout, row0, nw, L, t0, tn, s.gout.data());
    // Through the output: gy = dL/d(y before the gate), gz, gD, and the D * u part of gu.
    for (int t = 0; t < tn; ++t) {
      const vf go = load(&s.gout[t * kW]);
      const vf u = load(&s.u[t * kW]);
      vf gy = go;
      if (p.z) {
        const vf z = load(&s.z[t * kW]);
        const vf sg = simd::sigmoid(z);
        const vf ypre = load(&s.y[t * kW]) + bc.Dv * u;
        store(&s.gz[t * kW], go * ypre * sg * (1.0f + z * (1.0f - sg)));
        gy = go * (z * sg);
      }
      store(&s.gy[t * kW], gy);
      gD += gy * u;
      store(&s.gu[t * kW], gy * bc.Dv);
    }
    // Adjoint recurrence, t from the end of the chunk to its start. gh holds dL/dh_t coming from
    // later steps (already multiplied by exp(dt_{t+1} A)).
    for (int t = tn - 1; t >= 0; --t) {
      const vf dt = load(&s.dt[t * kW]);
      const vf du = load(&s.du[t * kW]);
      const vf gy = load(&s.gy[t * kW]);
      const float* Bt = s.Bt + t * N;
      const float* Ct = s.Ct + t * N;
      const float* hs = &s.hs[t * N * kW];
      const float* dAs = &s.dA[t * N * kW];
      const float* hprev = t > 0 ? &s.hs[(t - 1) * N * kW] : h0.data();
      float* gBt = gBp + t0 + t;
      float* gCt = gCp + t0 + t;
      vf s1{}, s2{};  // sum_n gh * A * dA * h_{t-1};  sum_n gh * B
      for (int64_t n = 0; n < N; ++n) {
        const vf ghn = load(&gh[n * kW]) + gy * Ct[n];
        const vf dA = load(dAs + n * kW);
        const vf q = ghn * dA * load(hprev + n * kW);
        s1 += load(A + n * kW) * q;
        store(&gA[n * kW], load(&gA[n * kW]) + dt * q);
        s2 += ghn * Bt[n];
        gCt[n * L] += simd::hsum(gy * load(hs + n * kW));
        gBt[n * L] += simd::hsum(ghn * du);
        store(&gh[n * kW], dA * ghn);
      }
      const vf u = load(&s.u[t * kW]);
      store(&s.gu[t * kW], load(&s.gu[t * kW]) + dt * s2);
      vf gdt = s1 + u * s2;
      if (p.softplus) {
        const vf x = load(&s.delta[t * kW]);
        gdt = x > 20.0f ? gdt : gdt * simd::sigmoid(x);
      }
      store(&s.delta[t * kW], gdt);  // the delta tile now holds d(loss)/d(delta)
      gbias += gdt;
    }
    store_tile(io.gu, row0, nw, L, t0, tn, s.gu.data());
    store_tile(io.gdelta, row0, nw, L, t0, tn, s.delta.data());
    if (io.gz) store_tile(io.gz, row0, nw, L, t0, tn, s.gz.data());
  }
  float gDv[kW], gbv[kW];
  store(gDv, gD);
  store(gbv, gbias);
  for (int lane = 0; lane < nw; ++lane) {
    for (int64_t n = 0; n < N; ++n) io.gA[(row0 + lane) * N + n] = gA[n * kW + lane];
    io.gD[row0 + lane] = gDv[lane];
    io.gbias[row0 + lane] = gbv[lane];
  }
}

void run_backward(const Problem& p, const BackwardIO& io) {
  const int64_t S = io.S;
  const int64_t ntasks = p.Bn * p.G * S;
  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
    Tiles s(p.N, true);
    BlockConst bc;
    std::vector<float> gh(p.N * kW), gA(p.N * kW), h0(p.N * kW), h(p.N * kW);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t sl = i % S, g = (i / S) % p.G, b = i / (S * p.G);
      float* gBp = io.gB + i * p.N * p.L;
      float* gCp = io.gC + i * p.N * p.L;
      const int64_t jb = sl * p.nbg / S, je = (sl + 1) * p.nbg / S;
      for (int64_t j = jb; j < je; ++j)
        backward_block(p, b, g, j, s, bc, gh, gA, h0, h, gBp, gCp, io);
    }
  });
}

struct FwdResult {
  at::Tensor y, last, ckpt;
};

FwdResult forward_impl(const Problem& p, at::ScalarType y_dtype, bool want_last, bool want_ckpt) {
  FwdResult r;
  const auto f32opt = at::TensorOptions().dtype(at::kFloat);
  r.y = at::empty({p.Bn, p.D, p.L}, f32opt.dtype(y_dtype));            // [B, D, L]
  if (want_last) r.last = at::empty({p.Bn, p.D, p.N}, f32opt);         // [B, D, N]
  if (want_ckpt) r.ckpt = at::empty({p.Bn, p.nck, p.N, p.D}, f32opt);  // [B, L/T, N, D]
  ForwardOut o{out_of(r.y), want_last ? r.last.data_ptr<float>() : nullptr,
               want_ckpt ? r.ckpt.data_ptr<float>() : nullptr};
  run_forward(p, o);
  return r;
}

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct SelectiveScanFn : public torch::autograd::Function<SelectiveScanFn> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& delta,
                               const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                               const std::optional<at::Tensor>& D,
                               const std::optional<at::Tensor>& z,
                               const std::optional<at::Tensor>& delta_bias, bool softplus) {
    Holder hold;
    const Problem p = make_problem(u, delta, A, B, C, D, z, delta_bias, softplus, hold);
    FwdResult r = forward_impl(p, u.scalar_type(), /*want_last=*/true, /*want_ckpt=*/true);
    ctx->save_for_backward({u, delta, A, B, C, D.value_or(at::Tensor()), z.value_or(at::Tensor()),
                            delta_bias.value_or(at::Tensor()), r.ckpt});
    ctx->saved_data["softplus"] = softplus;
    ctx->set_materialize_grads(false);
    return {r.y, r.last};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list sv = ctx->get_saved_variables();
    const at::Tensor &u = sv[0], &delta = sv[1], &A = sv[2], &B = sv[3], &C = sv[4], &D = sv[5],
                     &z = sv[6], &bias = sv[7], &ckpt = sv[8];
    const bool softplus = ctx->saved_data["softplus"].toBool();
    Holder hold;
    const Problem p = make_problem(u, delta, A, B, C, opt(D), opt(z), opt(bias), softplus, hold);
    at::Tensor gout = grads[0].defined() ? grads[0].to(u.scalar_type()).contiguous() : at::Tensor();
    at::Tensor glast = grads[1].defined() ? grads[1].to(at::kFloat).contiguous() : at::Tensor();

    const auto f32opt = at::TensorOptions().dtype(at::kFloat);
    at::Tensor gu = at::empty(u.sizes(), u.options());              // [B, D, L]
    at::Tensor gdelta = at::empty(delta.sizes(), delta.options());  // [B, D, L]
    at::Tensor gz = z.defined() ? at::empty(z.sizes(), z.options()) : at::Tensor();
    at::Tensor gAp = at::empty({p.Bn, p.D, p.N}, f32opt);  // [B, D, N]
    at::Tensor gDp = at::empty({p.Bn, p.D}, f32opt);       // [B, D]
    at::Tensor gbp = at::empty({p.Bn, p.D}, f32opt);       // [B, D]
    // Blocks of a group are split into S slices, each accumulating its own gB/gC partial; enough
    // slices to keep every thread busy.
    const int64_t want = 4 * at::get_num_threads();
    const int64_t S = std::clamp<int64_t>((want + p.Bn * p.G - 1) / (p.Bn * p.G), 1, p.nbg);
    at::Tensor gBp = at::zeros({p.Bn, p.G, S, p.N, p.L}, f32opt);  // [B, G, S, N, L]
    at::Tensor gCp = at::zeros({p.Bn, p.G, S, p.N, p.L}, f32opt);  // [B, G, S, N, L]

    BackwardIO io{in_of(gout),
                  glast.defined() ? glast.data_ptr<float>() : nullptr,
                  ckpt.data_ptr<float>(),
                  out_of(gu),
                  out_of(gdelta),
                  out_of(gz),
                  gAp.data_ptr<float>(),
                  gDp.data_ptr<float>(),
                  gbp.data_ptr<float>(),
                  gBp.data_ptr<float>(),
                  gCp.data_ptr<float>(),
                  S};
    run_backward(p, io);

    auto reduce_bc = [&](const at::Tensor& part, const at::Tensor& like) {
      at::Tensor g = part.sum(2);  // [B, G, N, L]
      if (like.dim() == 3) g = g.squeeze(1);
      return g.to(like.scalar_type());
    };
    at::Tensor gA = gAp.sum(0).to(A.scalar_type());
    at::Tensor gB = reduce_bc(gBp, B);
    at::Tensor gC = reduce_bc(gCp, C);
    at::Tensor gD = D.defined() ? gDp.sum(0).to(D.scalar_type()) : at::Tensor();
    at::Tensor gbias = bias.defined() ? gbp.sum(0).to(bias.scalar_type()) : at::Tensor();
    return {gu, gdelta, gA, gB, gC, gD, gz, gbias, at::Tensor()};
  }
};

bool any_requires_grad(const SelectiveScanArgs& a) {
  bool r = a.u.requires_grad() || a.delta.requires_grad() || a.A.requires_grad() ||
           a.B.requires_grad() || a.C.requires_grad();
  for (const auto* o : {&a.D, &a.z, &a.delta_bias})
    if (*o && (*o)->defined()) r = r || (*o)->requires_grad();
  return r;
}

}  // namespace

namespace {
using NamedTensors = std::vector<std::pair<const char*, const at::Tensor*>>;

// Why the fused kernel cannot take these tensors ("" when it can).
std::string first_unsupported(const NamedTensors& all) {
  for (auto& [name, t] : all) {
    if (!t->device().is_cpu())
      return mambavl::detail::cat(name, " is on ", t->device().str(),
                                  " (the fused kernel runs on CPU only)");
    if (!fused_dtype(*t))
      return mambavl::detail::cat(name, " has dtype ", c10::toString(t->scalar_type()),
                                  " (the fused kernel takes float32 or bfloat16)");
  }
  return {};
}
}  // namespace

std::string fused_cpu_unsupported(const SelectiveScanArgs& a) {
  NamedTensors all = {{"u", &a.u}, {"delta", &a.delta}, {"A", &a.A}, {"B", &a.B}, {"C", &a.C}};
  if (a.D) all.push_back({"D", &*a.D});
  if (a.z) all.push_back({"z", &*a.z});
  if (a.delta_bias) all.push_back({"delta_bias", &*a.delta_bias});
  return first_unsupported(all);
}

std::string fused_cpu_unsupported_update(const at::Tensor& state, const at::Tensor& x,
                                         const at::Tensor& dt, const at::Tensor& A,
                                         const at::Tensor& B, const at::Tensor& C,
                                         const std::optional<at::Tensor>& D,
                                         const std::optional<at::Tensor>& z,
                                         const std::optional<at::Tensor>& dt_bias) {
  NamedTensors all = {{"state", &state}, {"x", &x}, {"dt", &dt}, {"A", &A}, {"B", &B}, {"C", &C}};
  if (D) all.push_back({"D", &*D});
  if (z) all.push_back({"z", &*z});
  if (dt_bias) all.push_back({"dt_bias", &*dt_bias});
  return first_unsupported(all);
}

SelectiveScanResult selective_scan_fused_cpu(const SelectiveScanArgs& a) {
  SelectiveScanResult res;
  if (at::GradMode::is_enabled() && any_requires_grad(a)) {
    variable_list out = SelectiveScanFn::apply(a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias,
                                               a.delta_softplus);
    res.y = out[0];
    if (a.return_last_state) res.last_state = out[1];
    return res;
  }
  Holder hold;
  const Problem p =
      make_problem(a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.delta_softplus, hold);
  FwdResult r = forward_impl(p, a.u.scalar_type(), a.return_last_state, /*want_ckpt=*/false);
  res.y = r.y;
  res.last_state = r.last;
  return res;
}

at::Tensor selective_state_update_fused_cpu(at::Tensor& state, const at::Tensor& x,
                                            const at::Tensor& dt, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C,
                                            const std::optional<at::Tensor>& D,
                                            const std::optional<at::Tensor>& z,
                                            const std::optional<at::Tensor>& dt_bias,
                                            bool dt_softplus) {
  const int64_t Bn = x.size(0), Dch = x.size(1), N = A.size(1);
  const int64_t G = B.dim() == 3 ? B.size(1) : 1, dg = Dch / G;
  at::Tensor st = state.is_contiguous() ? state : state.contiguous();  // [B, D, N] fp32
  at::Tensor xf = x.to(at::kFloat).contiguous();                       // [B, D]
  at::Tensor df = dt.to(at::kFloat).contiguous();                      // [B, D]
  at::Tensor Af = A.to(at::kFloat).contiguous();                       // [D, N]
  at::Tensor Bf = B.to(at::kFloat).contiguous();                       // [B, G, N]
  at::Tensor Cf = C.to(at::kFloat).contiguous();                       // [B, G, N]
  at::Tensor Df = f32(D), zf = f32(z), bf = f32(dt_bias);              // [D], [B, D], [D]
  at::Tensor y = at::empty({Bn, Dch}, xf.options());                   // [B, D]
  float* sp = st.data_ptr<float>();
  const float *xp = xf.data_ptr<float>(), *dp = df.data_ptr<float>(), *Ap = Af.data_ptr<float>();
  const float *Bp = Bf.data_ptr<float>(), *Cp = Cf.data_ptr<float>();
  const float* Dp = Df.defined() ? Df.data_ptr<float>() : nullptr;
  const float* zp = zf.defined() ? zf.data_ptr<float>() : nullptr;
  const float* bp = bf.defined() ? bf.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1));
  at::parallel_for(0, Bn * Dch, grain, [&](int64_t begin, int64_t end) {
    float a[kW], bb[kW], cc[kW], h[kW];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / Dch, d = i % Dch, g = d / dg;
      float dtv = dp[i] + (bp ? bp[d] : 0.f);
      if (dt_softplus) dtv = simd::softplus(splat(dtv))[0];
      const float xv = xp[i];
      const vf vdt = splat(dtv), vdu = splat(dtv * xv);
      vf acc{};
      float* s = sp + i * N;
      const float* Bg = Bp + (b * G + g) * N;
      const float* Cg = Cp + (b * G + g) * N;
      for (int64_t n0 = 0; n0 < N; n0 += kW) {
        const int64_t m = std::min<int64_t>(kW, N - n0);
        std::fill_n(a, kW, 0.f);
        std::fill_n(bb, kW, 0.f);
        std::fill_n(cc, kW, 0.f);
        std::fill_n(h, kW, 0.f);
        std::copy_n(Ap + d * N + n0, m, a);
        std::copy_n(Bg + n0, m, bb);
        std::copy_n(Cg + n0, m, cc);
        std::copy_n(s + n0, m, h);
        const vf hv = simd::exp(vdt * load(a)) * load(h) + vdu * load(bb);
        acc += hv * load(cc);
        store(h, hv);
        std::copy_n(h, m, s + n0);
      }
      float yv = simd::hsum(acc) + (Dp ? Dp[d] * xv : 0.f);
      if (zp) {
        const float zv = zp[i];
        yv *= zv * simd::sigmoid(splat(zv))[0];
      }
      yp[i] = yv;
    }
  });
  if (!st.is_same(state)) state.copy_(st);
  return y.to(x.scalar_type());
}

int64_t fused_scan_saved_bytes(const at::Tensor& y) {
  auto* node = dynamic_cast<torch::autograd::CppNode<SelectiveScanFn>*>(y.grad_fn().get());
  if (!node) return -1;
  int64_t bytes = 0;
  std::unordered_set<const void*> seen;
  for (const at::Tensor& t : node->ctx_.get_saved_variables()) {
    if (!t.defined() || !seen.insert(t.storage().data()).second) continue;
    bytes += static_cast<int64_t>(t.storage().nbytes());
  }
  return bytes;
}

}  // namespace mambavl::kernels::detail
