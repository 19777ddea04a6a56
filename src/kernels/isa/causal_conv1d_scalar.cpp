// The scalar level of the fused causal conv1d (causal_conv1d_kernels.h).
#if defined(__AVX__)
#error "the scalar kernels must be built for baseline x86-64 (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_scalar
#include "kernels/isa/causal_conv1d_impl.inc"
