// batchnorm::functional: per-channel batch statistics, and merging them across batches.
#pragma once

#include "../config.hpp"

#include <string>

#include "../detail/errors.hpp"
#include "../detail/dispatch.hpp"
#include "../detail/moments.hpp"
#include "view.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace functional {

namespace detail_stats {
inline void check_view(const char* op, const View& v) {
  if (v.outer < 0 || v.channels < 0 || v.inner < 0)
    batchnorm::detail::throw_invalid(op, "view dimensions must be non-negative, got (outer " +
                                             std::to_string(v.outer) + ", channels " + std::to_string(v.channels) +
                                             ", inner " + std::to_string(v.inner) + ")");
}
template <class P>
void check_pointer(const char* op, const char* name, const P* p, bool needed) {
  if (needed && p == nullptr) batchnorm::detail::throw_invalid(op, std::string(name) + " must not be null");
}
}  // namespace detail_stats

/// Per-channel mean and M2 = sum (x - mean)^2 over the m = v.count() values of each channel,
/// accumulated in accum_t<T>:
///   mean_c = sum x / m,   M2_c = sum (x - mean_c)^2.
/// Two-pass over L1-sized chunks (one read of x from memory), chunks merged with Chan et al.
/// (detail::Moments); never E[x^2] - E[x]^2. A constant channel gives its value as mean exactly
/// and M2 == 0. m == 0 gives mean 0, M2 0 (the identity of merge_moments). NaN/Inf propagate.
/// Float inputs whose exact statistics are finite in double get them (no overflow or underflow
/// of float partial sums). Throws std::invalid_argument on a negative view dimension or a null
/// pointer (when the view is not empty); after that it cannot fail.
template <class T>
void batch_moments(const T* x, View v, accum_t<T>* mean, accum_t<T>* m2) {
  constexpr const char* op = "batchnorm::functional::batch_moments";
  detail_stats::check_view(op, v);
  detail_stats::check_pointer(op, "x", x, v.size() > 0);
  detail_stats::check_pointer(op, "mean", mean, v.channels > 0);
  detail_stats::check_pointer(op, "m2", m2, v.channels > 0);
  batchnorm::detail::dispatch([&](auto kernels) { kernels.run_moments(x, v, mean, m2); });
}

/// Per-channel mean and biased variance var_c = M2_c / m (what training normalizes with);
/// the unbiased variance is var_c * m / (m - 1). m == 0 gives mean 0, var 0.
template <class T>
void batch_stats(const T* x, View v, accum_t<T>* mean, accum_t<T>* var) {
  batch_moments(x, v, mean, var);
  const Index m = v.count();
  if (m > 0)
    for (Index c = 0; c < v.channels; ++c) var[c] /= static_cast<accum_t<T>>(m);
}

/// Merges the moments of a set b (count_b values a channel) into those of a disjoint set a
/// (count_a values a channel), channel by channel, as Chan et al.:
///   n = count_a + count_b, delta = mean_b - mean_a,
///   mean_a <- mean_a + delta * count_b / n,   M2_a <- M2_a + M2_b + delta^2 * count_a * count_b / n.
/// Use it to combine micro-batches (accumulated or "ghost" batches) or shards: batch_moments of
/// each part, merged, equal batch_moments of the concatenation up to rounding. Returns n.
template <class A>
Index merge_moments(Index channels, Index count_a, A* mean_a, A* m2_a, Index count_b, const A* mean_b,
                    const A* m2_b) noexcept {
  for (Index c = 0; c < channels; ++c) {
    batchnorm::detail::Moments<A> acc{static_cast<A>(count_a), mean_a[c], m2_a[c]};
    acc.merge(static_cast<A>(count_b), mean_b[c], m2_b[c]);
    mean_a[c] = acc.mean;
    m2_a[c] = acc.m2;
  }
  return count_a + count_b;
}

}  // namespace functional
BATCHNORM_END_NAMESPACE
