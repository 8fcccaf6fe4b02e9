// batchnorm: configuration macros. Every BATCHNORM_ macro is defined here and nowhere else.
//
// What a user may define before including any batchnorm header:
//   BATCHNORM_ASSERT(cond, msg)  where internal invariant checks go (default: assert()).
//   BATCHNORM_NO_DISPATCH        compile one copy of the kernels, for the ISA the compile flags
//                                enable (the behaviour before runtime dispatch): no target
//                                attributes, no CPU detection, BATCHNORM_ISA ignored.
// Everything else here is derived from the compiler and its flags; see README "CPU dispatch".
#pragma once

#include <cassert>

#define BATCHNORM_VERSION_MAJOR 0
#define BATCHNORM_VERSION_MINOR 1
#define BATCHNORM_VERSION_PATCH 0

/// Internal invariant check (not for user errors, which throw). Define BATCHNORM_ASSERT before
/// including any batchnorm header to route it elsewhere; the default is assert().
#ifndef BATCHNORM_ASSERT
#define BATCHNORM_ASSERT(cond, msg) assert((cond) && (msg))
#endif

#if defined(__GNUC__)
#define BATCHNORM_NOINLINE __attribute__((noinline))
#define BATCHNORM_ALWAYS_INLINE inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define BATCHNORM_NOINLINE __declspec(noinline)
#define BATCHNORM_ALWAYS_INLINE __forceinline
#else
#define BATCHNORM_NOINLINE
#define BATCHNORM_ALWAYS_INLINE inline
#endif

// ---------------------------------------------------------------------------------------------
// Which copies of the kernels a translation unit compiles (detail/dispatch.hpp).
//
// x86-64 with GCC or Clang: the copies for x86-64 baseline (sse2), x86-64-v3 (avx2: AVX2 + FMA)
// and x86-64-v4 (avx512: AVX-512 F/BW/DQ/VL), each in its own namespace, from the level the
// compile flags already guarantee upwards; the copies above that level are compiled under a
// target attribute (BATCHNORM_TARGET_*_BEGIN/END) and chosen at run time (batchnorm::active_isa).
// With flags that enable AVX-512 (e.g. -march=native on an AVX-512 machine) only the avx512
// copy exists and nothing is dispatched. Elsewhere: one generic copy (GCC/Clang vectors of 16
// bytes, or scalar "vectors" of one lane for other compilers).
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && defined(__SSE2__)
#define BATCHNORM_X86 1
#else
#define BATCHNORM_X86 0
#endif

#if BATCHNORM_X86 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
#define BATCHNORM_FLAGS_LEVEL 3
#elif BATCHNORM_X86 && defined(__AVX2__) && defined(__FMA__)
#define BATCHNORM_FLAGS_LEVEL 2
#else
#define BATCHNORM_FLAGS_LEVEL 1
#endif

#if !BATCHNORM_X86
#define BATCHNORM_HAS_GENERIC 1
#define BATCHNORM_HAS_SSE2 0
#define BATCHNORM_HAS_AVX2 0
#define BATCHNORM_HAS_AVX512 0
#define BATCHNORM_ABI abi_generic
#elif defined(BATCHNORM_NO_DISPATCH)
#define BATCHNORM_HAS_GENERIC 0
#define BATCHNORM_HAS_SSE2 (BATCHNORM_FLAGS_LEVEL == 1)
#define BATCHNORM_HAS_AVX2 (BATCHNORM_FLAGS_LEVEL == 2)
#define BATCHNORM_HAS_AVX512 (BATCHNORM_FLAGS_LEVEL == 3)
#if BATCHNORM_FLAGS_LEVEL == 3
#define BATCHNORM_ABI abi_flags_avx512
#elif BATCHNORM_FLAGS_LEVEL == 2
#define BATCHNORM_ABI abi_flags_avx2
#else
#define BATCHNORM_ABI abi_flags_sse2
#endif
#else
#define BATCHNORM_HAS_GENERIC 0
#define BATCHNORM_HAS_SSE2 (BATCHNORM_FLAGS_LEVEL <= 1)
#define BATCHNORM_HAS_AVX2 (BATCHNORM_FLAGS_LEVEL <= 2)
#define BATCHNORM_HAS_AVX512 1
#if BATCHNORM_FLAGS_LEVEL == 3
#define BATCHNORM_ABI abi_avx512
#elif BATCHNORM_FLAGS_LEVEL == 2
#define BATCHNORM_ABI abi_dispatch_avx2
#else
#define BATCHNORM_ABI abi_dispatch_sse2
#endif
#endif

// Target regions for the copies above the flags' level. GCC: push_options/target; Clang: an
// attribute pushed onto every function (lambdas and templates included) until the pop.
#if BATCHNORM_X86 && !defined(BATCHNORM_NO_DISPATCH) && defined(__clang__)
#define BATCHNORM_TARGET_AVX2_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define BATCHNORM_TARGET_AVX512_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,avx512f,avx512bw,avx512dq,avx512vl\"))), apply_to = function)")
#define BATCHNORM_TARGET_END _Pragma("clang attribute pop")
#elif BATCHNORM_X86 && !defined(BATCHNORM_NO_DISPATCH)
#define BATCHNORM_TARGET_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define BATCHNORM_TARGET_AVX512_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,avx512f,avx512bw,avx512dq,avx512vl\")")
#define BATCHNORM_TARGET_END _Pragma("GCC pop_options")
#endif

// Every inline entity of the library lives in an inline namespace named after the set of copies
// above (BATCHNORM_ABI), so two translation units compiled with different flags (say one with
// -march=native, one without) never exchange instantiations: each keeps its own dispatch.
// With OpenMP, a second inline namespace does the same for the threaded loops.
#if defined(_OPENMP)
#define BATCHNORM_BEGIN_NAMESPACE \
  namespace batchnorm {           \
  inline namespace BATCHNORM_ABI {   \
  inline namespace omp {
#define BATCHNORM_END_NAMESPACE \
  }                             \
  }                             \
  }
#else
#define BATCHNORM_BEGIN_NAMESPACE \
  namespace batchnorm {           \
  inline namespace BATCHNORM_ABI {
#define BATCHNORM_END_NAMESPACE \
  }                             \
  }
#endif
