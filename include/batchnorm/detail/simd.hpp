// batchnorm: the little SIMD layer of the kernels. Free to change; not public API.
//
// GCC and Clang: generic vector types (__attribute__((vector_size))) of the widest registers
// the compile flags allow (64 bytes with AVX-512, 32 with AVX, 16 otherwise), so the same code
// is AVX-512 under -march=native and SSE2 under the default flags; nothing is forced on users.
// Other compilers: "vectors" of one lane, the scalar twin of every loop.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../functional/view.hpp"

#if defined(__GNUC__) && (defined(__SSE2__) || defined(__AVX__))
#include <immintrin.h>
#endif

namespace batchnorm::detail::simd {

#if defined(__GNUC__)
#if defined(__AVX512F__)
inline constexpr int kBytes = 64;
#elif defined(__AVX__)
inline constexpr int kBytes = 32;
#else
inline constexpr int kBytes = 16;
#endif

/// vec: lanes values of T; wide: the same lanes in accum_t<T> (double), for flushing partial sums.
template <class T>
struct Simd {
  using A = functional::accum_t<T>;
  static constexpr int lanes = kBytes / static_cast<int>(sizeof(T));
  typedef T vec __attribute__((vector_size(kBytes)));
  typedef A wide __attribute__((vector_size(kBytes / sizeof(T) * sizeof(A))));

  static vec load(const T* p) noexcept {
    vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, vec v) noexcept { std::memcpy(p, &v, sizeof v); }
  /// w += v, lane by lane, in A. (By reference: a wide vector may be wider than the ISA's
  /// registers, and passing or returning it by value would draw GCC's -Wpsabi note.)
  static void accumulate(wide& w, const vec& v) noexcept { w += __builtin_convertvector(v, wide); }
  static vec zero() noexcept { return vec{}; }
};
#else
inline constexpr int kBytes = 0;

template <class T>
struct Simd {
  using A = functional::accum_t<T>;
  static constexpr int lanes = 1;
  using vec = T;
  using wide = A;
  static vec load(const T* p) noexcept { return *p; }
  static void store(T* p, vec v) noexcept { *p = v; }
  static void accumulate(wide& w, const vec& v) noexcept { w += static_cast<wide>(v); }
  static vec zero() noexcept { return vec{}; }
};
#endif

/// Lane j of a vector (or the scalar itself).
template <class V>
inline auto lane(const V& v, int j) noexcept {
  if constexpr (std::is_arithmetic_v<V>) {
    (void)j;
    return v;
  } else {
    return v[j];
  }
}

/// Sum of the lanes of a wide vector, pairwise in a fixed order.
template <class T>
inline functional::accum_t<T> hsum(const typename Simd<T>::wide& w) noexcept {
  using A = functional::accum_t<T>;
  constexpr int n = Simd<T>::lanes;
  A a[n];
  for (int j = 0; j < n; ++j) a[j] = lane(w, j);
  for (int width = n / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  return a[0];
}

/// True if p is aligned for a non-temporal vector store.
template <class T>
inline bool stream_aligned(const T* p) noexcept {
  if constexpr (kBytes == 0) {
    (void)p;
    return false;
  } else {
    return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(kBytes) == 0;
  }
}

/// Non-temporal store of a full vector at a kBytes-aligned address (bypasses the caches, like a
/// large memcpy: no read-for-ownership of the destination); a plain store where the ISA has none.
template <class T>
inline void stream(T* p, typename Simd<T>::vec v) noexcept {
#if defined(__GNUC__) && defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) _mm512_stream_ps(p, reinterpret_cast<__m512>(v));
  else _mm512_stream_pd(p, reinterpret_cast<__m512d>(v));
#elif defined(__GNUC__) && defined(__AVX__)
  if constexpr (sizeof(T) == 4) _mm256_stream_ps(p, reinterpret_cast<__m256>(v));
  else _mm256_stream_pd(p, reinterpret_cast<__m256d>(v));
#elif defined(__GNUC__) && defined(__SSE2__)
  if constexpr (sizeof(T) == 4) _mm_stream_ps(p, reinterpret_cast<__m128>(v));
  else _mm_stream_pd(p, reinterpret_cast<__m128d>(v));
#else
  Simd<T>::store(p, v);
#endif
}

/// Orders the non-temporal stores before what follows (they are weakly ordered).
inline void stream_fence() noexcept {
#if defined(__GNUC__) && (defined(__SSE2__) || defined(__AVX__))
  _mm_sfence();
#endif
}

}  // namespace batchnorm::detail::simd
