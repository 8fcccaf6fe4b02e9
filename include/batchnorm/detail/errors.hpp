// batchnorm: building the messages of the exceptions we throw. Free to change; not public API.
#pragma once

#include "../config.hpp"

#include <cmath>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// "(8, 3, 32, 32)" from any sequence of integers.
template <class Dims>
std::string shape_string(const Dims& dims) {
  std::ostringstream s;
  s << '(';
  bool first = true;
  for (const auto d : dims) {
    s << (first ? "" : ", ") << static_cast<std::int64_t>(d);
    first = false;
  }
  s << ')';
  return s.str();
}

/// Throws std::invalid_argument("<op>: <requirement>") ; op names the operation, the
/// requirement states what was expected and what was received.
[[noreturn]] inline void throw_invalid(const std::string& op, const std::string& requirement) {
  throw std::invalid_argument(op + ": " + requirement);
}

[[noreturn]] inline void throw_logic(const std::string& op, const std::string& requirement) {
  throw std::logic_error(op + ": " + requirement);
}

inline std::string to_string_exact(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

/// eps > 0 and finite.
inline void check_eps(const char* op, double eps) {
  if (!(eps > 0) || !std::isfinite(eps))
    throw_invalid(op, "eps must be positive and finite, got " + to_string_exact(eps));
}

/// momentum in [0, 1].
inline void check_momentum(const char* op, double momentum) {
  if (!(momentum >= 0 && momentum <= 1))
    throw_invalid(op, "momentum must be in [0, 1], got " + to_string_exact(momentum));
}

}  // namespace detail
BATCHNORM_END_NAMESPACE
