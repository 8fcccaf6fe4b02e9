// Double-double arithmetic for the naive reference (naive.hpp): a value is hi + lo, two doubles
// with |lo| <= ulp(hi) / 2, about 106 bits of precision, built from error-free transforms in
// plain double arithmetic only:
//   two_sum(a, b):  s + e == a + b exactly, s = fl(a + b)      (Knuth; no branch, any order)
//   two_prod(a, b): p + e == a * b exactly, p = fl(a * b)      (e = fma(a, b, -p))
// Unlike long double (80-bit x87 on x86-64, but 64-bit under valgrind, which emulates x87 in
// double, and 64-bit on other ABIs), it is equally accurate wherever IEEE double and a correctly
// rounded std::fma are available: valgrind emulates FMA exactly, and without an FMA
// instruction std::fma is glibc's exact software fma. two_sum has no multiplication for the
// compiler to contract, and two_prod's fma is explicit, so -ffp-contract cannot break them.
// Algorithms: Hida, Li, Bailey, "Library for double-double and quad-double arithmetic" (QD).
#pragma once

#include <cmath>

namespace batchnorm_test {

struct DoubleDouble {
  double hi = 0, lo = 0;

  DoubleDouble() = default;
  DoubleDouble(double v) : hi(v) {}  // implicit, as double -> long double is
  DoubleDouble(double h, double l) : hi(h), lo(l) {}

  /// The nearest double (hi is the rounded sum once normalised).
  explicit operator double() const { return hi; }

  static DoubleDouble two_sum(double a, double b) {
    const double s = a + b;
    const double bb = s - a;
    return {s, (a - (s - bb)) + (b - bb)};
  }
  /// Requires |a| >= |b| (or a == 0).
  static DoubleDouble quick_two_sum(double a, double b) {
    const double s = a + b;
    return {s, b - (s - a)};
  }
  static DoubleDouble two_prod(double a, double b) {
    const double p = a * b;
    return {p, std::fma(a, b, -p)};
  }

  friend DoubleDouble operator-(const DoubleDouble& a) { return {-a.hi, -a.lo}; }
  friend DoubleDouble operator+(const DoubleDouble& a, const DoubleDouble& b) {
    DoubleDouble s = two_sum(a.hi, b.hi);
    const DoubleDouble t = two_sum(a.lo, b.lo);
    s = quick_two_sum(s.hi, s.lo + t.hi);
    return quick_two_sum(s.hi, s.lo + t.lo);
  }
  friend DoubleDouble operator-(const DoubleDouble& a, const DoubleDouble& b) { return a + -b; }
  friend DoubleDouble operator*(const DoubleDouble& a, const DoubleDouble& b) {
    const DoubleDouble p = two_prod(a.hi, b.hi);
    return quick_two_sum(p.hi, p.lo + (a.hi * b.lo + a.lo * b.hi));
  }
  /// Long division: three double quotient digits, each correcting the remainder of the last.
  friend DoubleDouble operator/(const DoubleDouble& a, const DoubleDouble& b) {
    const double q1 = a.hi / b.hi;
    DoubleDouble r = a - DoubleDouble(q1) * b;
    const double q2 = r.hi / b.hi;
    r = r - DoubleDouble(q2) * b;
    const double q3 = r.hi / b.hi;
    return quick_two_sum(q1, q2) + DoubleDouble(q3);
  }
  DoubleDouble& operator+=(const DoubleDouble& b) { return *this = *this + b; }
  DoubleDouble& operator-=(const DoubleDouble& b) { return *this = *this - b; }
  DoubleDouble& operator*=(const DoubleDouble& b) { return *this = *this * b; }
  DoubleDouble& operator/=(const DoubleDouble& b) { return *this = *this / b; }

  /// sqrt(a) = x + (a - x*x) / (2x) with x = sqrt(a.hi): one Newton step doubles the precision.
  friend DoubleDouble sqrt(const DoubleDouble& a) {
    if (!(a.hi > 0)) return DoubleDouble(std::sqrt(a.hi));  // 0, negative (NaN) or NaN
    const double x = std::sqrt(a.hi);
    const DoubleDouble r = a - two_prod(x, x);
    return quick_two_sum(x, r.hi / (2 * x));
  }
};

}  // namespace batchnorm_test
