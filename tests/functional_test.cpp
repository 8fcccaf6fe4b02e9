// batchnorm::functional: hand-checkable values, agreement with a double-double reference on both
// traversal paths and SIMD tails, numerical stress, properties, gradient checks, merging
// micro-batch statistics, and argument checks.
#include <catch2/catch.hpp>

#include <batchnorm/functional.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <vector>

#include "support/expect_throw.hpp"
#include "support/compare.hpp"
#include "support/naive.hpp"
#include "support/plans.hpp"
#include "support/tensors.hpp"
#include "support/tolerance.hpp"

using namespace batchnorm_test;
namespace F = batchnorm::functional;
using F::View;

namespace {

template <class T>
using Acc = F::accum_t<T>;

/// Data of a view, placed `misalign` elements past an aligned buffer start.
template <class T>
struct Buffer {
  std::vector<T> storage;
  T* data;
  // data: misalign values past a 64-byte boundary (vector and cache-line aligned for 0).
  Buffer(std::size_t n, std::size_t misalign) : storage(n + misalign + 64 / sizeof(T)), data(nullptr) {
    void* p = storage.data();
    std::size_t space = storage.size() * sizeof(T);
    data = static_cast<T*>(std::align(64, sizeof(T), p, space)) + misalign;
  }
  std::vector<T> values(std::size_t n) const { return std::vector<T>(data, data + n); }
};

}  // namespace

TEMPLATE_TEST_CASE("batch_stats of {4, 7, 13, 16}: mean 10, biased var 22.5", "[functional][stats]", float, double) {
  const std::vector<TestType> x{4, 7, 13, 16};
  // The same four values as one row (row path) and as four rows of one value (lane path).
  for (const View v : {View{1, 1, 4}, View{4, 1, 1}, View{2, 1, 2}}) {
    Acc<TestType> mean = -1, var = -1;
    F::batch_stats(x.data(), v, &mean, &var);
    CHECK(mean == 10.0);
    CHECK(var == 22.5);
    std::vector<TestType> y(4);
    Acc<TestType> save_mean = 0, save_invstd = 0;
    const TestType w = 2, b = 0.5;
    F::forward_training(x.data(), v, &w, &b, static_cast<TestType*>(nullptr), static_cast<TestType*>(nullptr), 0.0,
                        1e-5, y.data(), &save_mean, &save_invstd);
    CHECK(save_invstd == Approx(1 / std::sqrt(22.5 + 1e-5)).epsilon(1e-15));
    for (std::size_t k = 0; k < 4; ++k)
      CHECK(y[k] == Approx(2 * (x[k] - 10) / std::sqrt(22.5 + 1e-5) + 0.5).epsilon(std::is_same_v<TestType, float> ? 1e-6 : 1e-14));
  }
}

TEMPLATE_TEST_CASE("running statistics update, hand-checked", "[functional][running]", float, double) {
  // Batch {4, 7, 13, 16}: mean 10, biased var 22.5, unbiased var 30.
  const Acc<TestType> mean = 10, var = 22.5;
  TestType rm = 1, rv = 2;
  F::update_running_stats<TestType>(1, &mean, &var, 4, 0.25, &rm, &rv);
  CHECK(rm == Approx(0.75 * 1 + 0.25 * 10));
  CHECK(rv == Approx(0.75 * 2 + 0.25 * 30));
  CHECK(F::momentum_factor(0.1, 7) == 0.1);
  CHECK(F::momentum_factor(std::nullopt, 1) == 1.0);  // first batch replaces
  CHECK(F::momentum_factor(std::nullopt, 4) == 0.25);
  // count 0 (empty batch) changes nothing; count 1 has no unbiased variance.
  F::update_running_stats<TestType>(1, &mean, &var, 0, 0.5, &rm, &rv);
  CHECK(rm == Approx(3.25));
  expect_throw<std::invalid_argument>([&] { F::update_running_stats<TestType>(1, &mean, &var, 1, 0.5, &rm, &rv); },
                                      "more than 1 value per channel");
  expect_throw<std::invalid_argument>([&] { F::update_running_stats<TestType>(1, &mean, &var, 4, 1.5, &rm, &rv); },
                                      "factor must be in [0, 1], got 1.5");
  expect_throw<std::invalid_argument>([] { F::momentum_factor(-0.5, 1); }, "momentum must be in [0, 1], got -0.5");
  expect_throw<std::invalid_argument>([] { F::momentum_factor(std::nullopt, 0); }, "num_batches_tracked must be at least 1");
  CHECK(rm == Approx(3.25));
  CHECK(rv == Approx(9));
}

// Shapes that cover both traversal paths (row: inner >= 32 or outer == 1; lane: short rows),
// SIMD tails around the 16 partial sums / vector widths, lane tiles (256 lanes) split across
// channels, and misaligned base pointers.
TEMPLATE_TEST_CASE("forward and backward agree with a double-double reference on every path", "[functional][naive]", float,
                   double) {
  using T = TestType;
  const std::vector<View> views{
      {1, 1, 1},   {2, 1, 1},    {3, 5, 1},     {17, 3, 1},     {65, 300, 1},  {33, 17, 2},  {40, 9, 15},
      {5, 4, 16},  {7, 3, 17},   {2, 2, 31},    {3, 2, 32},     {2, 3, 33},    {2, 2, 35},   {1, 3, 1000},
      {3, 2, 1000}, {1, 2, 4099}, {300, 1, 1},  {2, 600, 1},    {129, 20, 3},  {4, 70, 4},
      // Fewer than 4 channels and 2^16 values or more: the batch is split into segments.
      {300, 2, 300}, {70000, 1, 1}, {16, 3, 5000}};
  std::uint32_t seed = 1;
  for (const View& v : views) {
    for (const std::size_t misalign : {0u, 1u}) {
      INFO("view (outer " << v.outer << ", C " << v.channels << ", inner " << v.inner << "), misalign " << misalign);
      const auto n = static_cast<std::size_t>(v.size());
      const auto C = static_cast<std::size_t>(v.channels);
      Buffer<T> x(n, misalign), dy(n, misalign + 1), y(n, misalign), dx(n, misalign);
      const auto xv = normal_values<T>(n, 3.0, 2.0, seed++);
      const auto dyv = normal_values<T>(n, 0.5, 1.0, seed++);
      std::copy(xv.begin(), xv.end(), x.data);
      std::copy(dyv.begin(), dyv.end(), dy.data);
      const auto w = normal_values<T>(C, 1.0, 0.3, seed++);
      const auto b = normal_values<T>(C, 0.0, 0.3, seed++);
      const double eps = 1e-3;
      const double tol = naive_tol<T>();

      if (v.count() > 1) {
        std::vector<Acc<T>> mean(C), invstd(C);
        std::vector<T> dw(C), db(C);
        F::forward_training(x.data, v, w.data(), b.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, eps,
                            y.data, mean.data(), invstd.data());
        F::backward_training(x.data, dy.data, v, mean.data(), invstd.data(), w.data(), dx.data, dw.data(), db.data());
        const auto ref = naive_batch_norm(xv, dyv, v, true, w, b, eps);
        CHECK(worst_rel_err(mean, ref.mean) <= tol);
        CHECK(worst_rel_err(y.values(n), ref.y) <= tol);
        CHECK(worst_rel_err(dx.values(n), ref.dx) <= tol);
        CHECK(worst_rel_err(dw, ref.dweight) <= tol);
        CHECK(worst_rel_err(db, ref.dbias) <= tol);
        std::vector<Acc<T>> var(C);
        F::batch_stats(x.data, v, mean.data(), var.data());
        CHECK(worst_rel_err(var, ref.var) <= tol);
      }
      // Inference with given running statistics.
      const auto rm = normal_values<T>(C, 3.0, 1.0, seed++);
      auto rv = normal_values<T>(C, 4.0, 1.0, seed++);
      for (auto& e : rv) e = std::abs(e) + T(0.5);
      std::vector<Acc<T>> mean(C), invstd(C);
      std::vector<T> dw(C), db(C);
      F::forward_inference(x.data, v, rm.data(), rv.data(), w.data(), b.data(), eps, y.data);
      F::inference_stats(v.channels, rm.data(), rv.data(), eps, mean.data(), invstd.data());
      F::backward_inference(x.data, dy.data, v, mean.data(), invstd.data(), w.data(), dx.data, dw.data(), db.data());
      const auto ref = naive_batch_norm(xv, dyv, v, false, w, b, eps, rm, rv);
      CHECK(worst_rel_err(y.values(n), ref.y) <= tol);
      CHECK(worst_rel_err(dx.values(n), ref.dx) <= tol);
      CHECK(worst_rel_err(dw, ref.dweight) <= tol);
      CHECK(worst_rel_err(db, ref.dbias) <= tol);
    }
  }
}

TEMPLATE_TEST_CASE("outputs large enough for non-temporal stores: aligned, misaligned, in place", "[functional][naive]",
                   float, double) {
  using T = TestType;
  // Each view holds at least 2 MiB of floats, and outputs stream from 1 MiB a thread here (the
  // CPU's own threshold may be higher; StreamFrom pins it) on at most two threads: the row path,
  // short channels of the row path (ColMajor (N, C): misaligned, they keep plain stores;
  // aligned, they stream), wide rows whose rows are not a whole number of vectors (a vector
  // straddles two channels, and two rows: a block of whole rows is one run), the lane path with
  // rows of a partial vector, its narrow tiles (rows of a few whole vectors: constants and sums
  // in registers), and its wide tiles (gradient sums row by row, with a partial last vector for
  // {5000, 70, 8}).
  const StreamFrom stream(1 << 20);
  const ThreadsAtMost threads(2);  // streaming is decided per thread: more could take it below
  for (const View v : {View{40, 8, 9000}, View{1, 2048, 256}, View{150, 90, 196}, View{9000, 9, 33},
                       View{45000, 60, 1}, View{85000, 32, 1}, View{11000, 256, 1}, View{5000, 70, 8}}) {
    // Inputs and reference once per view (they do not depend on the placement): the reference
    // is the slow part, under valgrind especially.
    const auto n = static_cast<std::size_t>(v.size());
    const auto C = static_cast<std::size_t>(v.channels);
    const auto xv = normal_values<T>(n, -2.0, 3.0, 301);
    const auto dyv = normal_values<T>(n, 0.5, 1.0, 302);
    const auto w = normal_values<T>(C, 1.0, 0.3, 303);
    const auto b = normal_values<T>(C, 0.0, 0.3, 304);
    const auto ref = naive_batch_norm(xv, dyv, v, true, w, b, 1e-3);
    for (const std::size_t misalign : {0u, 3u}) {
      for (const bool in_place : {false, true}) {
        INFO("view (outer " << v.outer << ", C " << v.channels << ", inner " << v.inner << "), misalign " << misalign
                            << (in_place ? ", in place" : ""));
        Buffer<T> x(n, misalign), dy(n, misalign + 1), y(n, misalign), dx(n, misalign + 1);
        std::copy(xv.begin(), xv.end(), x.data);
        std::copy(dyv.begin(), dyv.end(), dy.data);
        std::vector<Acc<T>> mean(C), invstd(C);
        std::vector<T> dw(C), db(C);
        T* const yp = in_place ? x.data : y.data;
        T* const dxp = in_place ? dy.data : dx.data;
        const PlanLog plans;
        F::forward_training(x.data, v, w.data(), b.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, 1e-3,
                            yp, mean.data(), invstd.data());
        CHECK(worst_rel_err(std::vector<T>(yp, yp + n), ref.y) <= naive_tol<T>());
        CHECK(PlanLog::streamed() >= 1);  // the forward streamed
        PlanLog::log().clear();
        // backward reads the input of the forward: in place, x now holds y, so give it a copy.
        const std::vector<T> x_in(xv);
        F::backward_training(x_in.data(), dy.data, v, mean.data(), invstd.data(), w.data(), dxp, dw.data(), db.data());
        CHECK(worst_rel_err(std::vector<T>(dxp, dxp + n), ref.dx) <= naive_tol<T>());
        CHECK(worst_rel_err(db, ref.dbias) <= naive_tol<T>());
        CHECK(PlanLog::streamed() >= 1);  // and so did the backward
        // dweight is not checked here: the stores under test do not touch it, and with 10^5
        // values a channel its float products dy * (x - mean) leave an error of about
        // sqrt(m) * 2^-24 * rms(dy * xhat), more than naive_tol * (1 + |dweight|) when dweight
        // happens to be small (the other tests check it on smaller channels).
      }
    }
  }
}

TEMPLATE_TEST_CASE("ordered data: a step, a trend and a late outlier give exact statistics", "[functional][stress]", float,
                   double) {
  using T = TestType;
  // Channel 0 steps from about 0 to about 1e3 halfway, channel 1 rises linearly, channel 2 is
  // constant but for its last value: later chunks have means far from the mean of the values
  // before them (the kernels' one-pass chunk sums about that mean decline such chunks and
  // two-pass them), and the statistics must still be those of the double-double reference.
  for (const View v : {View{4, 3, 6000}, View{64, 3, 40}, View{3000, 3, 1}, View{1, 3, 9000}}) {
    INFO("view (outer " << v.outer << ", C " << v.channels << ", inner " << v.inner << ")");
    const auto n = static_cast<std::size_t>(v.size());
    const Index m = v.count();
    const auto noise = normal_values<T>(n, 0.0, 1.0, 401);
    std::vector<T> x(n);
    for (Index o = 0; o < v.outer; ++o)
      for (Index c = 0; c < v.channels; ++c)
        for (Index i = 0; i < v.inner; ++i) {
          const Index j = o * v.inner + i;  // position within the channel
          const auto at = static_cast<std::size_t>((o * v.channels + c) * v.inner + i);
          const double e = static_cast<double>(noise[at]);
          x[at] = static_cast<T>(c == 0   ? (2 * j >= m ? 1e3 : 0.0) + 1e-2 * e
                                 : c == 1 ? 1e-3 * static_cast<double>(j) + 1e-4 * e
                                          : (j == m - 1 ? 50.0 : 3.0));
        }
    std::vector<Acc<T>> mean(3), var(3);
    F::batch_stats(x.data(), v, mean.data(), var.data());
    const std::vector<T> w{1, 1, 1}, b{0, 0, 0};
    const auto ref = naive_batch_norm(x, std::vector<T>(n, T(0)), v, true, w, b, 1e-5);
    CHECK(worst_rel_err(mean, ref.mean) <= naive_tol<T>());
    for (std::size_t c = 0; c < 3; ++c) {
      INFO("channel " << c << ": var " << var[c] << ", reference " << ref.var[c]);
      CHECK(std::abs(static_cast<double>(var[c]) - static_cast<double>(ref.var[c])) <=
            naive_tol<T>() * std::abs(static_cast<double>(ref.var[c])));
    }
  }
}

TEMPLATE_TEST_CASE("large mean, small spread: 1e4 + N(0, 0.1)", "[functional][stress]", float, double) {
  using T = TestType;
  for (const View v : {View{8, 3, 400}, View{3200, 3, 1}}) {
    const auto n = static_cast<std::size_t>(v.size());
    const auto x = normal_values<T>(n, 1e4, 0.1, 7);
    const auto dy = normal_values<T>(n, 0.0, 1.0, 8);
    std::vector<T> y(n), dx(n), dw(3), db(3);
    const std::vector<T> w{T(1.5), T(0.5), T(1)}, b{T(0.1), T(-0.2), T(0)};
    std::vector<Acc<T>> mean(3), invstd(3), var(3);
    F::batch_stats(x.data(), v, mean.data(), var.data());
    F::forward_training(x.data(), v, w.data(), b.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, 1e-5,
                        y.data(), mean.data(), invstd.data());
    F::backward_training(x.data(), dy.data(), v, mean.data(), invstd.data(), w.data(), dx.data(), dw.data(), db.data());
    const auto ref = naive_batch_norm(x, dy, v, true, w, b, 1e-5);
    // float: accumulated in double, so the full float bar. double: |mean|/std = 1e5 makes the
    // double rounding of the mean alone (ulp(1e4)/2 = 1e-11 std) the limit; the library's double
    // bar is the reference cases' 1e-10.
    const double tol = std::is_same_v<T, float> ? kFloatTrainTol : kDoubleTol;
    for (std::size_t c = 0; c < 3; ++c)
      CHECK(std::abs(var[c] - static_cast<double>(ref.var[c])) <= tol * static_cast<double>(ref.var[c]));
    CHECK(worst_rel_err(y, ref.y) <= tol);
    CHECK(worst_rel_err(dx, ref.dx) <= tol);
    CHECK(worst_rel_err(dw, ref.dweight) <= tol);
    CHECK(worst_rel_err(db, ref.dbias) <= tol);
  }
}

TEMPLATE_TEST_CASE("a constant channel gives y == bias exactly", "[functional][stress]", float, double) {
  using T = TestType;
  for (const View v : {View{4, 2, 100}, View{50, 2, 1}, View{3, 2, 5000}}) {
    std::vector<T> x(static_cast<std::size_t>(v.size()), T(0.1));
    std::vector<T> y(x.size());
    const std::vector<T> w{2, 3}, b{T(0.7), T(-0.3)};
    std::vector<Acc<T>> mean(2), invstd(2);
    F::forward_training(x.data(), v, w.data(), b.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, 1e-5,
                        y.data(), mean.data(), invstd.data());
    CHECK(mean[0] == static_cast<Acc<T>>(T(0.1)));
    for (Index o = 0; o < v.outer; ++o)
      for (Index c = 0; c < 2; ++c)
        for (Index i = 0; i < v.inner; ++i) REQUIRE(y[at(v, o, c, i)] == b[static_cast<std::size_t>(c)]);
  }
}

TEMPLATE_TEST_CASE("properties: output moments, shift invariance, sum of dx", "[functional][properties]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-11;
  for (const View v : {View{6, 4, 50}, View{300, 4, 1}, View{20, 4, 7}}) {
    const auto n = static_cast<std::size_t>(v.size());
    const auto x = normal_values<T>(n, -2.0, 3.0, 11);
    const auto dy = normal_values<T>(n, 1.0, 1.0, 12);
    const std::vector<T> w{T(1.5), T(0.5), T(-1), T(2)}, b{T(0.25), T(-1), T(0), T(3)};
    const double eps = 1e-5;
    std::vector<T> y(n), y_shifted(n), dx(n), dw(4), db(4);
    std::vector<Acc<T>> mean(4), invstd(4), var(4);
    F::batch_stats(x.data(), v, mean.data(), var.data());
    F::forward_training(x.data(), v, w.data(), b.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, eps,
                        y.data(), mean.data(), invstd.data());
    F::backward_training(x.data(), dy.data(), v, mean.data(), invstd.data(), w.data(), dx.data(), dw.data(), db.data());
    // Per channel: mean(y) = bias, var(y) = weight^2 * var / (var + eps), sum dx = 0.
    std::vector<Acc<T>> ymean(4), yvar(4), dxmean(4), dxvar(4);
    F::batch_stats(y.data(), v, ymean.data(), yvar.data());
    F::batch_stats(dx.data(), v, dxmean.data(), dxvar.data());
    for (std::size_t c = 0; c < 4; ++c) {
      CHECK(std::abs(ymean[c] - b[c]) <= tol * (1 + std::abs(w[c])));
      const double expected_var = double(w[c]) * double(w[c]) * var[c] / (var[c] + eps);
      CHECK(std::abs(yvar[c] - expected_var) <= tol * (1 + expected_var));
      CHECK(std::abs(dxmean[c]) <= tol * std::sqrt(dxvar[c]));
    }
    // Shift invariance: x + 100 normalizes to the same y (training mode).
    std::vector<T> xs(n);
    for (std::size_t k = 0; k < n; ++k) xs[k] = x[k] + T(100);
    F::forward_training(xs.data(), v, w.data(), b.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, eps,
                        y_shifted.data(), mean.data(), invstd.data());
    // Tolerance: x + 100 itself rounds by ulp(100)/2, i.e. 4e-6/3 std for float.
    const double shift_tol = std::is_same_v<T, float> ? 1e-5 : 1e-11;
    CHECK(worst_rel_err(y_shifted, y) <= shift_tol);
  }
}

namespace {

/// loss = sum y * g; its gradient by central differences in double on the isolated functional
/// forward, against backward_training / backward_inference.
struct GradCheck {
  View v{3, 2, 5};
  bool training = true, affine = true;

  double loss(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
              const std::vector<double>& g) const {
    std::vector<double> y(x.size());
    const std::vector<double> rm{0.3, -0.2}, rv{1.7, 0.6};
    const double* wp = affine ? w.data() : nullptr;
    const double* bp = affine ? b.data() : nullptr;
    if (training) {
      std::vector<double> mean(2), invstd(2);
      F::forward_training(x.data(), v, wp, bp, static_cast<double*>(nullptr), static_cast<double*>(nullptr), 0.0, 1e-3,
                          y.data(), mean.data(), invstd.data());
    } else {
      F::forward_inference(x.data(), v, rm.data(), rv.data(), wp, bp, 1e-3, y.data());
    }
    return std::inner_product(y.begin(), y.end(), g.begin(), 0.0);
  }

  void run() const {
    const auto n = static_cast<std::size_t>(v.size());
    auto x = normal_values<double>(n, 0.5, 1.5, 21);
    const auto g = normal_values<double>(n, 0.0, 1.0, 22);
    auto w = normal_values<double>(2, 1.0, 0.5, 23);
    auto b = normal_values<double>(2, 0.0, 0.5, 24);
    std::vector<double> dx(n), dw(2), db(2), mean(2), invstd(2), y(n);
    const double* wp = affine ? w.data() : nullptr;
    if (training) {
      F::forward_training(x.data(), v, wp, affine ? b.data() : nullptr, static_cast<double*>(nullptr),
                          static_cast<double*>(nullptr), 0.0, 1e-3, y.data(), mean.data(), invstd.data());
      F::backward_training(x.data(), g.data(), v, mean.data(), invstd.data(), wp, dx.data(), dw.data(), db.data());
    } else {
      const std::vector<double> rm{0.3, -0.2}, rv{1.7, 0.6};
      F::inference_stats(2, rm.data(), rv.data(), 1e-3, mean.data(), invstd.data());
      F::backward_inference(x.data(), g.data(), v, mean.data(), invstd.data(), wp, dx.data(), dw.data(), db.data());
    }
    const double h = 1e-5;
    auto numeric = [&](std::vector<double>& p, std::size_t k) {
      const double keep = p[k];
      p[k] = keep + h;
      const double up = loss(x, w, b, g);
      p[k] = keep - h;
      const double down = loss(x, w, b, g);
      p[k] = keep;
      return (up - down) / (2 * h);
    };
    for (std::size_t k = 0; k < n; ++k) CHECK(rel_err(dx[k], numeric(x, k)) <= kGradCheckTol);
    for (std::size_t c = 0; c < 2; ++c) {
      // dweight/dbias are sums of dy*xhat and dy whether or not affine is on.
      if (affine) {
        CHECK(rel_err(dw[c], numeric(w, c)) <= kGradCheckTol);
        CHECK(rel_err(db[c], numeric(b, c)) <= kGradCheckTol);
      }
    }
  }
};

}  // namespace

TEST_CASE("gradient check by central differences (double)", "[functional][gradcheck]") {
  for (const bool training : {true, false})
    for (const bool affine : {true, false})
      for (const View v : {View{3, 2, 5}, View{7, 2, 1}}) {
        INFO((training ? "training" : "inference") << (affine ? ", affine" : ", no affine") << ", inner " << v.inner);
        GradCheck{v, training, affine}.run();
      }
}

TEMPLATE_TEST_CASE("merged micro-batch statistics equal those of the whole batch", "[functional][merge]", float, double) {
  using T = TestType;
  // A batch of 10 (N, C=3, L=8) split into micro-batches of 4, 0, 1 and 5 samples (RowMajor (N, C, L)).
  const Index C = 3, L = 8;
  const auto x = normal_values<T>(static_cast<std::size_t>(10 * C * L), 1e3, 0.5, 31);
  std::vector<Acc<T>> mean_all(3), m2_all(3), mean(3, 0), m2(3, 0), mb(3), m2b(3);
  F::batch_moments(x.data(), View{10, C, L}, mean_all.data(), m2_all.data());
  Index count = 0, start = 0;
  for (const Index part : {4, 0, 1, 5}) {
    F::batch_moments(x.data() + start * C * L, View{part, C, L}, mb.data(), m2b.data());
    count = F::merge_moments(C, count, mean.data(), m2.data(), part * L, mb.data(), m2b.data());
    start += part;
  }
  CHECK(count == 10 * L);
  for (std::size_t c = 0; c < 3; ++c) {
    CHECK(mean[c] == Approx(mean_all[c]).epsilon(1e-14));
    CHECK(m2[c] == Approx(m2_all[c]).epsilon(std::is_same_v<T, float> ? kFloatPartialSumTol : 1e-11));
  }
  // Normalizing each micro-batch with the merged statistics equals normalizing the whole batch.
  std::vector<Acc<T>> invstd(3), save_mean(3), save_invstd(3);
  for (std::size_t c = 0; c < 3; ++c) invstd[c] = F::invstd_of(m2[c] / Acc<T>(count), 1e-5);
  std::vector<T> y_parts(x.size()), y_all(x.size());
  F::normalize(x.data(), View{4, C, L}, mean.data(), invstd.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr),
               y_parts.data());
  F::normalize(x.data() + 4 * C * L, View{6, C, L}, mean.data(), invstd.data(), static_cast<T*>(nullptr),
               static_cast<T*>(nullptr), y_parts.data() + 4 * C * L);
  F::forward_training(x.data(), View{10, C, L}, static_cast<T*>(nullptr), static_cast<T*>(nullptr),
                      static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, 1e-5, y_all.data(), save_mean.data(),
                      save_invstd.data());
  CHECK(worst_rel_err(y_parts, y_all) <= naive_tol<T>());
}

TEMPLATE_TEST_CASE("backward_sums then backward_dx equal backward_training; sums of shards add up", "[functional][split]",
                   float, double) {
  using T = TestType;
  // Both paths, a segmented view (few channels) and a lane view.
  for (const View v : {View{6, 3, 40}, View{3000, 2, 30}, View{200, 37, 1}}) {
    INFO("view (outer " << v.outer << ", C " << v.channels << ", inner " << v.inner << ")");
    const auto n = static_cast<std::size_t>(v.size());
    const auto C = static_cast<std::size_t>(v.channels);
    const auto x = normal_values<T>(n, 3.0, 2.0, 61);
    const auto dy = normal_values<T>(n, 0.5, 1.0, 62);
    const auto w = normal_values<T>(C, 1.0, 0.2, 63);
    std::vector<T> y(n), dx(n), dx_split(n), dw(C), db(C);
    std::vector<Acc<T>> mean(C), invstd(C), sum_dy(C), sum_dy_d(C);
    F::forward_training(x.data(), v, w.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr),
                        static_cast<T*>(nullptr), 0.0, 1e-5, y.data(), mean.data(), invstd.data());
    F::backward_training(x.data(), dy.data(), v, mean.data(), invstd.data(), w.data(), dx.data(), dw.data(), db.data());
    F::backward_sums(x.data(), dy.data(), v, mean.data(), sum_dy.data(), sum_dy_d.data());
    F::backward_dx(x.data(), dy.data(), v, mean.data(), invstd.data(), w.data(), v.count(), sum_dy.data(),
                   sum_dy_d.data(), dx_split.data());
    CHECK(dx_split == dx);
    for (std::size_t c = 0; c < C; ++c) {
      CHECK(static_cast<T>(sum_dy[c]) == db[c]);
      CHECK(static_cast<T>(sum_dy_d[c] * invstd[c]) == dw[c]);
    }
    // The batch cut in two (outer-axis halves): the halves' sums add up to the whole's, and dx
    // of each half from the added sums over the whole count is the whole's dx.
    const Index half = v.outer / 2, off = half * v.channels * v.inner;
    std::vector<Acc<T>> s0a(C), s1a(C), s0b(C), s1b(C);
    F::backward_sums(x.data(), dy.data(), View{half, v.channels, v.inner}, mean.data(), s0a.data(), s1a.data());
    F::backward_sums(x.data() + off, dy.data() + off, View{v.outer - half, v.channels, v.inner}, mean.data(), s0b.data(),
                     s1b.data());
    for (std::size_t c = 0; c < C; ++c) {
      s0a[c] += s0b[c], s1a[c] += s1b[c];
      // The float sums run in T for at most kFlush values a lane: a different cut, different partials.
      const double tol = std::is_same_v<T, float> ? kFloatPartialSumTol : 1e-13;
      CHECK(rel_err(s0a[c], sum_dy[c]) <= tol * std::sqrt(static_cast<double>(v.count())));
      CHECK(rel_err(s1a[c], sum_dy_d[c]) <= tol * std::sqrt(static_cast<double>(v.count())));
    }
    std::vector<T> dx_half(n);
    F::backward_dx(x.data() + off, dy.data() + off, View{v.outer - half, v.channels, v.inner}, mean.data(), invstd.data(),
                   w.data(), v.count(), sum_dy.data(), sum_dy_d.data(), dx_half.data() + off);
    CHECK(std::vector<T>(dx_half.begin() + static_cast<std::ptrdiff_t>(off), dx_half.end()) ==
          std::vector<T>(dx.begin() + static_cast<std::ptrdiff_t>(off), dx.end()));
  }
  std::vector<double> s(2), x(4, 1.0), mean(2), invstd(2, 1.0);
  expect_throw<std::invalid_argument>(
      [&] {
        F::backward_dx(x.data(), x.data(), View{2, 2, 1}, mean.data(), invstd.data(), static_cast<double*>(nullptr), 1,
                       s.data(), s.data(), x.data());
      },
      "batchnorm::functional::backward_dx: count must be at least the view's 2 values a channel, got 1");
}

TEMPLATE_TEST_CASE("in place: y may be x, dx may be dy", "[functional]", float, double) {
  using T = TestType;
  const View v{5, 3, 40};
  const auto n = static_cast<std::size_t>(v.size());
  const auto x0 = normal_values<T>(n, 0.0, 1.0, 41);
  const auto dy0 = normal_values<T>(n, 0.0, 1.0, 42);
  std::vector<T> y(n), dx(n), x = x0, dy = dy0;
  std::vector<Acc<T>> mean(3), invstd(3);
  F::forward_training(x0.data(), v, static_cast<T*>(nullptr), static_cast<T*>(nullptr), static_cast<T*>(nullptr),
                      static_cast<T*>(nullptr), 0.0, 1e-5, y.data(), mean.data(), invstd.data());
  F::backward_training(x0.data(), dy0.data(), v, mean.data(), invstd.data(), static_cast<T*>(nullptr), dx.data(),
                       static_cast<T*>(nullptr), static_cast<T*>(nullptr));
  F::backward_training(x0.data(), dy.data(), v, mean.data(), invstd.data(), static_cast<T*>(nullptr), dy.data(),
                       static_cast<T*>(nullptr), static_cast<T*>(nullptr));
  F::forward_training(x.data(), v, static_cast<T*>(nullptr), static_cast<T*>(nullptr), static_cast<T*>(nullptr),
                      static_cast<T*>(nullptr), 0.0, 1e-5, x.data(), mean.data(), invstd.data());
  CHECK(x == y);
  CHECK(dy == dx);
}

TEST_CASE("functional argument checks throw std::invalid_argument and write nothing", "[functional][errors]") {
  std::vector<float> x{1, 2, 3, 4}, y(4, -7.0f);
  std::vector<double> mean(2, -1.0), invstd(2, -1.0);
  const auto train = [&](View v, double eps, double factor, float* rm, float* rv) {
    F::forward_training(x.data(), v, static_cast<float*>(nullptr), static_cast<float*>(nullptr), rm, rv, factor, eps,
                        y.data(), mean.data(), invstd.data());
  };
  expect_throw<std::invalid_argument>([&] { train(View{1, 4, 1}, 1e-5, 0.1, nullptr, nullptr); },
                                      "batchnorm::functional::forward_training: expected more than 1 value per channel "
                                      "when training, got 1");
  expect_throw<std::invalid_argument>([&] { train(View{2, 1, 2}, 0.0, 0.1, nullptr, nullptr); },
                                      "eps must be positive and finite, got 0");
  expect_throw<std::invalid_argument>(
      [&] { train(View{2, 1, 2}, std::numeric_limits<double>::infinity(), 0.1, nullptr, nullptr); }, "eps must be positive");
  expect_throw<std::invalid_argument>([&] { train(View{2, 1, 2}, 1e-5, -0.1, nullptr, nullptr); },
                                      "factor must be in [0, 1], got -0.10000000000000001");
  float rm = 0;
  expect_throw<std::invalid_argument>([&] { train(View{2, 1, 2}, 1e-5, 0.1, &rm, nullptr); },
                                      "running_mean and running_var must both be given");
  expect_throw<std::invalid_argument>([&] { train(View{-1, 1, 2}, 1e-5, 0.1, nullptr, nullptr); },
                                      "view dimensions must be non-negative");
  expect_throw<std::invalid_argument>(
      [&] { F::batch_moments(static_cast<const float*>(nullptr), View{2, 1, 2}, mean.data(), invstd.data()); },
      "x must not be null");
  CHECK(y == std::vector<float>(4, -7.0f));
  CHECK(mean == std::vector<double>(2, -1.0));
}

TEST_CASE("NaN and Inf propagate to their channel only", "[functional]") {
  const View v{4, 2, 3};
  auto x = normal_values<float>(24, 0.0, 1.0, 51);
  x[at(v, 2, 0, 1)] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> y(24);
  std::vector<double> mean(2), invstd(2);
  F::forward_training(x.data(), v, static_cast<float*>(nullptr), static_cast<float*>(nullptr),
                      static_cast<float*>(nullptr), static_cast<float*>(nullptr), 0.0, 1e-5, y.data(), mean.data(),
                      invstd.data());
  for (Index o = 0; o < 4; ++o)
    for (Index i = 0; i < 3; ++i) {
      CHECK(std::isnan(y[at(v, o, 0, i)]));
      CHECK(std::isfinite(y[at(v, o, 1, i)]));
    }
}

#ifdef _OPENMP
#include <omp.h>

TEMPLATE_TEST_CASE("results are bitwise identical for 1 and 2 threads", "[functional][threads]", float, double) {
  using T = TestType;
  // Both traversal paths and a channels-last-like view, large enough to run threaded; lane tiles
  // fewer than the threads (channels split in even shares: {1000, 300, 1}, {1000, 33, 8});
  // views with few channels or rows of at most 256 values, whose batch is split into segments
  // instead ({5000, 70, 1}, {3000, 256, 1}, ...); longer rows of many rows, split into 2 to 8
  // segments by the channels ({3000, 300, 1}: 4; {1024, 2048, 1}: 2, of two lane tiles;
  // {1100, 64, 32}: 8, wide rows).
  for (const View v : {View{8, 6, 4000}, View{300, 37, 20}, View{5000, 70, 1}, View{2, 600, 300}, View{1000, 300, 1},
                       View{3000, 300, 1}, View{1024, 2048, 1}, View{1100, 64, 32}, View{3000, 256, 1},
                       View{1000, 33, 8}, View{300, 2, 300}, View{70000, 1, 1}, View{16, 3, 5000}, View{20000, 32, 1},
                       View{5000, 8, 7}}) {
    INFO("view (outer " << v.outer << ", C " << v.channels << ", inner " << v.inner << ")");
    const auto n = static_cast<std::size_t>(v.size());
    const auto C = static_cast<std::size_t>(v.channels);
    // Every seventh channel steps up by 1e3 halfway through the batch, so that the one-pass
    // statistics about the mean so far are declined there (and taken elsewhere) on every path.
    auto x = normal_values<T>(n, 5.0, 2.0, 201);
    for (Index o = v.outer / 2; o < v.outer; ++o)
      for (Index c = 3; c < v.channels; c += 7)
        for (Index i = 0; i < v.inner; ++i) x[static_cast<std::size_t>((o * v.channels + c) * v.inner + i)] += T(1e3);
    const auto dy = normal_values<T>(n, 0.0, 1.0, 202);
    const auto w = normal_values<T>(C, 1.0, 0.2, 203);
    const auto b = normal_values<T>(C, 0.0, 0.2, 204);
    struct Out {
      std::vector<T> y, dx, dw, db, rm, rv;
      std::vector<Acc<T>> mean, invstd;
      std::vector<T> y_eval;  // inference with the running statistics the training call updated
    };
    const auto run = [&](int threads) {
      omp_set_num_threads(threads);
      Out o{std::vector<T>(n), std::vector<T>(n), std::vector<T>(C), std::vector<T>(C),
            std::vector<T>(C, T(0.5)), std::vector<T>(C, T(2)), std::vector<Acc<T>>(C), std::vector<Acc<T>>(C),
            std::vector<T>(n)};
      F::forward_training(x.data(), v, w.data(), b.data(), o.rm.data(), o.rv.data(), 0.1, 1e-5, o.y.data(), o.mean.data(),
                          o.invstd.data());
      F::backward_training(x.data(), dy.data(), v, o.mean.data(), o.invstd.data(), w.data(), o.dx.data(), o.dw.data(),
                           o.db.data());
      F::forward_inference(x.data(), v, o.rm.data(), o.rv.data(), w.data(), b.data(), 1e-5, o.y_eval.data());
      return o;
    };
    const int before = omp_get_max_threads();
    const Out one = run(1), two = run(2);
    omp_set_num_threads(before);
    CHECK(one.y == two.y);
    CHECK(one.dx == two.dx);
    CHECK(one.dw == two.dw);
    CHECK(one.db == two.db);
    CHECK(one.rm == two.rm);
    CHECK(one.rv == two.rv);
    CHECK(one.mean == two.mean);
    CHECK(one.invstd == two.invstd);
    CHECK(one.y_eval == two.y_eval);
  }
}
#endif
