// Must NOT compile: the library's static_assert rejects this rank.
// Built only by the ctest test compile_fail_bn2d_rank3 (tests/CMakeLists.txt), never by `all`.
#include <batchnorm/batchnorm.hpp>

int main() {
  batchnorm::BatchNorm2d<float> bn(batchnorm::BatchNormOptions(4));
  Eigen::Tensor<float, 3, Eigen::RowMajor> x(2, 4, 5);
  x.setRandom();
  auto y = bn.forward(x);
  (void)y;
  return 0;
}
