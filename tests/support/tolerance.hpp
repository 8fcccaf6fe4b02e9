// Tolerances of the test suite, in one place. All are relative: |got - ref| <= tol * (1 + |ref|).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

namespace batchnorm_test {

/// Training-mode (batch statistics) float32 results against the float64 reference: y, running
/// statistics, dx, dweight, dbias. The design goal of the library (PyTorch float32 misses it by
/// 100x to 1000x on large-mean data).
inline constexpr double kFloatTrainTol = 1e-5;
/// The double bar on ill-conditioned data (|mean| / std ~ 1e5): the reference cases' float64 floor.
inline constexpr double kDoubleTol = 1e-10;
/// Float sums run in float for at most kFlush = 8 terms a lane before joining a double sum
/// (detail/tuning.hpp): each partial is within 7 * 2^-24 of exact, relative to the sum of the
/// magnitudes of its terms. Two orders of summing the same float squares may differ by that.
inline constexpr double kFloatPartialSumTol = 8.0 / (1 << 24);
/// Gradient check by central differences in double: relative error bound.
inline constexpr double kGradCheckTol = 1e-6;

/// Agreement with the double-double reference (support/naive.hpp) for random data of moderate size, per scalar type.
template <class T>
constexpr double naive_tol() {
  return sizeof(T) == sizeof(float) ? 1e-5 : 1e-11;
}

/// A folded layer (batchnorm/fold.hpp) against the layer and the batch norm evaluated apart, both
/// in double from the same values: relative to 1 + the magnitude of the result (the sum of the
/// |terms| of its sum). The folded weights and bias are each rounded once to T (at most 4 roundings
/// reach one term through the weight, the bias and the batch norm's own constants), and each of
/// the two sums of `terms` terms adds up to `terms` roundings of double.
template <class T>
constexpr double fold_tol(double terms) {
  return 4 * std::numeric_limits<T>::epsilon() + terms * std::numeric_limits<double>::epsilon();
}

/// |got - ref| / (1 + |ref|): the measure every tolerance above bounds.
inline double rel_err(double got, double ref) { return std::abs(got - ref) / (1 + std::abs(ref)); }

}  // namespace batchnorm_test
