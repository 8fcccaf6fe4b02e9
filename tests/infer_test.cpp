// BatchNorm::infer: const inference that several threads may run at once on one module. Built
// twice: in batchnorm_tests, and (Clang) in batchnorm_tsan_tests under ThreadSanitizer, where
// a data race fails the test.
#include <catch2/catch.hpp>

#include <batchnorm/batchnorm.hpp>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "support/expect_throw.hpp"

TEMPLATE_TEST_CASE("infer equals eval forward bitwise and changes nothing", "[infer]", float, double) {
  using T = TestType;
  batchnorm::BatchNorm2d<T> bn(8);
  std::mt19937 rng(9);
  std::normal_distribution<double> normal(3.0, 2.0);
  Eigen::Tensor<T, 4, Eigen::RowMajor> x(4, 8, 5, 7);
  for (Eigen::Index k = 0; k < x.size(); ++k) x.data()[k] = static_cast<T>(normal(rng));
  bn.forward(x);  // running statistics from a training step
  bn.weight().setConstant(T(1.5));
  const Eigen::Tensor<T, 4, Eigen::RowMajor> in_training = bn.infer(x);  // the mode does not matter
  bn.eval();
  const Eigen::Tensor<T, 4, Eigen::RowMajor> want = bn.forward(x), got = bn.infer(x);
  REQUIRE(std::memcmp(want.data(), got.data(), sizeof(T) * static_cast<std::size_t>(got.size())) == 0);
  REQUIRE(std::memcmp(want.data(), in_training.data(), sizeof(T) * static_cast<std::size_t>(got.size())) == 0);
  // In place (y = x), column-major and channels-last: the same as eval forward.
  Eigen::Tensor<T, 4, Eigen::RowMajor> inplace = x;
  bn.infer(inplace, inplace);
  REQUIRE(std::memcmp(want.data(), inplace.data(), sizeof(T) * static_cast<std::size_t>(got.size())) == 0);
  const Eigen::Tensor<T, 4> xc = x.swap_layout().shuffle(Eigen::array<Eigen::Index, 4>{3, 2, 1, 0});  // same indices
  const Eigen::Tensor<T, 4> want_c = bn.forward(xc), got_c = bn.infer(xc);
  REQUIRE(std::memcmp(want_c.data(), got_c.data(), sizeof(T) * static_cast<std::size_t>(got_c.size())) == 0);
  batchnorm::BatchNorm2d<T> last(batchnorm::BatchNormOptions(8).channels_last(true));
  last.running_mean().setConstant(T(2)), last.running_var().setConstant(T(3));
  last.eval();
  const Eigen::Tensor<T, 4, Eigen::RowMajor> x_last = x.reshape(Eigen::array<Eigen::Index, 4>{4, 5, 7, 8});
  const Eigen::Tensor<T, 4, Eigen::RowMajor> want_l = last.forward(x_last), got_l = last.infer(x_last);
  REQUIRE(std::memcmp(want_l.data(), got_l.data(), sizeof(T) * static_cast<std::size_t>(got_l.size())) == 0);
  // Errors name infer.
  batchnorm::BatchNorm2d<T> untracked(batchnorm::BatchNormOptions(8).track_running_stats(false));
  batchnorm_test::expect_throw<std::logic_error>([&] { (void)untracked.infer(x); }, "BatchNorm2d::infer: no running statistics");
  const Eigen::Tensor<T, 4, Eigen::RowMajor> x3(4, 3, 5, 7);
  batchnorm_test::expect_throw<std::invalid_argument>([&] { (void)bn.infer(x3); },
                                                      "BatchNorm2d::infer: expected input of shape (N, 8, H, W), got (4, 3, 5, 7)");
  Eigen::Tensor<T, 4, Eigen::RowMajor> y_small(4, 8, 5, 6);
  batchnorm_test::expect_throw<std::invalid_argument>([&] { bn.infer(x, y_small); },
                                                      "BatchNorm2d::infer: expected output y of shape (4, 8, 5, 7), got (4, 8, 5, 6)");
}

TEST_CASE("infer from several threads at once on one module", "[infer][threads]") {
  batchnorm::BatchNorm1d<float> bn(64);
  Eigen::Tensor<float, 2> x(32, 64);
  x.setRandom();
  bn.forward(x);
  bn.eval();
  const Eigen::Tensor<float, 2> want = bn.forward(x);
  const batchnorm::BatchNorm1d<float>& shared = bn;
  std::vector<Eigen::Tensor<float, 2>> outs(4, Eigen::Tensor<float, 2>(32, 64));
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < outs.size(); ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 50; ++rep) shared.infer(x, outs[t]);
    });
  for (auto& t : threads) t.join();
  for (const auto& y : outs) CHECK(std::memcmp(y.data(), want.data(), sizeof(float) * 32 * 64) == 0);
}
