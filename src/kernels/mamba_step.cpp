#include "kernels/mamba_step.h"

#include <algorithm>
#include <cmath>

#include "kernels/isa/decode_step_kernels.h"
#include "kernels/isa/dispatch.h"

namespace mambavl::kernels {

namespace {

constexpr int64_t kChannelsPerChunk = 32;

}  // namespace

int64_t mamba_step_workspace_size(const MambaStepParams& p) {
  // xz [2*Di] | xdbl [R + 2N] | dt [Di] | xc [Di] | y [Di] | out [d_model]
  return 2 * p.d_inner + (p.dt_rank + 2 * p.d_state) + 3 * p.d_inner + p.d_model;
}

void mamba_step_team(ThreadTeam::Member& m, const MambaStepParams& p, const float* x,
                     float* conv_state, float* ssm_state, float* ws, float* out, bool accumulate,
                     QuantizedVector& xq) {
  const int64_t Di = p.d_inner, N = p.d_state, R = p.dt_rank, W = p.d_conv, dm = p.d_model;
  float* xz = ws;                // [2*Di]: x half then z half
  float* xdbl = xz + 2 * Di;     // [R + 2N]: dt_low, B, C
  float* dt = xdbl + R + 2 * N;  // [Di]
  float* xc = dt + Di;           // [Di] conv + SiLU output
  float* y = xc + Di;            // [Di]
  const int64_t channel_chunks = (Di + kChannelsPerChunk - 1) / kChannelsPerChunk;
  // The non-GEMV phases at the active instruction-set level (kernels/isa/decode_step_impl.inc).
  const auto conv_channels = MVL_ISA_PICK(mamba_conv_channels);
  const auto scan_channels = MVL_ISA_PICK(mamba_scan_channels);
  const MambaConvArgs conv{W, xz, p.conv_w, p.conv_b, conv_state, xc};
  const MambaScanArgs scan{N, p.A, p.D, dt, xc, xz + Di, xdbl + R, xdbl + R + N, ssm_state, y};

  // 1. in_proj rows of a channel chunk (x and z halves), then its causal conv update + SiLU.
  if (p.in_proj_w.kind == MatrixRef::Int8) xq.set(x, dm);
  m.for_chunks(channel_chunks, [&](int64_t c) {
    const int64_t d0 = c * kChannelsPerChunk, d1 = std::min(Di, d0 + kChannelsPerChunk);
    gemv_rows(p.in_proj_w, x, &xq, xz, p.in_proj_b, d0, d1);
    gemv_rows(p.in_proj_w, x, &xq, xz, p.in_proj_b, Di + d0, Di + d1);
    conv_channels(conv, d0, d1);
  });

  // 2. x_proj: dt_low, B, C.
  if (p.x_proj_w.kind == MatrixRef::Int8) xq.set(xc, Di);
  const int64_t xr = gemv_chunk_rows(p.x_proj_w), xrows = R + 2 * N;
  m.for_chunks((xrows + xr - 1) / xr, [&](int64_t c) {
    gemv_rows(p.x_proj_w, xc, &xq, xdbl, nullptr, c * xr, std::min(xrows, (c + 1) * xr));
  });

  // 3. dt_proj rows of a channel chunk (reading dt_low), then the state update and the gate.
  if (p.dt_proj_w.kind == MatrixRef::Int8) xq.set(xdbl, R);
  m.for_chunks(channel_chunks, [&](int64_t c) {
    const int64_t d0 = c * kChannelsPerChunk, d1 = std::min(Di, d0 + kChannelsPerChunk);
    gemv_rows(p.dt_proj_w, xdbl, &xq, dt, p.dt_b, d0, d1);
    scan_channels(scan, d0, d1);
  });

  // 4. out_proj, written or added into `out`.
  if (p.out_proj_w.kind == MatrixRef::Int8) xq.set(y, Di);
  const int64_t orow = gemv_chunk_rows(p.out_proj_w);
  float* tmp = y + Di;  // [d_model]
  m.for_chunks((dm + orow - 1) / orow, [&](int64_t c) {
    const int64_t o0 = c * orow, o1 = std::min(dm, o0 + orow);
    if (!accumulate) {
      gemv_rows(p.out_proj_w, y, &xq, out, p.out_proj_b, o0, o1);
      return;
    }
    gemv_rows(p.out_proj_w, y, &xq, tmp, p.out_proj_b, o0, o1);
    for (int64_t o = o0; o < o1; ++o) out[o] += tmp[o];
  });
}

void mamba_step(const MambaStepParams& p, const float* x, float* conv_state, float* ssm_state,
                float* ws, float* out) {
  DecodeTeamLease lease = decode_team();
  thread_local std::vector<QuantizedVector> xq;  // reused: no allocation per step once sized
  if (xq.size() < static_cast<size_t>(lease.team->size())) xq.resize(lease.team->size());
  lease.team->run([&](ThreadTeam::Member& m) {
    mamba_step_team(m, p, x, conv_state, ssm_state, ws, out, /*accumulate=*/false,
                    xq[static_cast<size_t>(m.id())]);
  });
}

}  // namespace mambavl::kernels
