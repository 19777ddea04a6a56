// The avx2 level of the fused prefill attention (attention_prefill_kernels.h).
#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "the avx2 kernels must be built with -march=x86-64-v3 (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_avx2
#include "kernels/isa/attention_prefill_impl.inc"
