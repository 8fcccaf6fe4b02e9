// forward(x, y) and backward(x, dy, dx) (and the fused activation's) make no heap allocation through Eigen, as Eigen itself
// checks it: with EIGEN_RUNTIME_NO_MALLOC, internal::set_is_malloc_allowed(false) makes every
// Eigen allocation fail eigen_assert. The counting operator new of batch_norm_test.cpp sees all
// allocations but not under valgrind or the sanitizers; this check works everywhere.
//
// Its own executable (batchnorm_no_malloc_tests): the macro changes Eigen's inline functions and
// so every template instantiated here. Linked with translation units built without it, the
// linker could keep their copies and the check would pass vacuously. eigen_assert is compiled
// out under NDEBUG, so it is defined here to count failures in every build type.
#include <cstddef>

namespace batchnorm_test {
inline std::size_t eigen_assert_failures = 0;
inline void eigen_assert_failed() { ++eigen_assert_failures; }
}  // namespace batchnorm_test

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) ((x) ? static_cast<void>(0) : batchnorm_test::eigen_assert_failed())

#include <catch2/catch.hpp>

#include <batchnorm/batchnorm.hpp>

using batchnorm::BatchNorm1d;
using batchnorm::BatchNorm2d;
using batchnorm::BatchNormOptions;
using batchnorm_test::eigen_assert_failures;

namespace {

/// Eigen asserts that fail while f runs with Eigen's allocations forbidden.
template <class F>
std::size_t eigen_allocations_in(F f) {
  eigen_assert_failures = 0;
  Eigen::internal::set_is_malloc_allowed(false);
  f();
  Eigen::internal::set_is_malloc_allowed(true);
  return eigen_assert_failures;
}

template <class Module, class X>
void check_no_allocation(Module& bn, const X& x) {
  X y = x, dx = x;
  CHECK(eigen_allocations_in([&] { bn.forward(x, y); }) == 0);
  CHECK(eigen_allocations_in([&] { bn.backward(x, x, dx); }) == 0);
  bn.eval();
  CHECK(eigen_allocations_in([&] { bn.forward(x, y); }) == 0);
  CHECK(eigen_allocations_in([&] { bn.backward(x, x, dx); }) == 0);
}

}  // namespace

TEMPLATE_TEST_CASE("forward(x, y) and backward(x, dy, dx) make no Eigen allocation (EIGEN_RUNTIME_NO_MALLOC)",
                   "[module][alloc]", float, double) {
  using T = TestType;
  // The check is armed: an Eigen allocation with malloc forbidden is seen.
  REQUIRE(eigen_allocations_in([] { Eigen::Tensor<T, 1> t(64); }) >= 1);

  Eigen::Tensor<T, 4, Eigen::RowMajor> xr(4, 16, 40, 40);  // long rows
  Eigen::Tensor<T, 4, Eigen::RowMajor> xs(64, 40, 6, 6);   // short rows
  Eigen::Tensor<T, 4, Eigen::ColMajor> xc(4, 16, 10, 10);  // ColMajor
  Eigen::Tensor<T, 2, Eigen::RowMajor> x1(64, 24);         // (N, C)
  xr.setRandom();
  xs.setRandom();
  xc.setRandom();
  x1.setRandom();
  BatchNorm2d<T> a(BatchNormOptions(16)), b(BatchNormOptions(40)), c(BatchNormOptions(16)),
      l(BatchNormOptions(40).channels_last(true));
  BatchNorm1d<T> d(BatchNormOptions(24));
  check_no_allocation(a, xr);
  check_no_allocation(b, xs);
  check_no_allocation(c, xc);
  check_no_allocation(l, xr);  // channels last: (4, 16, 40, 40) has 40 channels last
  check_no_allocation(d, x1);
  batchnorm::SingleProcess single;
  BatchNorm2d<T> s(BatchNormOptions(16), single);
  check_no_allocation(s, xr);
  BatchNorm2d<T> r(BatchNormOptions(40).activation(batchnorm::Activation::relu));
  check_no_allocation(r, xs);
  Eigen::Tensor<T, 4, Eigen::RowMajor> y = xr, dx = xr, dr = xr;
  for (const bool training : {true, false}) {
    a.train(training);
    CHECK(eigen_allocations_in([&] { a.forward_add_relu(xr, xr, y); }) == 0);
    CHECK(eigen_allocations_in([&] { a.backward_add_relu(xr, xr, xr, dx, dr); }) == 0);
  }
}
