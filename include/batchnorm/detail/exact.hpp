// batchnorm: scalar reference loops in accum_t<T>, for the few cases where the vector kernels'
// T arithmetic cannot give the exact result (detail/isa/drivers.hpp says when). Compiled once,
// outside the ISA copies. Free to change; not public API.
#pragma once

#include <cmath>
#include <limits>

#include "../view.hpp"
#include "coef.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// Calls f(value, index) for the values of channel c of the view, in memory order.
template <class T, class F>
void for_each_value(const T* x, const View& v, Index c, F f) noexcept {
  for (Index o = 0; o < v.outer; ++o) {
    const Index off = (o * v.channels + c) * v.inner;
    for (Index i = 0; i < v.inner; ++i) f(x[off + i], off + i);
  }
}

/// Float statistics the vector kernels may have got wrong, for a channel of n > 0 values:
///   - not finite (a partial sum of squares, or of x - s, overflowed float although the exact
///     statistics may be finite in double; NaN and Inf inputs land here too);
///   - tiny: M2 < n * 2^-100 with |mean| < 2^-38, where squares of deviations under 2^-63 may
///     have underflowed float (they lose at most n * 2^-126 in all, under 2^-26 of any larger M2,
///     and values of magnitude 2^-38 or more differ by at least 2^-62 when they differ).
/// Never for double, whose partial sums are taken in double anyway.
template <class T, class A>
bool float_moments_suspect(A n, A mean, A m2) noexcept {
  if constexpr (sizeof(T) == sizeof(A)) {
    return false;
  } else {
    if (!std::isfinite(mean) || !std::isfinite(m2)) return true;
    return m2 < n * A(0x1p-100) && std::abs(mean) < A(0x1p-38);
  }
}

/// v rounded to T; beyond T's range +-inf (a plain conversion of such a double to float is
/// undefined behaviour). IEEE rounding sends values from max + ulp/2 on to infinity.
template <class T, class A>
T saturate(A v) noexcept {
  if constexpr (sizeof(T) < sizeof(A)) {
    constexpr A max = static_cast<A>(std::numeric_limits<T>::max());
    constexpr A limit = max + max * static_cast<A>(std::numeric_limits<T>::epsilon()) / 4;
    if (v >= limit) return std::numeric_limits<T>::infinity();
    if (v <= -limit) return -std::numeric_limits<T>::infinity();
  }
  return static_cast<T>(v);
}

/// Channel c of an elementwise pass in double (Coef::exact): out = ep * u + eq * (x - em) + er,
/// u = 0 when there is no second input. x, u, out index the whole view.
template <class T>
void exact_apply(const T* x, const T* u, T* out, const View& v, Index c, const Coef<T>& cf) noexcept {
  for_each_value(x, v, c, [&](T xv, Index i) {
    const double uv = u ? static_cast<double>(u[i]) : 0.0;
    out[i] = saturate<T>(cf.ep * uv + (cf.eq * (static_cast<double>(xv) - cf.em) + cf.er));
  });
}

/// Tests see the channels of an Act epilogue taken in double (exact_act) through this hook
/// (nullptr: nobody watches): called with the channel's values, from the thread that writes them.
inline void (*exact_act_observer)(Index values) = nullptr;

/// Channel c of an elementwise pass with the epilogue Act (detail/coef.hpp) in double
/// (Coef::exact): y = T(eq * (x - em) + er), the forward's value rounded once to T, then Act's
/// epilogue in T. x, u, out index the whole view; u is read only if Act::has_u.
template <class ActTag, class T>
void exact_act(const T* x, const T* u, T* out, const View& v, Index c, const Coef<T>& cf) noexcept {
  if (exact_act_observer) exact_act_observer(v.count());
  for_each_value(x, v, c, [&](T xv, Index i) {
    T y = saturate<T>(cf.eq * (static_cast<double>(xv) - cf.em) + cf.er);
    if constexpr (ActTag::grad) {
      out[i] = y <= T(0) ? T(0) : u[i];
    } else {
      if constexpr (ActTag::add) y = y + u[i];
      if constexpr (ActTag::relu) y = y <= T(0) ? T(0) : y;
      out[i] = y;
    }
  });
}

/// The copying constants (see copying_coef) of an Act epilogue: p = 1 (no second input: out = x)
/// or p = 0 (out = u: Add and Grad may write over u, never over x), and the ReLU floor tail =
/// -inf, which nothing is below.
template <class T, class ActTag>
Coef<T> act_copying_coef() noexcept {
  Coef<T> cf;
  cf.p = ActTag::has_u ? T(0) : T(1);
  cf.tail = -std::numeric_limits<T>::infinity();
  return cf;
}

/// Coefficients that make an elementwise kernel copy one of its inputs to out, so that the exact
/// pass after it still reads the inputs when out aliases one: with a second input u (dx:
/// dy * p + ((x - h) * q + r)) out = u if out is u, else out = x; without (y: (x - h) * p + r,
/// or dx = dy * p with dy as the input) out = the input.
template <class T>
Coef<T> copying_coef(bool has_u, bool out_is_u) noexcept {
  Coef<T> cf;
  if (!has_u || out_is_u) cf.p = 1;
  else cf.q = 1;
  return cf;
}

/// Two-pass moments of channel c in A: mean = sum x / m, M2 = sum (x - mean)^2. Exact for float
/// input wherever the result is finite in double (float values, their sums and squares of their
/// deviations are all far inside double's range). A constant channel gives M2 == 0.
template <class T, class A>
void exact_moments(const T* x, const View& v, Index c, A& mean, A& m2) noexcept {
  A sum = 0;
  for_each_value(x, v, c, [&](T xv, Index) { sum += static_cast<A>(xv); });
  mean = sum / static_cast<A>(v.count());
  A sq = 0;
  for_each_value(x, v, c, [&](T xv, Index) {
    const A e = static_cast<A>(xv) - mean;
    sq += e * e;
  });
  m2 = sq;
}

/// The gradient sums of channel c in A (see group_grad_sums): sum dy, sum dy * (x - mean).
template <class T, class A>
void exact_grad_sums(const T* x, const T* dy, const View& v, Index c, A mean, A& sum_dy, A& sum_dy_d) noexcept {
  A s0 = 0, s1 = 0;
  for_each_value(x, v, c, [&](T xv, Index i) {
    const A d = static_cast<A>(dy[i]);
    s0 += d;
    s1 += d * (static_cast<A>(xv) - mean);
  });
  sum_dy = s0, sum_dy_d = s1;
}

}  // namespace detail
BATCHNORM_END_NAMESPACE
