// The avx2 level of the GEMV row kernels (gemv_kernels.h).
#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "the avx2 kernels must be built with -march=x86-64-v3 (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_avx2
#include "kernels/isa/gemv_impl.inc"
