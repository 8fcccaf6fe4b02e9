// Positive control for the compile-fail tests: a valid call that must compile.
// Built only by the ctest test compile_ok_bn1d_rank3 (tests/CMakeLists.txt), never by `all`.
#include <batchnorm/batchnorm.hpp>

int main() {
  batchnorm::BatchNorm1d<float> bn(batchnorm::BatchNormOptions(4));
  Eigen::Tensor<float, 3, Eigen::RowMajor> x(2, 4, 5);
  x.setRandom();
  auto y = bn.forward(x);
  (void)y;
  return 0;
}
