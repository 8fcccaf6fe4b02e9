// libFuzzer target over the module API: BatchNorm1d/2d/3d<float|double> in both storage orders,
// channels-first and channels-last, driven by a short sequence of calls decoded from the input
// bytes. Oracles (any failure prints the decoded case to stderr and aborts, so the crash file
// that libFuzzer writes is a reproducer):
//   (a) no sanitizer report (ASan, UBSan: automatic);
//   (b) every exception is std::invalid_argument, std::logic_error or batchnorm::PeerError, and
//       a call throws exactly when PyTorch 1.13's rules (shared/reference/README.md) say it must:
//       invalid options, wrong channel count or output shape, one value per channel with batch
//       statistics, backward before any forward or with another shape than the last forward's;
//   (c) a call that throws changes nothing: weight, bias, their gradients, running_mean,
//       running_var, num_batches_tracked, the training flag, bitwise; and, on copies of the
//       module from before and after the call, an eval forward of a probe input and a backward
//       of the last input give the same bytes (this sees the saved statistics too);
//   (d) finite results agree with the long double reference of tests/support/naive.hpp:
//       training y, running statistics, dx/dweight/dbias, eval y (see check_channel);
//   (e) a NaN stays in its channel: with the NaN channels of x (and dy) set to 0, the same call
//       on a copy of the module gives the same bytes in every other channel;
//   (f) a constant channel gives y == bias exactly in training (STYLE.md section 5).
//
// Input format (ByteReader: bytes read front to back, little-endian, zeros once exhausted, so
// every byte string is a valid case). tests/fuzz/make_seeds.py writes the same format.
//   config  u8  bit 0 double | bits 1-2 module (0 BatchNorm1d (N,C), 1 BatchNorm1d (N,C,L),
//               2 BatchNorm2d, 3 BatchNorm3d) | bit 3 ColMajor | bit 4 channels_last |
//               bit 5 affine off | bit 6 track_running_stats off | bit 7 momentum nullopt
//   eps     u8  index into kEps; 255: a raw f64 follows
//   momentum u8 index into kMomentum; 255: a raw f64 follows (ignored when nullopt)
//   dims    rank x dim (see read_dim), in index order; the channel axis gives num_features
//   init    u8  bit 0: weight and bias from two value specs (only read when affine),
//               bit 1: running_mean, |running_var| from two value specs (only when tracking),
//               bits 2-7: initial num_batches_tracked
//   calls   u8  1 + b % 6 calls follow, each: op u8, flags u8, then what the op needs (Call)
//   value spec: class u8, seed u32, class parameters, specials u8 (b % 4 of: pos u32, kind u8)
#include <batchnorm/batchnorm.hpp>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "support/naive.hpp"
#include "support/tolerance.hpp"

namespace {

using batchnorm::BatchNormOptions;
using batchnorm::functional::Index;
using batchnorm::functional::View;
using LD = long double;

/// At most this many values in a tensor: fast iterations (the largest dimension is halved until
/// the shape fits).
constexpr std::int64_t kMaxValues = 1 << 16;

// ---------------------------------------------------------------------------------------------
// ByteReader: the fuzzer's bytes, consumed front to back. Past the end every read returns 0, so
// truncated inputs decode to the shortest, "default" case (the minimiser likes that).
class ByteReader {
 public:
  ByteReader(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  std::uint8_t u8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u16()) | (static_cast<std::uint32_t>(u16()) << 16); }
  std::uint64_t u64() { return static_cast<std::uint64_t>(u32()) | (static_cast<std::uint64_t>(u32()) << 32); }
  double f64() {
    const std::uint64_t b = u64();
    double d;
    std::memcpy(&d, &b, sizeof d);
    return d;
  }
  float f32() {
    const std::uint32_t b = u32();
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
  }
  template <class T>
  T raw() {
    if constexpr (sizeof(T) == 4) return f32();
    else return f64();
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

/// splitmix64: the values of a tensor from a 32-bit seed, the same on every platform.
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  /// About N(0, 1): Irwin-Hall of 12 uniforms, minus 6 (mean 0, variance 1, |v| <= 6).
  double normal() {
    double s12 = 0;
    for (int k = 0; k < 12; ++k) s12 += uniform();
    return s12 - 6;
  }
};

// ---------------------------------------------------------------------------------------------
// The decoded case, kept for the report of a failing oracle.

constexpr std::array<double, 10> kEps = {1e-5, 1e-3, 0.1, 1.0, 1e-300, 1e-45, 0.0, -1e-5, NAN, INFINITY};
constexpr std::array<double, 8> kMomentum = {0.1, 0.0, 1.0, 0.5, 0.9, -0.1, 1.5, NAN};

/// Small dims and SIMD-width neighbours; read_dim adds long rows 1000..2100.
constexpr std::array<std::int64_t, 16> kDims = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 1, 2, 3, 33};

std::int64_t read_dim(ByteReader& in) {
  const std::uint8_t b = in.u8();
  if (b < 224) return kDims[b % kDims.size()];
  return 1000 + in.u16() % 1101;  // a long row
}

enum class ValueClass : std::uint8_t {
  normal,       // N(0, 1)
  large_mean,   // sign * 10^e + 10^(e - r) * N(0, 1): large |mean| / std, e.g. 1e4 + 0.1 N, 1e30 + ...
  constant,     // every channel constant (its own value)
  near_max,     // +-max * (1 - small)
  denormal,     // small multiples of denorm_min, and zeros
  raw,          // k explicit values from the bytes, repeated
  mixed,        // each channel its own class of the above (not raw)
  integers,     // -8 .. 8
  scaled,       // 10^e * N(0, 1), e over the whole exponent range of T
  count
};
const char* class_name(ValueClass c) {
  static const char* names[] = {"normal", "large_mean", "constant", "near_max", "denormal",
                                "raw",    "mixed",      "integers", "scaled"};
  return names[static_cast<int>(c)];
}
constexpr int kSpecialKinds = 12;
const char* special_name(int k) {
  static const char* names[] = {"NaN", "+Inf", "-Inf", "denorm_min", "-denorm_min", "max", "-max", "0", "-0",
                                "1e30", "-1e30", "min_normal"};
  return names[k];
}

struct ValueSpec {
  ValueClass cls = ValueClass::normal;
  std::uint32_t seed = 0;
  int e = 0, r = 0;               // large_mean/scaled exponents
  std::vector<double> raw;        // raw values (as double; exact for float)
  std::vector<std::pair<std::uint32_t, int>> specials;  // (position % size, kind)
  std::string describe() const {
    std::string s = class_name(cls);
    s += " seed " + std::to_string(seed);
    if (cls == ValueClass::large_mean) s += " mean 1e" + std::to_string(e) + " std 1e" + std::to_string(e - r);
    if (cls == ValueClass::scaled) s += " scale 1e" + std::to_string(e);
    if (cls == ValueClass::raw) {
      s += " {";
      char buf[40];
      for (std::size_t k = 0; k < raw.size(); ++k) {
        std::snprintf(buf, sizeof buf, "%s%.17g", k ? ", " : "", raw[k]);
        s += buf;
      }
      s += "}";
    }
    for (const auto& sp : specials) s += " [" + std::to_string(sp.first) + "]=" + special_name(sp.second);
    return s;
  }
};

template <class T>
ValueSpec read_spec(ByteReader& in) {
  ValueSpec s;
  s.cls = static_cast<ValueClass>(in.u8() % static_cast<int>(ValueClass::count));
  s.seed = in.u32();
  constexpr int max_e = std::numeric_limits<T>::max_exponent10;      // 38 / 308
  constexpr int min_e = std::numeric_limits<T>::min_exponent10 - 7;  // into the denormals
  if (s.cls == ValueClass::large_mean) {
    s.e = in.u8() % (max_e + 1);  // 0 .. 38 / 308
    s.r = 1 + in.u8() % 30;       // spread 10^-1 .. 10^-30 of the mean
  } else if (s.cls == ValueClass::scaled) {
    s.e = min_e + static_cast<int>(in.u16() % static_cast<unsigned>(max_e - min_e + 1));
  } else if (s.cls == ValueClass::raw) {
    const int k = 1 + in.u8() % 16;
    for (int i = 0; i < k; ++i) s.raw.push_back(static_cast<double>(in.raw<T>()));
  }
  const int nspecial = in.u8() % 4;
  for (int i = 0; i < nspecial; ++i) {
    const std::uint32_t pos = in.u32();
    s.specials.emplace_back(pos, in.u8() % kSpecialKinds);
  }
  return s;
}

template <class T>
T special_value(int kind) {
  using NL = std::numeric_limits<T>;
  switch (kind) {
    case 0: return NL::quiet_NaN();
    case 1: return NL::infinity();
    case 2: return -NL::infinity();
    case 3: return NL::denorm_min();
    case 4: return -NL::denorm_min();
    case 5: return NL::max();
    case 6: return -NL::max();
    case 7: return T(0);
    case 8: return -T(0);
    case 9: return T(1e30);
    case 10: return T(-1e30);
    default: return NL::min();
  }
}

/// Rounds a double to T; out of T's range gives +-inf (IEEE rounding, without relying on the
/// out-of-range double -> float conversion, which C++ leaves undefined).
template <class T>
T to_t(double v) {
  if constexpr (sizeof(T) == 4) {
    if (std::isfinite(v) && std::fabs(v) > static_cast<double>(std::numeric_limits<float>::max()))
      return v > 0 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
  }
  return static_cast<T>(v);
}

/// The value of class c for the k-th value of channel ch.
template <class T>
T class_value(ValueClass c, const ValueSpec& s, Rng& rng, Index ch, std::uint64_t channel_seed) {
  using NL = std::numeric_limits<T>;
  switch (c) {
    case ValueClass::normal: return to_t<T>(rng.normal());
    case ValueClass::large_mean: {
      const double mean = std::pow(10.0, s.e) * ((s.seed & 1) ? -1 : 1);
      return to_t<T>(mean + std::pow(10.0, s.e - s.r) * rng.normal());
    }
    case ValueClass::constant: {
      Rng cr{channel_seed ^ static_cast<std::uint64_t>(ch) * 0x1234567ull};
      return to_t<T>(cr.normal() * std::pow(10.0, static_cast<double>(cr.next() % 9) - 4));
    }
    case ValueClass::near_max:
      return to_t<T>((rng.next() & 1 ? 1 : -1) * static_cast<double>(NL::max()) * (1 - rng.uniform() * 0x1.0p-10));
    case ValueClass::denormal: {
      const auto k = static_cast<double>(static_cast<std::int64_t>(rng.next() % 2001) - 1000);
      return rng.next() % 4 == 0 ? T(0) : static_cast<T>(k * static_cast<double>(NL::denorm_min()));
    }
    case ValueClass::integers: return static_cast<T>(static_cast<int>(rng.next() % 17) - 8);
    case ValueClass::scaled: return to_t<T>(rng.normal() * std::pow(10.0, s.e));
    default: return T(0);
  }
}

/// Fills the n values of a tensor (memory order, view v) from spec s.
template <class T>
void fill(std::vector<T>& out, std::size_t offset, const View& v, const ValueSpec& s) {
  const auto n = static_cast<std::size_t>(v.size());
  Rng rng{s.seed * 0x100000001ull + 7};
  for (std::size_t k = 0; k < n; ++k) {
    const Index ch = v.channels > 0 ? static_cast<Index>(k / static_cast<std::size_t>(v.inner)) % v.channels : 0;
    T value;
    if (s.cls == ValueClass::raw) {
      value = static_cast<T>(s.raw[k % s.raw.size()]);
    } else if (s.cls == ValueClass::mixed) {
      Rng cr{static_cast<std::uint64_t>(s.seed) * 31 + static_cast<std::uint64_t>(ch)};
      static const ValueClass pick[] = {ValueClass::normal,   ValueClass::large_mean, ValueClass::constant,
                                        ValueClass::near_max, ValueClass::denormal,   ValueClass::integers};
      ValueSpec cs = s;
      cs.e = static_cast<int>(cr.next() % 12), cs.r = 1 + static_cast<int>(cr.next() % 12);
      value = class_value<T>(pick[cr.next() % 6], cs, rng, ch, s.seed);
    } else {
      value = class_value<T>(s.cls, s, rng, ch, s.seed);
    }
    out[offset + k] = value;
  }
  if (n > 0)
    for (const auto& sp : s.specials) out[offset + sp.first % n] = special_value<T>(sp.second);
}

// ---------------------------------------------------------------------------------------------
// Shapes and views.

template <int Rank>
using Dims = std::array<std::int64_t, Rank>;

template <int Rank>
std::string dims_string(const Dims<Rank>& d) {
  std::string s = "(";
  for (int k = 0; k < Rank; ++k) s += (k ? ", " : "") + std::to_string(d[static_cast<std::size_t>(k)]);
  return s + ")";
}

/// The product of the dimensions, each counted as at least `least`: with least = 1 (empty
/// dimensions as 1), what a loop over outer x C x inner costs (an empty tensor of shape
/// (0, 1958, 1576, 1576) has no values but 4.9e9 (outer, c) steps).
template <int Rank>
std::int64_t product(const Dims<Rank>& d, std::int64_t least = 0) {
  std::int64_t p = 1;
  for (auto x : d) p *= std::max(x, least);
  return p;
}

/// Halves the largest dimension other than `keep` (the channel axis, once num_features is fixed;
/// -1: any) until the tensor has at most kMaxValues values, empty dimensions counted as 1 (so
/// the reference's loops stay short for empty tensors too; zeros stay zero). A channel count is
/// at most 2100, so the other dimensions can always make room.
template <int Rank>
void cap_size(Dims<Rank>& d, int keep = -1) {
  while (product<Rank>(d, 1) > kMaxValues) {
    std::size_t largest = keep == 0 ? 1 : 0;
    for (std::size_t a = 0; a < static_cast<std::size_t>(Rank); ++a)
      if (static_cast<int>(a) != keep && d[a] > d[largest]) largest = a;
    d[largest] = std::max<std::int64_t>(1, d[largest] / 2);
  }
}

/// The (outer, C, inner) view of functional/view.hpp's table, written here again from the table
/// (not the library's detail::make_view), so that the mapping itself is under test.
template <int Rank>
View view_of(const Dims<Rank>& d, bool row_major, bool channels_last) {
  const int ca = channels_last ? Rank - 1 : 1;
  std::int64_t spatial = 1;
  for (int k = 1; k < Rank; ++k)
    if (k != ca) spatial *= d[static_cast<std::size_t>(k)];
  View v;
  v.channels = d[static_cast<std::size_t>(ca)];
  const std::int64_t n = d[0];
  if (!channels_last || Rank == 2) {
    v.outer = row_major ? n : spatial;
    v.inner = row_major ? spatial : n;
  } else {
    v.outer = row_major ? n * spatial : 1;
    v.inner = row_major ? 1 : n * spatial;
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Reporting.

/// Everything decoded so far, printed when an oracle fails.
struct Log {
  std::string header;
  std::vector<std::string> lines;
  void add(std::string s) { lines.push_back(std::move(s)); }
};
Log* g_log = nullptr;

template <class T>
std::string values_summary(const std::vector<T>& x, std::size_t off, const View& v) {
  std::string s;
  char buf[256];
  const bool small = v.size() <= 48;
  for (Index c = 0; c < v.channels && c < 8; ++c) {
    double lo = INFINITY, hi = -INFINITY;
    int nans = 0, infs = 0, denorms = 0;
    std::string vals;
    for (Index o = 0; o < v.outer; ++o)
      for (Index i = 0; i < v.inner; ++i) {
        const double e = static_cast<double>(x[off + static_cast<std::size_t>((o * v.channels + c) * v.inner + i)]);
        if (std::isnan(e)) ++nans;
        else if (std::isinf(e)) ++infs;
        else {
          if (e != 0 && std::fpclassify(static_cast<T>(e)) == FP_SUBNORMAL) ++denorms;
          lo = std::min(lo, e), hi = std::max(hi, e);
        }
        if (small) {
          std::snprintf(buf, sizeof buf, "%s%.9g", vals.empty() ? "" : ", ", e);
          vals += buf;
        }
      }
    std::snprintf(buf, sizeof buf, "\n      channel %td: min %.9g max %.9g, %d NaN, %d Inf, %d denormal", c, lo, hi, nans,
                  infs, denorms);
    s += buf;
    if (small) s += " {" + vals + "}";
  }
  if (v.channels > 8) s += "\n      ... (" + std::to_string(v.channels) + " channels)";
  return s;
}

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "\n==== batchnorm fuzz: ORACLE FAILED ====\n%s\n", g_log ? g_log->header.c_str() : "");
  if (g_log)
    for (const auto& l : g_log->lines) std::fprintf(stderr, "%s\n", l.c_str());
  std::fprintf(stderr, "---- failure ----\n%s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

std::string fmt(const char* f, double a, double b, double c, double d) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// The reference checks (oracle d). Everything in long double.

/// Whether the reference's statistics of a channel can be trusted. tests/support/naive.hpp
/// computes in long double or (its newer form) in double-double, whose exponent range is
/// double's: squares of |x - mean| > ~1e154 overflow and the low word of a variance under
/// ~2^-969 is denormal, so the reference itself is inexact there. Also, the library accumulates
/// in double: when the exact statistics overflow double there is nothing to compare with.
/// A variance below that is still fine when eps dominates it (var + eps >= 2^-900: what the
/// squares lost to underflow, < n 2^-1074, is then far below the rounding of var + eps), and
/// for constant channels (var exactly 0, checked exactly by oracle (f)).
inline bool reference_trusted(LD mean, LD var, double eps) {
  const LD min_var = std::ldexp(1.0L, -969);
  const LD max = static_cast<LD>(std::numeric_limits<double>::max());
  return std::isfinite(mean) && std::isfinite(var) && std::fabs(mean) <= max && var <= max / 4 &&
         (var >= min_var || var + static_cast<LD>(eps) >= std::ldexp(1.0L, -900));
}

template <class T>
bool finite_t(LD v) {
  return std::isfinite(v) && std::fabs(v) <= static_cast<LD>(std::numeric_limits<T>::max());
}
bool finite_double(LD v) { return finite_t<double>(v); }

/// Compares one result with its reference ref, up to tol * (1 + |ref|) + allow, where allow is
/// the error the library's documented arithmetic (double accumulators, float partial sums of
/// kFlush terms) cannot avoid on this data (see ChannelBounds). If the exact result overflows T
/// (|ref| > 2 max), T's result must say so: the infinity of ref's sign, or NaN where an
/// intermediate overflowed both ways (the documented behaviour of outputs beyond T's range;
/// running statistics, checked elsewhere, must be inf); close to max it is not checked.
template <class T>
void check_value(const char* what, Index c, std::size_t k, T got_t, LD ref, double tol, LD allow, bool nan_ok = true) {
  if (!std::isfinite(ref)) return;
  const LD max = static_cast<LD>(std::numeric_limits<T>::max());
  const double got = static_cast<double>(got_t);
  if (std::fabs(ref) > 2 * max) {
    if (!(nan_ok && std::isnan(got)) && !(std::isinf(got) && (got > 0) == (ref > 0)))
      fail(std::string(what) + " channel " + std::to_string(c) + " index " + std::to_string(k) +
           ": the exact result " + fmt("%.9g", static_cast<double>(ref), 0, 0, 0) + " overflows the scalar type; expected " +
           (ref > 0 ? "+inf (or NaN)" : "-inf (or NaN)") + ", got " + fmt("%.17g", got, 0, 0, 0));
    return;
  }
  if (std::fabs(ref) > max / (1 + tol)) return;  // rounds to max or to inf: both fine
  const LD err = std::fabs(static_cast<LD>(got) - ref);
  const LD bar = static_cast<LD>(tol) * (1 + std::fabs(ref)) + allow;
  if (!(err <= bar))
    fail(std::string(what) + " channel " + std::to_string(c) + " index " + std::to_string(k) +
         fmt(": got %.17g, reference %.17g, |got-ref|/(1+|ref|) = %.3g > tol %.3g", got, static_cast<double>(ref),
             static_cast<double>(err / (1 + std::fabs(ref))), tol) +
         fmt(" (+ allowance %.3g)", static_cast<double>(allow), 0, 0, 0));
}

/// Per-channel error bounds of the library's arithmetic that are no bug (all absolute):
///   eps_acc  relative error of a sum accumulated in double over n terms in blocks: (4 sqrt n + 16) u,
///            u = 2^-53, plus the sequential long double sums of the reference itself (n 2^-63)
///            (the reference is inexact by that much, mostly at large |mean| / std in double);
///   eps_part float only: the partial sums in float of at most kFlush = 8 terms (detail/tuning.hpp;
///            kFloatPartialSumTol), relative to the sum of |terms|; statistics sum x - shift with a
///            shift within a standard deviation of the mean, so relative to mean|x - mean| + std.
///   mean     eps_acc * mean|x| (the mean cannot be closer than double rounding of sums of x)
///            + eps_part * (mean|d| + std), d = x - mean;
///   xhat     mean * invstd + (eps_acc + eps_part) |xhat| (relative error of the variance);
/// and the gradient sums likewise. On ordinary data these are < 1e-12 and change nothing; they
/// matter for double data with |mean| / std > ~1e4, where the double accumulators of the design
/// cannot do better than ~u |mean| / std.
/// The elementwise passes run in T: y = (x - head) * p + r, dx = dy * p + (x - head) * q + r,
/// the constants rounded to T, each product and sum rounded once (or fused). Their error is at
/// most a few roundings of T of the terms' magnitudes, whatever the result: 4 u_T per term.
template <class T>
LD elementwise_rounding() {
  return 4 * std::ldexp(1.0L, -std::numeric_limits<T>::digits);
}

struct ChannelBounds {
  LD eps_sum = 0;  // eps_acc + eps_part
  LD mean = 0;     // absolute error of the mean
  LD invstd = 0;
  LD var_rel = 0;  // relative error of var + eps
};

template <class T>
ChannelBounds bounds_of(const std::vector<T>& x, std::size_t off, const View& v, Index c, LD mean, LD var,
                        double eps, bool batch_stats) {
  ChannelBounds b;
  const LD n = static_cast<LD>(v.count());
  const LD u = std::ldexp(1.0L, -53);
  const LD eps_acc = (4 * std::sqrt(n) + 16) * u + n * std::ldexp(1.0L, -63);
  const LD eps_part = sizeof(T) == 4 ? static_cast<LD>(batchnorm_test::kFloatPartialSumTol) : 0;
  b.eps_sum = eps_acc + eps_part;
  b.invstd = 1 / std::sqrt(var + static_cast<LD>(eps));
  if (!batch_stats) {  // running statistics: exact in T, no sums
    b.var_rel = 2 * u;
    return b;
  }
  LD mx = 0, md = 0;
  for (Index o = 0; o < v.outer; ++o)
    for (Index i = 0; i < v.inner; ++i) {
      const LD e = x[off + static_cast<std::size_t>((o * v.channels + c) * v.inner + i)];
      mx += std::fabs(e), md += std::fabs(e - mean);
    }
  if (n > 0) mx /= n, md /= n;
  b.mean = eps_acc * mx + eps_part * (md + std::sqrt(var));
  // var = sum d^2 / n: relative eps_sum, plus the mean's error squared; then + eps.
  b.var_rel = (b.eps_sum * var + b.mean * b.mean) / (var + static_cast<LD>(eps)) + 2 * u;
  return b;
}

// ---------------------------------------------------------------------------------------------
// The driver: one module type, the calls of the case.

enum class Op : std::uint8_t {
  train_forward,
  train_forward2,  // (twice as likely)
  eval_forward,
  backward,
  wrong_channels,  // forward with num_features +- k channels
  wrong_output,    // forward(x, y) with y of another shape
  wrong_backward,  // backward with x, dy or dx of another shape than the last forward's
  inplace_forward, // forward(x, x), in the current mode
  count
};
const char* op_name(Op op) {
  static const char* names[] = {"train forward", "train forward", "eval forward", "backward",
                                "forward with a wrong channel count", "forward into a wrong-shaped y",
                                "backward with a wrong shape", "in-place forward (current mode)"};
  return names[static_cast<int>(op)];
}

/// A tensor: values in memory order at data.data() + off (off = 1 misaligns it), and its dims.
template <class T, int Rank>
struct Buffer {
  Dims<Rank> dims{};
  std::vector<T> data;
  std::size_t off = 0;
  T* ptr() { return data.data() + off; }
  std::size_t size() const { return static_cast<std::size_t>(product<Rank>(dims)); }
};

/// memcmp of n values (NaN-safe bitwise equality); empty ranges are equal (memcmp(nullptr, ...)
/// would be undefined).
template <class T>
bool same_bytes(const T* a, const T* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(T)) == 0;
}

enum class Expect { ok, invalid, logic };
const char* expect_name(Expect e) { return e == Expect::ok ? "no exception" : e == Expect::invalid ? "std::invalid_argument" : "std::logic_error"; }

template <class T, int Rank, int Layout, int SpatialDims>
class Driver {
 public:
  using Module = batchnorm::BatchNorm<T, SpatialDims>;
  using Tensor = Eigen::Tensor<T, Rank, Layout>;
  using Map = Eigen::TensorMap<Tensor>;
  static constexpr bool kRowMajor = Layout == Eigen::RowMajor;
  static constexpr double kTol = batchnorm_test::naive_tol<T>();  // float 1e-5, double 1e-11
  static constexpr T kSentinel = T(-7777.25);  // what output buffers hold before a call

  Driver(ByteReader& in, std::uint8_t config, Log& log) : in_(in), log_(log) {
    channels_last_ = (config >> 4) & 1;
    affine_ = !((config >> 5) & 1);
    track_ = !((config >> 6) & 1);
    const bool momentum_none = (config >> 7) & 1;
    const std::uint8_t eb = in.u8();
    eps_ = eb == 255 ? in.f64() : kEps[eb % kEps.size()];
    const std::uint8_t mb = in.u8();
    const double mom = mb == 255 ? in.f64() : kMomentum[mb % kMomentum.size()];
    if (!momentum_none) momentum_ = mom;
    for (auto& d : dims_) d = read_dim(in);
    cap_size<Rank>(dims_);
    C_ = dims_[static_cast<std::size_t>(channel_axis())];
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "BatchNorm%dd<%s> on rank %d %s, %s, shape %s (num_features %" PRId64
                  "), eps %.17g, momentum %s, affine %d, track_running_stats %d",
                  SpatialDims, sizeof(T) == 4 ? "float" : "double", Rank, kRowMajor ? "RowMajor" : "ColMajor",
                  channels_last_ ? "channels_last" : "channels first", dims_string<Rank>(dims_).c_str(), C_, eps_,
                  momentum_ ? fmt("%.17g", *momentum_, 0, 0, 0).c_str() : "nullopt", affine_, track_);
    log_.header = buf;
  }

  int channel_axis() const { return channels_last_ ? Rank - 1 : 1; }

  void run() {
    BatchNormOptions opts(C_);
    opts.eps(eps_).momentum(momentum_).affine(affine_).track_running_stats(track_).channels_last(channels_last_);
    const bool options_valid =
        C_ >= 1 && eps_ > 0 && std::isfinite(eps_) && (!momentum_ || (*momentum_ >= 0 && *momentum_ <= 1));
    std::optional<Module> made;
    const Expect got = attempt([&] { made.emplace(opts); });
    expect("constructor", options_valid ? Expect::ok : Expect::invalid, got);
    if (!made) return;
    Module& bn = *made;

    // Initial parameters and running statistics.
    const std::uint8_t init = in_.u8();
    const View pv{1, C_, 1};
    if ((init & 1) && affine_) {
      const ValueSpec ws = read_spec<T>(in_), bs = read_spec<T>(in_);
      std::vector<T> w(static_cast<std::size_t>(C_)), b(w.size());
      fill(w, 0, pv, ws), fill(b, 0, pv, bs);
      std::copy(w.begin(), w.end(), bn.weight().data()), std::copy(b.begin(), b.end(), bn.bias().data());
      log_.add("  weight: " + ws.describe() + values_summary(w, 0, pv));
      log_.add("  bias: " + bs.describe() + values_summary(b, 0, pv));
    }
    if ((init & 2) && track_) {
      const ValueSpec ms = read_spec<T>(in_), vs = read_spec<T>(in_);
      std::vector<T> m(static_cast<std::size_t>(C_)), var(m.size());
      fill(m, 0, pv, ms), fill(var, 0, pv, vs);
      for (auto& e : var) e = std::fabs(e);
      std::copy(m.begin(), m.end(), bn.running_mean().data()), std::copy(var.begin(), var.end(), bn.running_var().data());
      log_.add("  running_mean: " + ms.describe() + values_summary(m, 0, pv));
      log_.add("  running_var (absolute values of): " + vs.describe() + values_summary(var, 0, pv));
    }
    if (track_) {
      bn.num_batches_tracked() = init >> 2;
      log_.add("  num_batches_tracked " + std::to_string(init >> 2));
    }

    const int calls = 1 + in_.u8() % 6;
    for (int k = 0; k < calls; ++k) call(bn, k);
  }

 private:
  template <class F>
  Expect attempt(F&& f) {
    try {
      f();
      return Expect::ok;
    } catch (const batchnorm::PeerError& e) {
      fail(std::string("PeerError from a local module: ") + e.what());
    } catch (const std::invalid_argument& e) {
      last_what_ = e.what();
      return Expect::invalid;
    } catch (const std::exception& e) {
      // Oracle (b): std::logic_error itself, not one of its other children (length_error,
      // out_of_range, domain_error come from std::vector or a bug, not from the checks).
      if (typeid(e) == typeid(std::logic_error)) {
        last_what_ = e.what();
        return Expect::logic;
      }
      fail(std::string("unexpected exception type ") + typeid(e).name() + ": " + e.what());
    } catch (...) {
      fail("an exception not derived from std::exception");
    }
  }

  void expect(const std::string& what, Expect want, Expect got) {
    if (want != got)
      fail(what + ": expected " + expect_name(want) + ", got " + expect_name(got) +
           (got != Expect::ok ? " (\"" + last_what_ + "\")" : ""));
  }

  /// Oracle (c) state: everything observable without calling forward/backward.
  struct Snapshot {
    std::vector<T> values;
    std::int64_t nbt = 0;
    bool training = false;
    bool operator==(const Snapshot& o) const {
      return nbt == o.nbt && training == o.training && values.size() == o.values.size() &&
             same_bytes(values.data(), o.values.data(), values.size());
    }
  };
  Snapshot snapshot(const Module& bn) const {
    Snapshot s;
    const auto add = [&](const Eigen::Tensor<T, 1>& t) { s.values.insert(s.values.end(), t.data(), t.data() + t.size()); };
    if (affine_) add(bn.weight()), add(bn.bias()), add(bn.weight_grad()), add(bn.bias_grad());
    if (track_) add(bn.running_mean()), add(bn.running_var()), s.nbt = bn.num_batches_tracked();
    s.training = bn.is_training();
    return s;
  }

  /// Oracle (c) on outputs: an eval forward of a probe, and a backward of the last forward's
  /// input (if there was one), on copies of the modules before and after the call: same bytes.
  void compare_probes(const Module& before, const Module& after, const std::string& what) {
    Dims<Rank> pd;
    pd.fill(1);
    pd[0] = 3;
    pd[static_cast<std::size_t>(channel_axis())] = C_;
    const auto n = static_cast<std::size_t>(product<Rank>(pd));
    std::vector<T> px(n), py(n), out_before(n);
    for (std::size_t k = 0; k < n; ++k) px[k] = static_cast<T>(static_cast<double>(k % 7) - 2.5);
    for (int pass = 0; pass < 2; ++pass) {
      Module m = pass == 0 ? before : after;
      m.eval();
      std::fill(py.begin(), py.end(), T(0));
      m.forward(Map(px.data(), pd), Map(py.data(), pd));
      if (pass == 0) out_before = py;
    }
    if (!same_bytes(py.data(), out_before.data(), n))
      fail(what + " threw but changed the module: an eval forward of a probe differs before/after");
    if (!saved_valid_) return;
    const std::size_t m_n = last_x_.size();
    std::vector<T> dy(m_n), dx(m_n), dx_before(m_n);
    for (std::size_t k = 0; k < m_n; ++k) dy[k] = static_cast<T>(static_cast<double>(k % 5) - 1.75);
    std::vector<T> g_before;
    for (int pass = 0; pass < 2; ++pass) {
      Module m = pass == 0 ? before : after;
      std::fill(dx.begin(), dx.end(), T(0));
      m.backward(Map(last_x_.ptr(), last_x_.dims), Map(dy.data(), last_x_.dims), Map(dx.data(), last_x_.dims));
      std::vector<T> g;
      if (affine_) {
        g.insert(g.end(), m.weight_grad().data(), m.weight_grad().data() + C_);
        g.insert(g.end(), m.bias_grad().data(), m.bias_grad().data() + C_);
      }
      if (pass == 0) dx_before = dx, g_before = g;
      else if (!same_bytes(dx.data(), dx_before.data(), m_n) || !same_bytes(g.data(), g_before.data(), g.size()))
        fail(what + " threw but changed the module: a backward of the last input differs before/after");
    }
  }

  /// Reads a new input: its dims (the channel axis stays num_features unless `channels` is set),
  /// misalignment and values.
  Buffer<T, Rank> read_tensor(const char* name, bool new_dims, std::optional<std::int64_t> channels = {}) {
    Buffer<T, Rank> b;
    b.dims = cur_dims_;
    if (new_dims) {
      for (int a = 0; a < Rank; ++a)
        if (a != channel_axis()) b.dims[static_cast<std::size_t>(a)] = read_dim(in_);
    }
    if (channels) b.dims[static_cast<std::size_t>(channel_axis())] = *channels;
    cap_size<Rank>(b.dims, channel_axis());
    b.off = in_.u8() & 1;
    b.data.assign(b.size() + b.off, T(0));
    const ValueSpec s = read_spec<T>(in_);
    const View v = view_of<Rank>(b.dims, kRowMajor, channels_last_);
    fill(b.data, b.off, v, s);
    log_.add(std::string("      ") + name + " " + dims_string<Rank>(b.dims) + (b.off ? " (misaligned)" : "") + ": " +
             s.describe() + values_summary(b.data, b.off, v));
    return b;
  }

  void call(Module& bn, int k) {
    const Op op = static_cast<Op>(in_.u8() % static_cast<int>(Op::count));
    const std::uint8_t flags = in_.u8();
    const bool new_dims = flags & 1;
    const bool training = !(flags & 2);  // for wrong_channels, wrong_output, inplace_forward
    log_.add("  call " + std::to_string(k) + ": " + op_name(op) +
             ((op == Op::wrong_channels || op == Op::wrong_output || op == Op::inplace_forward)
                  ? (training ? " [train mode]" : " [eval mode]")
                  : ""));
    const Module before = bn;
    const Snapshot snap = snapshot(bn);
    const std::string what = "call " + std::to_string(k) + " (" + op_name(op) + ")";
    Expect want = Expect::ok, got = Expect::ok;

    switch (op) {
      case Op::train_forward:
      case Op::train_forward2:
      case Op::eval_forward:
      case Op::inplace_forward: {
        const bool train = op == Op::inplace_forward ? training : op != Op::eval_forward;
        Buffer<T, Rank> x = read_tensor("x", new_dims);
        const View v = view_of<Rank>(x.dims, kRowMajor, channels_last_);
        const bool batch_stats = train || !track_;
        if (batch_stats && v.count() == 1) want = Expect::invalid;
        bn.train(train);
        const Snapshot mid = snapshot(bn);
        // y: a buffer of x's shape and misalignment filled with kSentinel (a value the library
        // does not write shows); in place, a copy of x (x keeps the input).
        Buffer<T, Rank> y = x;
        if (op != Op::inplace_forward) std::fill(y.data.begin(), y.data.end(), kSentinel);
        got = attempt([&] {
          if (op == Op::inplace_forward) bn.forward(Map(y.ptr(), y.dims), Map(y.ptr(), y.dims));
          else bn.forward(Map(x.ptr(), x.dims), Map(y.ptr(), y.dims));
        });
        expect(what, want, got);
        if (got != Expect::ok) {
          check_unchanged(before, bn, mid, what);
          break;
        }
        check_nan_contained(before, bn, x, y, nullptr, train, what);
        check_forward(mid, bn, x, y, train, what);
        break;
      }
      case Op::backward: {
        if (!saved_valid_) {
          // Backward before any forward: any shape, logic_error.
          Buffer<T, Rank> x = read_tensor("x", new_dims);
          std::vector<T> dy(x.size() + 1, T(1)), dx(x.size() + 1);
          got = attempt([&] { bn.backward(Map(x.ptr(), x.dims), Map(dy.data(), x.dims), Map(dx.data(), x.dims)); });
          expect(what + " before any forward", Expect::logic, got);
          check_unchanged(before, bn, snap, what);
          break;
        }
        Buffer<T, Rank> dy = read_tensor("dy", false);
        if (dy.dims != last_x_.dims) fail("internal: dy shape");
        const bool inplace = flags & 4;
        std::vector<T> dy_copy(dy.data);
        Buffer<T, Rank> dx = dy;
        std::fill(dx.data.begin(), dx.data.end(), kSentinel);
        got = attempt([&] {
          if (inplace) bn.backward(Map(last_x_.ptr(), last_x_.dims), Map(dy.ptr(), dy.dims), Map(dy.ptr(), dy.dims));
          else bn.backward(Map(last_x_.ptr(), last_x_.dims), Map(dy.ptr(), dy.dims), Map(dx.ptr(), dx.dims));
        });
        expect(what, Expect::ok, got);
        if (inplace) dx.data = dy.data, dy.data = dy_copy;
        if (inplace) log_.add("      (in place: dx into dy)");
        check_nan_contained(before, bn, last_x_, dx, &dy, true, what);
        check_backward(bn, dy, dx, what);
        break;
      }
      case Op::wrong_channels: {
        const std::int64_t delta = 1 + (flags >> 4) % 3;
        const std::int64_t wrong = (flags & 8) && C_ > delta ? C_ - delta : C_ + delta;
        Buffer<T, Rank> x = read_tensor("x", new_dims, wrong);
        bn.train(training);
        const Snapshot mid = snapshot(bn);
        got = attempt([&] { bn.forward(Map(x.ptr(), x.dims)); });
        expect(what, Expect::invalid, got);
        check_unchanged(before, bn, mid, what);
        break;
      }
      case Op::wrong_output: {
        Buffer<T, Rank> x = read_tensor("x", new_dims);
        Dims<Rank> yd = x.dims;
        const std::size_t axis = static_cast<std::size_t>((flags >> 4) % Rank);
        yd[axis] += 1 + (flags >> 6);
        cap_size<Rank>(yd, static_cast<int>(axis));
        if (yd == x.dims) yd[axis] = x.dims[axis] + 1;
        std::vector<T> y(static_cast<std::size_t>(product<Rank>(yd)));
        log_.add("      y " + dims_string<Rank>(yd));
        bn.train(training);
        const Snapshot mid = snapshot(bn);
        got = attempt([&] { bn.forward(Map(x.ptr(), x.dims), Map(y.data(), yd)); });
        expect(what, Expect::invalid, got);
        check_unchanged(before, bn, mid, what);
        break;
      }
      case Op::wrong_backward: {
        // Which argument is wrong: x (another batch size), dy, or dx; with no forward yet the
        // logic_error comes first whatever the shapes.
        const int which = (flags >> 4) % 3;
        const Dims<Rank> base = saved_valid_ ? last_x_.dims : cur_dims_;
        Dims<Rank> wd = base;
        const std::size_t axis = static_cast<std::size_t>(((flags >> 6) % Rank) == static_cast<unsigned>(channel_axis())
                                                              ? 0
                                                              : (flags >> 6) % Rank);
        wd[axis] = base[axis] + 1 + (flags & 8 ? 1 : 0);
        cap_size<Rank>(wd, static_cast<int>(axis));
        if (wd == base) wd[axis] = base[axis] > 0 ? base[axis] - 1 : 1;
        const Dims<Rank> xd = which == 0 ? wd : base, dyd = which == 1 ? wd : base, dxd = which == 2 ? wd : base;
        std::vector<T> xb(static_cast<std::size_t>(product<Rank>(xd)) + 1, T(1)),
            dyb(static_cast<std::size_t>(product<Rank>(dyd)) + 1, T(1)), dxb(static_cast<std::size_t>(product<Rank>(dxd)) + 1);
        if (which == 0 && saved_valid_) {}  // x of another shape
        else if (saved_valid_) std::copy(last_x_.data.begin(), last_x_.data.end(), xb.begin());
        log_.add("      x " + dims_string<Rank>(xd) + ", dy " + dims_string<Rank>(dyd) + ", dx " + dims_string<Rank>(dxd));
        got = attempt([&] {
          bn.backward(Map(xb.data(), xd), Map(dyb.data(), dyd), Map(dxb.data(), dxd));
        });
        expect(what, saved_valid_ ? Expect::invalid : Expect::logic, got);
        check_unchanged(before, bn, snap, what);
        break;
      }
      default: break;
    }
  }

  void check_unchanged(const Module& before, const Module& after, const Snapshot& mid, const std::string& what) {
    // mid: the state after train(on/off), which the driver set before the call.
    if (!(snapshot(after) == mid)) fail(what + " threw but changed the parameters, running statistics or counter");
    compare_probes(before, after, what);
  }

  // -------------------------------------------------------------------------------------------
  // Oracle (d), (e), (f) on a successful forward: x the input, y the output.
  void check_forward(const Snapshot& pre, const Module& bn, Buffer<T, Rank>& x, Buffer<T, Rank>& y, bool train,
                     const std::string& what) {
    const View v = view_of<Rank>(x.dims, kRowMajor, channels_last_);
    const bool batch_stats = train || !track_;
    const bool update = train && track_;
    const std::vector<T> xv(x.data.begin() + static_cast<std::ptrdiff_t>(x.off), x.data.end());
    const std::vector<T> yv(y.data.begin() + static_cast<std::ptrdiff_t>(y.off), y.data.end());
    std::vector<T> w, b, rm, rv;
    if (affine_) w.assign(bn.weight().data(), bn.weight().data() + C_), b.assign(bn.bias().data(), bn.bias().data() + C_);
    std::vector<T> rm_pre, rv_pre;
    std::int64_t nbt_pre = 0;
    if (track_) {
      // pre.values: [weight, bias, dweight, dbias] (if affine), running_mean, running_var.
      const std::size_t base = affine_ ? 4 * static_cast<std::size_t>(C_) : 0;
      rm_pre.assign(pre.values.begin() + static_cast<std::ptrdiff_t>(base),
                    pre.values.begin() + static_cast<std::ptrdiff_t>(base + static_cast<std::size_t>(C_)));
      rv_pre.assign(pre.values.begin() + static_cast<std::ptrdiff_t>(base + static_cast<std::size_t>(C_)),
                    pre.values.begin() + static_cast<std::ptrdiff_t>(base + 2 * static_cast<std::size_t>(C_)));
      nbt_pre = pre.nbt;
      rm.assign(bn.running_mean().data(), bn.running_mean().data() + C_);
      rv.assign(bn.running_var().data(), bn.running_var().data() + C_);
      // num_batches_tracked: +1 on every training forward (also an empty batch), else unchanged.
      if (bn.num_batches_tracked() != nbt_pre + (update ? 1 : 0))
        fail(what + ": num_batches_tracked " + std::to_string(bn.num_batches_tracked()) + ", expected " +
             std::to_string(nbt_pre + (update ? 1 : 0)));
    }
    const auto ref = batchnorm_test::naive_batch_norm<T>(xv, {}, v, batch_stats, w, b, eps_, rm_pre, rv_pre);
    if (!update && track_ &&
        (!same_bytes(rm.data(), rm_pre.data(), rm.size()) || !same_bytes(rv.data(), rv_pre.data(), rv.size())))
      fail(what + ": the running statistics changed in a forward that must not update them");

    std::vector<char> clean(static_cast<std::size_t>(C_), 1);  // no NaN/Inf among the channel's inputs
    for (Index c = 0; c < v.channels; ++c) {
      bool nonfinite = false;
      for_values(v, c, [&](std::size_t k) { nonfinite |= !std::isfinite(xv[k]); });
      const auto cu = static_cast<std::size_t>(c);
      if (affine_) nonfinite |= !std::isfinite(w[cu]) || !std::isfinite(b[cu]);
      if (!batch_stats) nonfinite |= !std::isfinite(rm_pre[cu]) || !std::isfinite(rv_pre[cu]);
      clean[cu] = !nonfinite;
    }

    const Index m = v.count();
    for (Index c = 0; c < v.channels; ++c) {
      const auto cu = static_cast<std::size_t>(c);
      const LD mean = static_cast<LD>(ref.mean[cu]), var = static_cast<LD>(ref.var[cu]);
      // Reference usable: finite inputs, statistics in the range where it is exact.
      const bool usable = clean[cu] && reference_trusted(mean, var, eps_);
      if (!usable) continue;
      const ChannelBounds bd = bounds_of(xv, 0, v, c, mean, var, eps_, batch_stats);
      const LD wc = affine_ ? std::fabs(static_cast<LD>(w[cu])) : 1;
      // (f) constant channel in batch statistics: y == bias exactly (when the scale is finite).
      bool constant = m > 0;
      for_values(v, c, [&](std::size_t k) { constant &= xv[k] == xv[static_cast<std::size_t>(c * v.inner)]; });
      if (batch_stats && constant && finite_t<T>(bd.invstd * wc)) {
        const T b0 = affine_ ? b[cu] : T(0);
        for_values(v, c, [&](std::size_t k) {
          if (!(yv[k] == b0))
            fail(what + ": constant channel " + std::to_string(c) + fmt(": y = %.17g at index %.0f, expected bias %.17g exactly",
                                                                        static_cast<double>(yv[k]), static_cast<double>(k),
                                                                        static_cast<double>(b0), 0));
        });
      }
      // (d) y, when the channel's scale weight * invstd is finite in T: the library normalizes
      // with it rounded to T (README "Errors": beyond T's range the outputs may be inf or NaN).
      // The terms weight * xhat and bias are rounded to T (elementwise_rounding): where they
      // cancel, y keeps that absolute error.
      if (finite_t<T>(bd.invstd * wc)) for_values(v, c, [&](std::size_t k) {
        const LD xhat = (static_cast<LD>(xv[k]) - mean) * bd.invstd;
        const LD bias_c = affine_ ? std::fabs(static_cast<LD>(b[cu])) : 0;
        const LD allow = wc * (bd.mean * bd.invstd + bd.var_rel * std::fabs(xhat)) +
                         elementwise_rounding<T>() * (wc * std::fabs(xhat) + bias_c);
        check_value<T>((what + ": y").c_str(), c, k, yv[k], static_cast<LD>(ref.y[k]), kTol, allow);
      });
      // (d) running statistics: the exact update from the state before the call, evaluated in
      // long double; the state before must be finite (inf * 0 and the like are IEEE's, not ours).
      if (update && m > 0) {
        if (!std::isfinite(rm_pre[cu]) || !std::isfinite(rv_pre[cu])) continue;
        const LD f = momentum_ ? static_cast<LD>(*momentum_) : 1 / static_cast<LD>(nbt_pre + 1);
        const LD n = static_cast<LD>(m);
        const LD exp_rm = (1 - f) * rm_pre[cu] + f * mean;
        const LD exp_rv = (1 - f) * rv_pre[cu] + f * var * n / (n - 1);
        check_value<T>((what + ": running_mean").c_str(), c, 0, rm[cu], exp_rm, kTol, f * bd.mean, false);
        check_value<T>((what + ": running_var").c_str(), c, 0, rv[cu], exp_rv, kTol,
                       f * n / (n - 1) * bd.var_rel * (var + static_cast<LD>(eps_)), false);
      }
    }
    // The state backward will use.
    saved_valid_ = true;
    saved_batch_stats_ = batch_stats;
    saved_w_ = w;
    saved_rm_ = rm_pre, saved_rv_ = rv_pre;
    last_x_ = x;
    cur_dims_ = x.dims;
  }

  /// Oracle (e): a NaN stays in its channel. If channels of x (or dy) hold a NaN, the same call
  /// on a copy of the module from before it, with those channels set to 0, must give the same
  /// bytes in every other channel: out (y or dx), the running statistics, dweight and dbias.
  /// (Every sum of the library has an order fixed by the view alone, so this is bitwise.)
  void check_nan_contained(const Module& before, const Module& after, const Buffer<T, Rank>& x,
                           const Buffer<T, Rank>& out, const Buffer<T, Rank>* dy, bool train, const std::string& what) {
    const View v = view_of<Rank>(x.dims, kRowMajor, channels_last_);
    std::vector<char> nan_channel(static_cast<std::size_t>(C_), 0);
    bool any = false;
    for (Index c = 0; c < v.channels; ++c)
      for_values(v, c, [&](std::size_t k) {
        const bool n = std::isnan(x.data[x.off + k]) || (dy && std::isnan(dy->data[dy->off + k]));
        nan_channel[static_cast<std::size_t>(c)] |= n;
        any |= n;
      });
    if (!any) return;
    Module m = before;
    Buffer<T, Rank> x2 = x, out2 = out;
    std::fill(out2.data.begin(), out2.data.end(), kSentinel);
    std::optional<Buffer<T, Rank>> dy2;
    if (dy) dy2 = *dy;
    for (Index c = 0; c < v.channels; ++c)
      if (nan_channel[static_cast<std::size_t>(c)])
        for_values(v, c, [&](std::size_t k) {
          x2.data[x2.off + k] = T(0);
          if (dy2) dy2->data[dy2->off + k] = T(0);
        });
    if (dy2) {
      // backward of the last forward's input: the copy's saved statistics are those of x, whose
      // NaN channels only affect their own statistics.
      Buffer<T, Rank> xc = x;
      m.backward(Map(xc.ptr(), x.dims), Map(dy2->ptr(), x.dims), Map(out2.ptr(), x.dims));
    } else {
      m.train(train);
      m.forward(Map(x2.ptr(), x.dims), Map(out2.ptr(), x.dims));
    }
    const auto vec_of = [&](const Module& mod, int which) -> std::vector<T> {
      const Eigen::Tensor<T, 1>* t = nullptr;
      if (which == 0 && affine_) t = &mod.weight_grad();
      if (which == 1 && affine_) t = &mod.bias_grad();
      if (which == 2 && track_) t = &mod.running_mean();
      if (which == 3 && track_) t = &mod.running_var();
      return t ? std::vector<T>(t->data(), t->data() + t->size()) : std::vector<T>();
    };
    for (Index c = 0; c < v.channels; ++c) {
      const auto cu = static_cast<std::size_t>(c);
      if (nan_channel[cu]) continue;
      for_values(v, c, [&](std::size_t k) {
        if (!same_bytes(&out.data[out.off + k], &out2.data[out2.off + k], 1))
          fail(what + ": channel " + std::to_string(c) + " (no NaN in its input) at index " + std::to_string(k) +
               fmt(" gives %.17g, but %.17g when the NaN channels are set to 0: a NaN leaks across channels",
                   static_cast<double>(out.data[out.off + k]), static_cast<double>(out2.data[out2.off + k]), 0, 0));
      });
      for (int which = 0; which < 4; ++which) {
        const std::vector<T> a = vec_of(after, which), b = vec_of(m, which);
        if (!a.empty() && !same_bytes(&a[cu], &b[cu], 1))
          fail(what + ": channel " + std::to_string(c) + (which < 2 ? " dweight/dbias" : " running statistics") +
               " differ when the NaN channels are set to 0: a NaN leaks across channels");
      }
    }
  }

  template <class F>
  static void for_values(const View& v, Index c, F&& f) {
    for (Index o = 0; o < v.outer; ++o)
      for (Index i = 0; i < v.inner; ++i) f(static_cast<std::size_t>((o * v.channels + c) * v.inner + i));
  }

  // Oracle (d), (e) on a successful backward of the last forward's input.
  void check_backward(const Module& bn, Buffer<T, Rank>& dyb, Buffer<T, Rank>& dxb, const std::string& what) {
    const View v = view_of<Rank>(last_x_.dims, kRowMajor, channels_last_);
    const std::vector<T> xv(last_x_.data.begin() + static_cast<std::ptrdiff_t>(last_x_.off), last_x_.data.end());
    const std::vector<T> dy(dyb.data.begin() + static_cast<std::ptrdiff_t>(dyb.off), dyb.data.end());
    const std::vector<T> dx(dxb.data.begin() + static_cast<std::ptrdiff_t>(dxb.off), dxb.data.end());
    std::vector<T> b;  // bias does not enter the gradients
    const auto ref =
        batchnorm_test::naive_batch_norm<T>(xv, dy, v, saved_batch_stats_, saved_w_, b, eps_, saved_rm_, saved_rv_);
    std::vector<T> dw, db;
    if (affine_)
      dw.assign(bn.weight_grad().data(), bn.weight_grad().data() + C_),
          db.assign(bn.bias_grad().data(), bn.bias_grad().data() + C_);
    const LD n = static_cast<LD>(v.count());
    std::vector<char> clean(static_cast<std::size_t>(C_), 1);
    for (Index c = 0; c < v.channels; ++c) {
      const auto cu = static_cast<std::size_t>(c);
      bool nonfinite = false;
      for_values(v, c, [&](std::size_t k) { nonfinite |= !std::isfinite(xv[k]) || !std::isfinite(dy[k]); });
      if (affine_) nonfinite |= !std::isfinite(saved_w_[cu]);
      if (!saved_batch_stats_) nonfinite |= !std::isfinite(saved_rm_[cu]) || !std::isfinite(saved_rv_[cu]);
      clean[cu] = !nonfinite;
    }
    for (Index c = 0; c < v.channels; ++c) {
      const auto cu = static_cast<std::size_t>(c);
      const LD mean = static_cast<LD>(ref.mean[cu]), var = static_cast<LD>(ref.var[cu]);
      const bool usable = clean[cu] && reference_trusted(mean, var, eps_) && finite_double(static_cast<LD>(ref.dbias[cu])) &&
                          finite_double(static_cast<LD>(ref.dweight[cu]));
      if (!usable) continue;
      const ChannelBounds bd = bounds_of(xv, 0, v, c, mean, var, eps_, saved_batch_stats_);
      const LD wc = affine_ ? std::fabs(static_cast<LD>(saved_w_[cu])) : 1;
      LD s_dy = 0, s_dyx = 0, max_xhat = 0, max_dy = 0;
      for_values(v, c, [&](std::size_t k) {
        const LD xhat = (static_cast<LD>(xv[k]) - mean) * bd.invstd;
        s_dy += std::fabs(static_cast<LD>(dy[k])), s_dyx += std::fabs(dy[k] * xhat);
        max_xhat = std::max(max_xhat, std::fabs(xhat));
        max_dy = std::max(max_dy, std::fabs(static_cast<LD>(dy[k])));
      });
      // Errors of the two sums: relative eps_sum of their |terms|, plus xhat's own error.
      const LD dxhat = bd.mean * bd.invstd + bd.var_rel * max_xhat;
      const LD e_sdy = bd.eps_sum * s_dy;
      const LD e_sdyx = bd.eps_sum * s_dyx + s_dy * dxhat;
      const LD k_c = wc * bd.invstd;
      // The library forms the gradients from sums of dy and products such as dy * weight *
      // invstd in double: when those overflow double (dy near DBL_MAX in a double module) the
      // exact, finite results are out of reach of the design; not compared.
      const LD dmax = static_cast<LD>(std::numeric_limits<double>::max()) / 16;
      if (s_dy * std::max<LD>(1, k_c) * (1 + max_xhat * max_xhat) > dmax) continue;
      if (affine_) {
        check_value<T>((what + ": dbias").c_str(), c, 0, db[cu], static_cast<LD>(ref.dbias[cu]), kTol, e_sdy);
        check_value<T>((what + ": dweight").c_str(), c, 0, dw[cu], static_cast<LD>(ref.dweight[cu]), kTol, e_sdyx);
      }
      // dx, when its constants (k_c, and the coefficients of x - mean and of 1) are finite in T
      // (README "Errors").
      // The term dy * k_c is formed in T too: where it overflows, dx may be inf or NaN although
      // the sum of the terms is in range (README "Errors").
      const bool dx_constants_finite = finite_t<T>(k_c) && finite_t<T>(k_c * bd.invstd * s_dyx / n) &&
                                       finite_t<T>(k_c * s_dy / n) && finite_t<T>(2 * k_c * max_dy);
      if (dx_constants_finite) for_values(v, c, [&](std::size_t k) {
        const LD xhat = (static_cast<LD>(xv[k]) - mean) * bd.invstd;
        LD allow = k_c * bd.var_rel * std::fabs(static_cast<LD>(dy[k])) +
                   elementwise_rounding<T>() * k_c * (std::fabs(static_cast<LD>(dy[k])) + s_dy / n + std::fabs(xhat) * s_dyx / n);
        if (saved_batch_stats_)
          allow += k_c * (e_sdy / n + std::fabs(xhat) * e_sdyx / n + dxhat * std::fabs(static_cast<LD>(ref.dweight[cu])) / n +
                          bd.var_rel * (s_dy / n + std::fabs(xhat) * s_dyx / n));
        check_value<T>((what + ": dx").c_str(), c, k, dx[k], static_cast<LD>(ref.dx[k]), kTol, allow);
      });
    }
  }

  ByteReader& in_;
  Log& log_;
  bool channels_last_ = false, affine_ = true, track_ = true;
  double eps_ = 1e-5;
  std::optional<double> momentum_;
  Dims<Rank> dims_{};
  std::int64_t C_ = 0;
  std::string last_what_;
  // The model of the module's saved state (what backward uses).
  Dims<Rank> cur_dims_{};
  bool saved_valid_ = false, saved_batch_stats_ = false;
  std::vector<T> saved_w_, saved_rm_, saved_rv_;
  Buffer<T, Rank> last_x_;

 public:
  void start() {
    cur_dims_ = dims_;
    run();
  }
};

template <class T, int Rank, int Layout, int SpatialDims>
void drive(ByteReader& in, std::uint8_t config, Log& log) {
  Driver<T, Rank, Layout, SpatialDims> d(in, config, log);
  d.start();
}

template <class T, int Layout>
void drive_layout(ByteReader& in, std::uint8_t config, Log& log) {
  switch ((config >> 1) & 3) {
    case 0: return drive<T, 2, Layout, 1>(in, config, log);
    case 1: return drive<T, 3, Layout, 1>(in, config, log);
    case 2: return drive<T, 4, Layout, 2>(in, config, log);
    default: return drive<T, 5, Layout, 3>(in, config, log);
  }
}

template <class T>
void drive_type(ByteReader& in, std::uint8_t config, Log& log) {
  if (config & 8) drive_layout<T, Eigen::ColMajor>(in, config, log);
  else drive_layout<T, Eigen::RowMajor>(in, config, log);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ByteReader in(data, size);
  Log log;
  g_log = &log;
  const std::uint8_t config = in.u8();
  if (config & 1) drive_type<double>(in, config, log);
  else drive_type<float>(in, config, log);
  g_log = nullptr;
  // BATCHNORM_FUZZ_PRINT=1 prints every decoded case (to see what a seed or a corpus file does).
  static const bool print = std::getenv("BATCHNORM_FUZZ_PRINT") != nullptr;
  if (print) {
    std::fprintf(stderr, "%s\n", log.header.c_str());
    for (const auto& l : log.lines) std::fprintf(stderr, "%s\n", l.c_str());
  }
  return 0;
}
