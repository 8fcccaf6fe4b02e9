// batchnorm: sums in T vectors with flushes to double, and the strips of lanes that hold them. Free to change; not public API.
// No include guard: detail/dispatch.hpp includes the isa/ files once per ISA, inside namespace
// detail::<isa> (see isa/simd.hpp).

// ---------------------------------------------------------------------------------------------
// Vector sums with flushes to double.

/// Sums f over spans: add(p, n, f) adds f(x) for the n values x = p[0..n) (f gets a vector or a
/// scalar and returns the same kind); spans may be short (rows of a chunk): the T accumulators
/// carry over from one to the next. Four vector accumulators hide the add latency; a pair of
/// them holds at most kFlush values a lane before they move to the wide (double) sums.
/// Scalar twin: for (i) s += f(p[i]).
template <class T>
struct SpanSum {
  using S = simd::Simd<T>;
  using A = accum_t<T>;
  typename S::vec a0, a1, a2, a3;
  int steps = 0;  // additions to each accumulator since the last flush
  typename S::wide w0{}, w1{};

  // Written out (not defaulted) so that it is compiled in this copy's target region.
  SpanSum() noexcept : a0(S::zero()), a1(S::zero()), a2(S::zero()), a3(S::zero()) {}

  void flush() noexcept {
    S::accumulate(w0, a0 + a1);
    S::accumulate(w1, a2 + a3);
    a0 = a1 = a2 = a3 = S::zero();
    steps = 0;
  }
  void step() noexcept {
    if (++steps == kFlush / 2) flush();
  }

  template <class F>
  void add(const T* p, Index n, F f) noexcept {
    constexpr Index W = S::lanes;
    Index i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      a0 += f(S::load(p + i));
      a1 += f(S::load(p + i + W));
      a2 += f(S::load(p + i + 2 * W));
      a3 += f(S::load(p + i + 3 * W));
      step();
    }
    if (i < n) {  // at most three vectors and a partial one left: one to each of a0..a3
      if (i + W <= n) a0 += f(S::load(p + i)), i += W;
      if (i + W <= n) a1 += f(S::load(p + i)), i += W;
      if (i + W <= n) a2 += f(S::load(p + i)), i += W;
      if (i < n) {
        const int r = static_cast<int>(n - i);
        a3 += S::keep_n(f(S::load_n(p + i, r)), r);
      }
      step();
    }
  }
  A result() noexcept {
    flush();
    typename S::wide w = w0;
    S::add(w, w1);
    return simd::hsum<T>(w);
  }
};

/// The one-pass moments of spans about c (Scalar twin: for (i) s1 += x[i] - c,
/// s2 += (x[i] - c)^2): s1 in Simd::prod (float: in double, x - c exact, so the mean of many
/// float values keeps double's accuracy instead of float partial sums'), s2 in T partial sums
/// flushed to A every kFlush terms a lane (squares add without cancellation). Accumulators
/// carry over between spans.
template <class T, bool Squares = true>
struct MomentSpanSum {
  using S = simd::Simd<T>;
  using A = accum_t<T>;
  using P = typename S::prod;
  P a0, a1;
  typename S::vec b0, b1;
  int steps = 0;
  typename S::wide w0{}, w1{};

  // Written out (not defaulted) so that it is compiled in this copy's target region.
  MomentSpanSum() noexcept : a0(S::prod_zero()), a1(S::prod_zero()), b0(S::zero()), b1(S::zero()) {}

  void flush() noexcept {
    if constexpr (!S::wide_products) {
      S::accumulate(w0, a0 + a1);
      a0 = a1 = S::prod_zero();
    }
    if constexpr (Squares) {
      S::accumulate(w1, b0 + b1);
      b0 = b1 = S::zero();
    }
    steps = 0;
  }
  void step() noexcept {
    if (++steps == kFlush / 2) flush();
  }
  void add(const T* x, Index n, T c) noexcept {
    constexpr Index W = S::lanes;
    const auto cv = S::zero() + c;
    Index i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const auto x0 = S::load(x + i), x1 = S::load(x + i + W);
      const auto d0 = x0 - cv, d1 = x1 - cv;
      S::centred_add(a0, x0, cv), S::centred_add(a1, x1, cv);
      if constexpr (Squares) b0 += d0 * d0, b1 += d1 * d1;
      step();
    }
    if (i < n) {  // at most one vector and a partial one left: to a0/b0 and a1/b1
      if (i + W <= n) {
        const auto x0 = S::load(x + i);
        const auto d0 = x0 - cv;
        S::centred_add(a0, x0, cv);
        if constexpr (Squares) b0 += d0 * d0;
        i += W;
      }
      if (i < n) {
        const int r = static_cast<int>(n - i);
        const auto x1 = S::load_n(x + i, r), c1 = S::keep_n(cv, r);  // zero lanes: 0 - 0
        const auto d1 = x1 - c1;
        S::centred_add(a1, x1, c1);
        if constexpr (Squares) b1 += d1 * d1;
      }
      step();
    }
  }
  A first() noexcept {
    flush();
    if constexpr (S::wide_products) {
      typename S::wide w = a0;
      S::add(w, a1);
      return simd::hsum<T>(w);
    } else {
      return simd::hsum<T>(w0);
    }
  }
  A second() noexcept {
    flush();
    return simd::hsum<T>(w1);
  }
};

/// sum (x - s) over spans (Scalar twin: for (i) s1 += x[i] - s), in Simd::prod as
/// MomentSpanSum's first sum.
template <class T>
struct CentredSpanSum {
  using A = accum_t<T>;
  MomentSpanSum<T, false> m;
  void add(const T* x, Index n, T s) noexcept { m.add(x, n, s); }
  A result() noexcept { return m.first(); }
};

/// The two gradient sums over spans (row path, wide rows; Scalar twin:
///   for (i) s0 += dy[i], s1 += dy[i] * (x[i] - h)),
/// sum dy in T partial sums flushed to A as SpanSum does, sum dy * (x - h) in Simd::prod: for
/// float in double from the first term (x - h and the products exact: its only error is the
/// double additions, so a channel whose dweight nearly cancels keeps the float accuracy bar),
/// for double in T.
/// Accumulators carry over between spans.
template <class T>
struct GradSpanSum {
  using S = simd::Simd<T>;
  using A = accum_t<T>;
  using P = typename S::prod;
  typename S::vec a0, a1;
  P b0, b1;
  int steps = 0;
  typename S::wide w0{}, w1{};

  // Written out (not defaulted) so that it is compiled in this copy's target region.
  GradSpanSum() noexcept : a0(S::zero()), a1(S::zero()), b0(S::prod_zero()), b1(S::prod_zero()) {}

  void flush() noexcept {
    S::accumulate(w0, a0 + a1);
    a0 = a1 = S::zero();
    if constexpr (!S::wide_products) {
      S::accumulate(w1, b0 + b1);
      b0 = b1 = S::prod_zero();
    }
    steps = 0;
  }
  void step() noexcept {
    if (++steps == kFlush / 2) flush();
  }
  void add(const T* x, const T* dy, Index n, T h) noexcept {
    constexpr Index W = S::lanes;
    const auto hv = S::zero() + h;
    Index i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const auto d0 = S::load(dy + i), d1 = S::load(dy + i + W);
      a0 += d0, a1 += d1;
      S::prod_add(b0, d0, S::load(x + i), hv);
      S::prod_add(b1, d1, S::load(x + i + W), hv);
      step();
    }
    if (i < n) {  // at most one vector and a partial one left: to a0/b0 and a1/b1
      if (i + W <= n) {
        const auto d0 = S::load(dy + i);
        a0 += d0;
        S::prod_add(b0, d0, S::load(x + i), hv);
        i += W;
      }
      if (i < n) {
        const int r = static_cast<int>(n - i);
        const auto d1 = S::load_n(dy + i, r);
        a1 += d1;
        S::prod_add(b1, d1, S::load_n(x + i, r), S::keep_n(hv, r));  // zero lanes: 0 * (0 - 0)
      }
      step();
    }
  }
  /// Moves everything summed so far into (into0, into1), in A, and starts again from zero.
  void drain(typename S::wide& into0, typename S::wide& into1) noexcept {
    flush();
    S::add(into0, w0);
    if constexpr (S::wide_products) {
      S::prod_flush(into1, b0), S::prod_flush(into1, b1);
      b0 = b1 = S::prod_zero();
    } else {
      S::add(into1, w1);
    }
    w0 = w1 = typename S::wide{};
  }
  A first() noexcept {
    flush();
    return simd::hsum<T>(w0);
  }
  A second() noexcept {
    flush();
    if constexpr (S::wide_products) {
      typename S::wide w = b0;
      S::add(w, b1);
      return simd::hsum<T>(w);
    } else {
      return simd::hsum<T>(w1);
    }
  }
};

/// The nl lanes of a narrow tile (at most kNarrowVectors vectors) as NV vectors, the last one
/// partial when nl is not a multiple of the vector width: loads and stores of vector j of a row.
template <class T, int NV>
struct NarrowLanes {
  using S = simd::Simd<T>;
  static constexpr Index W = S::lanes;
  static constexpr int vectors = NV;
  int last;  // lanes of vector NV - 1: 1..W
  explicit NarrowLanes(Index nl) noexcept : last(static_cast<int>(nl - (NV - 1) * W)) {}
  typename S::vec load(const T* p, int j) const noexcept {
    return j < NV - 1 || last == W ? S::load(p + j * W) : S::load_n(p + j * W, last);
  }
  template <class V>
  void store(T* p, int j, V v) const noexcept {
    if (j < NV - 1 || last == W) S::store(p + j * W, v);
    else S::store_n(p + j * W, v, last);
  }
  using A = accum_t<T>;
  /// out[l] += t's lane l, in A, for the lanes (the flush of partial sums in T).
  void flush(const typename S::vec* t, accum_t<T>* out) const noexcept;
  /// The same for sums of products (Simd::prod).
  void flush_prod(const typename S::prod* t, accum_t<T>* out) const noexcept {
    if constexpr (!S::wide_products) {
      flush(t, out);
    } else {
      for (int j = 0; j < NV; ++j) {
        alignas(64) A lanes[extent(W)];
        S::prod_lanes(t[j], lanes);
        const int n = j < NV - 1 ? static_cast<int>(W) : last;
        for (int l = 0; l < W; ++l)  // a fixed trip count: n lanes of the W
          if (l < n) out[j * W + l] += lanes[l];
      }
    }
  }
};

/// Calls f(std::integral_constant<int, NV>{}) for NV = the vectors of nl lanes, if there are at
/// most kNarrowVectors; returns false (and calls nothing) otherwise.
template <class T, class F>
inline bool narrow_dispatch(Index nl, F f) noexcept {
  constexpr Index W = simd::Simd<T>::lanes;
  switch ((nl + W - 1) / W) {
    case 1: return f(std::integral_constant<int, 1>{}), true;
    case 2: return f(std::integral_constant<int, 2>{}), true;
    case 3: return f(std::integral_constant<int, 3>{}), true;
    case 4: return f(std::integral_constant<int, 4>{}), true;
    case 5: return f(std::integral_constant<int, 5>{}), true;
    case 6: return f(std::integral_constant<int, 6>{}), true;
    case 7: return f(std::integral_constant<int, 7>{}), true;
    case 8: return f(std::integral_constant<int, 8>{}), true;
    default: return false;
  }
}

/// The partial sums in T of a strip (NV vectors of lanes, L) over rows [r0, r1) (at most kFlush,
/// stride apart), into t[0..NV):  t[j] = sum_r f(x[r] vector j, a[j]), rows in order (the
/// NV vectors are NV independent chains). Every addition has at most one product operand (f's
/// product, if any, meets the running sum), so that a compiler contracting a * b + c into a
/// fused multiply-add (GCC's default) does it the same way in every code path: a lane's result
/// never depends on which strip or tile holds it, nor on the thread count.
template <class T, int NV, class F>
inline void strip_sums(const T* x, Index stride, Index r0, Index r1, const NarrowLanes<T, NV>& L, const T* a,
                       typename simd::Simd<T>::vec* t, F f) noexcept {
  using S = simd::Simd<T>;
  for (int j = 0; j < NV; ++j) t[j] = S::zero();
  for (Index r = r0; r < r1; ++r)
    for (int j = 0; j < NV; ++j) t[j] += f(L.load(x + r * stride, j), L.load(a, j));
}

template <class T, int NV>
void NarrowLanes<T, NV>::flush(const typename S::vec* t, accum_t<T>* out) const noexcept {
  for (int j = 0; j < NV - 1; ++j) S::add_to(out + j * W, t[j]);
  A* tail = out + (NV - 1) * W;
  if (last == W) return S::add_to(tail, t[NV - 1]);
  alignas(64) T lanes[extent(W)];
  S::store(lanes, t[NV - 1]);
  for (int l = 0; l < W; ++l)  // a fixed trip count: `last` lanes of the W
    if (l < last) tail[l] += static_cast<A>(lanes[l]);
}

/// Calls f(l0, L) for the strips [l0, l0 + n) of nl lanes, L the NarrowLanes of the strip:
/// Vectors vectors each, and what is left in strips of at most kNarrowVectors vectors.
template <class T, int Vectors, class F>
inline void for_each_strip(Index nl, F f) noexcept {
  constexpr Index W = simd::Simd<T>::lanes;
  Index l0 = 0;
  for (; l0 + Vectors * W <= nl; l0 += Vectors * W) f(l0, NarrowLanes<T, Vectors>(Vectors * W));
  for (; l0 < nl; l0 += kNarrowVectors * W) {
    const Index n = std::min(kNarrowVectors * W, nl - l0);
    narrow_dispatch<T>(n, [&](auto nv) { f(l0, NarrowLanes<T, decltype(nv)::value>(n)); });
  }
}

/// The A sums of the lanes of a narrow tile (NV vectors) in registers: zero, or load(s) from an
/// array; add(t) adds T partial sums lane by lane (as NarrowLanes::flush); store(s) writes them back.
template <class T, int NV>
struct RegisterSums {
  using S = simd::Simd<T>;
  using A = accum_t<T>;
  static constexpr Index W = S::lanes;
  typename S::wide w[extent(NV)] = {};

  void load(const A* s, Index nl) noexcept {
    BATCHNORM_ASSERT(nl <= NV * W, "the lanes fit the registers");
    alignas(64) A lanes[extent(NV * W)] = {};
    std::copy(s, s + nl, lanes);
    for (int j = 0; j < NV; ++j) std::memcpy(&w[j], lanes + j * W, sizeof w[j]);
  }
  void add(const typename S::vec* t) noexcept {
    for (int j = 0; j < NV; ++j) S::accumulate(w[j], t[j]);
  }
  void add_prod(const typename S::prod* t) noexcept {
    for (int j = 0; j < NV; ++j) S::prod_flush(w[j], t[j]);
  }
  void store(A* s, Index nl) const noexcept {
    BATCHNORM_ASSERT(nl <= NV * W, "the lanes fit the registers");
    alignas(64) A lanes[extent(NV * W)];
    for (int j = 0; j < NV; ++j) S::lanes_of(w[j], lanes + j * W);
    std::copy(lanes, lanes + nl, s);
  }
};

/// lane_sums for a narrow tile (nl lanes in NV vectors): strip_sums every kFlush rows, added to
/// A sums kept in registers (lane arrays would chain the rows through store-to-load round trips).
