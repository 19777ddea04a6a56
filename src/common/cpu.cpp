#include "common/cpu.h"

#include <atomic>
#include <cstdlib>

#include "common/error.h"

namespace mambavl::cpu {

namespace {

Features read_features() {
  Features f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  // F16C, AVX512-BF16 and AMX are not known to every compiler's builtin: read CPUID directly.
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  f.f16c = (c >> 29) & 1;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  f.amx = ((d >> 24) & 1) && ((d >> 25) & 1);  // AMX-TILE, AMX-INT8
  if (a >= 1) {
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
    f.avx512bf16 = (a >> 5) & 1;
  }
#endif
  return f;
}

bool supports(const Features& f, Isa isa, std::string* missing) {
  auto need = [&](bool have, const char* name) {
    if (!have && missing && missing->empty()) *missing = name;
    return have;
  };
  bool ok = true;
  if (isa >= Isa::Avx2)
    ok = need(f.avx2, "avx2") && need(f.fma, "fma") && need(f.f16c, "f16c") && ok;
  if (isa >= Isa::Avx512)
    ok = need(f.avx512f, "avx512f") && need(f.avx512bw, "avx512bw") && need(f.avx512dq, "avx512dq") &&
         need(f.avx512vl, "avx512vl") && need(f.avx512vnni, "avx512vnni") && ok;
  return ok;
}

Isa initial_isa() {
  const char* e = std::getenv("MAMBAVL_ISA");
  if (!e || !*e) return best_isa();
  Isa want;
  try {
    want = parse_isa(e);
  } catch (const Error& err) {
    MVL_FAIL("MAMBAVL_ISA: ", err.what());
  }
  std::string missing;
  MVL_CHECK(supports(features(), want, &missing), "MAMBAVL_ISA=", e, ": this CPU lacks ", missing,
            " (it supports up to ", isa_name(best_isa()), ")");
  return want;
}

std::atomic<int>& slot() {
  static std::atomic<int> s{static_cast<int>(initial_isa())};
  return s;
}

}  // namespace

const Features& features() {
  static const Features f = read_features();
  return f;
}

Isa best_isa() {
  for (Isa i : {Isa::Avx512, Isa::Avx2})
    if (supports(features(), i, nullptr)) return i;
  return Isa::Scalar;
}

Isa active_isa() { return static_cast<Isa>(slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  std::string missing;
  MVL_CHECK(supports(features(), isa, &missing), "kernel level ", isa_name(isa),
            ": this CPU lacks ", missing);
  slot().store(static_cast<int>(isa));
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar:
      return "scalar";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
  }
  return "?";
}

Isa parse_isa(const std::string& s) {
  if (s == "scalar") return Isa::Scalar;
  if (s == "avx2") return Isa::Avx2;
  if (s == "avx512") return Isa::Avx512;
  MVL_FAIL("unknown kernel level '", s, "' (expected scalar, avx2 or avx512)");
}

std::string features_string() {
  const Features& f = features();
  std::string s;
  auto add = [&](bool have, const char* name) {
    if (!have) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vnni, "avx512vnni");
  add(f.avx512bf16, "avx512bf16");
  add(f.amx, "amx");
  if (s.empty()) s = "baseline x86-64";
  return s + " (kernels: " + isa_name(active_isa()) + ")";
}

}  // namespace mambavl::cpu
