#include "kernels/backend.h"

#include <atomic>
#include <cstdlib>

#include "common/error.h"

namespace mambavl::kernels {

namespace {
Backend from_env() {
  const char* e = std::getenv("MAMBAVL_KERNELS");
  return e ? parse_backend(e) : Backend::Auto;
}
std::atomic<Backend>& slot() {
  static std::atomic<Backend> b{from_env()};
  return b;
}
}  // namespace

Backend default_backend() { return slot().load(); }
void set_default_backend(Backend b) { slot().store(b); }

Backend parse_backend(const std::string& s) {
  if (s == "auto") return Backend::Auto;
  if (s == "reference" || s == "ref") return Backend::Reference;
  if (s == "fused") return Backend::Fused;
  MVL_FAIL("unknown kernel backend '", s, "' (expected auto, reference or fused)");
}

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::Auto:
      return "auto";
    case Backend::Reference:
      return "reference";
    case Backend::Fused:
      return "fused";
  }
  return "?";
}

}  // namespace mambavl::kernels
