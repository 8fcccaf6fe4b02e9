// batchnorm: adapting Eigen tensors to functional::View. Free to change; not public API.
#pragma once

#include "../config.hpp"

#include <array>
#include <cstdint>
#include <type_traits>

#include <unsupported/Eigen/CXX11/Tensor>

#include "../view.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// Eigen::Tensor and Eigen::TensorMap of one (const or not): dense memory with data() and
/// dimensions(). Expressions are not: evaluate them into a Tensor first.
template <class X>
struct is_dense_tensor : std::false_type {};
template <class S, int R, int O, class I>
struct is_dense_tensor<Eigen::Tensor<S, R, O, I>> : std::true_type {};
template <class P, int O, template <class> class M>
struct is_dense_tensor<Eigen::TensorMap<P, O, M>> : is_dense_tensor<std::remove_const_t<P>> {};

template <class X>
inline constexpr bool is_dense_tensor_v = is_dense_tensor<std::remove_cv_t<std::remove_reference_t<X>>>::value;

template <class X>
using tensor_scalar_t = std::remove_const_t<typename std::remove_reference_t<X>::Scalar>;

template <class X>
inline constexpr int tensor_rank_v = static_cast<int>(std::remove_reference_t<X>::NumDimensions);

template <class X>
inline constexpr bool is_row_major_v = static_cast<int>(std::remove_reference_t<X>::Layout) == Eigen::RowMajor;

/// Writable: a Tensor, or a TensorMap of a non-const Tensor.
template <class X>
struct is_writable_tensor : std::true_type {};
template <class P, int O, template <class> class M>
struct is_writable_tensor<Eigen::TensorMap<P, O, M>> : std::negation<std::is_const<P>> {};
template <class X>
inline constexpr bool is_writable_tensor_v =
    !std::is_const_v<std::remove_reference_t<X>> && is_writable_tensor<std::remove_cv_t<std::remove_reference_t<X>>>::value;

/// A shape of rank <= 5, in index order.
struct Shape {
  int rank = 0;
  std::array<std::int64_t, 5> dims{};

  template <class X>
  static Shape of(const X& x) {
    Shape s;
    s.rank = tensor_rank_v<X>;
    // dimensions()[k], not dimension(k): Tensor::dimension takes std::size_t, TensorMap::dimension
    // takes Index, so one index type would be a sign conversion (-Wsign-conversion) for the other.
    for (std::size_t k = 0; k < static_cast<std::size_t>(s.rank); ++k)
      s.dims[k] = static_cast<std::int64_t>(x.dimensions()[k]);
    return s;
  }
  const std::int64_t* begin() const noexcept { return dims.data(); }
  const std::int64_t* end() const noexcept { return dims.data() + rank; }
  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank != b.rank) return false;
    for (int k = 0; k < a.rank; ++k)
      if (a.dims[static_cast<std::size_t>(k)] != b.dims[static_cast<std::size_t>(k)]) return false;
    return true;
  }
  friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }
};

/// Index of the channel axis.
inline int channel_axis(int rank, bool channels_last) noexcept { return channels_last ? rank - 1 : 1; }

/// The (outer, C, inner) view of a dense tensor of this shape (table in batchnorm/view.hpp).
inline functional::View make_view(const Shape& s, bool row_major, bool channels_last) noexcept {
  const int ca = channel_axis(s.rank, channels_last);
  std::int64_t spatial = 1;  // product of all axes but batch (0) and channel
  for (int k = 1; k < s.rank; ++k)
    if (k != ca) spatial *= s.dims[static_cast<std::size_t>(k)];
  const std::int64_t n = s.dims[0], c = s.dims[static_cast<std::size_t>(ca)];
  functional::View v;
  v.channels = c;
  if (!channels_last || s.rank == 2) {
    v.outer = row_major ? n : spatial;
    v.inner = row_major ? spatial : n;
  } else {
    v.outer = row_major ? n * spatial : 1;
    v.inner = row_major ? 1 : n * spatial;
  }
  return v;
}

}  // namespace detail
BATCHNORM_END_NAMESPACE
