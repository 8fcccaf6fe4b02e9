// Test helpers: Eigen tensors from PyTorch-ordered values and back, in either storage order.
#pragma once

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include <unsupported/Eigen/CXX11/Tensor>

namespace batchnorm_test {

/// Index-order multi-index of the k-th value in C-contiguous (row-major) order.
template <int R>
Eigen::array<Eigen::Index, R> unravel_row_major(std::int64_t k, const Eigen::array<Eigen::Index, R>& dims) {
  Eigen::array<Eigen::Index, R> idx{};
  for (int a = R - 1; a >= 0; --a) {
    idx[static_cast<std::size_t>(a)] = static_cast<Eigen::Index>(k % dims[static_cast<std::size_t>(a)]);
    k /= dims[static_cast<std::size_t>(a)];
  }
  return idx;
}

/// A tensor of the given dims (index order) and layout whose value at each index is
/// values[row-major position of that index], i.e. the same logical tensor as PyTorch's.
template <class T, int R, int Layout, class V>
Eigen::Tensor<T, R, Layout> from_row_major(const std::vector<V>& values, const Eigen::array<Eigen::Index, R>& dims) {
  Eigen::Tensor<T, R, Layout> t(dims);
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(values.size()); ++k)
    t(unravel_row_major<R>(k, dims)) = static_cast<T>(values[static_cast<std::size_t>(k)]);
  return t;
}

/// The values of t in row-major (PyTorch) order, as double.
template <class TensorT>
std::vector<double> to_row_major(const TensorT& t) {
  constexpr int R = TensorT::NumDimensions;
  Eigen::array<Eigen::Index, R> dims;
  for (std::size_t a = 0; a < static_cast<std::size_t>(R); ++a) dims[a] = t.dimensions()[a];
  std::vector<double> out(static_cast<std::size_t>(t.size()));
  for (std::int64_t k = 0; k < static_cast<std::int64_t>(out.size()); ++k)
    out[static_cast<std::size_t>(k)] = static_cast<double>(t(unravel_row_major<R>(k, dims)));
  return out;
}

/// Seeded normal values mean + std * N(0, 1), rounded to T.
template <class T>
std::vector<T> normal_values(std::size_t n, double mean, double std, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> d(mean, std);
  std::vector<T> v(n);
  for (auto& e : v) e = static_cast<T>(d(gen));
  return v;
}

}  // namespace batchnorm_test
