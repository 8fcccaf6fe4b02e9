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

/// vec: `lanes` values of T in one register. wide: the same lanes in accum_t<T> (double), as
/// `parts` registers of native width (two for float), where partial sums are flushed.
template <class T>
struct Simd {
  using A = functional::accum_t<T>;
  static constexpr int lanes = kBytes / static_cast<int>(sizeof(T));
  static constexpr int parts = static_cast<int>(sizeof(A) / sizeof(T));
  typedef T vec __attribute__((vector_size(kBytes)));
  typedef T part __attribute__((vector_size(kBytes / (sizeof(A) / sizeof(T)))));
  typedef A avec __attribute__((vector_size(kBytes)));
  struct wide {
    avec p[parts];
  };

  static vec load(const T* p) noexcept {
    vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, vec v) noexcept { std::memcpy(p, &v, sizeof v); }
  static vec zero() noexcept { return vec{}; }
#if defined(__AVX512F__)
  /// The AVX-512 mask of the first n lanes.
  using mask = std::conditional_t<sizeof(T) == 4, __mmask16, __mmask8>;
  static mask first(int n) noexcept { return static_cast<mask>((1u << n) - 1); }
#endif
  /// The first n < lanes values at p, zeros after them; reads nothing past p[n - 1] (AVX-512:
  /// one masked load; elsewhere a copy).
  static vec load_n(const T* p, int n) noexcept {
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
      return reinterpret_cast<vec>(_mm512_maskz_loadu_ps(first(n), p));
    else
      return reinterpret_cast<vec>(_mm512_maskz_loadu_pd(first(n), p));
#else
    vec v{};
    std::memcpy(&v, p, sizeof(T) * static_cast<std::size_t>(n));
    return v;
#endif
  }
  /// Writes the first n < lanes values of v to p, nothing past p[n - 1].
  static void store_n(T* p, vec v, int n) noexcept {
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
      _mm512_mask_storeu_ps(p, first(n), reinterpret_cast<__m512>(v));
    else
      _mm512_mask_storeu_pd(p, first(n), reinterpret_cast<__m512d>(v));
#else
    std::memcpy(p, &v, sizeof(T) * static_cast<std::size_t>(n));
#endif
  }
  /// The first n lanes of a, the others of b (0 < n < lanes).
  static vec blend_first(vec a, vec b, int n) noexcept {
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
      return reinterpret_cast<vec>(_mm512_mask_blend_ps(first(n), reinterpret_cast<__m512>(b), reinterpret_cast<__m512>(a)));
    else
      return reinterpret_cast<vec>(_mm512_mask_blend_pd(first(n), reinterpret_cast<__m512d>(b), reinterpret_cast<__m512d>(a)));
#else
    for (int l = 0; l < n; ++l) b[l] = a[l];
    return b;
#endif
  }
  /// v with the lanes from n on set to zero (n < lanes).
  static vec keep_n(vec v, int n) noexcept {
#if defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
      return reinterpret_cast<vec>(_mm512_maskz_mov_ps(first(n), reinterpret_cast<__m512>(v)));
    else
      return reinterpret_cast<vec>(_mm512_maskz_mov_pd(first(n), reinterpret_cast<__m512d>(v)));
#else
    for (int l = n; l < lanes; ++l) v[l] = T(0);
    return v;
#endif
  }
  /// w += v, lane by lane, in A.
  static void accumulate(wide& w, const vec& v) noexcept {
    if constexpr (parts == 1) {
      w.p[0] += __builtin_convertvector(v, avec);
    } else {
#if defined(__AVX512F__)
      const __m512 f = reinterpret_cast<const __m512&>(v);
      w.p[0] += reinterpret_cast<avec>(_mm512_cvtps_pd(_mm512_castps512_ps256(f)));
      w.p[1] += reinterpret_cast<avec>(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
#elif defined(__AVX__)
      const __m256 f = reinterpret_cast<const __m256&>(v);
      w.p[0] += reinterpret_cast<avec>(_mm256_cvtps_pd(_mm256_castps256_ps128(f)));
      w.p[1] += reinterpret_cast<avec>(_mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
#elif defined(__SSE2__)
      const __m128 f = reinterpret_cast<const __m128&>(v);
      w.p[0] += reinterpret_cast<avec>(_mm_cvtps_pd(f));
      w.p[1] += reinterpret_cast<avec>(_mm_cvtps_pd(_mm_movehl_ps(f, f)));
#else
      for (int k = 0; k < parts; ++k) {
        part h;
        std::memcpy(&h, reinterpret_cast<const char*>(&v) + k * sizeof(part), sizeof h);
        w.p[k] += __builtin_convertvector(h, avec);
      }
#endif
    }
  }
  /// out[0..lanes) += v, lane by lane, in A (out: an array of A, any alignment).
  static void add_to(A* out, const vec& v) noexcept {
    wide w{};
    accumulate(w, v);
    for (int k = 0; k < parts; ++k) {
      avec o;
      std::memcpy(&o, out + k * (lanes / parts), sizeof o);
      o += w.p[k];
      std::memcpy(out + k * (lanes / parts), &o, sizeof o);
    }
  }
  static void add(wide& w, const wide& u) noexcept {
    for (int k = 0; k < parts; ++k) w.p[k] += u.p[k];
  }
  /// The lanes of w in order, into out[0..lanes).
  static void lanes_of(const wide& w, A* out) noexcept { std::memcpy(out, &w, sizeof(A) * lanes); }
};
#else
inline constexpr int kBytes = 0;

template <class T>
struct Simd {
  using A = functional::accum_t<T>;
  static constexpr int lanes = 1;
  using vec = T;
  struct wide {
    A p = 0;
  };
  static vec load(const T* p) noexcept { return *p; }
  static void store(T* p, vec v) noexcept { *p = v; }
  static vec zero() noexcept { return vec{}; }
  // Partial vectors (n < lanes == 1): never called with n > 0.
  static vec load_n(const T*, int) noexcept { return vec{}; }
  static void store_n(T*, vec, int) noexcept {}
  static vec keep_n(vec, int) noexcept { return vec{}; }
  static vec blend_first(vec, vec b, int) noexcept { return b; }
  static void accumulate(wide& w, const vec& v) noexcept { w.p += static_cast<A>(v); }
  static void add(wide& w, const wide& u) noexcept { w.p += u.p; }
  static void add_to(A* out, const vec& v) noexcept { *out += static_cast<A>(v); }
  static void lanes_of(const wide& w, A* out) noexcept { *out = w.p; }
};
#endif

/// Sum of the lanes of a wide vector, pairwise in a fixed order: with a[0..n) its lanes,
///   for (width = n / 2; width > 0; width /= 2) a[j] += a[j + width] for j < width;  a[0]
/// In registers (halves added) where the ISA is known; the same additions in the same order.
template <class T>
inline functional::accum_t<T> hsum(const typename Simd<T>::wide& w) noexcept {
  using A = functional::accum_t<T>;
#if defined(__GNUC__) && (defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__))
  static_assert(std::is_same_v<A, double>, "the register reduction is written for double sums");
  auto v = w.p[0];
  for (int k = 1; k < Simd<T>::parts; ++k) v += w.p[k];  // parts == 2: the first halving
#if defined(__AVX512F__)
  const __m512d v8 = reinterpret_cast<__m512d>(v);
  const __m256d v4 = _mm512_castpd512_pd256(v8) + _mm512_extractf64x4_pd(v8, 1);
#elif defined(__AVX__)
  const __m256d v4 = reinterpret_cast<__m256d>(v);
#endif
#if defined(__AVX__)
  const __m128d v2 = _mm256_castpd256_pd128(v4) + _mm256_extractf128_pd(v4, 1);
#else
  const __m128d v2 = reinterpret_cast<__m128d>(v);
#endif
  return v2[0] + v2[1];
#else
  constexpr int n = Simd<T>::lanes;
  A a[n];
  Simd<T>::lanes_of(w, a);
  for (int width = n / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  return a[0];
#endif
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
