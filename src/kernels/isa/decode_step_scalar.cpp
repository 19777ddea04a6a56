// The scalar level of the fused decode steps (Mamba scan / conv, attention) (decode_step_kernels.h).
#if defined(__AVX__)
#error "the scalar kernels must be built for baseline x86-64 (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_scalar
#include "kernels/isa/decode_step_impl.inc"
