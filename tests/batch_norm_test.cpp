// The modules BatchNorm1d/2d/3d: options, errors and the strong guarantee, layouts (RowMajor,
// ColMajor, channels-last, TensorMap, in place), running statistics, and eval mode.
#include <catch2/catch.hpp>

#include <batchnorm/batchnorm.hpp>

#include <cmath>
#include <cstdlib>
#include <new>
#include <limits>
#include <vector>

#include "support/expect_throw.hpp"
#include "support/naive.hpp"
#include "support/tensors.hpp"
#include "support/tolerance.hpp"

using namespace batchnorm_test;
using batchnorm::BatchNorm1d;
using batchnorm::BatchNorm2d;
using batchnorm::BatchNorm3d;
using batchnorm::BatchNormOptions;

namespace {

template <class T, int R, int Layout = Eigen::RowMajor>
Eigen::Tensor<T, R, Layout> random_tensor(const Eigen::array<Eigen::Index, R>& dims, double mean, double std,
                                          std::uint32_t seed) {
  std::size_t n = 1;
  for (auto d : dims) n *= static_cast<std::size_t>(d);
  return from_row_major<T, R, Layout>(normal_values<T>(n, mean, std, seed), dims);
}

template <class T, int R, int L>
double worst(const Eigen::Tensor<T, R, L>& a, const Eigen::Tensor<T, R, L>& b) {
  REQUIRE(a.dimensions() == b.dimensions());
  double w = 0;
  for (Eigen::Index k = 0; k < a.size(); ++k) w = std::max(w, rel_err(double(a.data()[k]), double(b.data()[k])));
  return w;
}

template <class T>
double worst(const Eigen::Tensor<T, 1>& a, const Eigen::Tensor<T, 1>& b) {
  REQUIRE(a.size() == b.size());
  double w = 0;
  for (Eigen::Index k = 0; k < a.size(); ++k) w = std::max(w, rel_err(double(a(k)), double(b(k))));
  return w;
}

/// Everything a throwing call must leave alone.
template <class Module>
struct State {
  std::vector<double> values;
  std::int64_t nbt = 0;
  explicit State(const Module& bn) {
    const auto add = [this](const auto& t) {
      for (Eigen::Index k = 0; k < t.size(); ++k) values.push_back(double(t(k)));
    };
    add(bn.weight()), add(bn.bias()), add(bn.running_mean()), add(bn.running_var());
    add(bn.weight_grad()), add(bn.bias_grad());
    nbt = bn.num_batches_tracked();
  }
  bool operator==(const State& o) const { return values == o.values && nbt == o.nbt; }
};

}  // namespace

TEST_CASE("options: PyTorch defaults and chained setters", "[module][options]") {
  const BatchNormOptions o(64);
  CHECK(o.num_features() == 64);
  CHECK(o.eps() == 1e-5);
  CHECK(o.momentum() == 0.1);
  CHECK(o.affine());
  CHECK(o.track_running_stats());
  CHECK_FALSE(o.channels_last());
  const auto p = BatchNormOptions(3).eps(1e-3).momentum(std::nullopt).affine(false).track_running_stats(false).channels_last(true);
  CHECK(p.eps() == 1e-3);
  CHECK_FALSE(p.momentum().has_value());
  CHECK_FALSE(p.affine());
  CHECK_FALSE(p.track_running_stats());
  CHECK(p.channels_last());

  BatchNorm2d<float> bn(BatchNormOptions(4));
  CHECK(bn.is_training());
  CHECK(bn.num_batches_tracked() == 0);
  for (Eigen::Index c = 0; c < 4; ++c) {
    CHECK(bn.weight()(c) == 1.0f);
    CHECK(bn.bias()(c) == 0.0f);
    CHECK(bn.running_mean()(c) == 0.0f);
    CHECK(bn.running_var()(c) == 1.0f);
  }
  bn.eval();
  CHECK_FALSE(bn.is_training());
  bn.train();
  CHECK(bn.is_training());
}

TEST_CASE("invalid options are rejected when the module is built", "[module][errors]") {
  expect_throw<std::invalid_argument>([] { BatchNorm2d<float> bn(BatchNormOptions(0)); },
                                      "BatchNorm2d::BatchNorm2d: num_features must be at least 1, got 0");
  expect_throw<std::invalid_argument>([] { BatchNorm1d<double> bn(BatchNormOptions(3).eps(0)); },
                                      "eps must be positive and finite, got 0");
  expect_throw<std::invalid_argument>([] { BatchNorm1d<double> bn(BatchNormOptions(3).eps(-1e-5)); }, "got -1.0000000000000001e-05");
  expect_throw<std::invalid_argument>(
      [] { BatchNorm1d<double> bn(BatchNormOptions(3).eps(std::numeric_limits<double>::quiet_NaN())); }, "got nan");
  expect_throw<std::invalid_argument>([] { BatchNorm3d<float> bn(BatchNormOptions(3).momentum(1.5)); },
                                      "BatchNorm3d::BatchNorm3d: momentum must be in [0, 1], got 1.5");
  expect_throw<std::invalid_argument>([] { BatchNorm3d<float> bn(BatchNormOptions(3).momentum(-0.1)); }, "momentum");
  BatchNorm3d<float> edge0(BatchNormOptions(3).momentum(0.0));
  BatchNorm3d<float> edge1(BatchNormOptions(3).momentum(1.0));
  CHECK(edge1.options().momentum() == 1.0);
}

TEST_CASE("logic errors: no parameters, no running statistics, backward before forward", "[module][errors]") {
  BatchNorm2d<float> bn(BatchNormOptions(3).affine(false).track_running_stats(false));
  expect_throw<std::logic_error>([&] { bn.weight(); }, "BatchNorm2d::weight: no such parameter: affine is off");
  expect_throw<std::logic_error>([&] { bn.bias(); }, "affine is off");
  expect_throw<std::logic_error>([&] { bn.weight_grad(); }, "affine is off");
  expect_throw<std::logic_error>([&] { bn.running_mean(); }, "track_running_stats is off");
  expect_throw<std::logic_error>([&] { bn.running_var(); }, "track_running_stats is off");
  expect_throw<std::logic_error>([&] { bn.num_batches_tracked(); }, "track_running_stats is off");
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(2, 3, 2, 2);
  x.setRandom();
  expect_throw<std::logic_error>([&] { bn.backward(x, x); }, "BatchNorm2d::backward: called before any forward");
  BatchNorm2d<float> resized(BatchNormOptions(3));
  resized.running_var().resize(2);
  expect_throw<std::logic_error>([&] { resized.forward(x); }, "running_var has 2 elements, expected 3 (num_features)");
}

TEST_CASE("shape errors name the operation, the expected and the actual shape", "[module][errors]") {
  BatchNorm2d<float> bn(BatchNormOptions(64));
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(8, 3, 32, 32);
  x.setZero();
  expect_throw<std::invalid_argument>([&] { bn.forward(x); },
                                      "BatchNorm2d::forward: expected input of shape (N, 64, H, W), got (8, 3, 32, 32)");
  BatchNorm2d<float> last(BatchNormOptions(3).channels_last(true));
  expect_throw<std::invalid_argument>([&] { last.forward(x); }, "expected input of shape (N, H, W, 3), got (8, 3, 32, 32)");
  BatchNorm1d<double> bn1(BatchNormOptions(4));
  Eigen::Tensor<double, 3> x3(2, 5, 7);
  x3.setZero();
  expect_throw<std::invalid_argument>([&] { bn1.forward(x3); }, "BatchNorm1d::forward: expected input of shape (N, 4, L), got (2, 5, 7)");
  // One value per channel: training, and eval without running statistics; eval with them is fine.
  Eigen::Tensor<double, 2> one(1, 4);
  one.setZero();
  expect_throw<std::invalid_argument>([&] { bn1.forward(one); },
                                      "expected more than 1 value per channel when training, got input of shape (1, 4)");
  bn1.eval();
  CHECK_NOTHROW(bn1.forward(one));
  BatchNorm1d<double> no_track(BatchNormOptions(4).track_running_stats(false));
  no_track.eval();
  expect_throw<std::invalid_argument>([&] { no_track.forward(one); }, "expected more than 1 value per channel");
  // Outputs and gradients of the wrong shape.
  BatchNorm2d<float> ok(BatchNormOptions(3));
  x = Eigen::Tensor<float, 4, Eigen::RowMajor>(2, 3, 4, 4);
  x.setRandom();
  Eigen::Tensor<float, 4, Eigen::RowMajor> wrong(2, 3, 4, 5);
  expect_throw<std::invalid_argument>([&] { ok.forward(x, wrong); }, "expected output y of shape (2, 3, 4, 4), got (2, 3, 4, 5)");
  ok.forward(x);
  expect_throw<std::invalid_argument>([&] { ok.backward(x, wrong); }, "expected dy of the shape of x (2, 3, 4, 4), got (2, 3, 4, 5)");
  expect_throw<std::invalid_argument>([&] { ok.backward(wrong, wrong); }, "x must be the input of the last forward, of shape (2, 3, 4, 4)");
  Eigen::Tensor<float, 4, Eigen::RowMajor> dx(2, 3, 4, 5);
  expect_throw<std::invalid_argument>([&] { ok.backward(x, x, dx); }, "expected output dx of the shape of x");
  const Eigen::Tensor<float, 4, Eigen::ColMajor> xc(2, 3, 4, 4);
  expect_throw<std::invalid_argument>([&] { ok.backward(xc, xc); }, "in the other storage order");
}

TEMPLATE_TEST_CASE("a call that throws changes nothing", "[module][errors]", float, double) {
  using T = TestType;
  BatchNorm2d<T> bn(BatchNormOptions(3).momentum(std::nullopt));
  const auto x = random_tensor<T, 4>({4, 3, 5, 5}, 1.0, 2.0, 61);
  const auto dy = random_tensor<T, 4>({4, 3, 5, 5}, 0.0, 1.0, 62);
  bn.forward(x);
  const auto dx_before = bn.backward(x, dy);
  const State<BatchNorm2d<T>> before(bn);
  Eigen::Tensor<T, 4, Eigen::RowMajor> bad(4, 2, 5, 5), one(1, 3, 1, 1), wrong_y(4, 3, 5, 4);
  bad.setRandom(), one.setRandom();
  CHECK_THROWS_AS(bn.forward(bad), std::invalid_argument);
  CHECK_THROWS_AS(bn.forward(one), std::invalid_argument);
  CHECK_THROWS_AS(bn.forward(x, wrong_y), std::invalid_argument);
  CHECK_THROWS_AS(bn.backward(x, bad), std::invalid_argument);
  CHECK_THROWS_AS(bn.backward(bad, bad), std::invalid_argument);
  CHECK(State<BatchNorm2d<T>>(bn) == before);
  // The saved statistics are still those of x: backward gives bit-identical results.
  const auto dx_after = bn.backward(x, dy);
  CHECK(worst(dx_after, dx_before) == 0.0);
  CHECK(State<BatchNorm2d<T>>(bn) == before);
}

TEMPLATE_TEST_CASE("RowMajor, ColMajor and channels-last give the same results", "[module][layout]", float, double) {
  using T = TestType;
  const double tol = naive_tol<T>();
  const Eigen::array<Eigen::Index, 4> dims{3, 5, 4, 6};
  const auto x = random_tensor<T, 4>(dims, 2.0, 1.5, 71);
  const auto dy = random_tensor<T, 4>(dims, 0.0, 1.0, 72);
  BatchNorm2d<T> row(BatchNormOptions(5)), col(BatchNormOptions(5)), last(BatchNormOptions(5).channels_last(true));
  const Eigen::Tensor<T, 4, Eigen::ColMajor> xc = x.swap_layout().shuffle(Eigen::array<int, 4>{3, 2, 1, 0});
  const Eigen::Tensor<T, 4, Eigen::ColMajor> dyc = dy.swap_layout().shuffle(Eigen::array<int, 4>{3, 2, 1, 0});
  const Eigen::array<int, 4> to_last{0, 2, 3, 1}, to_first{0, 3, 1, 2};
  const Eigen::Tensor<T, 4, Eigen::RowMajor> xl = x.shuffle(to_last), dyl = dy.shuffle(to_last);
  for (int step = 0; step < 2; ++step) {
    const auto y = row.forward(x);
    const auto dx = row.backward(x, dy);
    const Eigen::Tensor<T, 4, Eigen::ColMajor> yc = col.forward(xc);
    const Eigen::Tensor<T, 4, Eigen::ColMajor> dxc = col.backward(xc, dyc);
    const Eigen::Tensor<T, 4, Eigen::RowMajor> yl = last.forward(xl);
    const Eigen::Tensor<T, 4, Eigen::RowMajor> dxl = last.backward(xl, dyl);
    const Eigen::Tensor<T, 4, Eigen::RowMajor> yc_row = yc.swap_layout().shuffle(Eigen::array<int, 4>{3, 2, 1, 0});
    const Eigen::Tensor<T, 4, Eigen::RowMajor> dxc_row = dxc.swap_layout().shuffle(Eigen::array<int, 4>{3, 2, 1, 0});
    const Eigen::Tensor<T, 4, Eigen::RowMajor> yl_first = yl.shuffle(to_first), dxl_first = dxl.shuffle(to_first);
    CHECK(worst(yc_row, y) <= tol);
    CHECK(worst(dxc_row, dx) <= tol);
    CHECK(worst(yl_first, y) <= tol);
    CHECK(worst(dxl_first, dx) <= tol);
    CHECK(worst(col.weight_grad(), row.weight_grad()) <= tol);
    CHECK(worst(last.bias_grad(), row.bias_grad()) <= tol);
    CHECK(worst(col.running_var(), row.running_var()) <= tol);
    CHECK(worst(last.running_mean(), row.running_mean()) <= tol);
    row.eval(), col.eval(), last.eval();
  }
}

TEMPLATE_TEST_CASE("BatchNorm1d (N, C), (N, C, L), (N, L, C) and BatchNorm3d against the double-double reference",
                   "[module][naive]", float, double) {
  using T = TestType;
  using batchnorm::functional::View;
  const double tol = naive_tol<T>();
  const auto check_against_naive = [tol](auto& bn, const auto& x, const auto& dy, View v) {
    const auto y = bn.forward(x);
    const auto dx = bn.backward(x, dy);
    // The tensors are RowMajor, so their memory is the view's order.
    const std::vector<T> xv(x.data(), x.data() + x.size()), dyv(dy.data(), dy.data() + dy.size());
    std::vector<T> w(static_cast<std::size_t>(v.channels)), b(w.size());
    for (std::size_t c = 0; c < w.size(); ++c) w[c] = bn.weight()(Eigen::Index(c)), b[c] = bn.bias()(Eigen::Index(c));
    const auto ref = naive_batch_norm(xv, dyv, v, true, w, b, 1e-5);
    double wy = 0, wdx = 0;
    for (std::size_t k = 0; k < xv.size(); ++k)
      wy = std::max(wy, rel_err(double(y.data()[k]), double(ref.y[k]))),
      wdx = std::max(wdx, rel_err(double(dx.data()[k]), double(ref.dx[k])));
    CHECK(wy <= tol);
    CHECK(wdx <= tol);
  };
  {
    BatchNorm1d<T> bn(BatchNormOptions(7));
    bn.weight().setConstant(T(1.5));
    check_against_naive(bn, random_tensor<T, 2>({33, 7}, 1, 2, 81), random_tensor<T, 2>({33, 7}, 0, 1, 82), View{33, 7, 1});
  }
  {
    BatchNorm1d<T> bn(BatchNormOptions(5));
    check_against_naive(bn, random_tensor<T, 3>({4, 5, 9}, 1, 2, 83), random_tensor<T, 3>({4, 5, 9}, 0, 1, 84), View{4, 5, 9});
  }
  {
    BatchNorm1d<T> bn(BatchNormOptions(5).channels_last(true));
    check_against_naive(bn, random_tensor<T, 3>({4, 9, 5}, 1, 2, 85), random_tensor<T, 3>({4, 9, 5}, 0, 1, 86), View{36, 5, 1});
  }
  {
    BatchNorm3d<T> bn(BatchNormOptions(3));
    bn.bias().setConstant(T(-0.5));
    check_against_naive(bn, random_tensor<T, 5>({2, 3, 4, 5, 6}, 1, 2, 87), random_tensor<T, 5>({2, 3, 4, 5, 6}, 0, 1, 88),
                        View{2, 3, 120});
  }
  {
    BatchNorm3d<T> bn(BatchNormOptions(3).channels_last(true));
    check_against_naive(bn, random_tensor<T, 5>({2, 4, 5, 6, 3}, 1, 2, 89), random_tensor<T, 5>({2, 4, 5, 6, 3}, 0, 1, 90),
                        View{240, 3, 1});
  }
}

TEMPLATE_TEST_CASE("TensorMap inputs and outputs, in place, forward(x, y) == forward(x)", "[module][layout]", float,
                   double) {
  using T = TestType;
  const auto x = random_tensor<T, 4>({2, 3, 4, 5}, 0.5, 1.0, 91);
  const auto dy = random_tensor<T, 4>({2, 3, 4, 5}, 0.0, 1.0, 92);
  BatchNorm2d<T> a(BatchNormOptions(3)), b(BatchNormOptions(3));
  const auto y = a.forward(x);
  const auto dx = a.backward(x, dy);
  std::vector<T> buf(x.data(), x.data() + x.size()), dbuf(dy.data(), dy.data() + dy.size());
  Eigen::TensorMap<const Eigen::Tensor<T, 4, Eigen::RowMajor>> xin(x.data(), 2, 3, 4, 5);
  Eigen::TensorMap<Eigen::Tensor<T, 4, Eigen::RowMajor>> inplace(buf.data(), 2, 3, 4, 5);
  b.forward(xin, inplace);  // y written over a copy of x ...
  CHECK(worst(Eigen::Tensor<T, 4, Eigen::RowMajor>(inplace), y) == 0.0);
  std::copy(x.data(), x.data() + x.size(), buf.begin());
  BatchNorm2d<T> c(BatchNormOptions(3));
  c.forward(inplace, inplace);  // ... and over x itself.
  CHECK(worst(Eigen::Tensor<T, 4, Eigen::RowMajor>(inplace), y) == 0.0);
  Eigen::TensorMap<Eigen::Tensor<T, 4, Eigen::RowMajor>> dmap(dbuf.data(), 2, 3, 4, 5);
  b.backward(x, dmap, dmap);  // dx over dy
  CHECK(worst(Eigen::Tensor<T, 4, Eigen::RowMajor>(dmap), dx) == 0.0);
  CHECK(worst(b.weight_grad(), a.weight_grad()) == 0.0);
}

TEMPLATE_TEST_CASE("running statistics: momentum, cumulative average, counter, eval", "[module][running]", float, double) {
  using T = TestType;
  // Three batches (N, C) = (4, 1): {4,7,13,16}, {1,1,3,3}, {0,2,4,6}; batch means 10, 2, 3;
  // unbiased variances 30, 4/3, 20/3.
  const std::vector<std::vector<T>> batches{{4, 7, 13, 16}, {1, 1, 3, 3}, {0, 2, 4, 6}};
  BatchNorm1d<T> avg(BatchNormOptions(1).momentum(std::nullopt)), mom(BatchNormOptions(1).momentum(0.5));
  for (const auto& values : batches) {
    Eigen::TensorMap<const Eigen::Tensor<T, 2, Eigen::RowMajor>> x(values.data(), 4, 1);
    avg.forward(x), mom.forward(x);
  }
  CHECK(avg.num_batches_tracked() == 3);
  CHECK(mom.num_batches_tracked() == 3);
  CHECK(avg.running_mean()(0) == Approx(5.0));                   // (10 + 2 + 3) / 3
  CHECK(avg.running_var()(0) == Approx((30 + 4.0 / 3 + 20.0 / 3) / 3));
  CHECK(mom.running_mean()(0) == Approx(((0 * 0.5 + 5) * 0.5 + 1) * 0.5 + 1.5));  // from 0
  CHECK(mom.running_var()(0) == Approx(((1 * 0.5 + 15) * 0.5 + 2.0 / 3) * 0.5 + 10.0 / 3));
  // Eval normalizes with the running statistics and changes nothing.
  avg.eval();
  Eigen::Tensor<T, 2, Eigen::RowMajor> x(1, 1);
  x(0, 0) = 8;
  const auto y = avg.forward(x);
  CHECK(y(0, 0) == Approx((8 - 5.0) / std::sqrt((30 + 4.0 / 3 + 20.0 / 3) / 3 + 1e-5)));
  CHECK(avg.num_batches_tracked() == 3);
  // Eval backward: running statistics are constants.
  Eigen::Tensor<T, 2, Eigen::RowMajor> dy(1, 1);
  dy(0, 0) = 2;
  const auto dx = avg.backward(x, dy);
  CHECK(dx(0, 0) == Approx(2 / std::sqrt((30 + 4.0 / 3 + 20.0 / 3) / 3 + 1e-5)));
  // reset_running_stats / reset_parameters.
  avg.weight().setConstant(3);
  avg.reset_running_stats();
  CHECK(avg.running_mean()(0) == 0);
  CHECK(avg.running_var()(0) == 1);
  CHECK(avg.num_batches_tracked() == 0);
  CHECK(avg.weight()(0) == 3);
  avg.reset_parameters();
  CHECK(avg.weight()(0) == 1);
}

TEST_CASE("an empty batch: empty output, running statistics kept, counter advanced (PyTorch)", "[module][running]") {
  BatchNorm2d<float> bn(BatchNormOptions(3));
  bn.running_mean().setConstant(0.5f);
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(0, 3, 4, 4);
  const auto y = bn.forward(x);
  CHECK(y.size() == 0);
  CHECK(bn.running_mean()(1) == 0.5f);
  CHECK(bn.running_var()(1) == 1.0f);
  CHECK(bn.num_batches_tracked() == 1);
  const auto dx = bn.backward(x, x);
  CHECK(dx.size() == 0);
  CHECK(bn.weight_grad()(0) == 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Synchronized modules without MPI (tests/mpi_test.cpp runs them on several ranks): a group of
// one, the calls to the communicator, and a failing peer simulated by a communicator.

namespace {
/// A group of one that records its calls and can play a peer whose checks failed (rank 3).
struct ScriptedCommunicator final : batchnorm::Communicator {
  std::vector<std::pair<std::size_t, batchnorm::ReduceOp>> calls;
  bool peer_fails = false;
  int rank() const override { return 0; }
  int size() const override { return 4; }
  void all_reduce(double* data, std::size_t n, batchnorm::ReduceOp op) override {
    calls.emplace_back(n, op);
    if (!peer_fails) return;
    std::vector<double> peer(n, 0.0);  // the peer's buffer: failed, no samples, zero sums
    peer[0] = 1, peer[1] = 3;
    batchnorm::combine(data, peer.data(), n, op);  // rank 0's buffer first
    std::copy(peer.begin(), peer.end(), data);
  }
};
}  // namespace

TEMPLATE_TEST_CASE("a synchronized module whose peers hold no samples equals the local module", "[module][sync]", float,
                   double) {
  using T = TestType;
  // A group of one (the local path), and a group of four whose other ranks hold nothing (the
  // synchronized path: separate statistics and normalize passes, split backward).
  batchnorm::SingleProcess single;
  ScriptedCommunicator empty_peers;
  for (batchnorm::Communicator* comm : {static_cast<batchnorm::Communicator*>(&single), static_cast<batchnorm::Communicator*>(&empty_peers)})
  for (const bool last : {false, true}) {
    INFO("group of " << comm->size() << (last ? ", channels last" : ""));
    const auto opts = BatchNormOptions(5).channels_last(last);
    BatchNorm2d<T> local(opts), sync(opts, *comm);
    CHECK(local.communicator() == nullptr);
    CHECK(sync.communicator() == comm);
    for (std::uint32_t step = 0; step < 2; ++step) {
      const auto x = random_tensor<T, 4>({3, last ? 4 : 5, 6, last ? 5 : 4}, 2.0, 3.0, 300 + step);
      const auto dy = random_tensor<T, 4>({3, last ? 4 : 5, 6, last ? 5 : 4}, 0.0, 1.0, 310 + step);
      CHECK(worst(sync.forward(x), local.forward(x)) == 0);
      CHECK(worst(sync.backward(x, dy), local.backward(x, dy)) == 0);
      for (Eigen::Index c = 0; c < 5; ++c) {
        CHECK(sync.weight_grad()(c) == local.weight_grad()(c));
        CHECK(sync.bias_grad()(c) == local.bias_grad()(c));
        CHECK(sync.running_mean()(c) == local.running_mean()(c));
        CHECK(sync.running_var()(c) == local.running_var()(c));
      }
    }
  }
}

TEST_CASE("a synchronized module makes one all_reduce per training call, none in eval", "[module][sync]") {
  ScriptedCommunicator comm;
  BatchNorm2d<double> bn(BatchNormOptions(7), comm);
  const auto x = random_tensor<double, 4>({2, 7, 3, 3}, 0.0, 1.0, 320);
  (void)bn.forward(x);
  (void)bn.backward(x, x);
  bn.eval();
  (void)bn.forward(x);
  (void)bn.backward(x, x);
  REQUIRE(comm.calls.size() == 2);
  CHECK(comm.calls[0].first == batchnorm::kStatusSize + 3 * 7);
  CHECK(comm.calls[0].second == batchnorm::ReduceOp::moments);
  CHECK(comm.calls[1].first == batchnorm::kStatusSize + 2 * 7);
  CHECK(comm.calls[1].second == batchnorm::ReduceOp::sum);
}

TEST_CASE("a peer's failed checks: PeerError on this rank, and nothing changed", "[module][sync][errors]") {
  ScriptedCommunicator comm;
  BatchNorm2d<float> bn(BatchNormOptions(3), comm);
  const auto x = random_tensor<float, 4>({2, 3, 4, 4}, 1.0, 2.0, 330);
  const auto dy = random_tensor<float, 4>({2, 3, 4, 4}, 0.0, 1.0, 331);
  const auto y = bn.forward(x);
  const auto dx = bn.backward(x, dy);
  const float rm = bn.running_mean()(1), rv = bn.running_var()(1), dw = bn.weight_grad()(1);
  comm.peer_fails = true;
  Eigen::Tensor<float, 4, Eigen::RowMajor> out = y, x5 = x.constant(5.0f), dy1 = dy.constant(1.0f);
  expect_throw<batchnorm::PeerError>([&] { bn.forward(x5, out); },
                                     "BatchNorm2d::forward: 1 rank(s) failed their checks, first rank 3 (which throws the "
                                     "reason); nothing was changed");
  CHECK(worst(out, y) == 0);
  CHECK(bn.num_batches_tracked() == 1);
  CHECK(bn.running_mean()(1) == rm);
  CHECK(bn.running_var()(1) == rv);
  // backward still refers to the last successful forward
  expect_throw<batchnorm::PeerError>([&] { (void)bn.backward(x, dy1); }, "BatchNorm2d::backward: 1 rank(s)");
  CHECK(bn.weight_grad()(1) == dw);
  comm.peer_fails = false;
  CHECK(worst(bn.backward(x, dy), dx) == 0);
  try {
    comm.peer_fails = true;
    (void)bn.forward(x);
  } catch (const batchnorm::PeerError& e) {
    CHECK(e.failed_ranks() == 1);
    CHECK(e.first_rank() == 3);
  }
}

TEST_CASE("combine merges (count, mean, M2) as Chan et al. and adds sums", "[module][sync]") {
  // Ranks a = {1, 2, 3} and b = {10, 20}: n 5, mean 7.2, M2 = 6.2^2 + 5.2^2 + 4.2^2 + 2.8^2 + 12.8^2 = 254.8.
  std::vector<double> a{0, -1, 3, 2, 2}, b{1, 2, 2, 15, 50};
  batchnorm::combine(a.data(), b.data(), b.size(), batchnorm::ReduceOp::moments);
  CHECK(b[0] == 1);  // one failed rank, rank 2
  CHECK(b[1] == 2);
  CHECK(b[2] == 5);
  CHECK(b[3] == Approx(7.2).epsilon(1e-15));
  CHECK(b[4] == Approx(254.8).epsilon(1e-15));
  // An empty side is neutral.
  std::vector<double> e{0, -1, 0, 0, 0}, c{0, -1, 3, 2, 2};
  batchnorm::combine(e.data(), c.data(), c.size(), batchnorm::ReduceOp::moments);
  CHECK(c == std::vector<double>{0, -1, 3, 2, 2});
  std::vector<double> s1{1, 0, 1.5, -2}, s2{1, 1, 2.5, 4};
  batchnorm::combine(s1.data(), s2.data(), s2.size(), batchnorm::ReduceOp::sum);
  CHECK(s2 == std::vector<double>{2, 0, 4, 2});
  // All-gathered buffers of ranks {1, 2, 3}, {} (failed: rank 1), {10, 20} folded in rank order:
  // the moments of all five values and the failure.
  const std::vector<double> gathered{0, -1, 3, 2, 2, /**/ 1, 1, 0, 0, 0, /**/ 0, -1, 2, 15, 50};
  std::vector<double> out(5);
  batchnorm::fold_gathered(gathered.data(), 3, 5, batchnorm::ReduceOp::moments, out.data());
  CHECK(out[0] == 1);
  CHECK(out[1] == 1);
  CHECK(out[2] == 5);
  CHECK(out[3] == Approx(7.2).epsilon(1e-15));
  CHECK(out[4] == Approx(254.8).epsilon(1e-15));
}

// ---------------------------------------------------------------------------------------------
// No allocation in forward(x, y) and backward(x, dy, dx): a counting global operator new.
// Not in sanitizer builds: AddressSanitizer replaces operator new itself and would report our
// malloc/free pair as a mismatch with its own. Valgrind replaces it too, unless run with
// --soname-synonyms=somalloc=nouserintercepts (as .ci/run's valgrind leg is); if it does, the
// test sees that its counter misses a known allocation and says so with a WARN, unchecked.
// no_malloc_test.cpp checks the same calls with Eigen's EIGEN_RUNTIME_NO_MALLOC, which works
// under valgrind as well.
#if !defined(__SANITIZE_ADDRESS__)

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define BATCHNORM_TEST_RUNNING_ON_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define BATCHNORM_TEST_RUNNING_ON_VALGRIND() false
#endif

namespace {
std::size_t g_allocations = 0;
bool g_counting = false;
}  // namespace

// GCC's -Wmismatched-new-delete cannot see that this new and this delete are a pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
// Never inlined: valgrind redirects calls to these functions (to its own operator new and
// delete, unless told not to); an inlined delete calling free() directly on a block from
// valgrind's operator new is a "Mismatched free() / delete" error.
#if defined(__GNUC__)
#define BATCHNORM_TEST_NOINLINE __attribute__((noinline))
#else
#define BATCHNORM_TEST_NOINLINE
#endif
BATCHNORM_TEST_NOINLINE void* operator new(std::size_t size) {
  if (g_counting) ++g_allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
BATCHNORM_TEST_NOINLINE void operator delete(void* p) noexcept { std::free(p); }
BATCHNORM_TEST_NOINLINE void operator delete(void* p, std::size_t) noexcept { std::free(p); }
// The nothrow pair too (Catch2 uses it): libstdc++'s would be valgrind's, freed by ours above.
BATCHNORM_TEST_NOINLINE void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  if (g_counting) ++g_allocations;
  return std::malloc(size == 0 ? 1 : size);
}
BATCHNORM_TEST_NOINLINE void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {
template <class F>
std::size_t allocations_in(F f) {
  g_allocations = 0;
  g_counting = true;
  f();
  g_counting = false;
  return g_allocations;
}
}  // namespace

TEMPLATE_TEST_CASE("forward(x, y) and backward(x, dy, dx) allocate nothing", "[module][alloc]", float, double) {
  using T = TestType;
  // The counter does count: building a module allocates its O(C) state.
  const std::size_t control = allocations_in([] { BatchNorm2d<T> d(BatchNormOptions(16)); });
  if (control == 0 && BATCHNORM_TEST_RUNNING_ON_VALGRIND()) {
    WARN("NOT CHECKED: valgrind replaced the counting operator new (run valgrind with "
         "--soname-synonyms=somalloc=nouserintercepts to count); no_malloc_test.cpp still checks Eigen's allocations");
    return;
  }
  REQUIRE(control >= 1);
  // Shapes of both traversal paths, large enough to use threads when built with OpenMP.
  const auto x2 = random_tensor<T, 4>({4, 16, 40, 40}, 1.0, 2.0, 101);   // long rows
  const auto x3 = random_tensor<T, 4>({64, 40, 6, 6}, 1.0, 2.0, 102);    // short rows
  const auto xl = random_tensor<T, 4>({16, 20, 20, 48}, 1.0, 2.0, 103);  // channels last
  auto run = [](auto& bn, const auto& x) {
    auto y = x;
    auto dx = x;
    // The module works on TensorMaps too; these wrap memory owned above.
    Eigen::TensorMap<Eigen::Tensor<T, 4, Eigen::RowMajor>> ym(y.data(), y.dimensions()), dxm(dx.data(), dx.dimensions());
    CHECK(allocations_in([&] { bn.forward(x, ym); }) == 0);
    CHECK(allocations_in([&] { bn.backward(x, x, dxm); }) == 0);
    CHECK(allocations_in([&] { bn.forward(x, y); }) == 0);
    CHECK(allocations_in([&] { bn.backward(x, x, dx); }) == 0);
    bn.eval();
    CHECK(allocations_in([&] { bn.forward(x, y); }) == 0);
    CHECK(allocations_in([&] { bn.backward(x, x, dx); }) == 0);
  };
  BatchNorm2d<T> a(BatchNormOptions(16)), b(BatchNormOptions(40)), c(BatchNormOptions(48).channels_last(true));
  run(a, x2);
  run(b, x3);
  run(c, xl);
  // The synchronized module too (its all_reduce buffer is allocated when it is built).
  batchnorm::SingleProcess single;
  BatchNorm2d<T> s(BatchNormOptions(16), single);
  run(s, x2);
  // The fused activation: ReLU (its backward recomputes the decision into dx) and add-ReLU.
  BatchNorm2d<T> r(BatchNormOptions(48).channels_last(true).activation(batchnorm::Activation::relu));
  run(r, xl);
  BatchNorm2d<T> ar(BatchNormOptions(16));
  auto y = x2, dx = x2, dr = x2;
  for (const bool training : {true, false}) {
    ar.train(training);
    CHECK(allocations_in([&] { ar.forward_add_relu(x2, x2, y); }) == 0);
    CHECK(allocations_in([&] { ar.backward_add_relu(x2, x2, x2, dx, dr); }) == 0);
  }
}
#endif  // !__SANITIZE_ADDRESS__
