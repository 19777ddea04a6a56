// Shape / dtype validation helpers for op entry points.
#pragma once
#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <string>

#include "common/error.h"

namespace mambavl {

std::string shape_str(at::IntArrayRef sizes);

// Checks t.dim() == expected.size() and each size (a -1 entry matches anything).
// `what` names the op and the argument, `dims` the letters ("B, D, L"), for the message.
void check_shape(const at::Tensor& t, std::initializer_list<int64_t> expected, const char* what,
                 const char* dims);

}  // namespace mambavl
