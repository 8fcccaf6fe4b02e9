// batchnorm: wide rows (Path::wide_rows): lane-path rows of a vector or more. Free to change; not public API.
// No include guard: detail/dispatch.hpp includes the isa/ files once per ISA, inside namespace
// detail::<isa> (see isa/simd.hpp).

template <class T, class F>
void for_each_chunk_block(const View& v, Index c0, Index nc, F f) noexcept {
  for (Index k0 = c0; k0 < c0 + nc; k0 += kWideChannels) {
    const Index nk = std::min(kWideChannels, c0 + nc - k0);
    const Index run = std::max<Index>(1, nk * v.inner * static_cast<Index>(sizeof(T)));
    const Index block = std::max<Index>(1, kWideBlockBytes / run);
    for (Index o0 = 0; o0 < v.outer; o0 += block) f(o0, std::min(block, v.outer - o0), k0, nk);
  }
}


/// Wide rows: mean and M2 of channels [c0, c0 + nc) into mean[0..nc), m2[0..nc), in row blocks
/// of kWideBlockRows rows (L1). Each channel's block is one chunk, vectorised along its rows:
/// one pass about the channel's mean so far where that is accurate (chunk_moments_about), else
/// two-passed (chunk_moments); the blocks merge as Chan et al., relative to the channel's first
/// value (as channel_moments). Empty channels are the caller's.
template <class T, class A>
void wide_moments(const T* x, const View& v, Index c0, Index nc, A* mean, A* m2) noexcept {
  const Index I = v.inner, stride = v.channels * I;
  for (Index k = 0; k < nc; ++k) mean[k] = 0, m2[k] = 0;
  A n = 0;  // values merged so far, per channel
  for_each_block_tile(v, c0, nc, kWideBlockRows, [&](Index o0, Index rows, Index t0, Index nt) {
    const T* blk = x + (o0 * v.channels + t0) * I;
    const A nb = static_cast<A>(rows * I), n_ab = n + nb, f1 = nb / n_ab, f2 = n * nb / n_ab;
    for (Index k = 0; k < nt; ++k) {
      A rel, bm;
      A& cm = mean[t0 - c0 + k];
      A& c2 = m2[t0 - c0 + k];
      const A origin = static_cast<A>(x[(t0 + k) * I]);
      const T* chunk = blk + k * I;
      if (n == 0 || !chunk_moments_about(chunk, stride, rows, I, origin, static_cast<T>(origin + cm), rel, bm))
        chunk_moments(chunk, stride, rows, I, origin, rel, bm);
      const A delta = rel - cm;
      cm = n == 0 ? rel : cm + delta * f1;
      c2 = n == 0 ? bm : c2 + bm + delta * delta * f2;
    }
    if (t0 + nt == c0 + nc) n = n_ab;
  });
  for (Index k = 0; k < nc; ++k) mean[k] += static_cast<A>(x[(c0 + k) * I]);
}

/// Wide rows: the gradient sums of channels [c0, c0 + nc) (see group_grad_sums): chunks of
/// channels, blocks read along the rows, one GradSpanSum a span drained into the channel's A
/// accumulators (the same order of additions for any partition); after(o0, rows, k0, nk) once a
/// block of a chunk is summed.
template <class T, class A, class CoefOf, class After>
void wide_grad_sums(const T* x, const T* dy, const View& v, Index c0, Index nc, CoefOf coef_of, A* sum_dy, A* sum_dy_d,
                   After after) noexcept {
  const Index C = v.channels, I = v.inner, O = v.outer;
  using S = simd::Simd<T>;
  for (Index k = 0; k < nc; ++k) sum_dy[k] = 0, sum_dy_d[k] = 0;
  T head[kWideChannels];
  typename S::wide acc0[kWideChannels], acc1[kWideChannels];
  for_each_chunk_block<T>(v, c0, nc, [&](Index o0, Index rows, Index k0, Index nk) {
    BATCHNORM_ASSERT(nk <= kWideChannels, "a chunk fits the per-channel arrays");
    if (o0 == 0)  // a new chunk of channels
      for (Index k = 0; k < nk; ++k) head[k] = coef_of(k0 + k).head, acc0[k] = acc1[k] = typename S::wide{};
    for (Index r = o0; r < o0 + rows; ++r) {
      for (Index k = 0; k < nk; ++k) {
        const Index off = (r * C + k0 + k) * I;
        const T h = head[k];
        GradSpanSum<T> span;
        span.add(x + off, dy + off, I, h);
        span.drain(acc0[k], acc1[k]);
      }
    }
    after(o0, rows, k0, nk);
    if (o0 + rows == O)
      for (Index k = 0; k < nk; ++k)
        sum_dy[k0 - c0 + k] = simd::hsum<T>(acc0[k]), sum_dy_d[k0 - c0 + k] = simd::hsum<T>(acc1[k]);
  });
}
