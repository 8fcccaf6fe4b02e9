// batchnorm: moments of a set of values and their exact merge. Scalar, no dependency; used by the
// kernels, the functional layer and the communicator. Free to change; not public API.
#pragma once

#include "../config.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// Count, mean and M2 = sum (x - mean)^2 of a set of values. merge() combines two disjoint sets
/// exactly as Chan, Golub and LeVeque (1979):
///   n = na + nb,  delta = mean_b - mean_a,
///   mean = mean_a + delta * nb / n,  M2 = M2_a + M2_b + delta^2 * na * nb / n.
/// Merging an empty set (nb == 0) changes nothing; merging into an empty set copies.
template <class A>
struct Moments {
  A n = 0, mean = 0, m2 = 0;

  void merge(A nb, A mean_b, A m2_b) noexcept {
    if (nb == 0) return;
    if (n == 0) {
      n = nb, mean = mean_b, m2 = m2_b;
      return;
    }
    const A n_ab = n + nb;
    const A delta = mean_b - mean;
    mean += delta * (nb / n_ab);
    m2 += m2_b + delta * delta * (n * nb / n_ab);
    n = n_ab;
  }
};

}  // namespace detail
BATCHNORM_END_NAMESPACE
