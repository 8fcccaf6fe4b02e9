// batchnorm: the per-channel constants of the elementwise passes. Scalar; built by the
// functional layer, read by the kernels. Free to change; not public API.
#pragma once

#include "../config.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// Per-channel constants of the elementwise kernels; each kernel documents its formula in them.
template <class T>
struct Coef {
  T head = 0, tail = 0, p = 0, q = 0, r = 0;
};

}  // namespace detail
BATCHNORM_END_NAMESPACE
