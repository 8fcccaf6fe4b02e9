// batchnorm/fold.hpp: an eval-mode batch norm folded into the layer before or after it, checked
// against the layer then the batch norm (or the batch norm then the layer), evaluated in double
// from the same weights, on random data with a non-zero layer bias and weights far from 1.
#include <catch2/catch.hpp>

#include <batchnorm/fold.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <tuple>
#include <type_traits>
#include <vector>

#include "support/expect_throw.hpp"
#include "support/tolerance.hpp"

using batchnorm::BatchNormOptions;
using batchnorm_test::fold_tol;

namespace {

/// A batch norm in eval mode with random running statistics, weight and bias (far from 1 and 0).
template <class T, int D>
batchnorm::BatchNorm<T, D> random_bn(Eigen::Index C, std::mt19937& rng, bool affine = true) {
  batchnorm::BatchNorm<T, D> bn(BatchNormOptions(C).affine(affine));
  std::uniform_real_distribution<double> u(-3, 3), pos(0.05, 4);
  for (Eigen::Index c = 0; c < C; ++c) {
    bn.running_mean()(c) = static_cast<T>(u(rng));
    bn.running_var()(c) = static_cast<T>(pos(rng));
    if (affine) bn.weight()(c) = static_cast<T>(u(rng)), bn.bias()(c) = static_cast<T>(u(rng));
  }
  bn.eval();
  return bn;
}

template <class T, int R, int L>
Eigen::Tensor<T, R, L> random_tensor(const Eigen::array<Eigen::Index, R>& dims, std::mt19937& rng, double lo, double hi) {
  Eigen::Tensor<T, R, L> t(dims);
  std::uniform_real_distribution<double> u(lo, hi);
  for (Eigen::Index k = 0; k < t.size(); ++k) t.data()[k] = static_cast<T>(u(rng));
  return t;
}

/// bn(z)_c in double from bn's parameters.
template <class M>
double bn_ref(const M& bn, Eigen::Index c, double z) {
  const double w = bn.options().affine() ? double(bn.weight()(c)) : 1.0, b = bn.options().affine() ? double(bn.bias()(c)) : 0.0;
  return (z - double(bn.running_mean()(c))) / std::sqrt(double(bn.running_var()(c)) + bn.options().eps()) * w + b;
}

/// scale_c and shift_c of bn in double.
template <class M>
double bn_scale(const M& bn, Eigen::Index c) {
  return (bn.options().affine() ? double(bn.weight()(c)) : 1.0) / std::sqrt(double(bn.running_var()(c)) + bn.options().eps());
}

/// Row-major multi-index helpers over spatial dims (1 to 3 of them).
std::int64_t volume(const std::vector<std::int64_t>& d) {
  std::int64_t v = 1;
  for (auto x : d) v *= x;
  return v;
}
std::vector<std::int64_t> unravel(std::int64_t k, const std::vector<std::int64_t>& d) {
  std::vector<std::int64_t> i(d.size());
  for (std::size_t a = d.size(); a-- > 0;) i[a] = k % d[a], k /= d[a];
  return i;
}

/// A convolution (stride, padding, groups) in double, in PyTorch's layouts: x (Cin, S...), weight
/// (O, Cin / groups, K...), returns (O, Sout...) and, per output, the sum of |w * x| + |b| (the
/// magnitude a rounding error is relative to).
struct ConvOut {
  std::vector<double> y, magnitude;
  std::vector<std::int64_t> spatial;
};
template <class W>
ConvOut conv(const std::vector<double>& x, std::int64_t cin, const std::vector<std::int64_t>& s, const W& weight,
             const std::vector<double>& bias, std::int64_t groups, std::int64_t stride, std::int64_t pad) {
  const std::int64_t O = weight.dimension(0), cg = weight.dimension(1);
  std::vector<std::int64_t> k, so;
  for (int a = 2; a < W::NumDimensions; ++a) k.push_back(weight.dimension(static_cast<std::size_t>(a)));
  for (std::size_t a = 0; a < s.size(); ++a) so.push_back((s[a] + 2 * pad - k[a]) / stride + 1);
  ConvOut r{std::vector<double>(static_cast<std::size_t>(O * volume(so))), {}, so};
  r.magnitude.resize(r.y.size());
  const std::int64_t og = O / groups;
  for (std::int64_t o = 0; o < O; ++o)
    for (std::int64_t p = 0; p < volume(so); ++p) {
      const auto po = unravel(p, so);
      double acc = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(o)], mag = std::abs(acc);
      for (std::int64_t ci = 0; ci < cg; ++ci)
        for (std::int64_t q = 0; q < volume(k); ++q) {
          const auto pk = unravel(q, k);
          std::int64_t flat = 0;
          bool inside = true;
          for (std::size_t a = 0; a < s.size(); ++a) {
            const std::int64_t at = po[a] * stride + pk[a] - pad;
            inside = inside && at >= 0 && at < s[a];
            flat = flat * s[a] + at;
          }
          if (!inside) continue;
          const std::int64_t c = (o / og) * cg + ci;
          Eigen::array<Eigen::Index, W::NumDimensions> wi{};
          wi[0] = o, wi[1] = ci;
          for (std::size_t a = 0; a < k.size(); ++a) wi[a + 2] = pk[a];
          const double term = double(weight(wi)) * x[static_cast<std::size_t>(c * volume(s) + flat)];
          acc += term, mag += std::abs(term);
        }
      r.y[static_cast<std::size_t>(o * volume(so) + p)] = acc;
      r.magnitude[static_cast<std::size_t>(o * volume(so) + p)] = mag;
    }
  (void)cin;
  return r;
}

/// A transposed convolution (stride, groups, no padding) in double: x (I, S...), weight
/// (I, O / groups, K...), y (O, (S - 1) * stride + K ...).
template <class W>
ConvOut conv_transpose(const std::vector<double>& x, const std::vector<std::int64_t>& s, const W& weight,
                       const std::vector<double>& bias, std::int64_t groups, std::int64_t stride) {
  const std::int64_t I = weight.dimension(0), og = weight.dimension(1), O = og * groups, ig = I / groups;
  std::vector<std::int64_t> k, so;
  for (int a = 2; a < W::NumDimensions; ++a) k.push_back(weight.dimension(static_cast<std::size_t>(a)));
  for (std::size_t a = 0; a < s.size(); ++a) so.push_back((s[a] - 1) * stride + k[a]);
  ConvOut r{std::vector<double>(static_cast<std::size_t>(O * volume(so)), 0.0), {}, so};
  r.magnitude.assign(r.y.size(), 0.0);
  for (std::int64_t o = 0; o < O; ++o)
    for (std::int64_t p = 0; p < volume(so); ++p) {
      const double b = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(o)];
      r.y[static_cast<std::size_t>(o * volume(so) + p)] = b, r.magnitude[static_cast<std::size_t>(o * volume(so) + p)] = std::abs(b);
    }
  for (std::int64_t i = 0; i < I; ++i)
    for (std::int64_t j = 0; j < og; ++j)
      for (std::int64_t p = 0; p < volume(s); ++p)
        for (std::int64_t q = 0; q < volume(k); ++q) {
          const auto pi = unravel(p, s), pk = unravel(q, k);
          std::int64_t flat = 0;
          for (std::size_t a = 0; a < s.size(); ++a) flat = flat * so[a] + pi[a] * stride + pk[a];
          Eigen::array<Eigen::Index, W::NumDimensions> wi{};
          wi[0] = i, wi[1] = j;
          for (std::size_t a = 0; a < k.size(); ++a) wi[a + 2] = pk[a];
          const std::int64_t o = (i / ig) * og + j;
          const double term = double(weight(wi)) * x[static_cast<std::size_t>(i * volume(s) + p)];
          r.y[static_cast<std::size_t>(o * volume(so) + flat)] += term;
          r.magnitude[static_cast<std::size_t>(o * volume(so) + flat)] += std::abs(term);
        }
  return r;
}

template <class T, int L>
std::vector<double> values(const Eigen::Tensor<T, 1, L>& t) {
  std::vector<double> v(static_cast<std::size_t>(t.size()));
  for (Eigen::Index i = 0; i < t.size(); ++i) v[static_cast<std::size_t>(i)] = double(t(i));
  return v;
}

/// The first (PyTorch) index of the element at flat position k of t: the output channel of a
/// Linear or convolution weight.
template <class T, int R, int L>
Eigen::Index first_index(const Eigen::Tensor<T, R, L>& t, Eigen::Index k) {
  return L == Eigen::RowMajor ? k / (t.size() / t.dimension(0)) : k % t.dimension(0);
}

/// The number of terms of one output's sum: a weight's elements per output, and the bias.
template <class T, int R, int L>
double terms_per_output(const Eigen::Tensor<T, R, L>& w) {
  return static_cast<double>(w.size() / w.dimension(0) + 1);
}

}  // namespace

TEMPLATE_TEST_CASE("fold into a preceding convolution or Linear, with and without bias, groups, 1d to 3d",
                   "[fold]", float, double) {
  using T = TestType;
  std::mt19937 rng(5);
  for (const int rank : {2, 3, 4, 5})
    for (const bool with_bias : {true, false})
      for (const std::int64_t groups : {1, 2}) {
        if (rank == 2 && groups == 2) continue;
        const Eigen::Index O = 6, Cin = 4;
        const bool affine = rank != 3 || with_bias;  // rank 3 without bias: affine off
        std::vector<std::int64_t> s = rank == 2 ? std::vector<std::int64_t>{} : std::vector<std::int64_t>(static_cast<std::size_t>(rank - 2), 5);
        const auto check = [&](const auto& bn, const auto& weight) {
          using Wt = std::decay_t<decltype(weight)>;
          INFO("rank " << rank << ", bias " << with_bias << ", groups " << groups << ", affine " << affine
                       << (static_cast<int>(Wt::Layout) == static_cast<int>(Eigen::RowMajor) ? ", row-major" : ", column-major"));
          Eigen::Tensor<T, 1, Wt::Layout> bias = random_tensor<T, 1, Wt::Layout>({O}, rng, -5, 5);
          const auto folded = batchnorm::fold_into_preceding(bn, weight, with_bias ? &bias : nullptr);
          // The arithmetic in double, each weight rounded once: W' = T(double(W) * scale_o).
          for (Eigen::Index k = 0; k < weight.size(); ++k)
            REQUIRE(folded.weight.data()[k] ==
                    static_cast<T>(static_cast<double>(weight.data()[k]) * bn_scale(bn, first_index(weight, k))));
          std::uniform_real_distribution<double> u(-2, 2);
          std::vector<double> x(static_cast<std::size_t>(Cin * volume(s)));
          for (auto& v : x) v = u(rng);
          const std::vector<double> b0 = with_bias ? values(bias) : std::vector<double>{};
          const ConvOut ref = conv(x, Cin, s, weight, b0, groups, 1, rank == 2 ? 0 : 1);
          const ConvOut got = conv(x, Cin, s, folded.weight, values(folded.bias), groups, 1, rank == 2 ? 0 : 1);
          double worst = 0;
          for (std::size_t i = 0; i < ref.y.size(); ++i) {
            const auto c = static_cast<Eigen::Index>(i / static_cast<std::size_t>(volume(ref.spatial)));
            const double want = bn_ref(bn, c, ref.y[i]);
            const double magnitude = ref.magnitude[i] * std::abs(bn_scale(bn, c)) + std::abs(bn_ref(bn, c, 0.0)) + std::abs(want);
            CHECK(std::abs(got.y[i] - want) <= fold_tol<T>(terms_per_output(weight)) * (1 + magnitude));
            worst = std::max(worst, std::abs(got.y[i] - want) / (1 + std::abs(want)));
          }
          SUCCEED("worst |folded - layer then bn| / (1 + |y|): " << worst);  // reported with -s
        };
        const auto both_layouts = [&](const auto& bn, const auto& dims) {
          check(bn, random_tensor<T, std::tuple_size<std::decay_t<decltype(dims)>>::value, Eigen::RowMajor>(dims, rng, -3, 3));
          check(bn, random_tensor<T, std::tuple_size<std::decay_t<decltype(dims)>>::value, Eigen::ColMajor>(dims, rng, -3, 3));
        };
        if (rank == 2) both_layouts(random_bn<T, 1>(O, rng, affine), Eigen::array<Eigen::Index, 2>{O, Cin});
        if (rank == 3) both_layouts(random_bn<T, 1>(O, rng, affine), Eigen::array<Eigen::Index, 3>{O, Cin / groups, 3});
        if (rank == 4) both_layouts(random_bn<T, 2>(O, rng, affine), Eigen::array<Eigen::Index, 4>{O, Cin / groups, 3, 3});
        if (rank == 5) both_layouts(random_bn<T, 3>(O, rng, affine), Eigen::array<Eigen::Index, 5>{O, Cin / groups, 3, 1, 2});
      }
}

TEST_CASE("fold: a float batch norm into a double layer, and a Linear into a channels-last BatchNorm2d", "[fold]") {
  std::mt19937 rng(11);
  const Eigen::Index O = 5, Cin = 3;
  const auto bn = random_bn<float, 1>(O, rng);
  const auto w = random_tensor<double, 2, Eigen::RowMajor>({O, Cin}, rng, -3, 3);
  const auto folded = batchnorm::fold_into_preceding(bn, w, nullptr);
  std::uniform_real_distribution<double> u(-2, 2);
  std::vector<double> x(static_cast<std::size_t>(Cin));
  for (auto& v : x) v = u(rng);
  const ConvOut ref = conv(x, Cin, {}, w, {}, 1, 1, 0), got = conv(x, Cin, {}, folded.weight, values(folded.bias), 1, 1, 0);
  for (Eigen::Index o = 0; o < O; ++o) {
    const auto i = static_cast<std::size_t>(o);
    const double want = bn_ref(bn, o, ref.y[i]);
    const double magnitude = ref.magnitude[i] * std::abs(bn_scale(bn, o)) + std::abs(bn_ref(bn, o, 0.0)) + std::abs(want);
    CHECK(std::abs(got.y[i] - want) <= fold_tol<double>(terms_per_output(w)) * (1 + magnitude));
  }
  // A Linear acts on the last axis: with a channels-last BatchNorm2d ((N, H, W, C)) that is C.
  batchnorm::BatchNorm2d<float> last(BatchNormOptions(O).channels_last(true));
  last.weight() = bn.weight(), last.bias() = bn.bias();
  last.running_mean() = bn.running_mean(), last.running_var() = bn.running_var();
  last.eval();
  const auto from_last = batchnorm::fold_into_preceding(last, w, nullptr);
  for (Eigen::Index k = 0; k < w.size(); ++k) CHECK(from_last.weight.data()[k] == folded.weight.data()[k]);
  for (Eigen::Index o = 0; o < O; ++o) CHECK(from_last.bias(o) == folded.bias(o));
}

TEMPLATE_TEST_CASE("fold into a preceding transposed convolution, any groups", "[fold]", float, double) {
  using T = TestType;
  std::mt19937 rng(6);
  for (const int rank : {3, 4, 5})
    for (const std::int64_t groups : {1, 2, 3})
      for (const bool with_bias : {true, false}) {
        const Eigen::Index I = 6, og = 2, O = og * groups;
        const bool affine = groups != 2 || with_bias;
        const std::vector<std::int64_t> s(static_cast<std::size_t>(rank - 2), 3);
        const auto check = [&](const auto& bn, const auto& weight) {
          using Wt = std::decay_t<decltype(weight)>;
          INFO("rank " << rank << ", groups " << groups << ", bias " << with_bias << ", affine " << affine
                       << (static_cast<int>(Wt::Layout) == static_cast<int>(Eigen::RowMajor) ? ", row-major" : ", column-major"));
          Eigen::Tensor<T, 1, Wt::Layout> bias = random_tensor<T, 1, Wt::Layout>({O}, rng, -5, 5);
          const auto folded = batchnorm::fold_into_preceding_transposed(bn, weight, with_bias ? &bias : nullptr, groups);
          std::uniform_real_distribution<double> u(-2, 2);
          std::vector<double> x(static_cast<std::size_t>(I * volume(s)));
          for (auto& v : x) v = u(rng);
          const ConvOut ref = conv_transpose(x, s, weight, with_bias ? values(bias) : std::vector<double>{}, groups, 2);
          const ConvOut got = conv_transpose(x, s, folded.weight, values(folded.bias), groups, 2);
          double worst = 0;
          for (std::size_t i = 0; i < ref.y.size(); ++i) {
            const auto c = static_cast<Eigen::Index>(i / static_cast<std::size_t>(volume(ref.spatial)));
            const double want = bn_ref(bn, c, ref.y[i]);
            const double magnitude = ref.magnitude[i] * std::abs(bn_scale(bn, c)) + std::abs(bn_ref(bn, c, 0.0)) + std::abs(want);
            CHECK(std::abs(got.y[i] - want) <= fold_tol<T>(static_cast<double>(weight.size() + 1)) * (1 + magnitude));
            worst = std::max(worst, std::abs(got.y[i] - want) / (1 + std::abs(want)));
          }
          SUCCEED("worst |folded - transposed layer then bn| / (1 + |y|): " << worst);
        };
        const auto both_layouts = [&](const auto& bn, const auto& dims) {
          check(bn, random_tensor<T, std::tuple_size<std::decay_t<decltype(dims)>>::value, Eigen::RowMajor>(dims, rng, -3, 3));
          check(bn, random_tensor<T, std::tuple_size<std::decay_t<decltype(dims)>>::value, Eigen::ColMajor>(dims, rng, -3, 3));
        };
        if (rank == 3) both_layouts(random_bn<T, 1>(O, rng, affine), Eigen::array<Eigen::Index, 3>{I, og, 3});
        if (rank == 4) both_layouts(random_bn<T, 2>(O, rng, affine), Eigen::array<Eigen::Index, 4>{I, og, 2, 3});
        if (rank == 5) both_layouts(random_bn<T, 3>(O, rng, affine), Eigen::array<Eigen::Index, 5>{I, og, 2, 1, 2});
      }
}

TEMPLATE_TEST_CASE("fold into a following Linear or unpadded convolution", "[fold]", float, double) {
  using T = TestType;
  std::mt19937 rng(7);
  for (const int rank : {2, 3, 4, 5})
    for (const std::int64_t groups : {1, 2})
      for (const bool with_bias : {true, false}) {
        if (rank == 2 && groups == 2) continue;
        const Eigen::Index C = 4, O = 6;
        const bool affine = rank != 4 || with_bias;
        const std::vector<std::int64_t> s = rank == 2 ? std::vector<std::int64_t>{} : std::vector<std::int64_t>(static_cast<std::size_t>(rank - 2), 5);
        const auto check = [&](const auto& bn, const auto& weight, std::int64_t stride) {
          using Wt = std::decay_t<decltype(weight)>;
          INFO("rank " << rank << ", groups " << groups << ", bias " << with_bias << ", affine " << affine
                       << (static_cast<int>(Wt::Layout) == static_cast<int>(Eigen::RowMajor) ? ", row-major" : ", column-major"));
          Eigen::Tensor<T, 1, Wt::Layout> bias = random_tensor<T, 1, Wt::Layout>({O}, rng, -5, 5);
          const auto folded = batchnorm::fold_into_following(bn, weight, with_bias ? &bias : nullptr, {}, groups);
          std::uniform_real_distribution<double> u(-2, 2);
          std::vector<double> x(static_cast<std::size_t>(C * volume(s))), z(x.size());
          for (std::size_t i = 0; i < x.size(); ++i) {
            x[i] = u(rng);
            z[i] = bn_ref(bn, static_cast<Eigen::Index>(i / static_cast<std::size_t>(volume(s))), x[i]);
          }
          const ConvOut ref = conv(z, C, s, weight, with_bias ? values(bias) : std::vector<double>{}, groups, stride, 0);
          const ConvOut got = conv(x, C, s, folded.weight, values(folded.bias), groups, stride, 0);
          double max_shift = 0;
          for (Eigen::Index c = 0; c < C; ++c) max_shift = std::max(max_shift, std::abs(bn_ref(bn, c, 0.0)));
          // The folded terms are w * scale_c * x and, through the bias, w * shift_c: their sum of
          // magnitudes, not the reference's |w * bn(x)|, bounds the rounding (the bias sums every
          // term of its output, weight.size() / O of them).
          double worst = 0;
          for (std::size_t i = 0; i < ref.y.size(); ++i) {
            const auto o = static_cast<std::size_t>(i / static_cast<std::size_t>(volume(ref.spatial)));
            double shifts = 0;  // sum of |w * shift_c| over o's weights, at most max |shift_c| * sum |w|
            for (Eigen::Index k = 0; k < weight.size(); ++k)
              if (static_cast<std::size_t>(first_index(weight, k)) == o) shifts += std::abs(static_cast<double>(weight.data()[k]));
            shifts *= max_shift;
            const double magnitude = got.magnitude[i] + ref.magnitude[i] + shifts;
            CHECK(std::abs(got.y[i] - ref.y[i]) <= fold_tol<T>(terms_per_output(weight)) * (1 + magnitude));
            worst = std::max(worst, std::abs(got.y[i] - ref.y[i]) / (1 + std::abs(ref.y[i])));
          }
          SUCCEED("worst |folded - bn then layer| / (1 + |y|): " << worst);
        };
        const auto both_layouts = [&](const auto& bn, const auto& dims, std::int64_t stride) {
          check(bn, random_tensor<T, std::tuple_size<std::decay_t<decltype(dims)>>::value, Eigen::RowMajor>(dims, rng, -3, 3), stride);
          check(bn, random_tensor<T, std::tuple_size<std::decay_t<decltype(dims)>>::value, Eigen::ColMajor>(dims, rng, -3, 3), stride);
        };
        if (rank == 2) both_layouts(random_bn<T, 1>(C, rng, affine), Eigen::array<Eigen::Index, 2>{O, C}, 1);
        if (rank == 3) both_layouts(random_bn<T, 1>(C, rng, affine), Eigen::array<Eigen::Index, 3>{O, C / groups, 1}, 1);  // 1x1
        if (rank == 4) both_layouts(random_bn<T, 2>(C, rng, affine), Eigen::array<Eigen::Index, 4>{O, C / groups, 3, 3}, 2);
        if (rank == 5) both_layouts(random_bn<T, 3>(C, rng, affine), Eigen::array<Eigen::Index, 5>{O, C / groups, 2, 1, 3}, 1);
      }
}

TEST_CASE("fold: what it refuses", "[fold][errors]") {
  using batchnorm_test::expect_throw;
  std::mt19937 rng(8);
  auto bn = random_bn<float, 2>(4, rng);
  // Filled: the overflow case below needs a non-zero weight, and memcheck reads every value.
  Eigen::Tensor<float, 4, Eigen::RowMajor> w(4, 2, 3, 3), w5(5, 2, 3, 3);
  Eigen::Tensor<float, 2, Eigen::RowMajor> linear(3, 4);
  Eigen::Tensor<float, 1, Eigen::RowMajor> b3(3);
  w.setConstant(0.5f), w5.setConstant(0.5f), linear.setConstant(0.5f), b3.setConstant(0.5f);
  const std::array<Eigen::Index, 2> unpadded{0, 0};
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_preceding(bn, w5, nullptr); },
                                      "batchnorm::fold_into_preceding: expected a weight of 4 outputs (bn's num_features) "
                                      "along its first index, got (5, 2, 3, 3)");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_preceding(bn, w, &b3); }, "expected a bias of 4 elements, got 3");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_following(bn, w, nullptr, {1, 0}, 2); },
                                      "a zero-padded convolution after batch norm has no exact fold (its zero border would "
                                      "need to become the shift), got padding (1, 0)");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_following(bn, w, nullptr, unpadded, 3); },
                                      "groups must be at least 1 (1 for a Linear) and divide the outputs 4, got 3");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_following(bn, w, &b3, unpadded, 2); },
                                      "expected a bias of 4 elements, got 3");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_preceding_transposed(bn, w, nullptr, 1); },
                                      "expected groups * weight.dimension(1) = 4 outputs");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_preceding_transposed(bn, w, nullptr, 3); },
                                      "groups must be at least 1 and divide the input channels 4, got 3");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_preceding_transposed(bn, w, nullptr, 0); },
                                      "groups must be at least 1 and divide the input channels 4, got 0");
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_preceding_transposed(bn, w, &b3, 2); },
                                      "expected a bias of 4 elements, got 3");
  // A Linear acts on the last axis, which is not C for a channels-first BatchNorm2d.
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_following(bn, linear, nullptr, {}); },
                                      "a Linear acts on the last axis, and this batch norm's channels are not last");
  auto bn1 = random_bn<float, 1>(4, rng);
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_following(bn1, linear, nullptr, {}, 2); },
                                      "groups must be at least 1 (1 for a Linear)");
  // A folded value beyond float's range: weight 3e38 over sqrt(running_var + eps) < 1.
  auto big = random_bn<float, 1>(4, rng);
  big.weight()(2) = 3e38f, big.running_var()(2) = 0.0f;
  expect_throw<std::invalid_argument>([&] { batchnorm::fold_into_following(big, linear, nullptr, {}); },
                                      "the folded weight element");
  // Logic errors: the module's state, named for the fold that read it.
  bn.train();
  expect_throw<std::logic_error>([&] { batchnorm::fold_into_preceding(bn, w, nullptr); },
                                 "batchnorm::fold_into_preceding: the module is in training mode");
  bn.eval();
  bn.running_var().resize(3);
  expect_throw<std::logic_error>([&] { batchnorm::channel_affine(bn); },
                                 "batchnorm::channel_affine: running_var has 3 elements, expected 4 (num_features)");
  batchnorm::BatchNorm2d<float> untracked(BatchNormOptions(4).track_running_stats(false));
  untracked.eval();
  expect_throw<std::logic_error>([&] { batchnorm::fold_into_preceding(untracked, w, nullptr); },
                                 "the module keeps no running statistics");
}
