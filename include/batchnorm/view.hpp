// batchnorm: the strided (outer, C, inner) view that every layout reduces to, and the accumulation
// type. Below both the functional layer and the kernels (detail/), which include it.
#pragma once

#include <cstddef>
#include <type_traits>

#include "config.hpp"

BATCHNORM_BEGIN_NAMESPACE

using Index = std::ptrdiff_t;

/// A dense tensor seen as (outer, C, inner): value (o, c, i) is at
///   data[(o * channels + c) * inner + i].
/// This is the one place the layouts are mapped (the modules call detail::make_view, which
/// implements exactly this table):
///
///   layout                         | storage  | outer     | inner
///   (N, C) / (N, C, L) / (N, C, H, W) / (N, C, D, H, W), channels first:
///                                  | RowMajor | N         | L, H*W, D*H*W (1 for (N, C))
///                                  | ColMajor | L, H*W, D*H*W (1 for (N, C)) | N
///   (N, L, C) / (N, H, W, C) / (N, D, H, W, C), channels last:
///                                  | RowMajor | N*L, N*H*W, N*D*H*W | 1
///                                  | ColMajor | 1         | N*L, N*H*W, N*D*H*W
///
/// RowMajor is PyTorch's memory order (last index fastest), ColMajor is Eigen's default (first
/// index fastest). The kernels pick their loop order from the view: long inner rows are
/// vectorised along the row; short ones (inner == 1: channels-last RowMajor, (N, C) RowMajor) are
/// vectorised across neighbouring channels.
struct View {
  Index outer = 0;
  Index channels = 0;
  Index inner = 0;

  /// m: the number of values of one channel.
  constexpr Index count() const noexcept { return outer * inner; }
  /// Total number of values.
  constexpr Index size() const noexcept { return outer * channels * inner; }
};

/// The precision in which statistics and gradient sums of T are accumulated, and in which the
/// per-channel mean and invstd are kept: double for both float and double.
template <class T>
struct accumulator {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "batchnorm supports float and double scalars");
  using type = double;
};
template <class T>
using accum_t = typename accumulator<T>::type;

/// The activation a batch norm applies to its output (BatchNormOptions::activation, the
/// functional forwards): none, or ReLU, y = max(BN(x), 0) (NaN stays NaN, -0 becomes 0), whose
/// backward lets dy through where y > 0 (or y is NaN) and gives 0 elsewhere, as PyTorch's
/// relu and threshold_backward.
enum class Activation { none, relu };

namespace functional {
using batchnorm::Activation;
using batchnorm::accum_t;
using batchnorm::accumulator;
using batchnorm::Index;
using batchnorm::View;
}  // namespace functional

BATCHNORM_END_NAMESPACE
