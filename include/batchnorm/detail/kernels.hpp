// batchnorm: the loops behind batchnorm::functional. Free to change; not public API.
//
// Two traversals of a View (see functional/view.hpp):
//   row path   (inner >= kRowMin, or outer <= 1): channel c is `outer` rows of `inner`
//              contiguous values x[(o*C + c)*inner + i]; loops run along the rows with
//              per-channel constants. A group is one channel, or several short ones
//              (short_moments).
//   lane path  (short rows): for fixed o the values of channels c0..c1-1 are one contiguous run
//              of (c1-c0)*inner "lanes"; loops run across lanes with per-lane constants in
//              small stack arrays and partial sums in registers (whole tiles of up to
//              kNarrowVectors vectors, else strips), and lanes fold into channels at the end. A
//              tile holds whole channels, at most kLanes lanes; a group is a range of whole
//              tiles (a share of one when the tiles are fewer than the threads). Rows of a
//              vector or more ("wide rows") keep per-channel constants instead and are read in
//              memory order, each row one run across channels (for_each_chunk_block, apply_run).
// A kernel finishes a group (statistics, then the elementwise pass) before the next, so the
// second pass finds the group in cache when it fits (row path: one channel); groups are
// independent, and run on OpenMP threads when the library is built with OpenMP
// (batchnorm::openmp). With fewer than kFewChannels channels, or rows of at most kSegmentLanes
// values, the threads split the batch into kSegments segments instead (for_each_segment).
// Every sum has an order fixed by the View alone: the results are bitwise the same for any
// number of threads and any tiling.
//
// Precision: sums run in T vectors for at most kFlush additions per lane, then move to
// accum_t<T> (double); for float that bounds the relative error of a partial sum by 7 * 2^-24
// before it joins a double sum. Statistics are taken over L1/L2-sized chunks (row path) or row
// blocks (lane path), each two-passed or summed about a value within a standard deviation of
// its mean (chunk_moments_about), and merged with Chan et al.'s formula.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "../config.hpp"
#include "../functional/view.hpp"
#include "simd.hpp"

namespace batchnorm::detail {

using functional::accum_t;
using functional::Index;
using functional::View;

inline constexpr Index kRowMin = 1024;        ///< rows at least this long take the row path
inline constexpr Index kChunk = 2048;         ///< values per two-pass chunk of the row path (L1)
inline constexpr Index kLanes = 1024;         ///< lanes per tile of the lane path
inline constexpr Index kBlockRows = 64;       ///< rows per two-pass block of the lane path (L2): at least,
inline constexpr Index kBlockRowsMax = 256;   ///< ... at most,
inline constexpr Index kBlockBytes = 1 << 18; ///< ... and about this many bytes of a full tile in between
inline constexpr Index kWideBlockRows = 16;   ///< the same for rows of a vector or more (L1)
inline constexpr Index kSumRows = 64;         ///< rows per block of the lane path's gradient sums
inline constexpr Index kApplyRows = 256;      ///< rows per block of the lane path's elementwise pass
static_assert(kRowMin <= kLanes, "a lane tile must hold one channel of the longest lane-path row");
inline constexpr Index kShortGroupBytes = 1 << 14;  ///< bytes of short channels per row-path group (L1)
inline constexpr int kNarrowVectors = 8;      ///< lane tiles of at most this many vectors keep sums in registers;
                                              ///< statistic strips where rows are 4 KiB apart or more
inline constexpr int kGradStripVectors = 4;   ///< gradient-sum strips of wider tiles, in cache or rows 4 KiB apart
inline constexpr int kWideStripVectors = 16;  ///< strips of rows under 4 KiB apart: statistics, and gradient
                                              ///< sums in two sweeps when streaming from memory
inline constexpr Index kWideChannels = 64;   ///< channels per chunk of the wide-row traversal
inline constexpr Index kWideBlockBytes = 1 << 18;  ///< bytes per row block of a chunk (L2)
inline constexpr int kFlush = 8;              ///< T additions per lane before a flush to double
// Outputs this large bypass the caches (non-temporal stores): in a forward pass (x in, y out)
// from 10 MiB, in a backward pass (x and dy in, dx out) from 4 MiB. Below, the tensors stay in a
// 32 MiB L3 from one call to the next and plain stores are faster; above, streaming wins
// (measured: forward 1.2-2x better plain at 1-9 MiB, 10% better streamed at 12.8 MiB; backward
// streamed 7-15% better from 4 MiB).
inline constexpr Index kStreamBytes = 1 << 22;
inline constexpr Index kStreamBytesForward = 10 << 20;
inline constexpr Index kParallelMin = 1 << 16;  ///< fewer values than this run on one thread
inline constexpr Index kFewChannels = 4;        ///< fewer channels than this: threads split the batch
inline constexpr Index kSegments = 8;           ///< batch segments when they do
inline constexpr Index kSegmentLanes = 64;      ///< rows of at most this many values split the batch too

// ---------------------------------------------------------------------------------------------
// Moments and their merge.

/// Count, mean and M2 = sum (x - mean)^2 of a set of values. merge() combines two disjoint sets
/// exactly as Chan, Golub and LeVeque (1979):
///   n = na + nb,  delta = mean_b - mean_a,
///   mean = mean_a + delta * nb / n,  M2 = M2_a + M2_b + delta^2 * na * nb / n.
/// Merging an empty set (nb == 0) changes nothing; merging into an empty set copies.
template <class A>
struct Moments {
  A n = 0, mean = 0, m2 = 0;

  void merge(A nb, A mean_b, A m2_b) noexcept {
    if (nb == 0) return;
    if (n == 0) {
      n = nb, mean = mean_b, m2 = m2_b;
      return;
    }
    const A n_ab = n + nb;
    const A delta = mean_b - mean;
    mean += delta * (nb / n_ab);
    m2 += m2_b + delta * delta * (n * nb / n_ab);
    n = n_ab;
  }
};

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
  typename S::vec a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
  int steps = 0;  // additions to each accumulator since the last flush
  typename S::wide w0{}, w1{};

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

/// Two sums over two inputs at once: f(x, u) returns the pair of terms {first, second}
/// (vectors or scalars). Accumulators carry over between spans as in SpanSum.
/// Scalar twin: for (i) {s0, s1} += f(x[i], u[i]).
template <class T>
struct DualSpanSum {
  using S = simd::Simd<T>;
  using A = accum_t<T>;
  typename S::vec a0 = S::zero(), a1 = S::zero(), b0 = S::zero(), b1 = S::zero();
  int steps = 0;
  typename S::wide w0{}, w1{};

  template <class V>
  struct Pair {
    V first, second;
  };

  void flush() noexcept {
    S::accumulate(w0, a0 + a1);
    S::accumulate(w1, b0 + b1);
    a0 = a1 = b0 = b1 = S::zero();
    steps = 0;
  }
  void step() noexcept {
    if (++steps == kFlush / 2) flush();
  }

  template <class F>
  void add(const T* x, const T* u, Index n, F f) noexcept {
    constexpr Index W = S::lanes;
    Index i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const auto t0 = f(S::load(x + i), S::load(u + i));
      const auto t1 = f(S::load(x + i + W), S::load(u + i + W));
      a0 += t0.first, b0 += t0.second;
      a1 += t1.first, b1 += t1.second;
      step();
    }
    if (i < n) {  // at most one vector and a partial one left: to a0/b0 and a1/b1
      if (i + W <= n) {
        const auto t0 = f(S::load(x + i), S::load(u + i));
        a0 += t0.first, b0 += t0.second;
        i += W;
      }
      if (i < n) {
        const int r = static_cast<int>(n - i);
        const auto t1 = f(S::load_n(x + i, r), S::load_n(u + i, r));
        a1 += S::keep_n(t1.first, r), b1 += S::keep_n(t1.second, r);
      }
      step();
    }
  }
  /// Moves everything summed so far into (into0, into1), in A, and starts again from zero.
  void drain(typename S::wide& into0, typename S::wide& into1) noexcept {
    flush();
    S::add(into0, w0), S::add(into1, w1);
    w0 = w1 = typename S::wide{};
  }
  A first() noexcept {
    flush();
    return simd::hsum<T>(w0);
  }
  A second() noexcept {
    flush();
    return simd::hsum<T>(w1);
  }
};

// ---------------------------------------------------------------------------------------------
// The plan: path, group size, threads, streaming stores.

struct Plan {
  bool row = true;       ///< row path, else lane path
  Index group = 1;       ///< channels per group (row path: 1, or several short ones; lane path: whole tiles)
  Index groups = 0;      ///< number of groups
  bool parallel = false; ///< run groups on OpenMP threads
  bool stream = false;   ///< write the output with non-temporal stores
};

inline int max_threads() noexcept {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Wide rows: lane-path rows of a vector or more, traversed with per-channel constants (see the
/// comment at the top of this file).
template <class T>
constexpr bool wide_rows(const View& v) noexcept {
  return v.inner >= simd::Simd<T>::lanes;
}

/// Short channels on the row path: a channel is one chunk (at most kChunk values), so a group
/// holds several (short_moments) to overlap their per-channel latencies.
inline bool short_channels(const View& v) noexcept { return v.outer * v.inner <= kChunk; }

/// Lane-path rows kPageBytes or more apart put a strip's rows in the same L1 sets: such strips
/// stay narrow (lane_sums, lane_grad_rows).
inline constexpr Index kPageBytes = 4096;
template <class T>
constexpr bool rows_share_sets(Index stride) noexcept {
  return stride * static_cast<Index>(sizeof(T)) >= kPageBytes;
}

/// Channels per lane tile: whole channels, at most kLanes lanes.
inline Index tile_channels(const View& v) noexcept { return std::max<Index>(1, kLanes / std::max<Index>(1, v.inner)); }

/// The row path takes one channel per group (several short ones). The lane path streams whole
/// rows (a row block at a time, so memory is read in order) over a range of channels per group:
/// one range per thread, whole tiles each, or, with fewer tiles than threads, an even share of
/// the channels. Lanes are independent, so the partition never changes a result.
template <class T>
Plan make_plan(const View& v, Index stream_bytes = kStreamBytes) noexcept {
  Plan p;
  const Index C = v.channels;
  p.row = v.inner >= kRowMin || v.outer <= 1;
  const int threads = v.size() >= kParallelMin ? max_threads() : 1;
  p.parallel = threads > 1;
  p.stream = v.size() * static_cast<Index>(sizeof(T)) >= stream_bytes;
  if (p.row) {
    // One channel a group; short channels: about kShortGroupBytes of them, at least one group
    // per thread.
    const Index bytes = std::max<Index>(1, v.outer * v.inner * static_cast<Index>(sizeof(T)));
    p.group = short_channels(v) ? std::max<Index>(1, std::min(kShortGroupBytes / bytes, (C + threads - 1) / threads)) : 1;
  } else {
    const Index ct = tile_channels(v);
    const Index tiles = (C + ct - 1) / ct;
    p.group = ct * ((tiles + threads - 1) / threads);
    if (tiles < threads && C * v.inner >= threads * kSegmentLanes) {
      // Fewer tiles than threads: the channels split evenly, each share rounded up to whole
      // vectors of lanes (`unit` channels make a whole number of vectors). Shorter rows split
      // the batch instead (segments_of).
      const Index W = simd::Simd<T>::lanes, I = std::max<Index>(1, v.inner);
      const Index unit = W / std::gcd(W, I);
      const Index share = (C + threads - 1) / threads;
      p.group = std::min(p.group, (share + unit - 1) / unit * unit);
    }
  }
  p.groups = C > 0 ? (C + p.group - 1) / p.group : 0;
  return p;
}

/// Few channels (fewer than kFewChannels), or short rows (channels * inner at most
/// kSegmentLanes: a thread's share of a row would be a vector or less), and enough values for
/// threads: the outer (batch) axis is cut into kSegments segments that run on the threads
/// instead of the channel groups. The count depends on the view alone, and segments' statistics
/// and sums merge in segment order, so results are the same for any number of threads.
/// Otherwise 1.
inline Index segments_of(const View& v) noexcept {
  const bool few = v.channels < kFewChannels || v.channels * v.inner <= kSegmentLanes;
  return few && v.size() >= kParallelMin && v.outer >= kSegments ? kSegments : 1;
}

/// Channels a segmented view has at most (the size of per-segment arrays).
inline constexpr Index kSegmentChannels = std::max(kFewChannels - 1, kSegmentLanes);

/// Calls f(s, sub, sub_plan, offset) for the S = segments_of(v) segments of the outer axis, on
/// OpenMP threads: sub is the view of rows [outer * s / S, outer * (s + 1) / S), offset the index
/// of its first value, sub_plan its plan (its own paths), with `stream` from p, the whole view's.
template <class T, class F>
void for_each_segment(const View& v, const Plan& p, F f) noexcept {
  const Index S = segments_of(v);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (S > 1 && max_threads() > 1)
#endif
  for (Index s = 0; s < S; ++s) {
    const Index o0 = v.outer * s / S, o1 = v.outer * (s + 1) / S;
    const View sub{o1 - o0, v.channels, v.inner};
    Plan sp = make_plan<T>(sub);
    sp.stream = p.stream;
    f(s, sub, sp, o0 * v.channels * v.inner);
  }
}

/// The sums of S segments added in segment order, channel by channel: out[c] = sum_s part[s][c].
template <class A>
void add_segments(Index S, Index channels, const A (*part)[kSegmentChannels], A* out) noexcept {
  for (Index c = 0; c < channels; ++c) {
    A a = 0;
    for (Index s = 0; s < S; ++s) a += part[s][c];
    out[c] = a;
  }
}

/// Few channels or short rows (segments_of(v) > 1): f(sub, sub_plan, offset, s0, s1) sums the
/// channels of each batch segment into s0[0..C), s1[0..C) (or leaves them zero), on the threads;
/// the segments' sums are then added in segment order into sum0, sum1 (add_segments).
template <class T, class A, class F>
void segment_sums(const View& v, const Plan& p, F f, A* sum0, A* sum1) noexcept {
  A s0[kSegments][kSegmentChannels] = {}, s1[kSegments][kSegmentChannels] = {};
  for_each_segment<T>(v, p, [&](Index s, const View& sub, const Plan& sp, Index off) { f(sub, sp, off, s0[s], s1[s]); });
  add_segments(segments_of(v), v.channels, s0, sum0);
  add_segments(segments_of(v), v.channels, s1, sum1);
}

/// Calls f(c0, nc) for every group [c0, c0 + nc), on OpenMP threads if the plan says so.
template <class F>
void for_each_group(const View& v, const Plan& p, F f) noexcept {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (p.parallel)
#endif
  for (Index g = 0; g < p.groups; ++g) {
    const Index c0 = g * p.group;
    f(c0, std::min(p.group, v.channels - c0));
  }
}

/// Calls f(o0, rows, t0, nt) for the lane path: row blocks of `block` rows in order, and within
/// each, the tiles [t0, t0 + nt) of channels [c0, c0 + nc).
template <class F>
void for_each_block_tile(const View& v, Index c0, Index nc, Index block, F f) noexcept {
  const Index ct = tile_channels(v);
  for (Index o0 = 0; o0 < v.outer; o0 += block)
    for (Index t0 = c0; t0 < c0 + nc; t0 += ct) f(o0, std::min(block, v.outer - o0), t0, std::min(ct, c0 + nc - t0));
}

/// Wide rows (lane path with inner >= one vector): calls f(o0, rows, k0, nk) for chunks
/// [k0, k0 + nk) of at most kWideChannels channels of [c0, c0 + nc) (outer loop) and, within
/// each, blocks of rows [o0, o0 + rows) of about kWideBlockBytes (inner loop). The caller reads a
/// block in memory order: row by row, the chunk's channels along each row (one contiguous run of
/// nk * inner values a row), never down a column.
template <class T, class F>
void for_each_chunk_block(const View& v, Index c0, Index nc, F f) noexcept {
  for (Index k0 = c0; k0 < c0 + nc; k0 += kWideChannels) {
    const Index nk = std::min(kWideChannels, c0 + nc - k0);
    const Index run = std::max<Index>(1, nk * v.inner * static_cast<Index>(sizeof(T)));
    const Index block = std::max<Index>(1, kWideBlockBytes / run);
    for (Index o0 = 0; o0 < v.outer; o0 += block) f(o0, std::min(block, v.outer - o0), k0, nk);
  }
}

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
  SpanSum<T> sum;
  for (Index o = 0; o < rows; ++o) sum.add(x + o * stride, len, [s](auto xv) { return xv - s; });
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

/// One-pass moments of a chunk (laid out as in chunk_moments) about c, a value close to its mean
/// (the mean of the values before it, rounded to T):
///   s1 = sum (x - c),  s2 = sum (x - c)^2,  mean = c + s1 / n,  M2 = s2 - s1^2 / n
/// Taken only when s1^2 / n <= M2, i.e. the chunk's mean is within one standard deviation of c
/// (true for data in random order), where the subtraction loses at most a factor 2 of the
/// relative precision of s2. Returns false otherwise (and for NaN or Inf), writing nothing: the
/// caller then two-passes the chunk (chunk_moments) from cache.
template <class T, class A>
inline bool chunk_moments_about(const T* x, Index stride, Index rows, Index len, A origin, T c, A& rel,
                                A& m2) noexcept {
  DualSpanSum<T> sums;
  for (Index o = 0; o < rows; ++o)
    sums.add(x + o * stride, x + o * stride, len, [c](auto xv, auto) {
      const auto d = xv - c;
      return typename DualSpanSum<T>::template Pair<decltype(d)>{d, d * d};
    });
  const A n = static_cast<A>(rows * len), s1 = sums.first(), s2 = sums.second();
  const A cross = s1 * (s1 / n), m2_c = s2 - cross;
  if (!(cross <= m2_c)) return false;
  rel = (static_cast<A>(c) - origin) + s1 / n;
  m2 = m2_c;
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

/// Row path, short channels (short_channels(v): a channel is one chunk): the moments of
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

/// out[l] += acc[l] in A for l < n: the flush of per-lane partial sums.
template <class T>
inline void flush_lanes(const T* acc, accum_t<T>* out, Index n) noexcept {
  using S = simd::Simd<T>;
  constexpr Index W = S::lanes;
  Index l = 0;
  for (; l + W <= n; l += W) S::add_to(out + l, S::load(acc + l));
  for (; l < n; ++l) out[l] += static_cast<accum_t<T>>(acc[l]);
}

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
  /// out[l] += t's lane l, in A, for the lanes (the flush of partial sums in T).
  void flush(const typename S::vec* t, accum_t<T>* out) const noexcept;
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
  alignas(64) T lanes[NV * W];
  for (int j = 0; j < NV; ++j) S::store(lanes + j * W, t[j]);
  flush_lanes(lanes, out, (NV - 1) * W + last);
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
/// array; add(t) adds T partial sums lane by lane (as flush_lanes); store(s) writes them back.
template <class T, int NV>
struct RegisterSums {
  using S = simd::Simd<T>;
  using A = accum_t<T>;
  static constexpr Index W = S::lanes;
  typename S::wide w[NV] = {};

  void load(const A* s, Index nl) noexcept {
    alignas(64) A lanes[NV * W] = {};
    std::copy(s, s + nl, lanes);
    for (int j = 0; j < NV; ++j) std::memcpy(&w[j], lanes + j * W, sizeof w[j]);
  }
  void add(const typename S::vec* t) noexcept {
    for (int j = 0; j < NV; ++j) S::accumulate(w[j], t[j]);
  }
  void store(A* s, Index nl) const noexcept {
    alignas(64) A lanes[NV * W];
    for (int j = 0; j < NV; ++j) S::lanes_of(w[j], lanes + j * W);
    std::copy(lanes, lanes + nl, s);
  }
};

/// lane_sums for a narrow tile (nl lanes in NV vectors): strip_sums every kFlush rows, added to
/// A sums kept in registers (lane arrays would chain the rows through store-to-load round trips).
template <class T, int NV, class F>
void narrow_lane_sums(const T* x, Index stride, Index rows, Index nl, const T* a, accum_t<T>* out, F f) noexcept {
  const NarrowLanes<T, NV> L(nl);
  typename simd::Simd<T>::vec t[NV];
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

/// Merges, per channel k < nt, its I lanes of `rows` values each (lane moments bmean, bm2 at
/// k*I + i) into one set of rows*I values: sequentially, lane i joining i lanes, with Chan's
/// factors shared by all channels (f1 = 1/(i+1), f2 = i*rows/(i+1)). Result in bmean[k], bm2[k].
template <class A>
void fold_lanes(Index nt, Index I, Index rows, A* bmean, A* bm2) noexcept {
  if (I == 1) return;
  // The factors, once for all channels (I < kLanes here: rows of a vector or more don't fold).
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
/// blocks of kBlockRows to kBlockRowsMax rows (kWideBlockRows for rows of a vector or more). Per
/// tile of a block, each lane is two-passed (shifted by the block's first row); the lanes of a channel merge into
/// its block moments, which merge into the channel's running moments (every channel has the same
/// count, so the Chan factors are shared). Rows of a vector or more are summed per channel
/// instead (chunk_moments, or chunk_moments_about after the first block). Means are merged
/// relative to each channel's first value, as in channel_moments.
template <class T, class A>
void lane_moments(const T* x, const View& v, Index c0, Index nc, A* mean, A* m2) noexcept {
  const Index I = v.inner, stride = v.channels * I;
  alignas(64) T shift[kLanes], head[kLanes];
  alignas(64) A bsum[kLanes], bm2[kLanes], bu[kLanes];
  for (Index k = 0; k < nc; ++k) mean[k] = 0, m2[k] = 0;
  A n = 0;  // values merged so far, per channel
  // Rows per block: about kBlockBytes of a full tile (more rows amortise the per-lane work of a
  // block), from the view alone so that blocks, and results, never depend on the threads.
  const Index tile_bytes = std::min(v.channels, tile_channels(v)) * I * static_cast<Index>(sizeof(T));
  const Index block = wide_rows<T>(v) ? kWideBlockRows
                                      : std::clamp(kBlockBytes / std::max<Index>(1, tile_bytes), kBlockRows, kBlockRowsMax);
  for_each_block_tile(v, c0, nc, block, [&](Index o0, Index rows, Index t0, Index nt) {
    const Index nl = nt * I;
    const T* blk = x + (o0 * v.channels + t0) * I;
    if (wide_rows<T>(v)) {
      // Rows of a vector or more: each channel's block is one chunk, vectorised along its rows
      // (one pass about the channel's mean so far where accurate, as channel_moments).
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
      return;
    }
    for (Index l = 0; l < nl; ++l) shift[l] = blk[l];
    lane_sums(blk, stride, rows, nl, shift, bsum, [](auto xv, auto s) { return xv - s; });
    // Block means per lane, relative to the first value of the lane's channel (x[(t0 + k) * I]).
    const A a_rows = static_cast<A>(rows);
    const auto block_mean = [&](Index l, A origin) {
      const A rel = (static_cast<A>(shift[l]) - origin) + bsum[l] / a_rows;
      const A bmean = origin + rel;
      bsum[l] = rel;
      head[l] = static_cast<T>(bmean);
      bu[l] = bmean - static_cast<A>(head[l]);
    };
    if (I == 1) {  // a flat loop the compiler vectorizes
      const T* x0 = x + t0;
      for (Index l = 0; l < nl; ++l) block_mean(l, static_cast<A>(x0[l]));
    } else {
      for (Index k = 0; k < nt; ++k)
        for (Index i = 0; i < I; ++i) block_mean(k * I + i, static_cast<A>(x[(t0 + k) * I]));
    }
    lane_sums(blk, stride, rows, nl, head, bm2, [](auto xv, auto h) {
      const auto e = xv - h;
      return e * e;
    });
    for (Index l = 0; l < nl; ++l) bm2[l] = m2_about_mean(bm2[l], a_rows, bu[l]);
    fold_lanes(nt, I, rows, bsum, bm2);
    const A nb = static_cast<A>(rows * I), n_ab = n + nb, f1 = nb / n_ab, f2 = n * nb / n_ab;
    A* cm = mean + (t0 - c0);
    A* c2 = m2 + (t0 - c0);
    if (n == 0) {
      for (Index k = 0; k < nt; ++k) cm[k] = bsum[k], c2[k] = bm2[k];
    } else {
      for (Index k = 0; k < nt; ++k) {
        const A delta = bsum[k] - cm[k];
        cm[k] += delta * f1;
        c2[k] += bm2[k] + delta * delta * f2;
      }
    }
    if (t0 + nt == c0 + nc) n = n_ab;  // the block is done for every tile
  });
  if (v.outer > 0 && I > 0)
    for (Index k = 0; k < nc; ++k) mean[k] += static_cast<A>(x[(c0 + k) * I]);
}

/// Mean and M2 of the channels of a group into mean[0..nc), m2[0..nc).
template <class T, class A>
void group_moments(const T* x, const View& v, const Plan& p, Index c0, Index nc, A* mean, A* m2) noexcept {
  if (!p.row) return lane_moments(x, v, c0, nc, mean, m2);
  if (short_channels(v)) return short_moments(x, v, c0, nc, mean, m2);
  for (Index k = 0; k < nc; ++k) {
    Moments<A> acc;
    channel_moments(x, v, c0 + k, acc);
    mean[k] = acc.mean;
    m2[k] = acc.m2;
  }
}

/// Per-channel mean and M2 over the whole view.
template <class T, class A>
void moments(const T* x, const View& v, A* mean, A* m2) noexcept {
  if (const Index S = segments_of(v); S > 1) {
    // Few channels or short rows: moments of each batch segment on the threads, merged in
    // segment order.
    A sm[kSegments][kSegmentChannels], s2[kSegments][kSegmentChannels];
    for_each_segment<T>(v, make_plan<T>(v), [&](Index s, const View& sub, const Plan& sp, Index off) {
      group_moments(x + off, sub, sp, 0, sub.channels, sm[s], s2[s]);
    });
    for (Index c = 0; c < v.channels; ++c) {
      Moments<A> acc;
      for (Index s = 0; s < S; ++s)
        acc.merge(static_cast<A>((v.outer * (s + 1) / S - v.outer * s / S) * v.inner), sm[s][c], s2[s][c]);
      mean[c] = acc.mean, m2[c] = acc.m2;
    }
    return;
  }
  const Plan p = make_plan<T>(v);
  for_each_group(v, p, [&](Index c0, Index nc) { group_moments(x, v, p, c0, nc, mean + c0, m2 + c0); });
}

// ---------------------------------------------------------------------------------------------
// Gradient sums.

/// The gradient sums in T of a strip (NV vectors of lanes, L) over rows [r0, r1) (at most
/// kFlush, stride apart):  t0[j] = sum_r dy[r],  t1[j] = sum_r dy[r] * (x[r] - head[j]).
/// Rows in order, one product per addition (as strip_sums). With Sweeps2, two sweeps over the
/// rows, one sum each: a sweep reads its rows' strips in memory order with NV accumulators and
/// the second finds dy in L1 (wide strips; see lane_grad_rows); otherwise one sweep, both sums.
template <bool Sweeps2, class T, int NV>
inline void strip_grad_sums(const T* x, const T* dy, Index stride, Index r0, Index r1, const NarrowLanes<T, NV>& L,
                            const T* head, typename simd::Simd<T>::vec* t0, typename simd::Simd<T>::vec* t1) noexcept {
  using S = simd::Simd<T>;
  for (int j = 0; j < NV; ++j) t0[j] = t1[j] = S::zero();
  if constexpr (Sweeps2) {
    for (Index r = r0; r < r1; ++r)
      for (int j = 0; j < NV; ++j) t0[j] += L.load(dy + r * stride, j);
    for (Index r = r0; r < r1; ++r)
      for (int j = 0; j < NV; ++j) t1[j] += L.load(dy + r * stride, j) * (L.load(x + r * stride, j) - L.load(head, j));
  } else {
    typename S::vec h[NV];
    for (int j = 0; j < NV; ++j) h[j] = L.load(head, j);
    for (Index r = r0; r < r1; ++r)
      for (int j = 0; j < NV; ++j) {
        const auto d = L.load(dy + r * stride, j);
        t0[j] += d, t1[j] += d * (L.load(x + r * stride, j) - h[j]);
      }
  }
}

/// Per-lane gradient sums of rows [r0, r1) (stride apart, at most kFlush) of nl lanes, in T, added
/// to out0, out1 in A:
///   out0[l] += sum_r dy[r][l],   out1[l] += sum_r dy[r][l] * (x[r][l] - head[l])
/// Strips summed over the rows in registers (strip_grad_sums): with `sweeps2` (x and dy stream
/// from memory, rows under 4 KiB apart) strips of kWideStripVectors vectors in two sweeps,
/// which read memory in much longer runs (measured: (25088, 256) floats 2.4x -> 1.1x memcpy);
/// otherwise strips of kGradStripVectors vectors in one sweep (in cache, or with rows 4 KiB
/// apart, whose strips of 8 rows would not stay in L1's sets between two sweeps).
template <class T>
inline void lane_grad_rows(const T* x, const T* dy, Index stride, Index r0, Index r1, Index nl, const T* head,
                           accum_t<T>* out0, accum_t<T>* out1, bool sweeps2) noexcept {
  using S = simd::Simd<T>;
  const auto strip = [&](auto sweeps) {
    return [&](Index l0, const auto& L) {
      constexpr int NV = std::decay_t<decltype(L)>::vectors;
      typename S::vec t0[NV], t1[NV];
      strip_grad_sums<decltype(sweeps)::value>(x + l0, dy + l0, stride, r0, r1, L, head + l0, t0, t1);
      L.flush(t0, out0 + l0);
      L.flush(t1, out1 + l0);
    };
  };
  if (sweeps2) for_each_strip<T, kWideStripVectors>(nl, strip(std::true_type{}));
  else for_each_strip<T, kGradStripVectors>(nl, strip(std::false_type{}));
}

/// One lane per channel (inner == 1), narrow tile: the gradient sums of `rows` rows added to
/// s0[l], s1[l] (A) exactly as lane_grad_rows does it (strip_grad_sums every kFlush rows, then
/// s += in A, in the same order), with the A sums in registers: the lane arrays' store-to-load
/// round trips would chain the flushes.
template <class T, int NV>
void narrow_grad_block(const T* x, const T* dy, Index stride, Index rows, Index nl, const T* head,
                       accum_t<T>* s0, accum_t<T>* s1) noexcept {
  const NarrowLanes<T, NV> L(nl);
  typename simd::Simd<T>::vec t0[NV], t1[NV];
  RegisterSums<T, NV> w0, w1;
  w0.load(s0, nl), w1.load(s1, nl);
  for (Index r0 = 0; r0 < rows; r0 += kFlush) {
    strip_grad_sums<false>(x, dy, stride, r0, std::min(rows, r0 + kFlush), L, head, t0, t1);
    w0.add(t0), w1.add(t1);
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
struct NoAfter {
  void operator()(Index, Index, Index, Index) const noexcept {}
};

template <class T, class A, class CoefOf, class After = NoAfter>
void group_grad_sums(const T* x, const T* dy, const View& v, const Plan& p, Index c0, Index nc, CoefOf coef_of,
                     A* sum_dy, A* sum_dy_d, After after = {}) noexcept {
  const Index C = v.channels, I = v.inner, O = v.outer;
  const auto remove_tails = [&] {
    for (Index k = 0; k < nc; ++k) sum_dy_d[k] -= static_cast<A>(coef_of(c0 + k).tail) * sum_dy[k];
  };
  if (p.row) {
    for (Index k = 0; k < nc; ++k) {
      const T h = coef_of(c0 + k).head;
      DualSpanSum<T> acc;
      for (Index o = 0; o < O; ++o) {
        const Index off = (o * C + c0 + k) * I;
        acc.add(x + off, dy + off, I, [h](auto xv, auto dyv) {
          return typename DualSpanSum<T>::template Pair<decltype(dyv)>{dyv, dyv * (xv - h)};
        });
        after(o, 1, c0 + k, 1);
      }
      sum_dy[k] = acc.first();
      sum_dy_d[k] = acc.second();
    }
    return remove_tails();
  }
  using S = simd::Simd<T>;
  for (Index k = 0; k < nc; ++k) sum_dy[k] = 0, sum_dy_d[k] = 0;
  if (wide_rows<T>(v)) {
    // Wide rows: chunks of channels, one DualSpanSum a channel, blocks read along the rows.
    // Each span is summed in registers (a DualSpanSum of its own) and drained into the
    // channel's A accumulators: the same order of additions for any partition.
    T head[kWideChannels];
    typename S::wide acc0[kWideChannels], acc1[kWideChannels];
    for_each_chunk_block<T>(v, c0, nc, [&](Index o0, Index rows, Index k0, Index nk) {
      if (o0 == 0)  // a new chunk of channels
        for (Index k = 0; k < nk; ++k) head[k] = coef_of(k0 + k).head, acc0[k] = acc1[k] = typename S::wide{};
      for (Index r = o0; r < o0 + rows; ++r) {
        for (Index k = 0; k < nk; ++k) {
          const Index off = (r * C + k0 + k) * I;
          const T h = head[k];
          DualSpanSum<T> span;
          span.add(x + off, dy + off, I, [h](auto xv, auto dyv) {
            return typename DualSpanSum<T>::template Pair<decltype(dyv)>{dyv, dyv * (xv - h)};
          });
          span.drain(acc0[k], acc1[k]);
        }
      }
      after(o0, rows, k0, nk);
      if (o0 + rows == O)
        for (Index k = 0; k < nk; ++k)
          sum_dy[k0 - c0 + k] = simd::hsum<T>(acc0[k]), sum_dy_d[k0 - c0 + k] = simd::hsum<T>(acc1[k]);
    });
    return remove_tails();
  }
  // Lane path: row blocks in order, rows one after the other; per tile, kFlush rows summed per
  // lane in T, then added to the channels' sums in A (inner == 1) or to the lanes' sums in A,
  // which join the channels' at the end of the block (inner > 1).
  const Index stride = C * I;
  alignas(64) T head[kLanes];
  alignas(64) A l0[kLanes], l1[kLanes];  // inner > 1: a block's sums per lane, in A
  Index coef_tile = -1;
  for_each_block_tile(v, c0, nc, kSumRows, [&](Index o0, Index rows, Index t0, Index nt) {
    const Index nl = nt * I;
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
      lane_grad_rows(x + t0 * I, dy + t0 * I, stride, r0, r1, nl, head, I == 1 ? s0 : l0, I == 1 ? s1 : l1,
                     p.stream && !rows_share_sets<T>(stride));
    }
    if (I > 1)  // the block's lane sums into the channels', lane by lane
      for (Index k = 0; k < nt; ++k)
        for (Index i = 0; i < I; ++i) s0[k] += l0[k * I + i], s1[k] += l1[k * I + i];
    after(o0, rows, t0, nt);
  });
  remove_tails();
}

// ---------------------------------------------------------------------------------------------
// Elementwise passes.

/// Per-channel constants of the elementwise kernels; each kernel documents its formula in them.
template <class T>
struct Coef {
  T head = 0, tail = 0, p = 0, q = 0, r = 0;
};

/// The constants of a lane-path tile, one array per Coef member, indexed by lane.
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
      const int head = static_cast<int>((simd::kBytes - addr % simd::kBytes) % simd::kBytes / sizeof(T));
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
  typename S::vec c[5][NV];
  for (int m = 0; m < 5; ++m)
    for (int j = 0; j < NV; ++j) c[m][j] = L.load(k.k[m], j);
  const bool nt_stores = W > 1 && stream && stride % W == 0 && simd::stream_aligned(out);
  for (Index r = 0; r < rows; ++r) {
    const T* xr = x + r * stride;
    T* o = out + r * stride;
    for (int j = 0; j < NV; ++j) {
      const auto v = f(L.load(xr, j), HasU ? L.load(u + r * stride, j) : S::zero(), c[0][j], c[1][j], c[2][j], c[3][j],
                       c[4][j]);
      if (nt_stores && (j < NV - 1 || L.last == W)) simd::stream<T>(o + j * W, v);
      else L.store(o, j, v);
    }
  }
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

/// out = f(x, u, constants of the value's channel) over rows [o0, o0 + rows) of channels
/// [t0, t0 + nt), nt == 1 or a lane tile, in memory order; coef_of(c) gives the Coef<T> of
/// channel c. Rows of a vector or more take the constants as scalars, channel by channel along
/// each row (apply_run); shorter rows load them per lane.
template <class T, bool HasU, class CoefOf, class F>
void region_apply(const T* x, const T* u, T* out, const View& v, bool stream, Index o0, Index rows, Index t0, Index nt,
                  CoefOf coef_of, F f) noexcept {
  const Index C = v.channels, I = v.inner;
  if (nt == 1) {
    const Coef<T> cf = coef_of(t0);
    // Last row first: the statistics or sums pass just read the channel in order, so its last
    // rows are the likeliest still in L2 (measured: resnet_s1 NCHW backward 10-15% faster).
    for (Index o = o0 + rows - 1; o >= o0; --o) {
      const Index off = (o * C + t0) * I;
      apply_span<T, HasU>(x + off, HasU ? u + off : nullptr, out + off, I, stream, cf, f);
    }
    return;
  }
  // Tiles of every channel: the rows are contiguous, one run in memory.
  const bool whole = t0 == 0 && nt == C;
  const Index off0 = (o0 * C + t0) * I;
  const T* ub = HasU ? u + off0 : nullptr;
  if (wide_rows<T>(v)) {  // nt <= kWideChannels (for_each_chunk_block)
    Coef<T> cfs[kWideChannels];
    for (Index j = 0; j < nt; ++j) cfs[j] = coef_of(t0 + j);
    if (whole) return apply_run<T, HasU>(x + off0, ub, out + off0, I, nt, rows, cfs, stream, f);
    for (Index o = o0; o < o0 + rows; ++o) {
      const Index off = (o * C + t0) * I;
      apply_run<T, HasU>(x + off, HasU ? u + off : nullptr, out + off, I, nt, 1, cfs, stream, f);
    }
    return;
  }
  constexpr Index W = simd::Simd<T>::lanes;
  alignas(64) T k[5][kLanes + W];
  const Index nl = nt * I;
  for (Index j = 0; j < nt; ++j) {
    const Coef<T> cf = coef_of(t0 + j);
    for (Index i = 0; i < I; ++i) {
      const Index l = j * I + i;
      k[0][l] = cf.head, k[1][l] = cf.tail, k[2][l] = cf.p, k[3][l] = cf.q, k[4][l] = cf.r;
    }
  }
  const LaneCoefs<T> lanes{{k[0], k[1], k[2], k[3], k[4]}};
  // Rows of whole vectors: row by row. Otherwise, with contiguous rows, one run (per-row
  // partial vectors next to non-temporal stores cost several times the pass), unless the
  // stores are plain and the tile is narrow (constants in registers).
  const bool run = whole && nl % W != 0 && W > 1;
  if (!(run && stream) && narrow_dispatch<T>(nl, [&](auto nv) {
        narrow_apply<T, HasU, decltype(nv)::value>(x + off0, ub, out + off0, C * I, rows, nl, lanes, stream, f);
      }))
    return;
  if (run) {
    for (int m = 0; m < 5; ++m)
      for (Index l = nl; l < nl + W; ++l) k[m][l] = k[m][l % nl];
    return apply_lane_run<T, HasU>(x + off0, ub, out + off0, rows * nl, nl, lanes, stream, f);
  }
  for (Index o = o0; o < o0 + rows; ++o) {
    const Index off = (o * C + t0) * I;
    apply_span<T, HasU>(x + off, HasU ? u + off : nullptr, out + off, nl, stream, lanes, f);
  }
}

/// out = f(x, u, coefficients of the value's channel) over the channels of a group: channel by
/// channel on the row path, row blocks of lane tiles in memory order on the lane path.
template <class T, bool HasU, class CoefOf, class F>
void group_apply(const T* x, const T* u, T* out, const View& v, const Plan& p, Index c0, Index nc, CoefOf coef_of,
                 F f) noexcept {
  if (p.row) {
    for (Index c = c0; c < c0 + nc; ++c)
      region_apply<T, HasU>(x, u, out, v, p.stream, 0, v.outer, c, 1, coef_of, f);
    return;
  }
  const auto region = [&](Index o0, Index rows, Index t0, Index nt) {
    region_apply<T, HasU>(x, u, out, v, p.stream, o0, rows, t0, nt, coef_of, f);
  };
  if (wide_rows<T>(v)) for_each_chunk_block<T>(v, c0, nc, region);
  else for_each_block_tile(v, c0, nc, kApplyRows, region);
}

}  // namespace batchnorm::detail
