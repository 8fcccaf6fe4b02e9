// fold_and_fuse: a trained 1x1 convolution + BatchNorm2d + ReLU prepared for inference, three ways:
//   separate  the convolution, bn.infer, then a ReLU pass: three passes over the output
//   fused     the convolution, then bn.infer with Activation::relu: two passes
//   folded    batchnorm::fold_into_preceding puts the batch norm into the convolution's weight
//             and bias, and the ReLU is applied where the convolution adds its bias: one pass
// It prints each one's median time (warm: the same tensors, call after call), the speed-up over
// separate, and the largest difference from separate. Exit status 1 if a difference exceeds
// 1e-5 of (1 + |y|).
//
//   fold_and_fuse [N C_in C_out H W] [runs]      (default 8 64 256 28 28, 31 runs)
#include <batchnorm/batchnorm.hpp>
#include <batchnorm/fold.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace {

using Tensor4 = Eigen::Tensor<float, 4, Eigen::RowMajor>;  // (N, C, H, W)
using Tensor1 = Eigen::Tensor<float, 1, Eigen::RowMajor>;
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A 1x1 convolution with weight (O, I, 1, 1) and bias (O): per sample, Y (O, H*W) = W X + b,
/// then max(Y, 0) when relu (in the same pass as the bias).
void conv1x1(const Tensor4& x, const Tensor4& weight, const Tensor1& bias, bool relu, Tensor4& y) {
  const Eigen::Index N = x.dimension(0), I = x.dimension(1), HW = x.dimension(2) * x.dimension(3);
  const Eigen::Index O = weight.dimension(0);
  const Eigen::Map<const Matrix> w(weight.data(), O, I);
  const Eigen::Map<const Eigen::VectorXf> b(bias.data(), O);
  for (Eigen::Index n = 0; n < N; ++n) {
    Eigen::Map<Matrix> out(y.data() + n * O * HW, O, HW);
    out.noalias() = w * Eigen::Map<const Matrix>(x.data() + n * I * HW, I, HW);
    if (relu) out = (out.colwise() + b).cwiseMax(0.0f);
    else out.colwise() += b;
  }
}

template <class F>
double median_ms(int runs, F f) {
  std::vector<double> t;
  f();  // warm up
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// max |a - b| / (1 + |b|)
double largest_difference(const Tensor4& a, const Tensor4& b) {
  double worst = 0;
  for (Eigen::Index k = 0; k < a.size(); ++k) {
    const double d = std::abs(static_cast<double>(a.data()[k]) - static_cast<double>(b.data()[k]));
    worst = std::max(worst, d / (1 + std::abs(static_cast<double>(b.data()[k]))));
  }
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  Eigen::Index N = 8, I = 64, O = 256, H = 28, W = 28;
  int runs = 31;
  if (argc >= 6) {
    N = std::atol(argv[1]), I = std::atol(argv[2]), O = std::atol(argv[3]), H = std::atol(argv[4]), W = std::atol(argv[5]);
    if (argc >= 7) runs = std::atoi(argv[6]);
  }
  if (N < 1 || I < 1 || O < 1 || H < 1 || W < 1 || runs < 1) {
    std::fprintf(stderr, "usage: fold_and_fuse [N C_in C_out H W] [runs], all positive\n");
    return 2;
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const auto fill = [&](auto& t, float scale, float offset) {
    for (Eigen::Index k = 0; k < t.size(); ++k) t.data()[k] = offset + scale * u(rng);
  };

  // A "trained" layer: convolution weight and bias, batch norm parameters and running
  // statistics away from their initial values.
  Tensor4 conv_w(O, I, 1, 1), x(N, I, H, W);
  Tensor1 conv_b(O);
  fill(conv_w, 0.5f, 0.0f), fill(conv_b, 0.5f, 0.0f), fill(x, 1.0f, 0.0f);
  batchnorm::BatchNorm2d<float> bn{batchnorm::BatchNormOptions(O)};
  fill(bn.weight(), 0.5f, 1.0f), fill(bn.bias(), 0.5f, 0.0f);
  fill(bn.running_mean(), 0.5f, 0.0f), fill(bn.running_var(), 4.0f, 6.0f);
  bn.eval();
  batchnorm::BatchNorm2d<float> bn_relu(batchnorm::BatchNormOptions(O).activation(batchnorm::Activation::relu));
  bn_relu.weight() = bn.weight(), bn_relu.bias() = bn.bias();
  bn_relu.running_mean() = bn.running_mean(), bn_relu.running_var() = bn.running_var();
  bn_relu.eval();

  const auto folded = batchnorm::fold_into_preceding(bn, conv_w, &conv_b);

  Tensor4 conv_out(N, O, H, W), y_separate(N, O, H, W), y_fused(N, O, H, W), y_folded(N, O, H, W);
  const auto separate = [&] {
    conv1x1(x, conv_w, conv_b, false, conv_out);
    bn.infer(conv_out, y_separate);
    Eigen::Map<Eigen::ArrayXf> y(y_separate.data(), y_separate.size());
    y = y.max(0.0f);  // an Eigen expression: vectorised
  };
  const auto fused = [&] {
    conv1x1(x, conv_w, conv_b, false, conv_out);
    bn_relu.infer(conv_out, y_fused);
  };
  const auto folded_run = [&] { conv1x1(x, folded.weight, folded.bias, true, y_folded); };

  // Interleaved rounds, so that the three see the same machine; each round's medians.
  std::vector<double> t_sep, t_fused, t_fold;
  for (int round = 0; round < 3; ++round) {
    t_sep.push_back(median_ms(runs, separate));
    t_fused.push_back(median_ms(runs, fused));
    t_fold.push_back(median_ms(runs, folded_run));
  }
  const auto med = [](std::vector<double> v) { return std::sort(v.begin(), v.end()), v[v.size() / 2]; };
  const double ms_sep = med(t_sep), ms_fused = med(t_fused), ms_fold = med(t_fold);
  const double d_fused = largest_difference(y_fused, y_separate), d_fold = largest_difference(y_folded, y_separate);

  std::printf("1x1 convolution %ld -> %ld channels + BatchNorm2d + ReLU on (%ld, %ld, %ld, %ld) float, eval, warm\n",
              static_cast<long>(I), static_cast<long>(O), static_cast<long>(N), static_cast<long>(I),
              static_cast<long>(H), static_cast<long>(W));
  std::printf("  separate (conv, bn.infer, relu pass)        %8.3f ms\n", ms_sep);
  std::printf("  fused    (conv, bn.infer with ReLU)         %8.3f ms   speed-up %.2fx   largest difference %.1e\n",
              ms_fused, ms_sep / ms_fused, d_fused);
  std::printf("  folded   (conv with folded weight, ReLU)    %8.3f ms   speed-up %.2fx   largest difference %.1e\n",
              ms_fold, ms_sep / ms_fold, d_fold);
  std::printf("(largest difference: max |y - y_separate| / (1 + |y_separate|); medians of 3 rounds of %d runs)\n", runs);
  const bool ok = d_fused == 0.0 && d_fold <= 1e-5;
  std::printf("%s\n", ok ? "fused output bitwise the separate one; folded within 1e-5" : "DIFFERENCE TOO LARGE");
  return ok ? 0 : 1;
}
