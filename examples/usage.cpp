#include <batchnorm/batchnorm.hpp>
#include <cstdio>

int main() {
  batchnorm::BatchNorm2d<float> bn(batchnorm::BatchNormOptions(2));  // C = 2
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(2, 2, 1, 2), dy(2, 2, 1, 2);
  x.setValues({{{{4, 7}}, {{1, 1}}}, {{{13, 16}}, {{3, 3}}}});  // channel 0: {4, 7, 13, 16}
  dy.setValues({{{{1, 0}}, {{0, 0}}}, {{{0, 0}}, {{0, 0}}}});
  auto y = bn.forward(x);                                     // training: batch statistics
  auto dx = bn.backward(x, dy);                               // dx, weight_grad(), bias_grad()
  std::printf("y[c=0]  = %.4f %.4f %.4f %.4f\n", y(0, 0, 0, 0), y(0, 0, 0, 1), y(1, 0, 0, 0), y(1, 0, 0, 1));
  std::printf("running = mean %.2f var %.2f, batches %lld\n", bn.running_mean()(0), bn.running_var()(0),
              static_cast<long long>(bn.num_batches_tracked()));
  std::printf("dx[c=0] = %.4f %.4f %.4f %.4f\n", dx(0, 0, 0, 0), dx(0, 0, 0, 1), dx(1, 0, 0, 0), dx(1, 0, 0, 1));
  bn.eval();                                                  // inference: running statistics
  std::printf("eval y  = %.4f\n", bn.forward(x)(0, 0, 0, 0));
}
