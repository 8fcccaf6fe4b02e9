// Consumer test program (the same in find_package/ and add_subdirectory/): a training-mode
// BatchNorm2d forward on seeded data; exits 0 only if every channel's output mean is ~0.
#include <batchnorm/batchnorm.hpp>

#include <cmath>
#include <cstdio>
#include <random>

int main() {
  constexpr int n = 2, c = 3, h = 4, w = 4;
  const batchnorm::BatchNormOptions options(c);
  batchnorm::BatchNorm2d<float> bn(options);

  Eigen::Tensor<float, 4, Eigen::RowMajor> x(n, c, h, w);
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(3.0f, 2.0f);
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);

  const Eigen::Tensor<float, 4, Eigen::RowMajor> y = bn.forward(x);
  if (y.dimension(0) != n || y.dimension(1) != c || y.dimension(2) != h || y.dimension(3) != w) {
    std::printf("unexpected output shape\n");
    return 1;
  }

  int failures = 0;
  for (int k = 0; k < c; ++k) {
    double sum = 0.0;
    for (int i = 0; i < n; ++i)
      for (int r = 0; r < h; ++r)
        for (int s = 0; s < w; ++s) sum += static_cast<double>(y(i, k, r, s));
    const double mean = sum / (n * h * w);
    const bool ok = std::abs(mean) <= 1e-5;
    std::printf("channel %d: output mean %.3g %s\n", k, mean, ok ? "ok" : "FAILED (|mean| > 1e-5)");
    failures += ok ? 0 : 1;
  }
  return failures == 0 ? 0 : 1;
}
