// 2-D scan orders over a patch grid (the "vision selective scan" of VMamba / VL-Mamba, SPEC §2.2).
//
// A patch grid of gh rows and gw columns is stored row-major as [B, L = gh*gw, C]: patch (h, w) is
// token p = h*gw + w. A scan order visits every patch once; step j of an order reads patch
// perm[j]:
//   Row     perm[j] = j                                    (row-major)
//   RowRev  perm[j] = L-1-j                                (row-major, reversed)
//   Col     perm[j] = (j % gh)*gw + j / gh                 (column-major: down each column)
//   ColRev  perm[j] = Col's perm[L-1-j]                    (column-major, reversed)
// Scan modes: BSM (bidirectional) = {Row, RowRev}; CSM (cross) = {Row, Col, RowRev, ColRev}.
//
// CSM follows VMamba's CrossScan (MzeroMiko/VMamba, classification/models/csms6s.py): xs[:, 0] =
// x.flatten (row-major), xs[:, 1] = x.transpose(H, W).flatten (column-major), xs[:, 2:4] =
// flip(xs[:, 0:2]); its CrossMerge flips 2, 3 back, un-transposes 1, 3 and SUMS the four. VL-Mamba
// (ZhengYu518/VL-Mamba) never released code (the repository holds only a README saying "the code
// will be released"), so its exact order, weight sharing and merge cannot be checked; the paper
// describes BSM / CSM as above and builds on VMamba.
//
// gather: x [B, L, C] -> xs [B, K, L, C], xs[b, k, j] = x[b, perm_k[j]].
// scatter: ys [B, K, L, C] -> y [B, L, C], y[b, perm_k[j]] += ys[b, k, j] summed over k ("sum"),
// or that divided by K ("mean"). scatter(gather(x), mean) == x; scatter with one order restores
// exactly. gather and scatter(sum) are each other's adjoint, so each one's backward is the other.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace mambavl::kernels {

enum class ScanOrder { Row, RowRev, Col, ColRev };
enum class ScanMerge { Sum, Mean };

const char* scan_order_name(ScanOrder o);          // "row", "row_rev", "col", "col_rev"
ScanOrder parse_scan_order(const std::string& s);  // Error naming the value otherwise
// "bsm" -> {Row, RowRev}; "csm" -> {Row, Col, RowRev, ColRev}; Error naming the value otherwise.
std::vector<ScanOrder> scan_orders(const std::string& mode);
const char* scan_merge_name(ScanMerge m);          // "sum", "mean"
ScanMerge parse_scan_merge(const std::string& s);  // Error naming the value otherwise

// Patch index read at each step of `order`: int64 [gh*gw] (perm[j] above).
at::Tensor scan_permutation(ScanOrder order, int64_t gh, int64_t gw);
// Step of `order` at which patch p is read: int64 [gh*gw] (the inverse permutation).
at::Tensor scan_inverse_permutation(ScanOrder order, int64_t gh, int64_t gw);

// x [B, gh*gw, C] -> [B, K, gh*gw, C] contiguous, K = orders.size() >= 1. Differentiable.
// Validates shapes (mambavl::Error naming the argument). Fused: any dtype, CPU; Auto uses it on
// CPU and the reference elsewhere.
at::Tensor scan2d_gather(const at::Tensor& x, int64_t gh, int64_t gw,
                         const std::vector<ScanOrder>& orders, Backend backend = Backend::Auto);
// ys [B, K, gh*gw, C] (each order in its scan order) -> [B, gh*gw, C] row-major, merged.
// Differentiable. Fused: floating dtypes (bf16 / f16 accumulate in fp32), CPU.
at::Tensor scan2d_scatter(const at::Tensor& ys, int64_t gh, int64_t gw,
                          const std::vector<ScanOrder>& orders, ScanMerge merge = ScanMerge::Sum,
                          Backend backend = Backend::Auto);

namespace detail {
void validate_scan2d(const at::Tensor& t, bool stacked, int64_t gh, int64_t gw,
                     const std::vector<ScanOrder>& orders, const char* op);
// Built from scan_permutation + index_select (autograd through LibTorch ops).
at::Tensor scan2d_gather_reference(const at::Tensor& x, int64_t gh, int64_t gw,
                                   const std::vector<ScanOrder>& orders);
at::Tensor scan2d_scatter_reference(const at::Tensor& ys, int64_t gh, int64_t gw,
                                    const std::vector<ScanOrder>& orders, ScanMerge merge);
// Direct strided copies over (batch x order) / (batch x grid row), as autograd Functions.
at::Tensor scan2d_gather_fused(const at::Tensor& x, int64_t gh, int64_t gw,
                               const std::vector<ScanOrder>& orders);
at::Tensor scan2d_scatter_fused(const at::Tensor& ys, int64_t gh, int64_t gw,
                                const std::vector<ScanOrder>& orders, ScanMerge merge);
}  // namespace detail

}  // namespace mambavl::kernels
