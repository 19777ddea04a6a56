// The scalar level of the 2-D scan scatter (scan2d_kernels.h).
#if defined(__AVX__)
#error "the scalar kernels must be built for baseline x86-64 (CMakeLists.txt)"
#endif
#define MVL_ISA_NS isa_scalar
#include "kernels/isa/scan2d_impl.inc"
