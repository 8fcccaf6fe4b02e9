// batchnorm: the lane path (Path::lane): statistics and gradient sums across lanes. Free to change; not public API.
// No include guard: detail/dispatch.hpp includes the isa/ files once per ISA, inside namespace
// detail::<isa> (see isa/simd.hpp).

/// Calls f(o0, rows, t0, nt) for row blocks [o0, o0 + rows) (outer loop: the first of `first`
/// rows, the others of `later`, or `first` when later is 0) and, within each, the lane tiles
/// [t0, t0 + nt) of channels [c0, c0 + nc).
template <class F>
void for_each_block_tile(const View& v, Index c0, Index nc, Index first, F f, Index later = 0) noexcept {
  const Index ct = tile_channels(v);
  for (Index o0 = 0, b = first; o0 < v.outer; o0 += b, b = later > 0 ? later : first)
    for (Index t0 = c0; t0 < c0 + nc; t0 += ct) f(o0, std::min(b, v.outer - o0), t0, std::min(ct, c0 + nc - t0));
}

/// Wide rows (lane path with inner >= one vector): calls f(o0, rows, k0, nk) for chunks
/// [k0, k0 + nk) of at most kWideChannels channels of [c0, c0 + nc) (outer loop) and, within
/// each, blocks of rows [o0, o0 + rows) of about kWideBlockBytes (inner loop). The caller reads a
/// block in memory order: row by row, the chunk's channels along each row (one contiguous run of
/// nk * inner values a row), never down a column.

template <class T, int NV, class F>
void narrow_lane_sums(const T* x, Index stride, Index rows, Index nl, const T* a, accum_t<T>* out, F f) noexcept {
  const NarrowLanes<T, NV> L(nl);
  typename simd::Simd<T>::vec t[extent(NV)];
  RegisterSums<T, NV> w;
  for (Index r0 = 0; r0 < rows; r0 += kFlush) {
    strip_sums(x, stride, r0, std::min(rows, r0 + kFlush), L, a, t, f);
    w.add(t);
  }
  w.store(out, nl);
}

/// Per-lane sums over `rows` rows (stride apart) of nl lanes:
///   out[l] = sum_r f(x[r][l], a[l])
/// kFlush rows at a time, in strips summed in registers (strip_sums), then added to out in A.
/// Strips of kWideStripVectors vectors (memory read in long runs: (25088, 256) floats 1.2x ->
/// 0.65x memcpy) unless rows are 4 KiB apart or more, where a strip's rows would share L1 sets
/// (kNarrowVectors vectors then). Narrow tiles keep the A sums in registers too
/// (narrow_lane_sums). The same additions per lane in every case.
template <class T, class F>
void lane_sums(const T* x, Index stride, Index rows, Index nl, const T* a, accum_t<T>* out, F f) noexcept {
  if (narrow_dispatch<T>(nl, [&](auto nv) { narrow_lane_sums<T, decltype(nv)::value>(x, stride, rows, nl, a, out, f); }))
    return;
  for (Index l = 0; l < nl; ++l) out[l] = 0;
  using S = simd::Simd<T>;
  for (Index r0 = 0; r0 < rows; r0 += kFlush) {
    const Index r1 = std::min(rows, r0 + kFlush);
    const auto strip = [&](Index l0, const auto& L) {
      typename S::vec t[std::decay_t<decltype(L)>::vectors];
      strip_sums(x + l0, stride, r0, r1, L, a + l0, t, f);
      L.flush(t, out + l0);
    };
    if (rows_share_sets<T>(stride)) for_each_strip<T, kNarrowVectors>(nl, strip);
    else for_each_strip<T, kWideStripVectors>(nl, strip);
  }
}

/// Per-lane sums of x - a[l] over `rows` rows (stride apart) of nl lanes:
///   out[l] = sum_r (x[r][l] - a[l])
/// For float in double from the first term (Simd::centred_add: x - a exact), in strips of
/// kNarrowVectors vectors, so that a block mean of many float values keeps double's accuracy;
/// for double as lane_sums.
template <class T>
void lane_centred_sums(const T* x, Index stride, Index rows, Index nl, const T* a, accum_t<T>* out) noexcept {
  using S = simd::Simd<T>;
  if constexpr (!S::wide_products) {
    lane_sums(x, stride, rows, nl, a, out, [](auto xv, auto s) { return xv - s; });
  } else {
    for (Index l = 0; l < nl; ++l) out[l] = 0;
    for_each_strip<T, kNarrowVectors>(nl, [&](Index l0, const auto& L) {
      constexpr int NV = std::decay_t<decltype(L)>::vectors;
      typename S::prod t[extent(NV)];
      typename S::vec s[extent(NV)];
      for (int j = 0; j < NV; ++j) t[j] = S::prod_zero(), s[j] = L.load(a + l0, j);
      for (Index r = 0; r < rows; ++r)
        for (int j = 0; j < NV; ++j) S::centred_add(t[j], L.load(x + r * stride + l0, j), s[j]);
      L.flush_prod(t, out + l0);
    });
  }
}

/// Per-lane one-pass moment sums of `rows` rows (stride apart) of nl lanes about c[l], in A:
///   s1[l] = sum_r (x[r][l] - c[l]),   s2[l] = sum_r (x[r][l] - c[l])^2
/// In strips of at most kOnePassStripVectors vectors, each summed over all the rows in registers:
/// s1 in Simd::prod (float: in double from the first term, x - c exact, as lane_centred_sums),
/// s2 in T over kFlush rows at a time, added to A sums. Rows in order, one product per addition
/// (as strip_sums): a lane's sums never depend on its strip.
template <class T>
void lane_moment_sums(const T* x, Index stride, Index rows, Index nl, const T* c, accum_t<T>* s1,
                      accum_t<T>* s2) noexcept {
  using S = simd::Simd<T>;
  for_each_strip<T, kOnePassStripVectors>(nl, [&](Index l0, const auto& L) {
    constexpr int NV = std::decay_t<decltype(L)>::vectors;
    typename S::prod t1[extent(NV)];
    typename S::vec t2[extent(NV)], cv[extent(NV)];
    RegisterSums<T, NV> w1, w2;
    for (int j = 0; j < NV; ++j) t1[j] = S::prod_zero(), cv[j] = L.load(c + l0, j);
    for (Index r0 = 0; r0 < rows; r0 += kFlush) {
      const Index r1 = std::min(rows, r0 + kFlush);
      for (int j = 0; j < NV; ++j) t2[j] = S::zero();
      for (Index r = r0; r < r1; ++r)
        for (int j = 0; j < NV; ++j) {
          const auto xv = L.load(x + r * stride + l0, j);
          const auto d = xv - cv[j];
          S::centred_add(t1[j], xv, cv[j]);
          t2[j] += d * d;
        }
      w2.add(t2);
    }
    w1.add_prod(t1);
    const Index n = (NV - 1) * S::lanes + L.last;
    w1.store(s1 + l0, n), w2.store(s2 + l0, n);
  });
}

/// Merges, per channel k < nt, its I lanes of `rows` values each (lane moments bmean, bm2 at
/// k*I + i) into one set of rows*I values: sequentially, lane i joining i lanes, with Chan's
/// factors shared by all channels (f1 = 1/(i+1), f2 = i*rows/(i+1)). Result in bmean[k], bm2[k].
template <class A>
void fold_lanes(Index nt, Index I, Index rows, A* bmean, A* bm2) noexcept {
  if (I == 1) return;
  // The factors, once for all channels (I < kLanes here: rows of a vector or more don't fold).
  BATCHNORM_ASSERT(I <= kLanes, "a channel's lanes fit the factor arrays");
  A f1[kLanes], f2[kLanes];
  for (Index i = 1; i < I; ++i)
    f1[i] = A(1) / static_cast<A>(i + 1), f2[i] = static_cast<A>(i * rows) / static_cast<A>(i + 1);
  for (Index k = 0; k < nt; ++k) {
    A mean = bmean[k * I], m2 = bm2[k * I];
    for (Index i = 1; i < I; ++i) {
      const A delta = bmean[k * I + i] - mean;
      mean += delta * f1[i];
      m2 += bm2[k * I + i] + delta * delta * f2[i];
    }
    bmean[k] = mean, bm2[k] = m2;
  }
}

/// Lane path: mean and M2 of channels [c0, c0 + nc) into mean[0..nc), m2[0..nc), streaming row
/// blocks (the first of about kBlockBytes of a tile, the others of about kOnePassBytes). Per
/// tile of a block, each lane's moments come from one pass about its channel's mean so far, c
/// (rounded to T), where that is accurate:
///   s1 = sum (x - c),  s2 = sum (x - c)^2,  mean = c + s1 / n,  M2 = s2 - s1^2 / n
/// when m2_about takes it (the lane's block mean within one standard deviation of c, M2
/// finite); otherwise, and in the first block, the lane is two-passed (shifted by
/// the block's first row) from cache. The decision is per lane, so a lane's result never
/// depends on its tile. The lanes of a channel merge into its block moments, which merge into
/// the channel's running moments (every channel has the same count, so the Chan factors are
/// shared). Means are merged relative to each channel's first value, as in channel_moments.
/// Empty channels (inner == 0 or outer == 0) are the caller's.
template <class T, class A>
void lane_moments(const T* x, const View& v, Index c0, Index nc, A* mean, A* m2) noexcept {
  const Index I = v.inner, stride = v.channels * I;
  alignas(64) T shift[kLanes], head[kLanes];
  alignas(64) A bsum[kLanes], bm2[kLanes], bu[kLanes];
  alignas(64) A tsum[kLanes], tm2[kLanes];
  bool redo[kLanes];
  for (Index k = 0; k < nc; ++k) mean[k] = 0, m2[k] = 0;
  A n = 0;  // values merged so far, per channel
  // Rows per block: about kBlockBytes of a full tile for the first, kOnePassBytes for the others
  // (more rows amortise the per-lane work of a block), from the view alone so that blocks, and
  // results, never depend on the threads.
  const Index tile_bytes = std::min(v.channels, tile_channels(v)) * I * static_cast<Index>(sizeof(T));
  const Index block = std::clamp(kBlockBytes / std::max<Index>(1, tile_bytes), kBlockRows, kBlockRowsMax);
  const Index later = std::clamp(kOnePassBytes / std::max<Index>(1, tile_bytes), kBlockRows, kOnePassRowsMax);
  for_each_block_tile(v, c0, nc, block, [&](Index o0, Index rows, Index t0, Index nt) {
    const Index nl = nt * I;
    BATCHNORM_ASSERT(nl <= kLanes, "a lane tile fits the lane arrays");
    const T* blk = x + (o0 * v.channels + t0) * I;
    const A a_rows = static_cast<A>(rows);
    A* cm = mean + (t0 - c0);
    A* c2 = m2 + (t0 - c0);
    // f(l, k, origin) for each lane l of the tile, k its channel in the tile, origin the first
    // value of that channel, x[(t0 + k) * I] (inner == 1: a flat loop the compiler vectorizes).
    const auto each_lane = [&](auto f) {
      if (I == 1) {
        const T* x0 = x + t0;
        for (Index l = 0; l < nl; ++l) f(l, l, static_cast<A>(x0[l]));
      } else {
        for (Index k = 0; k < nt; ++k) {
          const A o = static_cast<A>(x[(t0 + k) * I]);
          for (Index i = 0; i < I; ++i) f(k * I + i, k, o);
        }
      }
    };
    // Two passes over the block of lanes [l0, l1), into (rel, m2) at the same lanes: rel =
    // block mean - origin. A lane's results do not depend on the range that holds it.
    const auto two_pass = [&](Index l0, Index l1, A* rel, A* bm) {
      for (Index l = l0; l < l1; ++l) shift[l] = blk[l];
      lane_centred_sums(blk + l0, stride, rows, l1 - l0, shift + l0, rel + l0);
      each_lane([&](Index l, Index, A o) {
        if (l < l0 || l >= l1) return;
        const A r = (static_cast<A>(shift[l]) - o) + rel[l] / a_rows, bmean = o + r;
        rel[l] = r;
        head[l] = static_cast<T>(bmean);
        bu[l] = bmean - static_cast<A>(head[l]);
      });
      lane_sums(blk + l0, stride, rows, l1 - l0, head + l0, bm + l0, [](auto xv, auto h) {
        const auto e = xv - h;
        return e * e;
      });
      for (Index l = l0; l < l1; ++l) bm[l] = m2_about_mean(bm[l], a_rows, bu[l]);
    };
    if (n == 0) {
      two_pass(0, nl, bsum, bm2);
    } else {
      each_lane([&](Index l, Index k, A o) { head[l] = static_cast<T>(o + cm[k]); });
      lane_moment_sums(blk, stride, rows, nl, head, bsum, bm2);
      // Declined (m2_about): a block mean more than a standard deviation from c, NaN, or an
      // overflow.
      Index redone = 0, first = nl, last = -1;
      each_lane([&](Index l, Index, A o) {
        const A s1 = bsum[l];
        A about = bm2[l];  // a local, not a conditional store: the loop vectorizes
        redo[l] = !m2_about(a_rows, s1, about, about);
        bm2[l] = about;
        bsum[l] = (static_cast<A>(head[l]) - o) + s1 / a_rows;
      });
      for (Index l = 0; l < nl; ++l)
        if (redo[l]) ++redone, first = std::min(first, l), last = l;
      if (one_pass_observer) one_pass_observer(nl, redone);
      if (redone > 0) {  // the vectors from the first declined lane to the last, again
        constexpr Index W = simd::Simd<T>::lanes;
        const Index l0 = first / W * W, l1 = std::min(nl, (last / W + 1) * W);
        two_pass(l0, l1, tsum, tm2);
        for (Index l = l0; l < l1; ++l)
          if (redo[l]) bsum[l] = tsum[l], bm2[l] = tm2[l];
      }
    }
    fold_lanes(nt, I, rows, bsum, bm2);
    const A nb = static_cast<A>(rows * I);
    if (n == 0) {
      for (Index k = 0; k < nt; ++k) cm[k] = bsum[k], c2[k] = bm2[k];
    } else {
      const ChanFactors<A> merge(n, nb);
      for (Index k = 0; k < nt; ++k) merge.apply(cm[k], c2[k], bsum[k], bm2[k]);
    }
    if (t0 + nt == c0 + nc) n += nb;  // the block is done for every tile
  }, later);
  if (v.outer > 0 && I > 0)
    for (Index k = 0; k < nc; ++k) mean[k] += static_cast<A>(x[(c0 + k) * I]);
}

/// Mean and M2 of the channels of a group into mean[0..nc), m2[0..nc).

// ---------------------------------------------------------------------------------------------
// Gradient sums.

/// The gradient sums of a strip (NV vectors of lanes, L) over rows [r0, r1) (at most kFlush,
/// stride apart):  t0[j] = sum_r dy[r] in T,  t1[j] = sum_r dy[r] * (x[r] - head[j]) in
/// Simd::prod (float: double, exact products; see GradSpanSum). Rows in order, one product per
/// addition (as strip_sums).
template <class T, int NV>
inline void strip_grad_sums(const T* x, const T* dy, Index stride, Index r0, Index r1, const NarrowLanes<T, NV>& L,
                            const T* head, typename simd::Simd<T>::vec* t0, typename simd::Simd<T>::prod* t1) noexcept {
  using S = simd::Simd<T>;
  for (int j = 0; j < NV; ++j) t0[j] = S::zero(), t1[j] = S::prod_zero();
  typename S::vec h[extent(NV)];
  for (int j = 0; j < NV; ++j) h[j] = L.load(head, j);
  for (Index r = r0; r < r1; ++r)
    for (int j = 0; j < NV; ++j) {
      const auto d = L.load(dy + r * stride, j);
      t0[j] += d;
      S::prod_add(t1[j], d, L.load(x + r * stride, j), h[j]);
    }
}

/// The partial gradient sums of a lane tile, one vector of lanes each (lane_grad_rows).
template <class T>
struct GradPartials {
  typename simd::Simd<T>::vec t0[kLanes / simd::Simd<T>::lanes];
  typename simd::Simd<T>::prod t1[kLanes / simd::Simd<T>::lanes];
};

/// Per-lane gradient sums of rows [r0, r1) (stride apart, at most kFlush) of nl lanes, in T, added
/// to out0, out1 in A:
///   out0[l] += sum_r dy[r][l],   out1[l] += sum_r dy[r][l] * (x[r][l] - head[l])
/// Row by row in memory order, each row's lanes in vectors, the partial sums in t (L1): the
/// same additions per lane, in the same order, as strip_grad_sums. Measured against strips of
/// 4-16 vectors summed down the rows in registers (AMD Zen 5, one thread, warm, float gradient
/// sums alone): (4096, 1024) 2.2 -> 1.0-1.2 ms, (12544, 256) 1.1 -> 0.6-0.8, ColMajor 8x32x32x32
/// 0.068 -> 0.042, (256, 2048) 0.104 -> 0.089.
template <class T>
inline void lane_grad_rows(const T* x, const T* dy, Index stride, Index r0, Index r1, Index nl, const T* head,
                           accum_t<T>* out0, accum_t<T>* out1, GradPartials<T>& t) noexcept {
  using S = simd::Simd<T>;
  constexpr Index W = S::lanes;
  const Index nv = nl / W;
  const int tail = static_cast<int>(nl - nv * W);
  for (Index j = 0; j < nv + (tail > 0); ++j) t.t0[j] = S::zero(), t.t1[j] = S::prod_zero();
  for (Index r = r0; r < r1; ++r) {
    const T* xr = x + r * stride;
    const T* dr = dy + r * stride;
    for (Index j = 0; j < nv; ++j) {
      const auto d = S::load(dr + j * W);
      t.t0[j] += d;
      S::prod_add(t.t1[j], d, S::load(xr + j * W), S::load(head + j * W));
    }
    if (tail > 0) {
      const auto d = S::load_n(dr + nv * W, tail);
      t.t0[nv] += d;
      S::prod_add(t.t1[nv], d, S::load_n(xr + nv * W, tail), S::load_n(head + nv * W, tail));
    }
  }
  const NarrowLanes<T, 1> full(W);
  for (Index j = 0; j < nv; ++j) full.flush(&t.t0[j], out0 + j * W), full.flush_prod(&t.t1[j], out1 + j * W);
  if (tail > 0) {
    const NarrowLanes<T, 1> part(tail);
    part.flush(&t.t0[nv], out0 + nv * W), part.flush_prod(&t.t1[nv], out1 + nv * W);
  }
}

/// One lane per channel (inner == 1), narrow tile: the gradient sums of `rows` rows added to
/// s0[l], s1[l] (A) with the additions of lane_grad_rows (strip_grad_sums every kFlush rows, then
/// s += in A, in the same order), with the A sums in registers: the lane arrays' store-to-load
/// round trips would chain the flushes.
template <class T, int NV>
void narrow_grad_block(const T* x, const T* dy, Index stride, Index rows, Index nl, const T* head,
                       accum_t<T>* s0, accum_t<T>* s1) noexcept {
  const NarrowLanes<T, NV> L(nl);
  typename simd::Simd<T>::vec t0[extent(NV)];
  typename simd::Simd<T>::prod t1[extent(NV)];
  RegisterSums<T, NV> w0, w1;
  w0.load(s0, nl), w1.load(s1, nl);
  for (Index r0 = 0; r0 < rows; r0 += kFlush) {
    strip_grad_sums(x, dy, stride, r0, std::min(rows, r0 + kFlush), L, head, t0, t1);
    w0.add(t0), w1.add_prod(t1);
  }
  w0.store(s0, nl), w1.store(s1, nl);
}

/// Sums over the channels of a group of dy and of dy * d, d = x - mean_c, into sum_dy[0..nc),
/// sum_dy_d[0..nc):
///   sum_dy = sum dy,   sum_dy_d = sum dy * d = sum dy * (x - head_c) - tail_c * sum_dy
/// coef_of(c) gives head_c and tail_c (a Coef<T>, mean_c = head_c + tail_c); the tail is taken
/// out of the sum once per channel instead of once per value. after(o0, rows, t0, nt) is called
/// once the values of rows [o0, o0 + rows) of channels [t0, t0 + nt) have been summed, while they
/// are in cache (inference backward writes dx there: one pass over x and dy).

/// Lane path: the gradient sums of channels [c0, c0 + nc) (see group_grad_sums). Row blocks in
/// order, rows one after the other; per tile, kFlush rows summed per lane in T, then added to
/// the channels' sums in A (inner == 1) or to the lanes' sums in A, which join the channels' at
/// the end of the block (inner > 1). after(o0, rows, t0, nt) once a block of a tile is summed.
template <class T, class A, class CoefOf, class After>
void lane_grad_sums(const T* x, const T* dy, const View& v, Index c0, Index nc, CoefOf coef_of,
                    A* sum_dy, A* sum_dy_d, After after) noexcept {
  const Index C = v.channels, I = v.inner;
  for (Index k = 0; k < nc; ++k) sum_dy[k] = 0, sum_dy_d[k] = 0;
  const Index stride = C * I;
  alignas(64) T head[kLanes];
  alignas(64) A l0[kLanes], l1[kLanes];  // inner > 1: a block's sums per lane, in A
  GradPartials<T> partials;
  Index coef_tile = -1;
  for_each_block_tile(v, c0, nc, kSumRows, [&](Index o0, Index rows, Index t0, Index nt) {
    const Index nl = nt * I;
    BATCHNORM_ASSERT(nl <= kLanes, "a lane tile fits the lane arrays");
    if (coef_tile != t0) {  // the constants of this tile (kept while the group is one tile)
      for (Index k = 0; k < nt; ++k) {
        const T h = coef_of(t0 + k).head;
        for (Index i = 0; i < I; ++i) head[k * I + i] = h;
      }
      coef_tile = t0;
    }
    A* s0 = sum_dy + (t0 - c0);
    A* s1 = sum_dy_d + (t0 - c0);
    const T* xb = x + (o0 * C + t0) * I;
    const T* db = dy + (o0 * C + t0) * I;
    if (I > 1) std::fill(l0, l0 + nl, A(0)), std::fill(l1, l1 + nl, A(0));
    if (I == 1 && narrow_dispatch<T>(nl, [&](auto nv) {
          narrow_grad_block<T, decltype(nv)::value>(xb, db, stride, rows, nl, head, s0, s1);
        }))
      return after(o0, rows, t0, nt);
    for (Index r0 = o0; r0 < o0 + rows; r0 += kFlush) {
      const Index r1 = std::min(o0 + rows, r0 + kFlush);
      lane_grad_rows(x + t0 * I, dy + t0 * I, stride, r0, r1, nl, head, I == 1 ? s0 : l0, I == 1 ? s1 : l1, partials);
    }
    if (I > 1)  // the block's lane sums into the channels', lane by lane
      for (Index k = 0; k < nt; ++k)
        for (Index i = 0; i < I; ++i) s0[k] += l0[k * I + i], s1[k] += l1[k * I + i];
    after(o0, rows, t0, nt);
  });
}
