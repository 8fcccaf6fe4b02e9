// quickstart: one BatchNorm2d training step (forward + backward), then inference.
#include <batchnorm/batchnorm.hpp>

#include <cstdio>

int main() {
  using batchnorm::BatchNorm2d;
  using batchnorm::BatchNormOptions;
  using Tensor4 = Eigen::Tensor<float, 4, Eigen::RowMajor>;  // (N, C, H, W), PyTorch's memory order

  BatchNorm2d<float> bn(BatchNormOptions(3).eps(1e-5).momentum(0.1));
  Tensor4 x(8, 3, 16, 16);
  x.setRandom();                 // uniform in [0, 1): mean 0.5, variance 1/12
  x = x * 4.0f + 10.0f;          // mean ~12, variance ~1.33

  const Tensor4 y = bn.forward(x);  // training mode: batch statistics
  const Eigen::Tensor<float, 0, Eigen::RowMajor> y_mean = y.mean();
  std::printf("train forward: x (8, 3, 16, 16), mean(y) = %+.6f\n", static_cast<double>(y_mean()));
  std::printf("running_mean  = [%.4f, %.4f, %.4f]  (0.9 * 0 + 0.1 * batch mean)\n",
              static_cast<double>(bn.running_mean()(0)), static_cast<double>(bn.running_mean()(1)),
              static_cast<double>(bn.running_mean()(2)));
  std::printf("running_var   = [%.4f, %.4f, %.4f]  (0.9 * 1 + 0.1 * unbiased batch var)\n",
              static_cast<double>(bn.running_var()(0)), static_cast<double>(bn.running_var()(1)),
              static_cast<double>(bn.running_var()(2)));

  Tensor4 dy(x.dimensions());
  dy.setRandom();                   // upstream gradient d loss / d y
  const Tensor4 dx = bn.backward(x, dy);
  // The path through the batch mean makes every channel's dx sum to zero.
  const Eigen::Tensor<float, 1, Eigen::RowMajor> dx_sum = dx.sum(Eigen::array<Eigen::Index, 3>{0, 2, 3});
  std::printf("backward: sum(dx) per channel = [%+.1e, %+.1e, %+.1e]\n", static_cast<double>(dx_sum(0)),
              static_cast<double>(dx_sum(1)), static_cast<double>(dx_sum(2)));
  std::printf("          dweight = [%.3f, %.3f, %.3f], dbias = [%.3f, %.3f, %.3f]\n",
              static_cast<double>(bn.weight_grad()(0)), static_cast<double>(bn.weight_grad()(1)),
              static_cast<double>(bn.weight_grad()(2)), static_cast<double>(bn.bias_grad()(0)),
              static_cast<double>(bn.bias_grad()(1)), static_cast<double>(bn.bias_grad()(2)));

  bn.eval();                        // inference: running statistics, nothing updated
  const Tensor4 y_eval = bn.forward(x);
  std::printf("eval forward: y_eval(0, 0, 0, 0) = %.4f, num_batches_tracked = %lld\n",
              static_cast<double>(y_eval(0, 0, 0, 0)), static_cast<long long>(bn.num_batches_tracked()));
  // The kernels ran with the widest instruction set this CPU supports (capped by the
  // environment variable BATCHNORM_ISA=sse2|avx2|avx512).
  std::printf("kernels: %s\n", batchnorm::isa_name(batchnorm::active_isa()));
  return 0;
}
