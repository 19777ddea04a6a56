// The CPU this process runs on, read at run time (CPUID through the compiler's builtins), and the
// instruction-set level the hand kernels use. Builds never assume an instruction set for the
// kernels: each kernel is compiled once per level (src/kernels/isa/) and picks its level here.
//
// Levels (each includes the one before):
//   scalar  x86-64 baseline (SSE2)
//   avx2    AVX2 + FMA + F16C (x86-64-v3)
//   avx512  AVX-512 F/BW/DQ/VL + VNNI (x86-64-v4 with VNNI: Cascade Lake, Ice Lake, Sapphire and
//           Emerald Rapids, AMD Zen 4 / 5); an AVX-512 CPU without VNNI (Skylake-X) runs avx2
//
// MAMBAVL_ISA=scalar|avx2|avx512 forces a level (to test or compare the paths); asking for one
// the CPU lacks is an error naming the missing feature.
#pragma once
#include <string>

namespace mambavl::cpu {

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false, amx = false;
};

const Features& features();  // read once
Isa best_isa();              // the highest level this CPU supports
Isa active_isa();            // what the kernels use: MAMBAVL_ISA if set (validated), else best
void set_active_isa(Isa isa);  // tests and benchmarks; throws when the CPU lacks it
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // throws mambavl::Error naming the valid ones
std::string features_string();           // "avx2 fma f16c avx512f ... (kernels: avx512)"

}  // namespace mambavl::cpu
