// The avx2 level of the fused causal conv1d (causal_conv1d_kernels.h).
#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "the avx2 kernels must be built with -march=x86-64-v3 (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_avx2
#include "kernels/isa/causal_conv1d_impl.inc"
