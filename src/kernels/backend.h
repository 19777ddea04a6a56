// Which implementation an op entry point dispatches to.
#pragma once
#include <string>

namespace mambavl::kernels {

enum class Backend {
  Auto,       // the fastest available for the tensors' device (fused CPU kernel on CPU)
  Reference,  // composed of LibTorch ops; autograd-differentiable; the ground truth in tests
  Fused,      // hand-written kernel (CPU now; CUDA on the road map)
};

// Process-wide default used when an op is called with Backend::Auto. Initialised from the
// environment variable MAMBAVL_KERNELS=auto|reference|fused (default auto).
Backend default_backend();
void set_default_backend(Backend b);
Backend parse_backend(const std::string& s);  // throws mambavl::Error on an unknown name
const char* backend_name(Backend b);

}  // namespace mambavl::kernels
