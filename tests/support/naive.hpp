// A naive double-double batch norm over the (outer, C, inner) view, the third source of truth of
// the tests (after hand-checkable values and the PyTorch cases). Straight from the formulas,
// no tricks: two-pass mean and biased variance, then the textbook backward. The arithmetic is
// double-double (about 106 bits, support/double_double.hpp), not long double: long double is
// 64-bit under valgrind (and on other ABIs), which made the reference, not the library, miss
// the tolerances there. Results are rounded to double once, at the end.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include <batchnorm/functional/view.hpp>

#include "support/double_double.hpp"

namespace batchnorm_test {

using batchnorm::functional::Index;
using batchnorm::functional::View;

struct NaiveResult {
  std::vector<double> mean, var, y, dx, dweight, dbias;
};

inline std::size_t at(const View& v, Index o, Index c, Index i) {
  return static_cast<std::size_t>((o * v.channels + c) * v.inner + i);
}

/// Forward and backward with batch statistics (training = true) or with the given statistics
/// (training = false: mean_in, var_in are the running statistics, constants). weight/bias may be
/// empty (affine off).
template <class T>
NaiveResult naive_batch_norm(const std::vector<T>& x, const std::vector<T>& dy, const View& v, bool training,
                             const std::vector<T>& weight, const std::vector<T>& bias, double eps,
                             const std::vector<T>& mean_in = {}, const std::vector<T>& var_in = {}) {
  using L = DoubleDouble;
  NaiveResult r;
  const Index C = v.channels;
  const L m = L(static_cast<double>(v.count()));
  r.mean.resize(static_cast<std::size_t>(C));
  r.var.resize(static_cast<std::size_t>(C));
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.dweight.resize(static_cast<std::size_t>(C));
  r.dbias.resize(static_cast<std::size_t>(C));
  for (Index c = 0; c < C; ++c) {
    const auto cu = static_cast<std::size_t>(c);
    L mean = 0, var = 0;
    if (training) {
      for (Index o = 0; o < v.outer; ++o)
        for (Index i = 0; i < v.inner; ++i) mean += x[at(v, o, c, i)];
      mean /= m;
      for (Index o = 0; o < v.outer; ++o)
        for (Index i = 0; i < v.inner; ++i) var += (x[at(v, o, c, i)] - mean) * (x[at(v, o, c, i)] - mean);
      var /= m;
    } else {
      mean = mean_in[cu];
      var = var_in[cu];
    }
    r.mean[cu] = static_cast<double>(mean);
    r.var[cu] = static_cast<double>(var);
    const L invstd = L(1) / sqrt(var + L(eps));
    const L w = weight.empty() ? L(1) : L(weight[cu]);
    const L b = bias.empty() ? L(0) : L(bias[cu]);
    L sum_dy = 0, sum_dy_xhat = 0;
    for (Index o = 0; o < v.outer; ++o)
      for (Index i = 0; i < v.inner; ++i) {
        const std::size_t k = at(v, o, c, i);
        const L xhat = (x[k] - mean) * invstd;
        r.y[k] = static_cast<double>(xhat * w + b);
        if (!dy.empty()) sum_dy += dy[k], sum_dy_xhat += dy[k] * xhat;
      }
    r.dbias[cu] = static_cast<double>(sum_dy);
    r.dweight[cu] = static_cast<double>(sum_dy_xhat);
    if (dy.empty()) continue;
    // dx = w * invstd * (dy - sum_dy / m - xhat * sum_dy_xhat / m) in training, w * invstd * dy
    // in eval; the per-channel factors are computed once (divisions are the slow part of L).
    const L scale = w * invstd, mean_dy = sum_dy / m, mean_dy_xhat = sum_dy_xhat / m;
    for (Index o = 0; o < v.outer; ++o)
      for (Index i = 0; i < v.inner; ++i) {
        const std::size_t k = at(v, o, c, i);
        const L xhat = (x[k] - mean) * invstd;
        r.dx[k] = static_cast<double>(training ? scale * (dy[k] - mean_dy - xhat * mean_dy_xhat) : scale * dy[k]);
      }
  }
  return r;
}

}  // namespace batchnorm_test
