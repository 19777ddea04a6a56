// The avx512 level of the fused prefill attention (attention_prefill_kernels.h).
#if !defined(__AVX512BW__) || !defined(__AVX512VNNI__)
#error "the avx512 kernels must be built with -march=x86-64-v4 -mavx512vnni (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_avx512
#include "kernels/isa/attention_prefill_impl.inc"
