// Fused activation: ReLU after batch norm (Activation::relu) and the residual block's
// relu(BN(x) + residual), forward and backward, functional and module: bitwise against the
// unfused passes on every traversal path (and the double path of float channels at the edge of
// float's range), the recomputed ReLU decision against the forward's output, a gradient check
// by central differences away from the kink, and the argument checks.
#include <catch2/catch.hpp>

#include <batchnorm/batchnorm.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <vector>

#include "support/expect_throw.hpp"
#include "support/plans.hpp"
#include "support/tensors.hpp"
#include "support/tolerance.hpp"

using namespace batchnorm_test;
namespace F = batchnorm::functional;
using batchnorm::Activation;
using F::Index;
using F::View;

namespace {

template <class T>
using Acc = F::accum_t<T>;

/// True if a and b hold the same bits (NaN payloads included).
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
T relu(T v) {
  return v <= T(0) ? T(0) : v;
}

/// Counts the values the epilogue took in double (detail::exact_act) while alive.
struct ExactActCount {
  static std::atomic<long>& count() {
    static std::atomic<long> n{0};
    return n;
  }
  ExactActCount() {
    count() = 0;
    batchnorm::detail::exact_act_observer = [](Index values) { count() += static_cast<long>(values); };
  }
  ~ExactActCount() { batchnorm::detail::exact_act_observer = nullptr; }
  ExactActCount(const ExactActCount&) = delete;
  ExactActCount& operator=(const ExactActCount&) = delete;
};

/// A view's data for the epilogue tests: x with per-channel means and spreads, about half of
/// every channel below its mean (ReLU cuts there), and exact zeros before the ReLU (x at the
/// mean of a channel with zero bias); with `edge`, channel 0 at float's edge (|mean| ~ 1e34,
/// the double path).
template <class T>
struct Data {
  View v;
  std::vector<T> x, residual, dy, weight, bias;
  Data(View view, std::uint32_t seed, bool edge = false) : v(view) {
    const auto n = static_cast<std::size_t>(v.size());
    x = normal_values<T>(n, 0.0, 1.0, seed);
    residual = normal_values<T>(n, 0.0, 1.0, seed + 1);
    dy = normal_values<T>(n, 0.0, 1.0, seed + 2);
    weight = normal_values<T>(static_cast<std::size_t>(v.channels), 1.0, 0.5, seed + 3);
    bias = normal_values<T>(static_cast<std::size_t>(v.channels), 0.0, 0.5, seed + 4);
    for (Index c = 0; c < v.channels; ++c) {
      const T shift = static_cast<T>(c % 5) - T(2), scale = T(1) + static_cast<T>(c % 3);
      for (Index o = 0; o < v.outer; ++o)
        for (Index i = 0; i < v.inner; ++i) {
          T& e = x[static_cast<std::size_t>((o * v.channels + c) * v.inner + i)];
          e = shift + scale * e;
        }
    }
    if (v.channels > 1) {  // channel 1: bias 0, values -1, 0, 1, ... (0 past the last whole triple): mean 0,
                           // and exact zeros before the ReLU
      bias[1] = 0;
      const Index whole = v.count() / 3 * 3;
      Index k = 0;
      for (Index o = 0; o < v.outer; ++o)
        for (Index i = 0; i < v.inner; ++i, ++k)
          x[static_cast<std::size_t>((o * v.channels + 1) * v.inner + i)] = k < whole ? static_cast<T>(k % 3 - 1) : T(0);
    }
    if (edge)
      for (Index o = 0; o < v.outer; ++o)
        for (Index i = 0; i < v.inner; ++i) {
          T& e = x[static_cast<std::size_t>(o * v.channels * v.inner + i)];
          e = static_cast<T>(1e34) + static_cast<T>(1e30) * e;
        }
  }
};

/// The views of the traversal paths (detail/plan.hpp): rows of 1024 values or more (row), short
/// channels (row_short), channels-last (inner 1: lane), rows of a vector or more across channels
/// (wide_rows), a single sample, and views large enough to be split into batch segments on the
/// threads.
const std::vector<View>& views() {
  static const std::vector<View> all{{4, 3, 37}, {16, 5, 3}, {64, 19, 1},  {3, 7, 300},   {1, 6, 17},
                                     {3, 3, 1100}, {256, 8, 64}, {4096, 24, 1}, {2, 2, 1}};
  return all;
}

}  // namespace

TEMPLATE_TEST_CASE("ReLU and add-ReLU forwards are the plain forward's bits, then the epilogue", "[activation]", float,
                   double) {
  using T = TestType;
  PlanLog plans;
  for (const bool edge : {false, true})
    for (const View v : views()) {
      if (edge && sizeof(T) == sizeof(double)) continue;
      INFO("view (" << v.outer << ", " << v.channels << ", " << v.inner << ")" << (edge ? ", channel 0 at float's edge" : ""));
      const Data<T> d(v, 11, edge);
      const auto n = static_cast<std::size_t>(v.size());
      const auto C = static_cast<std::size_t>(v.channels);
      std::vector<Acc<T>> mean(C), invstd(C), mean2(C), invstd2(C);
      std::vector<T> plain(n), fused(n), rm(C, T(0.25)), rv(C, T(2)), rm2 = rm, rv2 = rv;
      // Training: plain, then ReLU; then add-ReLU; then add without ReLU.
      F::forward_training(d.x.data(), v, d.weight.data(), d.bias.data(), rm.data(), rv.data(), 0.1, 1e-5, plain.data(),
                          mean.data(), invstd.data());
      std::vector<T> want(n);
      for (std::size_t k = 0; k < n; ++k) want[k] = relu(plain[k]);
      F::forward_training(d.x.data(), v, d.weight.data(), d.bias.data(), rm2.data(), rv2.data(), 0.1, 1e-5, fused.data(),
                          mean2.data(), invstd2.data(), true, Activation::relu);
      CHECK(same_bits(fused, want));
      CHECK((same_bits(rm, rm2) && same_bits(rv, rv2) && mean == mean2 && invstd == invstd2));
      for (std::size_t k = 0; k < n; ++k) want[k] = relu(static_cast<T>(plain[k] + d.residual[k]));
      F::forward_training(d.x.data(), v, d.weight.data(), d.bias.data(), static_cast<T*>(nullptr),
                          static_cast<T*>(nullptr), 0.0, 1e-5, fused.data(), mean2.data(), invstd2.data(), true,
                          Activation::relu, d.residual.data());
      CHECK(same_bits(fused, want));
      for (std::size_t k = 0; k < n; ++k) want[k] = static_cast<T>(plain[k] + d.residual[k]);
      F::forward_training(d.x.data(), v, d.weight.data(), d.bias.data(), static_cast<T*>(nullptr),
                          static_cast<T*>(nullptr), 0.0, 1e-5, fused.data(), mean2.data(), invstd2.data(), true,
                          Activation::none, d.residual.data());
      CHECK(same_bits(fused, want));
      // In place: the ReLU forward over x itself, the add-ReLU over the residual itself.
      std::vector<T> inplace = d.x;
      F::forward_training(inplace.data(), v, d.weight.data(), d.bias.data(), static_cast<T*>(nullptr),
                          static_cast<T*>(nullptr), 0.0, 1e-5, inplace.data(), mean2.data(), invstd2.data(), true,
                          Activation::relu);
      for (std::size_t k = 0; k < n; ++k) want[k] = relu(plain[k]);
      CHECK(same_bits(inplace, want));
      inplace = d.residual;
      F::normalize(d.x.data(), v, mean.data(), invstd.data(), d.weight.data(), d.bias.data(), inplace.data(),
                   Activation::relu, inplace.data());
      for (std::size_t k = 0; k < n; ++k) want[k] = relu(static_cast<T>(plain[k] + d.residual[k]));
      CHECK(same_bits(inplace, want));
      // Inference: forward_inference and normalize, plain then ReLU.
      F::forward_inference(d.x.data(), v, rm.data(), rv.data(), d.weight.data(), d.bias.data(), 1e-5, plain.data());
      F::forward_inference(d.x.data(), v, rm.data(), rv.data(), d.weight.data(), d.bias.data(), 1e-5, fused.data(),
                           Activation::relu);
      for (std::size_t k = 0; k < n; ++k) want[k] = relu(plain[k]);
      CHECK(same_bits(fused, want));
      F::forward_inference(d.x.data(), v, rm.data(), rv.data(), d.weight.data(), d.bias.data(), 1e-5, fused.data(),
                           Activation::relu, d.residual.data());
      for (std::size_t k = 0; k < n; ++k) want[k] = relu(static_cast<T>(plain[k] + d.residual[k]));
      CHECK(same_bits(fused, want));
    }
  // Every traversal path ran, and, with threads, the batch segments (segments_of needs threads).
  std::set<batchnorm::detail::Path> seen;
  bool segmented = false;
  for (const auto& e : PlanLog::log()) seen.insert(e.first.path), segmented = segmented || e.first.segments > 1;
  using batchnorm::detail::Path;
  for (const Path p : {Path::row, Path::row_short, Path::lane, Path::wide_rows}) {
    INFO("path " << static_cast<int>(p));
    CHECK(seen.count(p) == 1);
  }
#ifdef _OPENMP
  if (omp_get_max_threads() > 1) CHECK(segmented);
#endif
}

TEMPLATE_TEST_CASE("relu_grad recomputes the forward's decision bitwise, without and with a residual", "[activation]",
                   float, double) {
  using T = TestType;
  ExactActCount exact;
  for (const bool edge : {false, true})
    for (const bool training : {true, false})
      for (const View v : views()) {
        if (edge && sizeof(T) == sizeof(double)) continue;
        INFO("view (" << v.outer << ", " << v.channels << ", " << v.inner << ")" << (training ? ", training" : ", eval")
                      << (edge ? ", channel 0 at float's edge" : ""));
        const Data<T> d(v, 23, edge);
        const auto n = static_cast<std::size_t>(v.size());
        const auto C = static_cast<std::size_t>(v.channels);
        std::vector<Acc<T>> mean(C), invstd(C);
        std::vector<T> y(n), ya(n), rm(C), rv(C);
        for (std::size_t c = 0; c < C; ++c) rm[c] = static_cast<T>(0.1 * static_cast<double>(c)), rv[c] = T(1.5);
        if (edge) rm[0] = static_cast<T>(1e34), rv[0] = static_cast<T>(1e37);
        if (training) {
          F::forward_training(d.x.data(), v, d.weight.data(), d.bias.data(), static_cast<T*>(nullptr),
                              static_cast<T*>(nullptr), 0.0, 1e-5, y.data(), mean.data(), invstd.data(), true,
                              Activation::relu);
        } else {
          // The module's eval forward: inference_stats, then normalize.
          F::inference_stats(v.channels, rm.data(), rv.data(), 1e-5, mean.data(), invstd.data());
          F::normalize(d.x.data(), v, mean.data(), invstd.data(), d.weight.data(), d.bias.data(), y.data(),
                       Activation::relu);
        }
        F::normalize(d.x.data(), v, mean.data(), invstd.data(), d.weight.data(), d.bias.data(), ya.data(),
                     Activation::relu, d.residual.data());
        std::vector<T> want(n), wanta(n), g(n), ga(n);
        std::size_t cut = 0;
        for (std::size_t k = 0; k < n; ++k) {
          want[k] = y[k] <= T(0) ? T(0) : d.dy[k];
          wanta[k] = ya[k] <= T(0) ? T(0) : d.dy[k];
          cut += y[k] <= T(0);
        }
        if (n >= 16) {  // some values cut, some let through
          CHECK(cut > 0);
          CHECK(cut < n);
        }
        F::relu_grad(d.x.data(), d.dy.data(), v, mean.data(), invstd.data(), d.weight.data(), d.bias.data(), g.data());
        CHECK(same_bits(g, want));
        F::relu_grad(d.x.data(), d.dy.data(), v, mean.data(), invstd.data(), d.weight.data(), d.bias.data(), ga.data(),
                     d.residual.data());
        CHECK(same_bits(ga, wanta));
        // In place: g over dy (no residual), g over the residual.
        std::vector<T> inplace = d.dy;
        F::relu_grad(d.x.data(), inplace.data(), v, mean.data(), invstd.data(), d.weight.data(), d.bias.data(),
                     inplace.data());
        CHECK(same_bits(inplace, want));
        inplace = d.residual;
        F::relu_grad(d.x.data(), d.dy.data(), v, mean.data(), invstd.data(), d.weight.data(), d.bias.data(),
                     inplace.data(), inplace.data());
        CHECK(same_bits(inplace, wanta));
      }
  if (sizeof(T) == sizeof(float)) CHECK(ExactActCount::count() > 0);  // the edge channels took the double path
}

namespace {

/// loss = sum relu(BN(x) (+ residual)) * gy in double, its gradient by central differences
/// against the module's backward (ReLU activation, or add-ReLU), at a point where every value
/// before the ReLU is at least 1e-2 from 0 (the first such seed), so that the steps of h = 1e-6
/// never cross the kink.
struct ReluGradCheck {
  bool training = true, add = false;

  using BN = batchnorm::BatchNorm1d<double>;
  using Tensor3 = Eigen::Tensor<double, 3, Eigen::RowMajor>;

  static batchnorm::BatchNormOptions options() { return batchnorm::BatchNormOptions(3).activation(Activation::relu); }

  double loss(BN& bn, const Tensor3& x, const Tensor3& r, const Tensor3& gy) const {
    Tensor3 y(x.dimensions());
    if (add) bn.forward_add_relu(x, r, y);
    else bn.forward(x, y);
    double s = 0;
    for (Index k = 0; k < y.size(); ++k) s += y.data()[k] * gy.data()[k];
    return s;
  }

  /// The module of the check, in the check's mode.
  BN module() const {
    BN bn(options());
    bn.weight().setValues({1.5, -0.7, 0.4});
    bn.bias().setValues({0.2, 0.1, -0.3});
    bn.running_mean().setValues({0.3, -0.2, 0.1});
    bn.running_var().setValues({1.7, 0.6, 2.5});
    bn.train(training);
    return bn;
  }

  void run() const {
    const Eigen::array<Eigen::Index, 3> dims{4, 3, 5};
    const auto n = static_cast<std::size_t>(4 * 3 * 5);
    // The first seed whose values before the ReLU are all at least 1e-2 from 0.
    Tensor3 x, r;
    const Tensor3 gy = from_row_major<double, 3, Eigen::RowMajor>(normal_values<double>(n, 0.0, 1.0, 43), dims);
    std::uint32_t seed = 100;
    for (;; seed += 2) {
      REQUIRE(seed < 300);
      x = from_row_major<double, 3, Eigen::RowMajor>(normal_values<double>(n, 0.5, 1.5, seed), dims);
      r = from_row_major<double, 3, Eigen::RowMajor>(normal_values<double>(n, 0.0, 1.0, seed + 1), dims);
      const BN plain = module();
      BN none(batchnorm::BatchNormOptions(3));  // the same batch norm without the ReLU: pre
      none.weight() = plain.weight(), none.bias() = plain.bias();
      none.running_mean() = plain.running_mean(), none.running_var() = plain.running_var();
      none.train(training);
      Tensor3 pre(dims);
      none.forward(x, pre);
      bool clear = true;
      for (Index k = 0; k < pre.size(); ++k) clear = clear && std::abs(pre.data()[k] + (add ? r.data()[k] : 0.0)) >= 1e-2;
      if (clear) break;
    }
    INFO("seed " << seed);
    BN bn = module();
    // Analytic gradients.
    BN a = module();
    Tensor3 y(x.dimensions()), dx(x.dimensions()), dr(x.dimensions());
    if (add) {
      a.forward_add_relu(x, r, y);
      a.backward_add_relu(x, r, gy, dx, dr);
    } else {
      a.forward(x, y);
      a.backward(x, gy, dx);
    }
    std::size_t cut = 0;
    for (Index k = 0; k < y.size(); ++k) cut += y.data()[k] == 0;
    CHECK(cut > 0);
    const double h = 1e-6;
    const auto numeric = [&](double& p) {
      const double keep = p;
      p = keep + h;
      const double up = loss(bn, x, r, gy);
      p = keep - h;
      const double down = loss(bn, x, r, gy);
      p = keep;
      return (up - down) / (2 * h);
    };
    for (Index k = 0; k < x.size(); ++k) CHECK(rel_err(dx.data()[k], numeric(x.data()[k])) <= kGradCheckTol);
    if (add)
      for (Index k = 0; k < r.size(); ++k) CHECK(rel_err(dr.data()[k], numeric(r.data()[k])) <= kGradCheckTol);
    for (Index c = 0; c < 3; ++c) {
      CHECK(rel_err(a.weight_grad()(c), numeric(bn.weight()(c))) <= kGradCheckTol);
      CHECK(rel_err(a.bias_grad()(c), numeric(bn.bias()(c))) <= kGradCheckTol);
    }
  }
};

}  // namespace

TEST_CASE("fused ReLU and add-ReLU: gradient check by central differences away from the kink (double)",
          "[activation][gradcheck]") {
  for (const bool training : {true, false})
    for (const bool add : {false, true}) {
      INFO((training ? "training" : "eval") << (add ? ", add-ReLU" : ", ReLU"));
      ReluGradCheck{training, add}.run();
    }
}

namespace {

/// The module with the ReLU activation (or forward_add_relu) against the plain module followed
/// by ReLU: the same output bits, and backward equal to the plain backward of the masked dy.
template <class T, int Layout>
void module_against_unfused(bool training, bool add, bool channels_last) {
  using Tensor4 = Eigen::Tensor<T, 4, Layout>;
  const Eigen::array<Eigen::Index, 4> dims = channels_last ? Eigen::array<Eigen::Index, 4>{6, 5, 7, 12}
                                                           : Eigen::array<Eigen::Index, 4>{6, 12, 5, 7};
  const auto n = static_cast<std::size_t>(6 * 12 * 5 * 7);
  const Tensor4 x = from_row_major<T, 4, Layout>(normal_values<double>(n, 0.3, 2.0, 51), dims);
  const Tensor4 r = from_row_major<T, 4, Layout>(normal_values<double>(n, 0.0, 1.0, 52), dims);
  const Tensor4 dy = from_row_major<T, 4, Layout>(normal_values<double>(n, 0.0, 1.0, 53), dims);
  const auto opts = batchnorm::BatchNormOptions(12).channels_last(channels_last);
  batchnorm::BatchNorm2d<T> plain(opts), fused(batchnorm::BatchNormOptions(opts).activation(Activation::relu));
  const auto w = normal_values<T>(12, 1.0, 0.6, 54), b = normal_values<T>(12, 0.0, 0.4, 55);
  for (Eigen::Index c = 0; c < 12; ++c)
    plain.weight()(c) = fused.weight()(c) = w[static_cast<std::size_t>(c)],
    plain.bias()(c) = fused.bias()(c) = b[static_cast<std::size_t>(c)];
  for (int step = 0; step < 2; ++step) {  // eval after one training step reads updated running statistics
    plain.train(training || step == 0), fused.train(training || step == 0);
    Tensor4 y0(dims), y(dims), want(dims), g(dims), dx0(dims), dx(dims), dr(dims);
    plain.forward(x, y0);
    if (add) fused.forward_add_relu(x, r, y);
    else fused.forward(x, y);
    for (Index k = 0; k < y0.size(); ++k) {
      const T pre = add ? static_cast<T>(y0.data()[k] + r.data()[k]) : y0.data()[k];
      want.data()[k] = relu(pre);
      g.data()[k] = pre <= T(0) ? T(0) : dy.data()[k];
    }
    CHECK(std::memcmp(y.data(), want.data(), sizeof(T) * static_cast<std::size_t>(y.size())) == 0);
    plain.backward(x, g, dx0);
    if (add) fused.backward_add_relu(x, r, dy, dx, dr);
    else fused.backward(x, dy, dx);
    CHECK(std::memcmp(dx.data(), dx0.data(), sizeof(T) * static_cast<std::size_t>(dx.size())) == 0);
    if (add) CHECK(std::memcmp(dr.data(), g.data(), sizeof(T) * static_cast<std::size_t>(g.size())) == 0);
    for (Eigen::Index c = 0; c < 12; ++c) {
      CHECK(fused.weight_grad()(c) == plain.weight_grad()(c));
      CHECK(fused.bias_grad()(c) == plain.bias_grad()(c));
    }
    for (Eigen::Index c = 0; c < 12; ++c) {
      CHECK(fused.running_mean()(c) == plain.running_mean()(c));
      CHECK(fused.running_var()(c) == plain.running_var()(c));
    }
    // infer (const) gives the eval forward's bits.
    if (!training && step == 1) {
      Tensor4 yi(dims);
      if (add) fused.infer_add_relu(x, r, yi);
      else fused.infer(x, yi);
      CHECK(std::memcmp(yi.data(), y.data(), sizeof(T) * static_cast<std::size_t>(y.size())) == 0);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("BatchNorm2d with the ReLU activation and forward_add_relu against the unfused module",
                   "[activation][module]", float, double) {
  for (const bool training : {true, false})
    for (const bool add : {false, true})
      for (const bool cl : {false, true}) {
        INFO((training ? "training" : "eval") << (add ? ", add-ReLU" : ", ReLU") << (cl ? ", channels-last" : ""));
        module_against_unfused<TestType, Eigen::RowMajor>(training, add, cl);
        module_against_unfused<TestType, Eigen::ColMajor>(training, add, cl);
      }
}

TEST_CASE("fused activation: argument checks, nothing changed by a call that throws", "[activation][errors]") {
  using Tensor3 = Eigen::Tensor<float, 3, Eigen::RowMajor>;
  expect_throw<std::invalid_argument>(
      [] { batchnorm::BatchNorm1d<float> bn(batchnorm::BatchNormOptions(2).activation(static_cast<Activation>(7))); },
      "BatchNorm1d::BatchNorm1d: unknown activation 7");
  batchnorm::BatchNorm1d<float> bn(batchnorm::BatchNormOptions(2).activation(Activation::relu));
  Tensor3 x(4, 2, 3), r(4, 2, 3), y(4, 2, 3), dy(4, 2, 3), dx(4, 2, 3), dr(4, 2, 3), small(4, 2, 2);
  x.setRandom(), r.setRandom(), dy.setRandom();
  expect_throw<std::invalid_argument>([&] { bn.forward_add_relu(x, r, x); }, "BatchNorm1d::forward_add_relu: y may be the residual but not x");
  expect_throw<std::invalid_argument>([&] { bn.forward_add_relu(x, small, y); },
                                      "BatchNorm1d::forward_add_relu: expected residual of the shape of x (4, 2, 3), got (4, 2, 2)");
  CHECK(bn.num_batches_tracked() == 0);
  expect_throw<std::logic_error>([&] { bn.backward_add_relu(x, r, dy, dx, dr); }, "BatchNorm1d::backward_add_relu: called before any forward");
  bn.forward(x, y);
  CHECK(bn.num_batches_tracked() == 1);
  expect_throw<std::logic_error>([&] { bn.backward_add_relu(x, r, dy, dx, dr); },
                                 "BatchNorm1d::backward_add_relu: the last forward was not forward_add_relu; use backward()");
  expect_throw<std::invalid_argument>([&] { bn.backward(x, dy, x); },
                                      "BatchNorm1d::backward: with the ReLU activation dx may be dy but not x");
  bn.forward_add_relu(x, r, y);
  expect_throw<std::logic_error>([&] { bn.backward(x, dy, dx); },
                                 "BatchNorm1d::backward: the last forward was forward_add_relu; use backward_add_relu()");
  for (Tensor3* alias : {&x, &dy, &dx})
    expect_throw<std::invalid_argument>([&] { bn.backward_add_relu(x, r, dy, dx, *alias); },
                                        "BatchNorm1d::backward_add_relu: dresidual may be the residual but not x, dy or dx");
  expect_throw<std::invalid_argument>([&] { bn.backward_add_relu(x, r, dy, dx, small); },
                                      "BatchNorm1d::backward_add_relu: expected output dresidual of the shape of x (4, 2, 3), got (4, 2, 2)");
  // In place over dy and the residual is allowed.
  Tensor3 dyc = dy, rc = r;
  bn.backward_add_relu(x, rc, dyc, dyc, rc);
  batchnorm::BatchNorm1d<float> untracked(batchnorm::BatchNormOptions(2).track_running_stats(false));
  expect_throw<std::logic_error>([&] { untracked.infer_add_relu(x, r, y); },
                                 "BatchNorm1d::infer_add_relu: no running statistics (track_running_stats is off)");
  // The functional checks.
  const View v{4, 2, 3};
  std::vector<double> mean(2, 0.0), invstd(2, 1.0);
  std::vector<float> a(24, 1.0f), b(24, 1.0f), g(24);
  expect_throw<std::invalid_argument>(
      [&] { F::normalize(a.data(), v, mean.data(), invstd.data(), static_cast<float*>(nullptr), static_cast<float*>(nullptr), a.data(), Activation::relu, b.data()); },
      "batchnorm::functional::normalize: with a residual, y may be the residual but not x");
  expect_throw<std::invalid_argument>(
      [&] { F::normalize(a.data(), v, mean.data(), invstd.data(), static_cast<float*>(nullptr), static_cast<float*>(nullptr), g.data(), static_cast<Activation>(3)); },
      "batchnorm::functional::normalize: unknown activation 3");
  expect_throw<std::invalid_argument>(
      [&] { F::relu_grad(a.data(), b.data(), v, mean.data(), invstd.data(), static_cast<float*>(nullptr), static_cast<float*>(nullptr), a.data()); },
      "batchnorm::functional::relu_grad: g may not be x");
  expect_throw<std::invalid_argument>(
      [&] { F::relu_grad(a.data(), b.data(), v, mean.data(), invstd.data(), static_cast<float*>(nullptr), static_cast<float*>(nullptr), b.data(), g.data()); },
      "batchnorm::functional::relu_grad: with a residual, g may not be dy");
}
