// batchnorm: which instruction set the kernels run with (runtime CPU dispatch).
//
// On x86-64 with GCC or Clang the kernels exist in up to three copies (config.hpp): x86-64
// baseline (Isa::sse2), x86-64-v3 (Isa::avx2: AVX2 + FMA) and x86-64-v4 (Isa::avx512:
// AVX-512 F/BW/DQ/VL). The first call that needs them picks the widest the CPU supports, capped
// by the environment variable BATCHNORM_ISA=sse2|avx2|avx512 when it is set, and keeps that
// choice for the life of the process (thread-safe). active_isa() says which copy runs.
#pragma once

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "config.hpp"

BATCHNORM_BEGIN_NAMESPACE

/// The instruction sets the kernels are compiled for, narrowest first. generic: the portable
/// copy of non-x86 targets (compiler vectors of 16 bytes, or scalar code).
enum class Isa { generic, sse2, avx2, avx512 };

/// "generic", "sse2", "avx2" or "avx512".
inline const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::sse2: return "sse2";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    default: return "generic";
  }
}

namespace detail {

/// The widest Isa this CPU (and its operating system) supports.
inline Isa cpu_isa() noexcept {
#if BATCHNORM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::sse2;
#else
  return Isa::generic;
#endif
}

/// Whether the CPU is AMD's (its vendor string; false off x86).
inline bool cpu_is_amd() noexcept {
#if BATCHNORM_X86
  __builtin_cpu_init();
  return __builtin_cpu_is("amd");
#else
  return false;
#endif
}

/// The cap set by the environment variable BATCHNORM_ISA (unset or empty: no cap). Throws
/// std::invalid_argument naming the variable and the values it takes on anything else.
inline Isa isa_cap_from_environment() {
  const char* value = std::getenv("BATCHNORM_ISA");
  if (value == nullptr || *value == '\0') return Isa::avx512;
  const std::string s(value);
  if (s == "sse2") return Isa::sse2;
  if (s == "avx2") return Isa::avx2;
  if (s == "avx512") return Isa::avx512;
  throw std::invalid_argument("batchnorm: environment variable BATCHNORM_ISA must be sse2, avx2 or avx512, got '" + s +
                              "'");
}

/// min(cpu_isa(), the BATCHNORM_ISA cap), decided at the first call and cached (a throwing first
/// call caches nothing: the next call reads the variable again).
inline Isa selected_isa() {
  static const Isa selected = [] {
    const Isa cpu = cpu_isa(), cap = isa_cap_from_environment();
    return cpu < cap ? cpu : cap;
  }();
  return selected;
}

/// The copy of the kernels this translation unit runs for the selected Isa: the widest compiled
/// copy not wider than it, or, when the compile flags already require a wider one (only that
/// copy exists then), that one.
constexpr Isa compiled_isa(Isa selected) noexcept {
  (void)selected;  // unused when one copy is compiled
#if BATCHNORM_HAS_AVX512
  if (selected >= Isa::avx512) return Isa::avx512;
#endif
#if BATCHNORM_HAS_AVX2
  if (selected >= Isa::avx2) return Isa::avx2;
#endif
#if BATCHNORM_HAS_SSE2
  return Isa::sse2;
#elif BATCHNORM_HAS_AVX2
  return Isa::avx2;
#elif BATCHNORM_HAS_AVX512
  return Isa::avx512;
#else
  return Isa::generic;
#endif
}

}  // namespace detail

/// The instruction set the kernels of this translation unit run with: the widest the CPU
/// supports, capped by BATCHNORM_ISA, among the copies compiled (config.hpp). Throws
/// std::invalid_argument if BATCHNORM_ISA holds anything but sse2, avx2 or avx512.
inline Isa active_isa() { return detail::compiled_isa(detail::selected_isa()); }

BATCHNORM_END_NAMESPACE
