// batchnorm: the little SIMD layer of one ISA copy of the kernels. Free to change; not public API.
// No include guard: detail/dispatch.hpp includes the isa/ files once per ISA, inside namespace
// detail::<isa>, which defines kBytes (the vector width in bytes) and kIsa. The width comes from
// that namespace, never from the compiler's __AVX*__ macros (they are not defined inside a
// target region).
//
// GCC and Clang: generic vector types (__attribute__((vector_size(kBytes)))) as member typedefs
// of a class template (GCC ignores vector_size on an alias template of dependent size); x86
// intrinsics only where the generic form is slower (masked loads and stores of AVX-512,
// non-temporal stores). Other compilers: "vectors" of one lane, the scalar twin of every loop.

/// An array extent from a signed count (array bounds are size_t; a signed template constant in
/// a bound would warn under -Wsign-conversion).
constexpr std::size_t extent(Index n) noexcept { return static_cast<std::size_t>(n); }

namespace simd {

#if defined(__GNUC__)
/// vec: `lanes` values of T in one register. wide: the same lanes in accum_t<T> (double), as
/// `parts` registers of native width (two for float), where partial sums are flushed.
template <class T>
struct Simd {
  using A = accum_t<T>;
  static constexpr int lanes = kBytes / static_cast<int>(sizeof(T));
  static constexpr int parts = static_cast<int>(sizeof(A) / sizeof(T));
  typedef T vec __attribute__((vector_size(kBytes)));
  typedef T part __attribute__((vector_size(kBytes / (sizeof(A) / sizeof(T)))));
  typedef A avec __attribute__((vector_size(kBytes)));
  struct wide {
    avec p[extent(parts)];
  };
  /// AVX-512 has masked loads and stores; the narrower copies copy partial vectors through memory.
  static constexpr bool masked = BATCHNORM_X86 && kBytes == 64;

  static vec load(const T* p) noexcept {
    vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(T* p, vec v) noexcept { std::memcpy(p, &v, sizeof v); }
  static vec zero() noexcept { return vec{}; }
  /// The first n < lanes values at p, zeros after them; reads nothing past p[n - 1].
  static vec load_n(const T* p, int n) noexcept {
#if BATCHNORM_X86
    if constexpr (masked) {
      if constexpr (sizeof(T) == 4)
        return reinterpret_cast<vec>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p));
      else
        return reinterpret_cast<vec>(_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p));
    }
#endif
    vec v{};
    std::memcpy(&v, p, sizeof(T) * static_cast<std::size_t>(n));
    return v;
  }
  /// Writes the first n < lanes values of v to p, nothing past p[n - 1].
  static void store_n(T* p, vec v, int n) noexcept {
#if BATCHNORM_X86
    if constexpr (masked) {
      if constexpr (sizeof(T) == 4)
        _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v));
      else
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), reinterpret_cast<__m512d>(v));
      return;
    }
#endif
    std::memcpy(p, &v, sizeof(T) * static_cast<std::size_t>(n));
  }
  /// The first n lanes of a, the others of b (0 < n < lanes).
  static vec blend_first(vec a, vec b, int n) noexcept {
#if BATCHNORM_X86
    if constexpr (masked) {
      if constexpr (sizeof(T) == 4)
        return reinterpret_cast<vec>(_mm512_mask_blend_ps(static_cast<__mmask16>((1u << n) - 1),
                                                          reinterpret_cast<__m512>(b), reinterpret_cast<__m512>(a)));
      else
        return reinterpret_cast<vec>(_mm512_mask_blend_pd(static_cast<__mmask8>((1u << n) - 1),
                                                          reinterpret_cast<__m512d>(b), reinterpret_cast<__m512d>(a)));
    }
#endif
    for (int l = 0; l < n; ++l) b[l] = a[l];
    return b;
  }
  /// v with the lanes from n on set to zero (n < lanes).
  static vec keep_n(vec v, int n) noexcept {
#if BATCHNORM_X86
    if constexpr (masked) {
      if constexpr (sizeof(T) == 4)
        return reinterpret_cast<vec>(_mm512_maskz_mov_ps(static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v)));
      else
        return reinterpret_cast<vec>(_mm512_maskz_mov_pd(static_cast<__mmask8>((1u << n) - 1), reinterpret_cast<__m512d>(v)));
    }
#endif
    for (int l = n; l < lanes; ++l) v[l] = T(0);
    return v;
  }
  /// The square root of every lane, correctly rounded as std::sqrt (IEEE 754): the same bits,
  /// NaN for a negative lane.
  static vec sqrt(vec v) noexcept {
#if BATCHNORM_X86
    if constexpr (sizeof(T) == 8 && kBytes == 64) {
      // The maskz form: GCC 12's _mm512_sqrt_pd warns -Wmaybe-uninitialized (_mm512_undefined_pd).
      return reinterpret_cast<vec>(_mm512_maskz_sqrt_pd(static_cast<__mmask8>(0xFF), reinterpret_cast<__m512d>(v)));
    } else if constexpr (sizeof(T) == 8 && kBytes == 32) {
      return reinterpret_cast<vec>(_mm256_sqrt_pd(reinterpret_cast<__m256d>(v)));
    } else if constexpr (sizeof(T) == 8 && kBytes == 16) {
      return reinterpret_cast<vec>(_mm_sqrt_pd(reinterpret_cast<__m128d>(v)));
    }
#endif
    for (int l = 0; l < lanes; ++l) v[l] = std::sqrt(v[l]);
    return v;
  }
  /// Part k of v (float: half k) in A. AVX-512 and AVX2 convert a half in one instruction
  /// (GCC's generic form splits the 512-bit conversion into four 128-bit ones and shuffles:
  /// the lane path's float statistics ran 1.5x slower).
  static avec widen(const vec& v, int k) noexcept {
#if BATCHNORM_X86
    if constexpr (parts == 2 && kBytes == 64) {
      // The zero-masking form: the unmasked intrinsic (and the 512-to-256 casts and extracts)
      // start from an undefined register, which GCC 12 reports as maybe-uninitialized.
      __m256 h;
      std::memcpy(&h, reinterpret_cast<const char*>(&v) + static_cast<std::size_t>(k) * sizeof h, sizeof h);
      return reinterpret_cast<avec>(_mm512_maskz_cvtps_pd(0xFF, h));
    } else if constexpr (parts == 2 && kBytes == 32) {
      const __m256 x = reinterpret_cast<__m256>(v);
      return reinterpret_cast<avec>(_mm256_cvtps_pd(k == 0 ? _mm256_castps256_ps128(x) : _mm256_extractf128_ps(x, 1)));
    }
#endif
    if constexpr (parts == 1) {
      return __builtin_convertvector(v, avec);
    } else {
      part h;
      std::memcpy(&h, reinterpret_cast<const char*>(&v) + static_cast<std::size_t>(k) * sizeof(part), sizeof h);
      return __builtin_convertvector(h, avec);
    }
  }
  /// w += v, lane by lane, in A (float: each half of v converted to a register of doubles).
  static void accumulate(wide& w, const vec& v) noexcept {
    for (int k = 0; k < parts; ++k) w.p[k] += widen(v, k);
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
  /// Sums of products dy * (x - h), lane by lane: for float in double (`wide`), where x - h and
  /// the product are exact and only the addition rounds; for double in T.
  static constexpr bool wide_products = parts > 1;
  // (std::conditional_t would drop vec's vector attribute: a template argument loses it.)
  template <bool Wide, int = 0>
  struct ProdOf {
    using type = wide;
  };
  template <int Unused>
  struct ProdOf<false, Unused> {
    typedef T type __attribute__((vector_size(kBytes)));
  };
  using prod = typename ProdOf<wide_products>::type;
  static prod prod_zero() noexcept { return prod{}; }
  /// p += dy * (x - h), lane by lane: for float all in double (x - h exact for any x, the
  /// product exact, only the addition rounds), for double in T.
  static void prod_add(prod& p, vec dy, vec x, vec h) noexcept {
    if constexpr (wide_products) {
      for (int k = 0; k < parts; ++k) p.p[k] += widen(dy, k) * (widen(x, k) - widen(h, k));
    } else {
      p += dy * (x - h);
    }
  }
  /// p += x - s, lane by lane: for float in double (x - s exact for any x), for double in T.
  static void centred_add(prod& p, vec x, vec s) noexcept {
    if constexpr (wide_products) {
      for (int k = 0; k < parts; ++k) p.p[k] += widen(x, k) - widen(s, k);
    } else {
      p += x - s;
    }
  }
  /// w += p, lane by lane, in A.
  static void prod_flush(wide& w, const prod& p) noexcept {
    if constexpr (wide_products) add(w, p);
    else accumulate(w, p);
  }
  /// The lanes of p in A, into out[0..lanes).
  static void prod_lanes(const prod& p, A* out) noexcept {
    if constexpr (wide_products) {
      lanes_of(p, out);
    } else {
      wide w{};
      accumulate(w, p);
      lanes_of(w, out);
    }
  }
  /// The lanes of w in order, into out[0..lanes).
  static void lanes_of(const wide& w, A* out) noexcept { std::memcpy(out, &w, sizeof(A) * lanes); }
};

/// N doubles in one vector (the halving steps of hsum).
template <int N>
struct Doubles {
  typedef double type __attribute__((vector_size(N * sizeof(double))));
};

/// The sum of the N lanes of v, halving: lanes [0, N/2) += lanes [N/2, N), until one is left.
template <int N>
inline double halving_sum(typename Doubles<N>::type v) noexcept {
  if constexpr (N == 1) {
    return v[0];
  } else {
    typename Doubles<N / 2>::type lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return halving_sum<N / 2>(lo + hi);
  }
}

/// Sum of the lanes of a wide vector, pairwise in a fixed order: with a[0..n) its lanes,
///   for (width = n / 2; width > 0; width /= 2) a[j] += a[j + width] for j < width;  a[0]
/// in registers (p[0] + p[1] is the first halving when there are two parts).
template <class T>
inline accum_t<T> hsum(const typename Simd<T>::wide& w) noexcept {
  static_assert(std::is_same_v<accum_t<T>, double>, "the register reduction is written for double sums");
  auto v = w.p[0];
  for (int k = 1; k < Simd<T>::parts; ++k) v += w.p[k];
  return halving_sum<kBytes / static_cast<int>(sizeof(double))>(v);
}

/// True if p is aligned for a non-temporal vector store.
template <class T>
inline bool stream_aligned(const T* p) noexcept {
  return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(kBytes) == 0;
}

/// Non-temporal store of a full vector at a kBytes-aligned address (bypasses the caches, like a
/// large memcpy: no read-for-ownership of the destination); a plain store where there is none.
template <class T>
inline void stream(T* p, typename Simd<T>::vec v) noexcept {
#if BATCHNORM_X86
  if constexpr (kBytes == 64) {
    if constexpr (sizeof(T) == 4) _mm512_stream_ps(p, reinterpret_cast<__m512>(v));
    else _mm512_stream_pd(p, reinterpret_cast<__m512d>(v));
  } else if constexpr (kBytes == 32) {
    if constexpr (sizeof(T) == 4) _mm256_stream_ps(p, reinterpret_cast<__m256>(v));
    else _mm256_stream_pd(p, reinterpret_cast<__m256d>(v));
  } else {
    if constexpr (sizeof(T) == 4) _mm_stream_ps(p, reinterpret_cast<__m128>(v));
    else _mm_stream_pd(p, reinterpret_cast<__m128d>(v));
  }
#else
  Simd<T>::store(p, v);
#endif
}

/// Orders the non-temporal stores before what follows (they are weakly ordered).
inline void stream_fence() noexcept {
#if BATCHNORM_X86
  _mm_sfence();
#endif
}

#else  // not GCC or Clang: scalar "vectors" of one lane

template <class T>
struct Simd {
  using A = accum_t<T>;
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
  static vec sqrt(vec v) noexcept { return std::sqrt(v); }
  static void accumulate(wide& w, const vec& v) noexcept { w.p += static_cast<A>(v); }
  static void add(wide& w, const wide& u) noexcept { w.p += u.p; }
  static constexpr bool wide_products = true;
  using prod = wide;
  static prod prod_zero() noexcept { return prod{}; }
  static void prod_add(prod& p, vec dy, vec x, vec h) noexcept {
    p.p += static_cast<A>(dy) * (static_cast<A>(x) - static_cast<A>(h));
  }
  static void centred_add(prod& p, vec x, vec s) noexcept { p.p += static_cast<A>(x) - static_cast<A>(s); }
  static void prod_flush(wide& w, const prod& p) noexcept { w.p += p.p; }
  static void prod_lanes(const prod& p, A* out) noexcept { *out = p.p; }
  static void add_to(A* out, const vec& v) noexcept { *out += static_cast<A>(v); }
  static void lanes_of(const wide& w, A* out) noexcept { *out = w.p; }
};
template <class T>
inline accum_t<T> hsum(const typename Simd<T>::wide& w) noexcept {
  return w.p;
}
template <class T>
inline bool stream_aligned(const T*) noexcept {
  return false;
}
template <class T>
inline void stream(T* p, T v) noexcept {
  *p = v;
}
inline void stream_fence() noexcept {}
#endif

}  // namespace simd
