// batchnorm: the row path (Path::row, Path::row_short): statistics and gradient sums. Free to change; not public API.
// No include guard: detail/dispatch.hpp includes the isa/ files once per ISA, inside namespace
// detail::<isa> (see isa/simd.hpp).

// ---------------------------------------------------------------------------------------------
// Statistics.

/// M2 = sum (x - mean)^2 of n values from their sum of squares about head, the mean rounded to
/// T, and u = mean - head (in A):
///   sum (x - mean)^2 = sum ((x - head) - u)^2 = sum (x - head)^2 - n * u^2
/// (the cross term is -2u * sum (x - head) = -2u * n * u). |u| <= ulp(head) / 2, so the
/// correction is tiny next to M2 unless the values sit at T's resolution around the mean; this
/// saves the per-value subtraction of u. A rounding below zero is clamped; NaN stays NaN.
template <class A>
inline A m2_about_mean(A sum_sq_about_head, A n, A u) noexcept {
  const A m2 = sum_sq_about_head - n * u * u;
  return m2 < A(0) ? A(0) : m2;
}

/// sum (x - s) over the rows x[o * stride + i], o < rows, i < len (one chunk), in A.
template <class T>
inline accum_t<T> chunk_sum_about(const T* x, Index stride, Index rows, Index len, T s) noexcept {
  CentredSpanSum<T> sum;
  for (Index o = 0; o < rows; ++o) sum.add(x + o * stride, len, s);
  return sum.result();
}

/// M2 = sum (x - mean)^2 of a chunk (laid out as in chunk_sum_about) of known mean, evaluated
/// about head = mean rounded to T: sum (x - head)^2 - n * (mean - head)^2 (m2_about_mean).
template <class T, class A>
inline A chunk_m2(const T* x, Index stride, Index rows, Index len, A mean) noexcept {
  const T head = static_cast<T>(mean);
  SpanSum<T> sq;
  for (Index o = 0; o < rows; ++o)
    sq.add(x + o * stride, len, [head](auto xv) {
      const auto e = xv - head;
      return e * e;
    });
  return m2_about_mean(sq.result(), static_cast<A>(rows * len), mean - static_cast<A>(head));
}

/// Two-pass moments of the rows x[o * stride + i], o < rows, i < len (one chunk, in L1), shifted
/// by its first value s:
///   mean = s + sum (x - s) / (rows * len),   M2 = sum (x - head)^2 - n * (mean - head)^2
/// with head = mean rounded to T (chunk_m2); x - head is exact when x is within a factor 2 of
/// head (Sterbenz). rel = mean - origin. A constant chunk gives mean == s exactly, M2 == 0.
template <class T, class A>
inline void chunk_moments(const T* x, Index stride, Index rows, Index len, A origin, A& rel, A& m2) noexcept {
  const T s = x[0];
  rel = (static_cast<A>(s) - origin) + chunk_sum_about(x, stride, rows, len, s) / static_cast<A>(rows * len);
  m2 = chunk_m2(x, stride, rows, len, origin + rel);
}

/// M2 of n values from their one-pass sums about c, s1 = sum (x - c) and s2 = sum (x - c)^2:
///   M2 = s2 - s1^2 / n
/// Taken only when s1^2 / n <= M2, i.e. the values' mean is within one standard deviation of c
/// (true for data in random order), where the subtraction loses at most a factor 2 of the
/// relative precision of s2, and M2 is finite. Returns false otherwise (for NaN, and for an s2
/// that overflowed although the M2 about the values' own mean may not), writing nothing: the
/// caller then two-passes the values from cache.
template <class A>
inline bool m2_about(A n, A s1, A s2, A& m2) noexcept {
  const A cross = s1 * (s1 / n), m2_c = s2 - cross;
  if (!(cross <= m2_c && m2_c <= std::numeric_limits<A>::max())) return false;
  m2 = m2_c;
  return true;
}

/// One-pass moments of a chunk (laid out as in chunk_moments) about c, a value close to its mean
/// (the mean of the values before it, rounded to T):
///   s1 = sum (x - c),  s2 = sum (x - c)^2,  mean = c + s1 / n,  M2 = s2 - s1^2 / n
/// when m2_about takes it; returns false otherwise, writing nothing: the caller then two-passes
/// the chunk (chunk_moments) from cache.
template <class T, class A>
inline bool chunk_moments_about(const T* x, Index stride, Index rows, Index len, A origin, T c, A& rel,
                                A& m2) noexcept {
  MomentSpanSum<T> sums;
  for (Index o = 0; o < rows; ++o) sums.add(x + o * stride, len, c);
  const A n = static_cast<A>(rows * len), s1 = sums.first();
  if (!m2_about(n, s1, sums.second(), m2)) return false;
  rel = (static_cast<A>(c) - origin) + s1 / n;
  return true;
}

/// Merges the values of channel c (row path) into acc, chunk by chunk. A chunk is kChunk values
/// or less: several whole rows, or a piece of a long row. After the first chunk, a chunk is
/// summed in one pass about the mean so far when that is accurate (chunk_moments_about);
/// otherwise, and for the first, it is two-passed in L1, shifted by its first value s:
///   mean_k = s + sum (x - s) / len,   M2_k = sum (x - mean_k)^2   (chunk_moments),
/// with x - mean_k evaluated about head = mean_k rounded to T. A constant chunk
/// gives mean_k == s exactly and M2_k == 0. The chunk means are merged relative to the channel's
/// first value (added back at the end), so that the rounding of each merge is relative to the
/// spread of the data, not to its magnitude: |mean| / std = 1e5 costs nothing.
template <class T, class A>
void channel_moments(const T* x, const View& v, Index c, Moments<A>& acc) noexcept {
  const Index I = v.inner, O = v.outer, stride = v.channels * I;
  const T* base = x + c * I;
  const A origin = I > 0 && O > 0 ? static_cast<A>(base[0]) : A(0);  // acc holds means relative to it
  // A chunk: rows [o0, o1) from value i0 to i1 of each.
  // After the first chunk, one pass about the mean so far where that is accurate.
  const auto chunk = [&](Index o0, Index o1, Index i0, Index i1) {
    A rel, m2;
    const T* p = base + o0 * stride + i0;
    const Index rows = o1 - o0, len = i1 - i0;
    if (acc.n == 0 || !chunk_moments_about(p, stride, rows, len, origin, static_cast<T>(origin + acc.mean), rel, m2))
      chunk_moments(p, stride, rows, len, origin, rel, m2);
    acc.merge(static_cast<A>((o1 - o0) * (i1 - i0)), rel, m2);
  };
  if (I == 0) return;
  if (I >= kChunk) {
    for (Index o = 0; o < O; ++o)
      for (Index i0 = 0; i0 < I; i0 += kChunk) chunk(o, o + 1, i0, std::min(I, i0 + kChunk));
  } else {
    const Index rows = kChunk / I;
    for (Index o0 = 0; o0 < O; o0 += rows) chunk(o0, std::min(O, o0 + rows), 0, I);
  }
  acc.mean += origin;
}

/// Row path, short channels (Path::row_short: a channel is one chunk): the moments of
/// channels [c0, c0 + nc) exactly as channel_moments gives them (its first chunk:
/// mean = s + sum (x - s) / m with s the channel's first value, then chunk_m2), but each pass
/// runs over every channel of the group before the next pass starts, so that the channels'
/// chains (sum, reduction, division, rounding) overlap instead of running one after another.
template <class T, class A>
void short_moments(const T* x, const View& v, Index c0, Index nc, A* mean, A* m2) noexcept {
  const Index I = v.inner, O = v.outer, stride = v.channels * I;
  if (I == 0 || O == 0) {
    for (Index k = 0; k < nc; ++k) mean[k] = 0, m2[k] = 0;
    return;
  }
  const A m = static_cast<A>(O * I);
  for (Index k = 0; k < nc; ++k) {
    const T* base = x + (c0 + k) * I;
    const A origin = static_cast<A>(base[0]);
    mean[k] = origin + (chunk_sum_about(base, stride, O, I, base[0]) / m);
  }
  for (Index k = 0; k < nc; ++k) m2[k] = chunk_m2(x + (c0 + k) * I, stride, O, I, mean[k]);
}

/// Row path: the gradient sums of channels [c0, c0 + nc) (see group_grad_sums), one channel at a
/// time along its rows; after(o, 1, c, 1) once row o of channel c is summed.
template <class T, class A, class CoefOf, class After>
void row_grad_sums(const T* x, const T* dy, const View& v, Index c0, Index nc, CoefOf coef_of, A* sum_dy, A* sum_dy_d,
                   After after) noexcept {
  const Index C = v.channels, I = v.inner, O = v.outer;
  for (Index k = 0; k < nc; ++k) {
    const T h = coef_of(c0 + k).head;
    GradSpanSum<T> acc;
    for (Index o = 0; o < O; ++o) {
      const Index off = (o * C + c0 + k) * I;
      acc.add(x + off, dy + off, I, h);
      after(o, 1, c0 + k, 1);
    }
    sum_dy[k] = acc.first();
    sum_dy_d[k] = acc.second();
  }
}
