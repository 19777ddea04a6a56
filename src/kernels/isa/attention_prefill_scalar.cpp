// The scalar level of the fused prefill attention (attention_prefill_kernels.h).
#if defined(__AVX__)
#error "the scalar kernels must be built for baseline x86-64 (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_scalar
#include "kernels/isa/attention_prefill_impl.inc"
