// Run-time choice among the per-level compilations of a hand kernel (kernels/isa/*_<level>.cpp):
// MVL_ISA_PICK(fn) is the level's `fn` for cpu::active_isa() (MAMBAVL_ISA, else the best level this
// CPU supports). Included by the entry points (which validate, then dispatch), never by the
// per-level files.
#pragma once
#include "common/cpu.h"

namespace mambavl::kernels {

template <class F>
F pick_isa(F scalar, F avx2, F avx512) {
  switch (cpu::active_isa()) {
    case cpu::Isa::Avx512:
      return avx512;
    case cpu::Isa::Avx2:
      return avx2;
    case cpu::Isa::Scalar:
      break;
  }
  return scalar;
}

}  // namespace mambavl::kernels

#define MVL_ISA_PICK(fn)                                            \
  ::mambavl::kernels::pick_isa(&::mambavl::kernels::isa_scalar::fn, \
                               &::mambavl::kernels::isa_avx2::fn,   \
                               &::mambavl::kernels::isa_avx512::fn)
