// Per-instruction-set levels of the fused CPU selective scan (kernels/selective_scan_cpu.cpp
// validates, lays the tensors out, runs the tasks on at::parallel_for and dispatches to these).
// Each namespace is one compilation of selective_scan_impl.inc with that level's flags (see
// gemv_kernels.h); only C headers and intrinsics are included there.
//
// Tasks: one task = one batch row b, one group g and a block of scan_lanes() consecutive channels
// of that group (the SIMD lanes of the level: 16 avx512, 8 avx2, 4 scalar/SSE2), so the number of
// blocks per group (ScanProblem::nbg) depends on the level.
#pragma once
#include <stdint.h>

namespace mambavl::kernels {

// Time steps per chunk: the forward pass checkpoints the state [B, D, N] every kScanChunkSteps
// steps for the backward pass, which recomputes the states of one chunk at a time.
constexpr int64_t kScanChunkSteps = 64;

// A contiguous fp32 or bf16 (uint16 bits) tensor; p null: absent.
struct ScanIn {
  const void* p;
  bool bf16;
};
struct ScanOut {
  void* p;
  bool bf16;
};

// The problem, every tensor contiguous; B/C of the [B, N, L] layout are seen as G = 1.
struct ScanProblem {
  int64_t Bn, D, L, N, G;
  int64_t dg;          // channels per group
  int64_t nbg;         // blocks of scan_lanes() channels per group
  int64_t nck;         // time chunks of kScanChunkSteps
  ScanIn u, delta, z;  // [B, D, L]
  const float* Bt;     // [B, G, L, N] fp32: B transposed so that one step's N values are adjacent
  const float* Ct;     // [B, G, L, N]
  const float* A;      // [D, N]
  const float* Dv;     // [D] or null
  const float* bias;   // [D] or null
  bool softplus;
};

struct ScanForwardOut {
  ScanOut y;    // [B, D, L] in u's dtype
  float* last;  // [B, D, N] or null
  float* ckpt;  // [B, nck, N, D] (state at the start of each chunk) or null
};

struct ScanBackwardIO {
  ScanIn gout;             // [B, D, L] grad of y (u's dtype); p null: none
  const float* glast;      // [B, D, N] grad of last_state or null
  const float* ckpt;       // [B, nck, N, D]
  ScanOut gu, gdelta, gz;  // [B, D, L] (gz.p null without z)
  float* gA;               // [B, D, N] per-batch partial
  float* gD;               // [B, D] per-batch partial
  float* gbias;            // [B, D] per-batch partial
  float* gB;               // [B, G, S, N, L] per-slice partial (zeroed by the caller)
  float* gC;               // [B, G, S, N, L]
  int64_t S;               // slices of the blocks of a group
};

// One decode step, all fp32 contiguous: state [B, D, N] (updated), x, dt, z [B, D], A [D, N],
// B/C [B, G, N], D/dt_bias [D] (null when absent), y [B, D].
struct ScanUpdateArgs {
  int64_t Dch, N, G;
  float* state;
  const float *x, *dt, *A, *B, *C, *D, *z, *dt_bias;
  float* y;
  bool softplus;
};

}  // namespace mambavl::kernels

#define MVL_SCAN_DECLARE(ns)                                                              \
  namespace mambavl::kernels::ns {                                                        \
  int64_t scan_lanes();                                                                   \
  /* Forward tasks [begin, end) of Bn * G * nbg: task i = (b, g, block j), j fastest. */  \
  void scan_forward_tasks(const ScanProblem& p, const ScanForwardOut& o, int64_t begin,   \
                          int64_t end);                                                   \
  /* Backward tasks [begin, end) of Bn * G * S: task i = (b, g, slice), slice fastest. */ \
  void scan_backward_tasks(const ScanProblem& p, const ScanBackwardIO& io, int64_t begin, \
                           int64_t end);                                                  \
  /* Decode rows [begin, end) of B * D. */                                                \
  void scan_update_rows(const ScanUpdateArgs& a, int64_t begin, int64_t end);             \
  }

MVL_SCAN_DECLARE(isa_scalar)
MVL_SCAN_DECLARE(isa_avx2)
MVL_SCAN_DECLARE(isa_avx512)
