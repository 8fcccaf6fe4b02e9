// Comparing result vectors with a reference in the tests' one measure (tolerance.hpp: rel_err).
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "tolerance.hpp"

namespace batchnorm_test {

/// The largest rel_err over the elements (the sizes must agree).
template <class A, class B>
double worst_rel_err(const std::vector<A>& got, const std::vector<B>& ref) {
  REQUIRE(got.size() == ref.size());
  double worst = 0;
  for (std::size_t k = 0; k < got.size(); ++k)
    worst = std::max(worst, rel_err(static_cast<double>(got[k]), static_cast<double>(ref[k])));
  return worst;
}

}  // namespace batchnorm_test
