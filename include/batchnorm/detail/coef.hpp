// batchnorm: the per-channel constants of the elementwise passes. Scalar; built by the
// functional layer, read by the kernels. Free to change; not public API.
#pragma once

#include "../config.hpp"

#include <cmath>

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// Per-channel constants of the elementwise kernels; each kernel documents its formula in them.
/// A channel whose T arithmetic could overflow where the exact result does not (float constants
/// or deviations x - head beyond float's range) sets `exact`: the kernels then compute it in
/// double instead, as
///   out = ep * u + eq * (x - em) + er          (u: the second input, dy, or 0 without one)
/// rounded once to T (detail::exact_apply).
template <class T>
struct Coef {
  T head = 0, tail = 0, p = 0, q = 0, r = 0;
  bool exact = false;
  double em = 0, ep = 0, eq = 0, er = 0;
};

/// The largest finite float, in double.
inline constexpr double kFloatMax = 3.4028234663852886e38;

/// Float constants p and q of at most this magnitude (half float's maximum) stay in the vector
/// path.
inline constexpr double kExactProduct = kFloatMax / 2;

/// Float channels whose values or constants reach this magnitude take the exact path: x - head
/// stays finite in float while |head| and the spread (std * sqrt(m), m < 2^32) stay below it.
inline constexpr double kExactMagnitude = kFloatMax / 65536.0;

/// Float channels whose additive constant r reaches this magnitude take the exact path. A product
/// (x - head) * p that overflows float can only come back into range through r of the other sign
/// and at least the excess; below this bound, the exact result is then within 2^-20 of float's
/// maximum (it rounds to the maximum or to inf either way).
inline constexpr double kExactOffset = kFloatMax / 1048576.0;

/// The full test of needs_exact, out of line: reached only by channels outside the common range.
inline BATCHNORM_NOINLINE bool needs_exact_edge(double mean, double invstd, double p, double q, double r) noexcept {
  const auto beyond = [](double a, double bound) { return !(a >= -bound && a <= bound); };  // NaN: not exact
  if (mean != mean || invstd != invstd || p != p || q != q || r != r) return false;
  return beyond(p, kExactProduct) || beyond(q, kExactProduct) || beyond(r, kExactOffset) ||
         beyond(mean, kExactMagnitude) || invstd * kExactMagnitude < 1;
}

/// True if a float channel with this mean and invstd, or these constants in double, must be
/// computed exactly (see Coef). Never for double data. Inline, one branch in the common case
/// (everything finite and well inside the bounds; a NaN fails every comparison and takes the
/// full test, needs_exact_edge).
template <class T>
bool needs_exact(double mean, double invstd, double p, double q, double r) noexcept {
  if constexpr (sizeof(T) == sizeof(double)) {
    return false;
  } else {
    const bool inside = (std::fabs(p) <= kExactProduct) & (std::fabs(q) <= kExactProduct) &
                        (std::fabs(r) <= kExactOffset) & (std::fabs(mean) <= kExactMagnitude) &
                        (invstd * kExactMagnitude >= 1);
    return !inside && needs_exact_edge(mean, invstd, p, q, r);
  }
}

}  // namespace detail
BATCHNORM_END_NAMESPACE
