// batchnorm: the copies of the kernels, one per ISA (config.hpp says which are compiled), and
// the dispatch to the copy active_isa() selects. Free to change; not public API.
//
// Each copy is the text of isa/body.hpp compiled inside its own namespace (detail::sse2,
// detail::avx2, detail::avx512, or detail::generic) with its vector width, under the target
// attribute of its ISA when the compile flags do not already enable it. Everything a copy needs
// from outside (the standard library, intrinsics, plan, threads, exact loops) is included here,
// before the copies.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>
#include <utility>

#include "../config.hpp"
#include "../isa.hpp"
#include "../view.hpp"
#include "coef.hpp"
#include "exact.hpp"
#include "moments.hpp"
#include "parallel.hpp"
#include "plan.hpp"
#include "tuning.hpp"

#if BATCHNORM_X86
#include <immintrin.h>
#endif

#if BATCHNORM_HAS_SSE2
BATCHNORM_BEGIN_NAMESPACE
namespace detail::sse2 {
inline constexpr int kBytes = 16;
inline constexpr Isa kIsa = Isa::sse2;
#include "isa/body.hpp"
}  // namespace detail::sse2
BATCHNORM_END_NAMESPACE
#endif

#if BATCHNORM_HAS_AVX2
#if BATCHNORM_FLAGS_LEVEL < 2
BATCHNORM_TARGET_AVX2_BEGIN
#endif
BATCHNORM_BEGIN_NAMESPACE
namespace detail::avx2 {
inline constexpr int kBytes = 32;
inline constexpr Isa kIsa = Isa::avx2;
#include "isa/body.hpp"
}  // namespace detail::avx2
BATCHNORM_END_NAMESPACE
#if BATCHNORM_FLAGS_LEVEL < 2
BATCHNORM_TARGET_END
#endif
#endif

#if BATCHNORM_HAS_AVX512
#if BATCHNORM_FLAGS_LEVEL < 3
BATCHNORM_TARGET_AVX512_BEGIN
#endif
BATCHNORM_BEGIN_NAMESPACE
namespace detail::avx512 {
inline constexpr int kBytes = 64;
inline constexpr Isa kIsa = Isa::avx512;
#include "isa/body.hpp"
}  // namespace detail::avx512
BATCHNORM_END_NAMESPACE
#if BATCHNORM_FLAGS_LEVEL < 3
BATCHNORM_TARGET_END
#endif
#endif

#if BATCHNORM_HAS_GENERIC
BATCHNORM_BEGIN_NAMESPACE
namespace detail::generic {
#if defined(__GNUC__)
inline constexpr int kBytes = 16;
#else
inline constexpr int kBytes = 0;
#endif
inline constexpr Isa kIsa = Isa::generic;
#include "isa/body.hpp"
}  // namespace detail::generic
BATCHNORM_END_NAMESPACE
#endif

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// f(K{}) with K the Kernels of the copy that runs for `isa` (compiled_isa(isa) is compiled).
template <class F>
void with_kernels(Isa isa, F&& f) {
  switch (isa) {
#if BATCHNORM_HAS_AVX512
    case Isa::avx512: return f(avx512::Kernels{});
#endif
#if BATCHNORM_HAS_AVX2
    case Isa::avx2: return f(avx2::Kernels{});
#endif
#if BATCHNORM_HAS_SSE2
    case Isa::sse2: return f(sse2::Kernels{});
#endif
#if BATCHNORM_HAS_GENERIC
    case Isa::generic: return f(generic::Kernels{});
#endif
    default: BATCHNORM_ASSERT(false, "compiled_isa names a compiled copy"); return;
  }
}

/// f(K{}) with K the Kernels of the active copy (active_isa()). Throws std::invalid_argument
/// only if BATCHNORM_ISA holds an unknown value, before f runs.
template <class F>
void dispatch(F&& f) {
  with_kernels(active_isa(), std::forward<F>(f));
}

}  // namespace detail
BATCHNORM_END_NAMESPACE
