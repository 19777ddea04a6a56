// Private header: the fused CPU selective scan (selective_scan_cpu.cpp). Callers go through
// selective_scan() / selective_state_update() in selective_scan.h, which validate first.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "kernels/isa/selective_scan_kernels.h"
#include "kernels/selective_scan.h"

namespace mambavl::kernels::detail {

// Time steps per chunk: the forward pass checkpoints the state [B, D, N] every kScanChunk steps
// for the backward pass, which recomputes the states of one chunk at a time.
constexpr int64_t kScanChunk = kScanChunkSteps;

// Empty when the fused CPU kernel can run these (already validated) arguments, otherwise the
// reason (device or dtype).
std::string fused_cpu_unsupported(const SelectiveScanArgs& a);
std::string fused_cpu_unsupported_update(const at::Tensor& state, const at::Tensor& x,
                                         const at::Tensor& dt, const at::Tensor& A,
                                         const at::Tensor& B, const at::Tensor& C,
                                         const std::optional<at::Tensor>& D,
                                         const std::optional<at::Tensor>& z,
                                         const std::optional<at::Tensor>& dt_bias);

// Forward (and, when any input requires grad under grad mode, an autograd node whose backward is
// the fused reverse scan).
SelectiveScanResult selective_scan_fused_cpu(const SelectiveScanArgs& a);

at::Tensor selective_state_update_fused_cpu(
    at::Tensor& state, const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A,
    const at::Tensor& B, const at::Tensor& C, const std::optional<at::Tensor>& D,
    const std::optional<at::Tensor>& z, const std::optional<at::Tensor>& dt_bias, bool dt_softplus);

// Bytes held for backward by the fused autograd node that produced `y` (its saved tensors,
// each counted once); -1 when y was not produced by the fused selective scan. For tests.
int64_t fused_scan_saved_bytes(const at::Tensor& y);

}  // namespace mambavl::kernels::detail
