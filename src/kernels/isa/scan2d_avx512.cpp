// The avx512 level of the 2-D scan scatter (scan2d_kernels.h).
#if !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "the avx512 kernels must be built with -march=x86-64-v4 -mavx512vnni (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_avx512
#include "kernels/isa/scan2d_impl.inc"
