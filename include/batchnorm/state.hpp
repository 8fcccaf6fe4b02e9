// batchnorm: trained state as named tensors (PyTorch's state_dict), independent of any file format.
#pragma once

#include "config.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

BATCHNORM_BEGIN_NAMESPACE

/// Element types of a stored tensor, with safetensors' names (dtype_name): booleans, integers,
/// IEEE floats, bfloat16 (BF16) and the two 8-bit floats. The modules load F64, F32, F16 and BF16
/// into their parameters and I64 into num_batches_tracked; the others exist so that a whole
/// model's file (convolution weights in I8, masks in BOOL, ...) can be read and written intact.
enum class Dtype : std::uint8_t { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

/// Bytes of one element.
constexpr std::size_t dtype_size(Dtype t) noexcept {
  switch (t) {
    case Dtype::BOOL: case Dtype::U8: case Dtype::I8: case Dtype::F8_E5M2: case Dtype::F8_E4M3: return 1;
    case Dtype::I16: case Dtype::U16: case Dtype::F16: case Dtype::BF16: return 2;
    case Dtype::I32: case Dtype::U32: case Dtype::F32: return 4;
    case Dtype::I64: case Dtype::U64: case Dtype::F64: return 8;
  }
  return 0;
}

/// "F32", "BF16", "I64", ... as safetensors spells them.
constexpr const char* dtype_name(Dtype t) noexcept {
  switch (t) {
    case Dtype::BOOL: return "BOOL";
    case Dtype::U8: return "U8";
    case Dtype::I8: return "I8";
    case Dtype::F8_E5M2: return "F8_E5M2";
    case Dtype::F8_E4M3: return "F8_E4M3";
    case Dtype::I16: return "I16";
    case Dtype::U16: return "U16";
    case Dtype::F16: return "F16";
    case Dtype::BF16: return "BF16";
    case Dtype::I32: return "I32";
    case Dtype::U32: return "U32";
    case Dtype::F32: return "F32";
    case Dtype::I64: return "I64";
    case Dtype::U64: return "U64";
    case Dtype::F64: return "F64";
  }
  return "?";
}

/// True for the dtypes the modules load into their parameters and statistics: F64, F32, F16, BF16.
constexpr bool is_loadable_floating(Dtype t) noexcept {
  return t == Dtype::F64 || t == Dtype::F32 || t == Dtype::F16 || t == Dtype::BF16;
}

/// "[64]", "[]": a shape as state files and their messages print it.
inline std::string shape_list(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// The Dtype named `name` (exact spelling of dtype_name), or nullopt.
inline std::optional<Dtype> dtype_from_name(std::string_view name) noexcept {
  for (int i = 0; i <= static_cast<int>(Dtype::F64); ++i)
    if (name == dtype_name(static_cast<Dtype>(i))) return static_cast<Dtype>(i);
  return std::nullopt;
}

/// One named tensor of a state: its element type, its shape (row-major, PyTorch's; {} for a
/// 0-dimensional tensor, which holds one element) and its bytes, little-endian, row-major,
/// whatever the machine's byte order. `data` holds numel() * dtype_size(dtype) bytes; the
/// readers and the modules check it.
struct StateTensor {
  Dtype dtype = Dtype::F32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> data;

  /// The product of shape (1 for {}, 0 if a dimension is 0), or -1 if a dimension is negative
  /// or the product of non-zero dimensions overflows.
  std::int64_t numel() const noexcept {
    bool empty = false;
    for (const std::int64_t d : shape) {
      if (d < 0) return -1;
      empty = empty || d == 0;
    }
    if (empty) return 0;
    std::int64_t n = 1;
    for (const std::int64_t d : shape) {
      if (n > std::numeric_limits<std::int64_t>::max() / d) return -1;
      n *= d;
    }
    return n;
  }

  /// A tensor of `shape` holding values[0, numel): F32 for float, F64 for double, I64 for
  /// std::int64_t, the bits unchanged.
  template <class T>
  static StateTensor from_values(const T* values, std::vector<std::int64_t> shape);

  /// Element i as a double, for the floating dtypes (F64, F32, F16, BF16: exact) and the
  /// integer ones (exact up to 2^53); std::invalid_argument for BOOL and the 8-bit floats.
  double to_double(std::int64_t i) const;

  /// Element i of a loadable floating dtype rounded to T (float or double, to nearest) into
  /// out; false, out unchanged, if it is finite and rounds beyond T's range.
  template <class T>
  bool to_scalar(std::int64_t i, T& out) const;
};

/// Named tensors, as PyTorch's state_dict: "layer1.0.bn1.running_var" -> tensor.
using StateDict = std::map<std::string, StateTensor>;

/// What load_state_dict(strict = false) left alone: keys it expected and did not find (those
/// values were kept), and keys under its prefix it did not know (ignored). Both empty after a
/// strict load (which throws instead).
struct LoadResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

namespace detail {

/// Little-endian loads and stores of unsigned integers, on any host byte order.
template <class U>
U load_le(const unsigned char* p) noexcept {
  U v = 0;
  for (std::size_t b = 0; b < sizeof(U); ++b) v = static_cast<U>(v | static_cast<U>(U(p[b]) << (8 * b)));
  return v;
}
template <class U>
void store_le(U v, unsigned char* p) noexcept {
  for (std::size_t b = 0; b < sizeof(U); ++b) p[b] = static_cast<unsigned char>((v >> (8 * b)) & 0xffu);
}

/// IEEE binary16 -> float, exactly (every half is a float): subnormals m * 2^-24, Inf, and NaN
/// with its payload in the top mantissa bits.
inline float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h >> 15) << 31;
  const std::uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  std::uint32_t bits;
  if (exponent == 31) bits = sign | 0x7f800000u | (mantissa << 13);  // Inf, NaN
  else bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);  // rebias the exponent
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

/// bfloat16 -> float, exactly: the 16 bits are the top half of the float's.
inline float bfloat16_to_float(std::uint16_t b) noexcept {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <class T>
constexpr Dtype dtype_of() noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, std::int64_t>,
                "StateTensor::from_values takes float, double or std::int64_t");
  return std::is_same_v<T, float> ? Dtype::F32 : std::is_same_v<T, double> ? Dtype::F64 : Dtype::I64;
}

}  // namespace detail

template <class T>
StateTensor StateTensor::from_values(const T* values, std::vector<std::int64_t> shape_) {
  StateTensor t;
  t.dtype = detail::dtype_of<T>();
  t.shape = std::move(shape_);
  const std::int64_t n = t.numel();
  if (n < 0) throw std::invalid_argument("batchnorm::StateTensor::from_values: invalid shape");
  t.data.resize(static_cast<std::size_t>(n) * sizeof(T));
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  for (std::int64_t i = 0; i < n; ++i) {
    U bits;
    std::memcpy(&bits, values + i, sizeof bits);
    detail::store_le(bits, t.data.data() + static_cast<std::size_t>(i) * sizeof(T));
  }
  return t;
}

inline double StateTensor::to_double(std::int64_t i) const {
  const unsigned char* p = data.data() + static_cast<std::size_t>(i) * dtype_size(dtype);
  switch (dtype) {
    case Dtype::F64: {
      const auto bits = detail::load_le<std::uint64_t>(p);
      double v;
      std::memcpy(&v, &bits, sizeof v);
      return v;
    }
    case Dtype::F32: {
      const auto bits = detail::load_le<std::uint32_t>(p);
      float v;
      std::memcpy(&v, &bits, sizeof v);
      return v;
    }
    case Dtype::F16: return detail::half_to_float(detail::load_le<std::uint16_t>(p));
    case Dtype::BF16: return detail::bfloat16_to_float(detail::load_le<std::uint16_t>(p));
    case Dtype::U8: return p[0];
    case Dtype::I8: return static_cast<std::int8_t>(p[0]);
    case Dtype::U16: return detail::load_le<std::uint16_t>(p);
    case Dtype::I16: return static_cast<std::int16_t>(detail::load_le<std::uint16_t>(p));
    case Dtype::U32: return detail::load_le<std::uint32_t>(p);
    case Dtype::I32: return static_cast<std::int32_t>(detail::load_le<std::uint32_t>(p));
    case Dtype::U64: return static_cast<double>(detail::load_le<std::uint64_t>(p));
    case Dtype::I64: return static_cast<double>(static_cast<std::int64_t>(detail::load_le<std::uint64_t>(p)));
    default: break;
  }
  throw std::invalid_argument(std::string("batchnorm::StateTensor::to_double: no conversion from ") + dtype_name(dtype));
}

namespace detail {

/// v rounded to T (float or double, to nearest) into out; false, out unchanged, if v is finite
/// and rounds beyond T's range.
template <class T>
bool round_to(double v, T& out) noexcept {
  if constexpr (std::is_same_v<T, float>) {
    // Beyond 2^128 - 2^103 (float's largest plus half its last step) rounds to Inf. Between
    // float's largest and that, a value rounds to the largest: clamp first (converting a double
    // beyond float's range is undefined behaviour).
    const double limit = std::ldexp(1.0, 128) - std::ldexp(1.0, 103);
    if (std::isfinite(v) && std::fabs(v) >= limit) return false;
    const double largest = static_cast<double>(std::numeric_limits<float>::max());
    out = static_cast<float>(std::isfinite(v) ? std::clamp(v, -largest, largest) : v);
  } else {
    static_assert(std::is_same_v<T, double>, "round_to: float or double");
    out = v;
  }
  return true;
}

}  // namespace detail

template <class T>
bool StateTensor::to_scalar(std::int64_t i, T& out) const {
  return detail::round_to(to_double(i), out);
}

BATCHNORM_END_NAMESPACE
