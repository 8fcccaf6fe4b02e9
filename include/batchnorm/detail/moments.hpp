// batchnorm: moments of a set of values and their exact merge. Scalar, no dependency; used by the
// kernels, the functional layer and the communicator. Free to change; not public API.
#pragma once

#include "../config.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// The factors of Chan, Golub and LeVeque's (1979) merge of a set of nb values into one of na
/// (na, nb > 0; n = na + nb):
///   delta = mean_b - mean_a,  mean = mean_a + delta * f1,  M2 = M2_a + M2_b + delta^2 * f2,
///   f1 = nb / n,  f2 = na * nb / n.
/// Taken once where many channels merge sets of the same counts; apply() is the merge.
template <class A>
struct ChanFactors {
  A f1, f2;
  ChanFactors(A na, A nb) noexcept : f1(nb / (na + nb)), f2(na * nb / (na + nb)) {}
  void apply(A& mean, A& m2, A mean_b, A m2_b) const noexcept {
    const A delta = mean_b - mean;
    mean += delta * f1;
    m2 += m2_b + delta * delta * f2;
  }
};

/// Count, mean and M2 = sum (x - mean)^2 of a set of values. merge() combines two disjoint sets
/// exactly (ChanFactors). Merging an empty set (nb == 0) changes nothing; merging into an empty
/// set copies.
template <class A>
struct Moments {
  A n = 0, mean = 0, m2 = 0;

  void merge(A nb, A mean_b, A m2_b) noexcept {
    if (nb == 0) return;
    if (n == 0) {
      n = nb, mean = mean_b, m2 = m2_b;
      return;
    }
    ChanFactors<A>(n, nb).apply(mean, m2, mean_b, m2_b);
    n += nb;
  }
};

}  // namespace detail
BATCHNORM_END_NAMESPACE
