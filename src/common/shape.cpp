#include "common/shape.h"

#include <sstream>

namespace mambavl {

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

void check_shape(const at::Tensor& t, std::initializer_list<int64_t> expected, const char* what,
                 const char* dims) {
  std::ostringstream want;
  want << "[";
  size_t i = 0;
  for (int64_t e : expected)
    want << (i++ ? ", " : "") << (e < 0 ? std::string("*") : std::to_string(e));
  want << "]";
  MVL_CHECK(t.defined(), what, ": tensor is undefined, expected [", dims, "] = ", want.str());
  bool ok = t.dim() == static_cast<int64_t>(expected.size());
  i = 0;
  for (int64_t e : expected) {
    if (!ok) break;
    if (e >= 0 && t.size(static_cast<int64_t>(i)) != e) ok = false;
    ++i;
  }
  MVL_CHECK(ok, what, ": shape ", shape_str(t.sizes()), " but expected [", dims,
            "] = ", want.str());
}

}  // namespace mambavl
