// batchnorm: the elementwise passes and their stores (plain or non-temporal). Free to change; not public API.
// No include guard: detail/dispatch.hpp includes the isa/ files once per ISA, inside namespace
// detail::<isa> (see isa/simd.hpp).

template <class T>
struct LaneCoefs {
  const T* k[5];
};

/// out[i] = at(i) for i < n, a vector (W values) at a time; at(i, r) with 0 < r < W is the vector
/// of the r values from i (zeros after them). With stream: a partial store up to the first
/// aligned address, then non-temporal stores of whole vectors; the tail as a partial store. In
/// place (out == the input at() reads) this is safe: the head vector reads [0, W) before anything
/// past the head is written.
template <class T, class At>
inline void store_span(T* out, Index n, bool stream, At at) noexcept {
  using S = simd::Simd<T>;
  constexpr Index W = S::lanes;
  Index i = 0;
  if constexpr (W > 1) {
    const auto addr = reinterpret_cast<std::uintptr_t>(out);
    if (stream && n >= 2 * W && addr % sizeof(T) == 0) {
      const int head = static_cast<int>((kBytes - addr % kBytes) % kBytes / sizeof(T));
      if (head) S::store_n(out, at(0, 0), head), i = head;
      for (; i + W <= n; i += W) simd::stream<T>(out + i, at(i, 0));
    }
  }
  for (; i + W <= n; i += W) S::store(out + i, at(i, 0));
  if constexpr (W > 1)
    if (i < n) S::store_n(out + i, at(i, static_cast<int>(n - i)), static_cast<int>(n - i));
}

/// out[i] = f(x[i], u[i], head, tail, p, q, r) for i < n, with the constants as scalars (row
/// path, K = Coef<T>) or loaded per lane (lane path, K = LaneCoefs<T>). u is read only if HasU.
/// With stream, full vectors at aligned addresses go out as non-temporal stores (a partial
/// vector up to the first aligned address, and the tail, as masked stores).
template <class T, bool HasU, class K, class F>
inline void apply_span(const T* x, const T* u, T* out, Index n, bool stream, const K& k, F f) noexcept {
  using S = simd::Simd<T>;
  constexpr bool per_lane = std::is_same_v<K, LaneCoefs<T>>;
  store_span(out, n, stream, [&](Index i, int r) {
    const auto ld = [r](const T* p) { return r ? S::load_n(p, r) : S::load(p); };
    const auto xv = ld(x + i);
    const auto uv = HasU ? ld(u + i) : S::zero();
    if constexpr (per_lane)
      return f(xv, uv, ld(k.k[0] + i), ld(k.k[1] + i), ld(k.k[2] + i), ld(k.k[3] + i), ld(k.k[4] + i));
    else
      return f(xv, uv, k.head, k.tail, k.p, k.q, k.r);
  });
}

/// narrow_apply with streamed rows that all start s lanes past an aligned address (0 < s < W,
/// rows a whole number of vectors apart): in each row, the lanes before its first aligned
/// address and those after its last whole aligned vector go out as masked plain stores, the
/// whole vectors between as non-temporal stores. The constants of each piece are loaded once
/// (k's arrays hold nl + W lanes or more; lanes past nl only feed masked-off results). In
/// place is safe: a row's stores never reach values of it not yet read.
template <class T, bool HasU, int NV, class F>
void narrow_apply_shifted(const T* x, const T* u, T* out, Index stride, Index rows, Index nl, const LaneCoefs<T>& k,
                          int s, F f) noexcept {
  using S = simd::Simd<T>;
  constexpr int W = S::lanes;
  const int n = static_cast<int>(nl);
  const int head = std::min(W - s, n);
  const int full = (n - head) / W;
  const int tail = n - head - full * W;
  if (shifted_rows_observer) shifted_rows_observer(rows);
  typename S::vec ch[5], cf[5][extent(NV)], ct[5];
  for (int m = 0; m < 5; ++m) {
    ch[m] = S::load(k.k[m]);
    ct[m] = S::load(k.k[m] + head + full * W);
    for (int j = 0; j < NV; ++j) cf[m][j] = j < full ? S::load(k.k[m] + head + j * W) : S::zero();
  }
  for (Index r = 0; r < rows; ++r) {
    const T* xr = x + r * stride;
    const T* ur = HasU ? u + r * stride : nullptr;
    T* o = out + r * stride;
    S::store_n(o, f(S::load_n(xr, head), HasU ? S::load_n(ur, head) : S::zero(), ch[0], ch[1], ch[2], ch[3], ch[4]),
               head);
    for (int j = 0; j < NV; ++j)
      if (j < full) {
        const Index i = head + j * W;
        simd::stream<T>(o + i, f(S::load(xr + i), HasU ? S::load(ur + i) : S::zero(), cf[0][j], cf[1][j], cf[2][j],
                                 cf[3][j], cf[4][j]));
      }
    if (tail) {
      const Index i = head + full * W;
      S::store_n(o + i, f(S::load_n(xr + i, tail), HasU ? S::load_n(ur + i, tail) : S::zero(), ct[0], ct[1], ct[2],
                          ct[3], ct[4]),
                 tail);
    }
  }
}

/// region_apply on a narrow tile (nl lanes in NV vectors): the lane constants stay in registers
/// for all `rows` rows (stride apart). When streaming and every row starts at an aligned
/// address, whole vectors go out as non-temporal stores; partial vectors and everything else
/// as plain stores.
template <class T, bool HasU, int NV, class F>
void narrow_apply(const T* x, const T* u, T* out, Index stride, Index rows, Index nl, const LaneCoefs<T>& k,
                  bool stream, F f) noexcept {
  using S = simd::Simd<T>;
  constexpr Index W = S::lanes;
  const NarrowLanes<T, NV> L(nl);
  typename S::vec c[5][extent(NV)];
  for (int m = 0; m < 5; ++m)
    for (int j = 0; j < NV; ++j) c[m][j] = L.load(k.k[m], j);
  // Rows of whole vectors apart: all start at the same offset from the vectors' grid.
  const bool streamable = W > 1 && stream && stride % W == 0;
  const auto addr = reinterpret_cast<std::uintptr_t>(out);
  if constexpr (W > 1)
    if (streamable && addr % kBytes != 0 && addr % sizeof(T) == 0)
      return narrow_apply_shifted<T, HasU, NV>(x, u, out, stride, rows, nl, k, static_cast<int>(addr % kBytes / sizeof(T)), f);
  // One loop for each kind of store, so that the row loop carries no store decision.
  const auto rows_with = [&](auto nt_stores) {
    for (Index r = 0; r < rows; ++r) {
      const T* xr = x + r * stride;
      T* o = out + r * stride;
      for (int j = 0; j < NV; ++j) {
        const auto v = f(L.load(xr, j), HasU ? L.load(u + r * stride, j) : S::zero(), c[0][j], c[1][j], c[2][j], c[3][j],
                         c[4][j]);
        if (decltype(nt_stores)::value && (j < NV - 1 || L.last == W)) simd::stream<T>(o + j * W, v);
        else L.store(o, j, v);
      }
    }
  };
  if (streamable && addr % kBytes == 0) rows_with(std::true_type{});
  else rows_with(std::false_type{});
}

/// out[i] = f(x[i], u[i], constants of channel (i / I) mod nt) for i < rows * nt * I: `rows`
/// contiguous rows of nt channels of I >= W values each, as one run (so that non-temporal stores
/// cover whole aligned vectors across channel and row boundaries). A vector that straddles a
/// boundary is computed with both channels' constants and blended (I >= W: at most one boundary
/// a vector). Heads and tails as apply_span.
template <class T, bool HasU, class F>
inline void apply_run(const T* x, const T* u, T* out, Index I, Index nt, Index rows, const Coef<T>* cfs, bool stream,
                      F f) noexcept {
  using S = simd::Simd<T>;
  constexpr Index W = S::lanes;
  if (W > 1 && I % W == 0 && (!stream || simd::stream_aligned(out))) {
    // Channels of whole vectors, on the vectors' grid: channel by channel, its constants
    // broadcast once, no boundary inside a vector.
    const auto pieces = [&](auto nt_stores) {
      for (Index piece = 0; piece < rows * nt; ++piece) {  // piece: (row, channel piece % nt)
        const Coef<T>& a = cfs[piece % nt];
        for (Index i = piece * I; i < (piece + 1) * I; i += W) {
          const auto v = f(S::load(x + i), HasU ? S::load(u + i) : S::zero(), a.head, a.tail, a.p, a.q, a.r);
          if constexpr (decltype(nt_stores)::value) simd::stream<T>(out + i, v);
          else S::store(out + i, v);
        }
      }
    };
    if (stream) pieces(std::true_type{});
    else pieces(std::false_type{});
    return;
  }
  const Index n = rows * nt * I;
  Index j = 0, end = I;  // channel of the current position, and where it ends
  store_span(out, n, stream, [&](Index i, int r) {
    while (i >= end) j = j + 1 == nt ? 0 : j + 1, end += I;
    const auto ld = [r](const T* p) { return r ? S::load_n(p, r) : S::load(p); };
    const auto xv = ld(x + i);
    const auto uv = HasU ? ld(u + i) : S::zero();
    const Coef<T>& a = cfs[j];
    auto v = f(xv, uv, a.head, a.tail, a.p, a.q, a.r);
    const Index width = r ? r : W;
    if (i + width > end) {
      const Coef<T>& b = cfs[j + 1 == nt ? 0 : j + 1];
      v = S::blend_first(v, f(xv, uv, b.head, b.tail, b.p, b.q, b.r), static_cast<int>(end - i));
    }
    return v;
  });
}

/// out[i] = f(x[i], u[i], constants of lane i mod nl) for i < n: n / nl contiguous rows of nl
/// lanes as one run, so that non-temporal stores cover whole aligned vectors across row
/// boundaries (rows that are not whole vectors would otherwise leave a partial vector at each
/// end of every row). k's arrays hold nl + W - 1 lanes or more, lane l >= nl repeating lane
/// l mod nl, so that a vector straddling two rows loads its constants in one piece.
template <class T, bool HasU, class F>
inline void apply_lane_run(const T* x, const T* u, T* out, Index n, Index nl, const LaneCoefs<T>& k, bool stream,
                           F f) noexcept {
  using S = simd::Simd<T>;
  Index lane = 0, pos = 0;  // lane of position pos
  store_span(out, n, stream, [&](Index i, int r) {
    for (lane += i - pos, pos = i; lane >= nl;) lane -= nl;
    const auto ld = [r](const T* p) { return r ? S::load_n(p, r) : S::load(p); };
    return f(ld(x + i), HasU ? ld(u + i) : S::zero(), S::load(k.k[0] + lane), S::load(k.k[1] + lane),
             S::load(k.k[2] + lane), S::load(k.k[3] + lane), S::load(k.k[4] + lane));
  });
}

/// The constants of the tile region_apply last set up, kept for the next region of the same
/// tile (a group's row blocks of one tile take them once, not once a block): per lane (lane
/// path, k's arrays of nl + W lanes, lane l >= nl repeating lane l mod nl) or per channel (wide
/// rows). A `frozen` set is filled once for the segments of a view (segments_apply_exact) and
/// read by all of them, on the threads: it is never refilled. group_apply also uses the arrays
/// of its own set as scratch on the row path (constants of short channels: t0 and nt are not
/// theirs then).
template <class T>
struct TileConstants {
  Index t0 = -1, nt = 0;
  bool frozen = false;
  bool exact = false;  // set by a filler whose coef_of marks a channel exact (vector_coefs)
  alignas(64) T k[5][extent(kLanes + simd::Simd<T>::lanes)];
  Coef<T> cfs[kWideChannels];
  /// True if the constants of channels [t0, t0 + nt) are already here; otherwise notes them as
  /// set (the caller fills them: fill_tile).
  bool holds(Index t0_, Index nt_) noexcept {
    if (t0 == t0_ && nt == nt_) return true;
    BATCHNORM_ASSERT(!frozen, "a frozen tile is read, never refilled");
    t0 = t0_, nt = nt_;
    return false;
  }
};

/// coef_of(c), with `copy` in place of the constants of a channel marked exact (Coef::exact),
/// whose values an exact pass computes afterwards; `any` notes such a channel (vector_coefs,
/// isa/drivers.hpp, makes it).
template <class T, class CoefOf>
struct VectorCoefs {
  const CoefOf& coef_of;
  const Coef<T>& copy;
  bool& any;
  Coef<T> operator()(Index c) const noexcept {
    Coef<T> cf = coef_of(c);  // one named result (returned in place, no copy of the struct)
    if (cf.exact) any = true, cf = copy;
    return cf;
  }
};

/// True if F is a VectorCoefs over a functor with AffineInputs (detail/coef.hpp): its constants
/// can be built many channels at once (affine_lanes).
template <class T, class F>
inline constexpr bool affine_source = false;
template <class T, class S>
inline constexpr bool affine_source<T, VectorCoefs<T, S>> = has_affine_inputs<S>;

/// True if F is a VectorCoefs over a functor with DxInputs (detail/coef.hpp) (dx_lanes).
template <class T, class F>
inline constexpr bool dx_source = false;
template <class T, class S>
inline constexpr bool dx_source<T, VectorCoefs<T, S>> = has_dx_inputs<S>;

/// Lane l of the five lane arrays k (head, tail, p, q, r) from the constants cf.
template <class K, class T>
void put_lane(K& k, Index l, const Coef<T>& cf) noexcept {
  k[0][l] = cf.head, k[1][l] = cf.tail, k[2][l] = cf.p, k[3][l] = cf.q, k[4][l] = cf.r;
}

#if defined(__GNUC__)
/// Vectors of Simd<A>::lanes channels: their inputs in A, in T, in M.
template <class T, class M>
struct AffineVecs {
  using A = accum_t<T>;
  static constexpr int lanes = kBytes / static_cast<int>(sizeof(A));
  typedef A avec __attribute__((vector_size(kBytes)));
  typedef T tvec __attribute__((vector_size(extent(lanes) * sizeof(T))));
  typedef M mvec __attribute__((vector_size(extent(lanes) * sizeof(M))));
  /// The n values (0 < n <= lanes) from p, zeros after them, in A; V is the vector of E.
  template <class V, class E>
  static avec load(const E* p, int n) noexcept {
    V v{};
    if (n == lanes) std::memcpy(&v, p, sizeof v);
    else std::memcpy(&v, p, sizeof(E) * static_cast<std::size_t>(n));
    return __builtin_convertvector(v, avec);
  }
  static void store(T* p, tvec v, int n) noexcept {
    if (n == lanes) std::memcpy(p, &v, sizeof v);
    else std::memcpy(p, &v, sizeof(T) * static_cast<std::size_t>(n));
  }
  /// True if the first n lanes of a comparison's result (-1: true, 0: false) are all true.
  template <class Mask>
  static bool all_of(const Mask& flags, int n) noexcept {
    bool all = true;
    for (int l = 0; l < n; ++l) all &= flags[l] != 0;
    return all;
  }
};

/// The lane constants of channels [t0, t0 + n) of inner 1 (lane l: channel t0 + l) for
/// y = (x - head) * p + r, Simd<A>::lanes channels at a time: the vector twin of
/// functional's normalize_coef (and invstd_of), from the inputs `in`:
///   head = T(mean),  p = T(scale),  r = T(bias - (mean - head) * scale),  scale = invstd * weight
///   (tail = q = 0)
/// The same operations in the same order, each correctly rounded, so the same bits as `scalar`.
/// A vector holding a float channel outside needs_exact's common range (or a NaN) takes
/// `scalar` (the VectorCoefs over the same functor) for each of its channels instead.
template <class T, class M, class Scalar>
void affine_lanes(const AffineInputs<T, M>& in, const Scalar& scalar, Index t0, Index n, T* const* k) noexcept {
  using V = AffineVecs<T, M>;
  using A = typename V::A;
  using avec = typename V::avec;
  using tvec = typename V::tvec;
  using mvec = typename V::mvec;
  constexpr int L = V::lanes;
  const avec zero{}, one = zero + A(1), eps = zero + static_cast<A>(in.eps);
  for (Index j = 0; j < n; j += L) {
    const int w = static_cast<int>(std::min<Index>(L, n - j));
    const Index c = t0 + j;
    const avec mean = V::template load<mvec>(in.mean + c, w);
    const avec invstd = in.invstd ? V::template load<mvec>(in.invstd + c, w)
                                  : one / simd::Simd<A>::sqrt(V::template load<mvec>(in.var + c, w) + eps);
    const avec scale = invstd * (in.weight ? V::template load<tvec>(in.weight + c, w) : one);
    const avec b = in.bias ? V::template load<tvec>(in.bias + c, w) : zero;
    const tvec head = __builtin_convertvector(mean, tvec);
    const tvec p = __builtin_convertvector(scale, tvec);
    const avec ra = b - (mean - __builtin_convertvector(head, avec)) * scale;
    const tvec r = __builtin_convertvector(ra, tvec);
    bool common = true;
    if constexpr (sizeof(T) < sizeof(A)) {  // needs_exact's common range, lane by lane
      const avec product = zero + kExactProduct, offset = zero + kExactOffset, magnitude = zero + kExactMagnitude;
      common = V::all_of((scale <= product) & (scale >= -product) & (ra <= offset) & (ra >= -offset) &
                             (mean <= magnitude) & (mean >= -magnitude) & (invstd * magnitude >= one),
                         w);
    }
    if (common) {
      const tvec none{};
      V::store(k[0] + j, head, w), V::store(k[1] + j, none, w), V::store(k[2] + j, p, w);
      V::store(k[3] + j, none, w), V::store(k[4] + j, r, w);
      continue;
    }
    for (Index l = j; l < j + w; ++l) {
      const Coef<T> cf = scalar(t0 + l);
      put_lane(k, l, cf);
    }
  }
  if (affine_lanes_observer) affine_lanes_observer(n);
}
/// The lane constants of channels [t0, t0 + n) of inner 1 (lane l: channel t0 + l) for
/// dx = dy * p + ((x - head) * q + r), Simd<A>::lanes channels at a time: the vector twin of
/// functional's DxCoef, from its inputs `in`:
///   kc = invstd * weight,  q' = -kc * (invstd * (invstd * (sum_dy_d / m))),  r' = -kc * (sum_dy / m)
///   head = T(mean),  tail = T(mean - head),  p = T(kc),  q = T(q'),  r = T(r' - (mean - head) * q')
/// The same operations in the same order: the same bits as `scalar`. A vector holding a float
/// channel outside needs_exact's common range (or a NaN) takes `scalar` for each of its channels.
template <class T, class Scalar>
void dx_lanes(const DxInputs<T, accum_t<T>>& in, const Scalar& scalar, Index t0, Index n, T* const* k) noexcept {
  using A = accum_t<T>;
  using V = AffineVecs<T, A>;
  using avec = typename V::avec;
  using tvec = typename V::tvec;
  constexpr int L = V::lanes;
  const avec zero{}, one = zero + A(1), m = zero + in.m;
  for (Index j = 0; j < n; j += L) {
    const int w = static_cast<int>(std::min<Index>(L, n - j));
    const Index c = t0 + j;
    const avec mean = V::template load<avec>(in.mean + c, w), invstd = V::template load<avec>(in.invstd + c, w);
    const avec kc = invstd * (in.weight ? V::template load<tvec>(in.weight + c, w) : one);
    const avec q = -kc * (invstd * (invstd * (V::template load<avec>(in.sum_dy_d + c, w) / m)));
    const avec r = -kc * (V::template load<avec>(in.sum_dy + c, w) / m);
    const tvec head = __builtin_convertvector(mean, tvec);
    const avec tail = mean - __builtin_convertvector(head, avec);
    const avec r_head = r - tail * q;
    bool common = true;
    if constexpr (sizeof(T) < sizeof(A)) {  // needs_exact's common range, lane by lane
      const avec product = zero + kExactProduct, offset = zero + kExactOffset, magnitude = zero + kExactMagnitude;
      common = V::all_of((kc <= product) & (kc >= -product) & (q <= product) & (q >= -product) &
                             (r_head <= offset) & (r_head >= -offset) & (mean <= magnitude) & (mean >= -magnitude) &
                             (invstd * magnitude >= one),
                         w);
    }
    if (common) {
      V::store(k[0] + j, head, w), V::store(k[1] + j, __builtin_convertvector(tail, tvec), w);
      V::store(k[2] + j, __builtin_convertvector(kc, tvec), w), V::store(k[3] + j, __builtin_convertvector(q, tvec), w);
      V::store(k[4] + j, __builtin_convertvector(r_head, tvec), w);
      continue;
    }
    for (Index l = j; l < j + w; ++l) {
      const Coef<T> cf = scalar(t0 + l);
      put_lane(k, l, cf);
    }
  }
  if (dx_lanes_observer) dx_lanes_observer(n);
}

#endif

/// True if lane_coefs builds the constants of coef_of many channels at once.
template <class T, class CoefOf>
inline constexpr bool has_lane_coefs =
#if defined(__GNUC__)
    affine_source<T, CoefOf> || dx_source<T, CoefOf>;
#else
    false;
#endif

/// The constants of channels [t0, t0 + n) into lanes 0..n-1 of the five lane arrays k, many
/// channels at once (affine_lanes, dx_lanes): the bits of coef_of's. Only where has_lane_coefs.
template <class T, class CoefOf>
void lane_coefs(const CoefOf& coef_of, Index t0, Index n, T* const* k) noexcept {
  static_assert(has_lane_coefs<T, CoefOf>, "constants of this functor are built channel by channel");
#if defined(__GNUC__)
  if constexpr (affine_source<T, CoefOf>) affine_lanes(coef_of.coef_of, coef_of, t0, n, k);
  else dx_lanes(coef_of.coef_of, coef_of, t0, n, k);
#else
  (void)coef_of, (void)t0, (void)n, (void)k;
#endif
}

/// The constants in lane l of the five lane arrays k: head, tail, p, q, r as put_lane stored
/// them; exact false and the double constants (em, ep, eq, er) zero.
template <class T, class K>
Coef<T> get_lane(const K& k, Index l) noexcept {
  Coef<T> cf;
  cf.head = k[0][l], cf.tail = k[1][l], cf.p = k[2][l], cf.q = k[3][l], cf.r = k[4][l];
  return cf;
}

/// dx = dy * p + (x - mean) * q + r' of channels [c0, c0 + nc), in A, rounded once to T, with
/// the constants of channel c0 + j at index j: p = k_c, q = -k_c * invstd_c^2 * sum_dy_d / m,
/// r' = -k_c * sum_dy / m (functional::backward_training). In memory order, row by row: a
/// channel at a time would walk a RowMajor (N, C) tensor down its columns, a cache line a value.
/// Plain loops, written here so that the compiler vectorises them with this copy's ISA.
template <class T, class A>
void exact_dx(const T* x, const T* dy, const View& v, Index c0, Index nc, const A* mean, const A* p, const A* q,
              const A* r, T* dx) noexcept {
  const Index I = v.inner;
  const auto dx_at = [&](Index i, Index j) {
    return static_cast<T>(static_cast<A>(dy[i]) * p[j] + ((static_cast<A>(x[i]) - mean[j]) * q[j] + r[j]));
  };
  if (I == 1) {  // (N, C) RowMajor, channels-last: a row of channels, one loop the compiler vectorises
    for (Index o = 0; o < v.outer; ++o) {
      const Index off = o * v.channels + c0;
      for (Index j = 0; j < nc; ++j) dx[off + j] = dx_at(off + j, j);
    }
    if (exact_dx_rows_observer) exact_dx_rows_observer(v.outer * nc);
    return;
  }
  for (Index o = 0; o < v.outer; ++o)
    for (Index j = 0; j < nc; ++j) {
      const Index off = (o * v.channels + c0 + j) * I;
      for (Index i = off; i < off + I; ++i) dx[i] = dx_at(i, j);
    }
}

/// Fills tc with the constants of channels [t0, t0 + nt) (inner I) for a pass on `path`:
/// Coefs per channel (wide rows), or the five lane arrays (lane path; with inner 1 and
/// has_lane_coefs, many channels at once: lane_coefs).
template <class T, class CoefOf>
void fill_tile(TileConstants<T>& tc, Path path, Index I, Index t0, Index nt, const CoefOf& coef_of) noexcept {
  if (path == Path::wide_rows) {
    BATCHNORM_ASSERT(nt <= kWideChannels, "a wide-row chunk fits the constants array");
    for (Index j = 0; j < nt; ++j) tc.cfs[j] = coef_of(t0 + j);
    return;
  }
  constexpr Index W = simd::Simd<T>::lanes;
  auto& k = tc.k;
  const Index nl = nt * I;
  BATCHNORM_ASSERT(nl <= kLanes, "a lane tile fits the constants arrays");
  bool filled = false;
  if constexpr (has_lane_coefs<T, CoefOf>) {
    if (I == 1) {
      T* const arrays[5] = {k[0], k[1], k[2], k[3], k[4]};
      lane_coefs(coef_of, t0, nt, arrays);
      filled = true;
    }
  }
  for (Index j = 0; j < nt && !filled; ++j) {
    const Coef<T> cf = coef_of(t0 + j);
    for (Index i = 0; i < I; ++i) {
      const Index l = j * I + i;
      put_lane(k, l, cf);
    }
  }
  if (nl > 0)
    for (int m = 0; m < 5; ++m)
      for (Index l = nl; l < nl + W; ++l) k[m][l] = k[m][l % nl];
}

/// out = f(x, u, constants of the value's channel) over rows [o0, o0 + rows) of channels
/// [t0, t0 + nt), nt == 1 or a lane tile, in memory order; coef_of(c) gives the Coef<T> of
/// channel c, taken once per tile (tc keeps them between calls). Rows of a vector or more take
/// the constants as scalars, channel by channel along each row (apply_run); shorter rows load
/// them per lane.
template <class T, bool HasU, class CoefOf, class F>
void region_apply(const T* x, const T* u, T* out, const View& v, const Plan& p, Index o0, Index rows, Index t0,
                  Index nt, CoefOf coef_of, F f, TileConstants<T>& tc) noexcept {
  const Index C = v.channels, I = v.inner;
  const bool stream = p.stream;
  if (nt == 1) {
    const Coef<T> cf = coef_of(t0);
    // Short rows (p.short_rows: one row a channel) that do not start on the vectors' grid or are
    // not whole vectors go out as plain stores: their partial head and tail vectors next to
    // non-temporal stores cost more than streaming saves. (Evaluated only when streaming: the
    // view then holds values, so out is not null.)
    const bool row_stream = stream && (!p.short_rows || (I % simd::Simd<T>::lanes == 0 &&
                                                         simd::stream_aligned(out + (o0 * C + t0) * I)));
    // Last row first: the statistics or sums pass just read the channel in order, so its last
    // rows are the likeliest still in L2 (measured: resnet_s1 NCHW backward 10-15% faster).
    for (Index o = o0 + rows - 1; o >= o0; --o) {
      const Index off = (o * C + t0) * I;
      apply_span<T, HasU>(x + off, HasU ? u + off : nullptr, out + off, I, row_stream, cf, f);
    }
    return;
  }
  // Tiles of every channel: the rows are contiguous, one run in memory.
  const bool whole = t0 == 0 && nt == C;
  const Index off0 = (o0 * C + t0) * I;
  const T* ub = HasU ? u + off0 : nullptr;
  if (!tc.holds(t0, nt)) fill_tile(tc, p.path, I, t0, nt, coef_of);
  if (p.path == Path::wide_rows) {
    const Coef<T>* cfs = tc.cfs;
    if (whole) return apply_run<T, HasU>(x + off0, ub, out + off0, I, nt, rows, cfs, stream, f);
    for (Index o = o0; o < o0 + rows; ++o) {
      const Index off = (o * C + t0) * I;
      apply_run<T, HasU>(x + off, HasU ? u + off : nullptr, out + off, I, nt, 1, cfs, stream, f);
    }
    return;
  }
  constexpr Index W = simd::Simd<T>::lanes;
  const auto& k = tc.k;
  const Index nl = nt * I;
  const LaneCoefs<T> lanes{{k[0], k[1], k[2], k[3], k[4]}};
  // Rows of whole vectors: row by row. Otherwise, with contiguous rows, one run (per-row
  // partial vectors next to non-temporal stores cost several times the pass), unless the
  // stores are plain and the tile is narrow (constants in registers). A streamed output whose
  // rows do not start at aligned addresses (a TensorMap over malloc'd memory: 16 bytes past
  // a 64-byte boundary) is one run too, so that its vectors can be aligned and streamed.
  const bool run = whole && W > 1 && (nl % W != 0 || (stream && !simd::stream_aligned(out + off0)));
  if (!(run && stream) && narrow_dispatch<T>(nl, [&](auto nv) {
        narrow_apply<T, HasU, decltype(nv)::value>(x + off0, ub, out + off0, C * I, rows, nl, lanes, stream, f);
      }))
    return;
  if (run) return apply_lane_run<T, HasU>(x + off0, ub, out + off0, rows * nl, nl, lanes, stream, f);
  for (Index o = o0; o < o0 + rows; ++o) {
    const Index off = (o * C + t0) * I;
    apply_span<T, HasU>(x + off, HasU ? u + off : nullptr, out + off, nl, stream, lanes, f);
  }
}

/// out = f(x, u, coefficients of the value's channel) over the channels of a group: channel by
/// channel on the row path (with short rows and has_lane_coefs, the constants built kLanes
/// channels at a time first: lane_coefs), row blocks of lane tiles in memory order on the lane
/// path. shared: the constants of the group's one tile, filled beforehand (frozen), or null.
template <class T, bool HasU, class CoefOf, class F>
void group_apply(const T* x, const T* u, T* out, const View& v, const Plan& p, Index c0, Index nc, CoefOf coef_of,
                 F f, TileConstants<T>* shared = nullptr) noexcept {
  TileConstants<T> own;
  TileConstants<T>& tc = shared ? *shared : own;
  if (p.row()) {
    if constexpr (has_lane_coefs<T, CoefOf>) {
      if (p.short_rows) {  // one row of short channels: constants kLanes channels at a time
        T* const arrays[5] = {own.k[0], own.k[1], own.k[2], own.k[3], own.k[4]};
        for (Index t0 = c0; t0 < c0 + nc; t0 += kLanes) {
          const Index nt = std::min(kLanes, c0 + nc - t0);
          lane_coefs(coef_of, t0, nt, arrays);
          const auto built_coef = [&](Index c) { return get_lane<T>(own.k, c - t0); };
          for (Index c = t0; c < t0 + nt; ++c)
            region_apply<T, HasU>(x, u, out, v, p, 0, v.outer, c, 1, built_coef, f, tc);
        }
        return;
      }
    }
    for (Index c = c0; c < c0 + nc; ++c) region_apply<T, HasU>(x, u, out, v, p, 0, v.outer, c, 1, coef_of, f, tc);
    return;
  }
  const auto region = [&](Index o0, Index rows, Index t0, Index nt) {
    region_apply<T, HasU>(x, u, out, v, p, o0, rows, t0, nt, coef_of, f, tc);
  };
  if (p.path == Path::wide_rows) for_each_chunk_block<T>(v, c0, nc, region);
  else for_each_block_tile(v, c0, nc, kApplyRows, region);
}

