// batchnorm: the per-channel constants of the elementwise passes. Scalar; built by the
// functional layer, read by the kernels. Free to change; not public API.
#pragma once

#include "../config.hpp"

#include <cmath>
#include <type_traits>

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

/// The inputs of the constants of y = (x - head) * p + r for channels c (functional's
/// normalize_coef states the formula): mean_c, and invstd_c, or, where invstd is null,
///   invstd_c = 1 / sqrt(var_c + eps)                    (functional::invstd_of)
/// in accum_t<T> from M (accum_t<T>: batch statistics; T: running statistics); weight_c and
/// bias_c in T (nullptr: 1 and 0). The functional layer's constants functor derives from it, so
/// that the kernels can build the constants of many channels at once (affine_lanes, isa/store.hpp).
template <class T, class M>
struct AffineInputs {
  const M* mean = nullptr;
  const M* invstd = nullptr;
  const M* var = nullptr;
  double eps = 0;
  const T* weight = nullptr;
  const T* bias = nullptr;
};

/// The inputs of the dx constants of channels c (functional's DxCoef states the formula), in A
/// = accum_t<T>: mean_c, invstd_c, the gradient sums sum_dy_c and sum_dy_d_c over m values, and
/// weight_c in T (nullptr: 1). DxCoef derives from it, so that the kernels can build the
/// constants of many channels at once (dx_lanes, isa/store.hpp).
template <class T, class A>
struct DxInputs {
  const A* mean = nullptr;
  const A* invstd = nullptr;
  const T* weight = nullptr;
  const A* sum_dy = nullptr;
  const A* sum_dy_d = nullptr;
  A m = 0;
};

/// True if F computes DxCoef's formula from a DxInputs base (it names the base dx_inputs).
template <class F, class = void>
inline constexpr bool has_dx_inputs = false;
template <class F>
inline constexpr bool has_dx_inputs<F, std::void_t<typename F::dx_inputs>> = true;

/// True if F computes normalize_coef's formula from an AffineInputs base (it names the base
/// affine_inputs): its constants can be built many channels at once.
template <class F, class = void>
inline constexpr bool has_affine_inputs = false;
template <class F>
inline constexpr bool has_affine_inputs<F, std::void_t<typename F::affine_inputs>> = true;

/// The epilogue of an elementwise pass over y = (x - head) * p + r (the forward's constants), as
/// a tag the functional layer hands to the kernels (isa/drivers.hpp, ActOf; exact_act):
///   Add:  y = y + u                  (u: the second input, the residual)
///   Relu: y = y <= 0 ? 0 : y         (NaN stays NaN; -0 becomes 0)
///   Grad: out = y <= 0 ? 0 : u       (u: dy; the gradient of ReLU at the forward's y, as
///                                     PyTorch's threshold_backward: NaN lets dy through)
/// Grad recomputes the forward's decision, so it is exact only with Relu's constants.
template <bool Add, bool Relu, bool Grad = false>
struct Act {
  static constexpr bool add = Add, relu = Relu, grad = Grad;
  static constexpr bool has_u = Add || Grad;
};

/// True if F is an Act epilogue (it names has_u).
template <class F, class = void>
inline constexpr bool is_act = false;
template <class F>
inline constexpr bool is_act<F, std::void_t<decltype(F::has_u)>> = true;

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
