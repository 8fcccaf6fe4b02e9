// batchnorm: the loops behind batchnorm::functional. Free to change; not public API.
//
// Two traversals of a View (see functional/view.hpp):
//   row path   (inner >= kRowMin, or outer <= 1): per channel c, the rows x[(o*C + c)*inner + i],
//              i = 0..inner-1, are contiguous; loops run along them with per-channel constants.
//   lane path  (short rows): for fixed o the values of channels c0..c1-1 form one contiguous run
//              of (c1-c0)*inner "lanes"; loops run across lanes with per-lane constants held in
//              small stack arrays (a tile of at most kLanes lanes), and fold lanes into channels.
// Every reduction has a fixed order that depends on the View only (never on threads or timing).
#pragma once

#include <algorithm>
#include <cstddef>

#include "../config.hpp"
#include "../functional/view.hpp"

namespace batchnorm::detail {

using functional::Index;
using functional::View;

inline constexpr Index kRowMin = 32;    ///< rows at least this long take the row path
inline constexpr Index kChunk = 2048;   ///< values per two-pass chunk: 8 KiB of float, stays in L1
inline constexpr Index kLanes = 256;    ///< lanes per tile in the lane path
inline constexpr Index kBlockRows = 32; ///< rows per two-pass block in the lane path
inline constexpr int kPartials = 16;    ///< independent partial sums: fill the SIMD lanes, hide add latency

inline bool use_row_path(const View& v) noexcept { return v.inner >= kRowMin || v.outer <= 1; }

/// Values per tile of the lane path: whole channels, at most kLanes lanes (inner < kRowMin, so
/// at least kLanes / kRowMin = 8 channels a tile).
inline Index lane_tile_channels(const View& v) noexcept {
  return std::max<Index>(1, kLanes / std::max<Index>(1, v.inner));
}

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

/// sum_{i < n} f(i) in A, with kPartials interleaved partial sums folded pairwise at the end.
/// Scalar twin: for (i) s += f(i). The partials let the compiler vectorise without -ffast-math
/// and fix the summation order.
template <class A, class F>
inline A sum_span(Index n, F f) noexcept {
  A part[kPartials] = {};
  Index i = 0;
  for (; i + kPartials <= n; i += kPartials)
    for (int j = 0; j < kPartials; ++j) part[j] += f(i + j);
  A tail = 0;
  for (; i < n; ++i) tail += f(i);
  for (int w = kPartials / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) part[j] += part[j + w];
  return part[0] + tail;
}

/// Merges the values x[0..n) into acc, chunk by chunk. Each chunk (<= kChunk values, in L1) is a
/// two-pass computation shifted by its first value s:
///   mean_k = s + sum (x - s) / len,   M2_k = sum (x - mean_k)^2.
/// The shift makes a constant chunk give mean_k == s exactly and M2_k == 0.
template <class T, class A>
inline void merge_span_moments(const T* x, Index n, Moments<A>& acc) noexcept {
  for (Index start = 0; start < n; start += kChunk) {
    const Index len = std::min(kChunk, n - start);
    const T* p = x + start;
    const A shift = static_cast<A>(p[0]);
    const A sum = sum_span<A>(len, [p, shift](Index i) { return static_cast<A>(p[i]) - shift; });
    const A mean = shift + sum / static_cast<A>(len);
    const A m2 = sum_span<A>(len, [p, mean](Index i) {
      const A d = static_cast<A>(p[i]) - mean;
      return d * d;
    });
    acc.merge(static_cast<A>(len), mean, m2);
  }
}

/// Calls f(c0, nc) for consecutive groups of channels [c0, c0 + nc) covering all channels:
/// single channels on the row path, lane tiles on the lane path. The kernels finish one group
/// (statistics, then the elementwise pass) before the next, so the second pass over a group
/// finds its data in cache when it fits; groups are independent of each other.
template <class F>
void for_each_group(const View& v, F f) {
  const Index g = use_row_path(v) ? 1 : lane_tile_channels(v);
  for (Index c0 = 0; c0 < v.channels; c0 += g) f(c0, std::min(g, v.channels - c0));
}

/// Mean and M2 of channels c0 .. c0+nc-1 into mean[0..nc), m2[0..nc) (nc <= kLanes on the lane
/// path). See functional::batch_moments for the contract.
template <class T, class A>
void group_moments(const T* x, const View& v, Index c0, Index nc, A* mean, A* m2) noexcept {
  const Index C = v.channels, I = v.inner, O = v.outer;
  if (use_row_path(v)) {
    for (Index k = 0; k < nc; ++k) {
      Moments<A> acc;
      for (Index o = 0; o < O; ++o) merge_span_moments(x + (o * C + c0 + k) * I, I, acc);
      mean[k] = acc.mean;
      m2[k] = acc.m2;
    }
    return;
  }
  // Lane path: a block of kBlockRows rows x nl lanes is two-passed per lane (shifted by the
  // block's first row), then each lane's block moments merge into its channel.
  BATCHNORM_ASSERT(nc * I <= kLanes, "lane tile too wide");
  const Index nl = nc * I, stride = C * I;
  Moments<A> acc[kLanes];
  A shift[kLanes], sum[kLanes], bmean[kLanes], bm2[kLanes];
  for (Index o0 = 0; o0 < O; o0 += kBlockRows) {
    const Index rows = std::min(kBlockRows, O - o0);
    const T* base = x + (o0 * C + c0) * I;
    for (Index l = 0; l < nl; ++l) {
      shift[l] = static_cast<A>(base[l]);
      sum[l] = 0;
      bm2[l] = 0;
    }
    for (Index r = 0; r < rows; ++r) {
      const T* row = base + r * stride;
      for (Index l = 0; l < nl; ++l) sum[l] += static_cast<A>(row[l]) - shift[l];
    }
    for (Index l = 0; l < nl; ++l) bmean[l] = shift[l] + sum[l] / static_cast<A>(rows);
    for (Index r = 0; r < rows; ++r) {
      const T* row = base + r * stride;
      for (Index l = 0; l < nl; ++l) {
        const A d = static_cast<A>(row[l]) - bmean[l];
        bm2[l] += d * d;
      }
    }
    for (Index k = 0; k < nc; ++k)
      for (Index i = 0; i < I; ++i) acc[k].merge(static_cast<A>(rows), bmean[k * I + i], bm2[k * I + i]);
  }
  for (Index k = 0; k < nc; ++k) {
    mean[k] = acc[k].mean;
    m2[k] = acc[k].m2;
  }
}

/// Per-channel mean and M2 over the whole view.
template <class T, class A>
void moments(const T* x, const View& v, A* mean, A* m2) noexcept {
  for_each_group(v, [&](Index c0, Index nc) { group_moments(x, v, c0, nc, mean + c0, m2 + c0); });
}

/// Per-channel constants of the elementwise kernels.
template <class T>
struct Coef {
  T head = 0, tail = 0, p = 0, q = 0, r = 0;
};

/// Constants of one channel, the same for every value of a row (row path).
template <class T>
struct UniformCoef {
  Coef<T> c;
  T head(Index) const noexcept { return c.head; }
  T tail(Index) const noexcept { return c.tail; }
  T p(Index) const noexcept { return c.p; }
  T q(Index) const noexcept { return c.q; }
  T r(Index) const noexcept { return c.r; }
};

/// Constants per lane (lane path).
template <class T>
struct LaneCoef {
  const T *head_, *tail_, *p_, *q_, *r_;
  T head(Index l) const noexcept { return head_[l]; }
  T tail(Index l) const noexcept { return tail_[l]; }
  T p(Index l) const noexcept { return p_[l]; }
  T q(Index l) const noexcept { return q_[l]; }
  T r(Index l) const noexcept { return r_[l]; }
};

/// Calls body(offset, n, coef) for every contiguous run of values of channels c0 .. c0+nc-1,
/// where coef gives the constants coef_of(c) of each value's channel (coef.head(j) belongs to
/// the value at offset + j).
template <class T, class CoefOf, class Body>
void group_runs(const View& v, Index c0, Index nc, CoefOf coef_of, Body body) noexcept {
  const Index C = v.channels, I = v.inner, O = v.outer;
  if (use_row_path(v)) {
    for (Index c = c0; c < c0 + nc; ++c) {
      const UniformCoef<T> cf{coef_of(c)};
      for (Index o = 0; o < O; ++o) body((o * C + c) * I, I, cf);
    }
    return;
  }
  BATCHNORM_ASSERT(nc * I <= kLanes, "lane tile too wide");
  T head[kLanes], tail[kLanes], p[kLanes], q[kLanes], r[kLanes];
  for (Index k = 0; k < nc; ++k) {
    const Coef<T> cf = coef_of(c0 + k);
    for (Index i = 0; i < I; ++i) {
      head[k * I + i] = cf.head;
      tail[k * I + i] = cf.tail;
      p[k * I + i] = cf.p;
      q[k * I + i] = cf.q;
      r[k * I + i] = cf.r;
    }
  }
  const LaneCoef<T> cf{head, tail, p, q, r};
  for (Index o = 0; o < O; ++o) body((o * C + c0) * I, nc * I, cf);
}

/// Sums over channels c0 .. c0+nc-1 of dy and of dy * d, d = (x - head_c) - tail_c, into
/// sum_dy[0..nc), sum_dy_d[0..nc), accumulated in A:
///   sum_dy = sum dy,   sum_dy_d = sum dy * d
template <class T, class A, class CoefOf>
void group_grad_sums(const T* x, const T* dy, const View& v, Index c0, Index nc, CoefOf coef_of, A* sum_dy,
                     A* sum_dy_d) noexcept {
  const Index C = v.channels, I = v.inner, O = v.outer;
  if (use_row_path(v)) {
    for (Index k = 0; k < nc; ++k) {
      const Coef<T> cf = coef_of(c0 + k);
      A s_dy = 0, s_dy_d = 0;
      for (Index o = 0; o < O; ++o) {
        const T* xs = x + (o * C + c0 + k) * I;
        const T* dys = dy + (o * C + c0 + k) * I;
        s_dy += sum_span<A>(I, [dys](Index i) { return static_cast<A>(dys[i]); });
        s_dy_d += sum_span<A>(I, [xs, dys, cf](Index i) {
          const T d = (xs[i] - cf.head) - cf.tail;
          return static_cast<A>(dys[i]) * static_cast<A>(d);
        });
      }
      sum_dy[k] = s_dy;
      sum_dy_d[k] = s_dy_d;
    }
    return;
  }
  BATCHNORM_ASSERT(nc * I <= kLanes, "lane tile too wide");
  const Index nl = nc * I;
  T head[kLanes], tail[kLanes];
  A s_dy[kLanes], s_dy_d[kLanes];
  for (Index k = 0; k < nc; ++k) {
    const Coef<T> cf = coef_of(c0 + k);
    for (Index i = 0; i < I; ++i) {
      head[k * I + i] = cf.head;
      tail[k * I + i] = cf.tail;
    }
  }
  for (Index l = 0; l < nl; ++l) s_dy[l] = s_dy_d[l] = 0;
  for (Index o = 0; o < O; ++o) {
    const T* xs = x + (o * C + c0) * I;
    const T* dys = dy + (o * C + c0) * I;
    for (Index l = 0; l < nl; ++l) {
      const T d = (xs[l] - head[l]) - tail[l];
      s_dy[l] += static_cast<A>(dys[l]);
      s_dy_d[l] += static_cast<A>(dys[l]) * static_cast<A>(d);
    }
  }
  for (Index k = 0; k < nc; ++k) {
    A a = 0, b = 0;
    for (Index i = 0; i < I; ++i) {
      a += s_dy[k * I + i];
      b += s_dy_d[k * I + i];
    }
    sum_dy[k] = a;
    sum_dy_d[k] = b;
  }
}

}  // namespace batchnorm::detail
