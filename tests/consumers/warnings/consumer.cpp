// The library as a user with strict warnings compiles it: every module (BatchNorm1d/2d/3d),
// both scalar types, both Eigen storage orders, channels first and last, (N, C), training
// forward and backward, eval forward, and the functional API, each instantiated in one
// translation unit. tests/CMakeLists.txt compiles it (-c, no link) with
//   -std=c++17 -Wall -Wextra -Wconversion -Wsign-conversion -Wshadow -Werror
// at -O1/-O2/-O3, with and without -march=native, with each compiler found; Eigen comes in
// with -isystem, batchnorm with -I, as for a user. Nothing here may silence a warning.
// The state API (presets, state_dict, load_state_dict) always; the safetensors reader and
// writer when nlohmann/json is on the include path; infer and the folds (fold.hpp).
#include <batchnorm/batchnorm.hpp>
#if __has_include(<nlohmann/json.hpp>)
#include <batchnorm/io/safetensors.hpp>
#define BATCHNORM_CONSUMER_IO 1
#endif

#include <cstddef>
#include <vector>

namespace {

template <class Module, class X>
void module_round_trip(Module& bn, const X& x) {
  X y = bn.forward(x);   // training: batch statistics, running statistics updated
  X dx = bn.backward(x, y);
  bn.forward(x, y);      // into an existing tensor
  bn.backward(x, y, dx);
  bn.eval();
  y = bn.forward(x);     // eval: running statistics
  bn.backward(x, y, dx);
  bn.train();
}

template <class T, int Layout>
void modules() {
  using batchnorm::BatchNormOptions;
  {
    Eigen::Tensor<T, 2, Layout> x(8, 3);  // (N, C)
    x.setRandom();
    batchnorm::BatchNorm1d<T> bn(BatchNormOptions(3));
    module_round_trip(bn, x);
  }
  {
    Eigen::Tensor<T, 3, Layout> x(4, 3, 5);  // (N, C, L)
    x.setRandom();
    batchnorm::BatchNorm1d<T> bn(BatchNormOptions(3));
    module_round_trip(bn, x);
    Eigen::Tensor<T, 3, Layout> xl(4, 5, 3);  // (N, L, C)
    xl.setRandom();
    batchnorm::BatchNorm1d<T> bl(BatchNormOptions(3).channels_last(true));
    module_round_trip(bl, xl);
  }
  {
    Eigen::Tensor<T, 4, Layout> x(2, 3, 4, 5);  // (N, C, H, W)
    x.setRandom();
    batchnorm::BatchNorm2d<T> bn(BatchNormOptions(3));
    module_round_trip(bn, x);
    Eigen::Tensor<T, 4, Layout> xl(2, 4, 5, 3);  // (N, H, W, C)
    xl.setRandom();
    batchnorm::BatchNorm2d<T> bl(BatchNormOptions(3).channels_last(true).momentum(0.2).eps(1e-3));
    module_round_trip(bl, xl);
  }
  {
    Eigen::Tensor<T, 5, Layout> x(2, 3, 2, 3, 4);  // (N, C, D, H, W)
    x.setRandom();
    batchnorm::BatchNorm3d<T> bn(BatchNormOptions(3).affine(false));
    module_round_trip(bn, x);
    Eigen::Tensor<T, 5, Layout> xl(2, 2, 3, 4, 3);  // (N, D, H, W, C)
    xl.setRandom();
    batchnorm::BatchNorm3d<T> bl(BatchNormOptions(3).channels_last(true).track_running_stats(false));
    module_round_trip(bl, xl);
  }
}

template <class T>
void functional_api() {
  namespace F = batchnorm::functional;
  using A = F::accum_t<T>;
  const F::View v{4, 3, 5};
  const auto n = static_cast<std::size_t>(v.size());
  const auto c = static_cast<std::size_t>(v.channels);
  std::vector<T> x(n, T(1)), dy(n, T(1)), y(n), dx(n), w(c, T(1)), b(c, T(0)), rm(c, T(0)), rv(c, T(1)), dw(c), db(c);
  std::vector<A> mean(c), invstd(c), var(c);
  F::batch_stats(x.data(), v, mean.data(), var.data());
  F::forward_training(x.data(), v, w.data(), b.data(), rm.data(), rv.data(), 0.1, 1e-5, y.data(), mean.data(),
                      invstd.data());
  F::backward_training(x.data(), dy.data(), v, mean.data(), invstd.data(), w.data(), dx.data(), dw.data(), db.data());
  F::forward_inference(x.data(), v, rm.data(), rv.data(), w.data(), b.data(), 1e-5, y.data());
  F::inference_stats(v.channels, rm.data(), rv.data(), 1e-5, mean.data(), invstd.data());
  F::backward_inference(x.data(), dy.data(), v, mean.data(), invstd.data(), w.data(), dx.data(), dw.data(), db.data());
}

template <class T>
void state_api() {
  batchnorm::BatchNorm2d<T> a(batchnorm::BatchNormOptions::keras(3)), b(batchnorm::BatchNormOptions::flax(3));
  const batchnorm::StateDict d = a.state_dict("bn.");
  const batchnorm::LoadResult r = b.load_state_dict(d, "bn.", false);
  (void)r;
#ifdef BATCHNORM_CONSUMER_IO
  const std::vector<unsigned char> bytes = batchnorm::io::serialize_safetensors(d, {{"k", "v"}});
  b.load_state_dict(batchnorm::io::parse_safetensors(bytes.data(), bytes.size()).tensors, "bn.");
  batchnorm::io::write_safetensors("consumer.safetensors", d);
  b.load_state_dict(batchnorm::io::read_safetensors("consumer.safetensors").tensors, "bn.");
#endif
}

/// Inference: infer on the const module, and every fold, from float and double layers.
template <class T, int Layout>
void deployment_api() {
  batchnorm::BatchNorm2d<T> bn(3);
  bn.eval();
  Eigen::Tensor<T, 4, Layout> x(2, 3, 4, 5), y(2, 3, 4, 5);
  x.setRandom();
  const batchnorm::BatchNorm2d<T>& shared = bn;
  shared.infer(x, y);
  y = shared.infer(x);
  Eigen::Tensor<float, 4, Layout> conv(3, 2, 3, 3);
  Eigen::Tensor<double, 4, Layout> conv_t(4, 3, 3, 3), following(5, 3, 1, 1);
  Eigen::Tensor<float, 1, Layout> bias(3);
  conv.setRandom(), conv_t.setRandom(), following.setRandom(), bias.setRandom();
  const auto a = batchnorm::fold_into_preceding(bn, conv, &bias);
  const auto b = batchnorm::fold_into_preceding_transposed(bn, conv_t, nullptr, 1);
  const auto c = batchnorm::fold_into_following(bn, following, nullptr, {0, 0});
  batchnorm::BatchNorm1d<T> bn1(3);
  bn1.eval();
  Eigen::Tensor<double, 2, Layout> linear(4, 3);
  linear.setRandom();
  const auto d = batchnorm::fold_into_following(bn1, linear, nullptr, {});
  const batchnorm::ChannelAffine e = batchnorm::channel_affine(bn1);
  (void)a, (void)b, (void)c, (void)d, (void)e;
  // The fused activation: ReLU, add-ReLU, their backward and const inference, and functional's.
  batchnorm::BatchNorm2d<T> relu(batchnorm::BatchNormOptions(3).activation(batchnorm::Activation::relu));
  Eigen::Tensor<T, 4, Layout> r(2, 3, 4, 5), dx(2, 3, 4, 5), dr(2, 3, 4, 5);
  r.setRandom();
  relu.forward(x, y);
  relu.backward(x, r, dx);
  relu.forward_add_relu(x, r, y);
  relu.backward_add_relu(x, r, y, dx, dr);
  relu.eval();
  relu.infer(x, y);
  relu.infer_add_relu(x, r, y);
  const batchnorm::View v{2, 3, 20};
  std::vector<double> mean(3, 0.0), invstd(3, 1.0);
  batchnorm::functional::normalize(x.data(), v, mean.data(), invstd.data(), static_cast<const T*>(nullptr),
                                   static_cast<const T*>(nullptr), y.data(), batchnorm::Activation::relu, r.data());
  batchnorm::functional::relu_grad(x.data(), r.data(), v, mean.data(), invstd.data(), static_cast<const T*>(nullptr),
                                   static_cast<const T*>(nullptr), dx.data(), y.data());
}

}  // namespace

// Called from nowhere: the object file is the product. extern, so the optimizer keeps it all.
void batchnorm_consumer_instantiate_all() {
  modules<float, Eigen::RowMajor>();
  modules<float, Eigen::ColMajor>();
  modules<double, Eigen::RowMajor>();
  modules<double, Eigen::ColMajor>();
  functional_api<float>();
  functional_api<double>();
  state_api<float>();
  state_api<double>();
  deployment_api<float, Eigen::RowMajor>();
  deployment_api<double, Eigen::ColMajor>();
}
