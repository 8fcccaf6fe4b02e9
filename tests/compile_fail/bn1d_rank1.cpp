// Must NOT compile: the library's static_assert rejects this rank.
// Built only by the ctest test compile_fail_bn1d_rank1 (tests/CMakeLists.txt), never by `all`.
#include <batchnorm/batchnorm.hpp>

int main() {
  batchnorm::BatchNorm1d<float> bn(batchnorm::BatchNormOptions(4));
  Eigen::Tensor<float, 1, Eigen::RowMajor> x(4);
  x.setRandom();
  auto y = bn.forward(x);
  (void)y;
  return 0;
}
