#include "kernels/mamba_step.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "kernels/gemv.h"
#include "kernels/simd_math.h"

namespace mambavl::kernels {

int64_t mamba_step_workspace_size(const MambaStepParams& p) {
  return 2 * p.d_inner + (p.dt_rank + 2 * p.d_state) + 3 * p.d_inner;
}

void mamba_step(const MambaStepParams& p, const float* x, float* conv_state, float* ssm_state,
                float* ws, float* out) {
  const int64_t Di = p.d_inner, N = p.d_state, R = p.dt_rank, W = p.d_conv;
  float* xz = ws;                // [2*Di]: x half then z half
  float* xdbl = xz + 2 * Di;     // [R + 2N]: dt_low, B, C
  float* dt = xdbl + R + 2 * N;  // [Di]
  float* xc = dt + Di;           // [Di] conv + SiLU output
  float* y = xc + Di;            // [Di]

  gemv(p.in_proj_w, x, xz, p.in_proj_b);

  // Causal conv update + SiLU: shift each channel's window left, append the new input.
  for (int64_t d = 0; d < Di; ++d) {
    float* s = conv_state + d * W;
    const float* w = p.conv_w + d * W;
    float acc = p.conv_b ? p.conv_b[d] : 0.f;
    for (int64_t k = 0; k + 1 < W; ++k) {
      s[k] = s[k + 1];
      acc += s[k] * w[k];
    }
    s[W - 1] = xz[d];
    acc += xz[d] * w[W - 1];
    xc[d] = acc / (1.f + std::exp(-acc));
  }

  gemv(p.x_proj_w, xc, xdbl, nullptr);
  gemv(p.dt_proj_w, xdbl, dt, p.dt_b);  // dt_proj reads the first R entries (dt_low)

  // Selective state update, vectorised over the state dimension, parallel over channels.
  const float* Bv = xdbl + R;
  const float* Cv = xdbl + R + N;
  at::parallel_for(0, Di, 256, [&](int64_t d0, int64_t d1) {
    using namespace simd;
    for (int64_t d = d0; d < d1; ++d) {
      const float v = dt[d];
      const float delta = v > 20.f ? v : std::log1p(std::exp(v));  // softplus, threshold 20
      const float dx = delta * xc[d];
      float* st = ssm_state + d * N;
      const float* a = p.A + d * N;
      float acc = 0.f;
      int64_t n = 0;
      vf accv = splat(0.f);
      for (; n + kW <= N; n += kW) {
        vf s = exp(splat(delta) * load(a + n)) * load(st + n) + splat(dx) * load(Bv + n);
        store(st + n, s);
        accv += s * load(Cv + n);
      }
      acc = hsum(accv);
      for (; n < N; ++n) {
        const float s = std::exp(delta * a[n]) * st[n] + dx * Bv[n];
        st[n] = s;
        acc += s * Cv[n];
      }
      const float z = xz[Di + d];
      y[d] = (acc + (p.D ? p.D[d] : 0.f) * xc[d]) * (z / (1.f + std::exp(-z)));
    }
  });

  gemv(p.out_proj_w, y, out, p.out_proj_b);
}

}  // namespace mambavl::kernels
