// A naive long double batch norm over the (outer, C, inner) view, the third source of truth of
// the tests (after hand-checkable values and the PyTorch cases). Straight from the formulas,
// no tricks: two-pass mean and biased variance, then the textbook backward.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include <batchnorm/functional/view.hpp>

namespace batchnorm_test {

using batchnorm::functional::Index;
using batchnorm::functional::View;

struct NaiveResult {
  std::vector<long double> mean, var, y, dx, dweight, dbias;
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
  using L = long double;
  NaiveResult r;
  const Index C = v.channels;
  const L m = static_cast<L>(v.count());
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
    r.mean[cu] = mean;
    r.var[cu] = var;
    const L invstd = 1 / std::sqrt(var + static_cast<L>(eps));
    const L w = weight.empty() ? 1 : static_cast<L>(weight[cu]);
    const L b = bias.empty() ? 0 : static_cast<L>(bias[cu]);
    L sum_dy = 0, sum_dy_xhat = 0;
    for (Index o = 0; o < v.outer; ++o)
      for (Index i = 0; i < v.inner; ++i) {
        const std::size_t k = at(v, o, c, i);
        const L xhat = (x[k] - mean) * invstd;
        r.y[k] = xhat * w + b;
        if (!dy.empty()) sum_dy += dy[k], sum_dy_xhat += dy[k] * xhat;
      }
    r.dbias[cu] = sum_dy;
    r.dweight[cu] = sum_dy_xhat;
    if (dy.empty()) continue;
    for (Index o = 0; o < v.outer; ++o)
      for (Index i = 0; i < v.inner; ++i) {
        const std::size_t k = at(v, o, c, i);
        const L xhat = (x[k] - mean) * invstd;
        r.dx[k] = training ? w * invstd * (dy[k] - sum_dy / m - xhat * sum_dy_xhat / m) : w * invstd * dy[k];
      }
  }
  return r;
}

}  // namespace batchnorm_test
