// batchnorm: the threaded loops over groups and batch segments (OpenMP when the library is built
// with it: batchnorm::openmp). Compiled once, outside the ISA copies: a parallel region calls
// the copy's per-group function (Clang drops a function's target attribute inside the regions
// it outlines). Free to change; not public API.
#pragma once

#include <algorithm>

#include "../config.hpp"
#include "plan.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

/// Calls f(args...) as code of the compile flags' baseline, never inlined into an ISA copy: the
/// functional layer's per-channel formulas (running statistics, parameter gradients) then round
/// the same whichever copy runs and wherever else they are called (no fused multiply-add that
/// the baseline does not have). Once per group: the call costs nothing measurable.
template <class F, class... Args>
BATCHNORM_NOINLINE void call_baseline(F& f, Args... args) {
  f(args...);
}

/// Calls f(c0, nc) for every group [c0, c0 + nc) of the plan, on OpenMP threads if it says so.
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

/// Calls f(s, sub, sub_plan, offset) for the p.segments segments of the outer axis, on OpenMP
/// threads: sub is the view of rows [outer * s / S, outer * (s + 1) / S), offset the index of
/// its first value, sub_plan its own plan, streaming as the whole view's.
template <class T, class F>
void for_each_segment(const View& v, const Plan& p, F f) noexcept {
  const Index S = p.segments;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (S > 1 && max_threads() > 1)
#endif
  for (Index s = 0; s < S; ++s) {
    const Index o0 = v.outer * s / S, o1 = v.outer * (s + 1) / S;
    const View sub{o1 - o0, v.channels, v.inner};
    Plan sp = make_plan<T>(sub, p.lanes);
    sp.stream = p.stream;
    f(s, sub, sp, o0 * v.channels * v.inner);
  }
}

/// The values of segment s of a segmented view, per channel.
inline Index segment_count(const View& v, Index S, Index s) noexcept {
  return (v.outer * (s + 1) / S - v.outer * s / S) * v.inner;
}

/// The C per-channel values of each segment of a segmented view: segment 0's in the caller's
/// array `first`, the others' in `scratch` (kSegmentScratch values: segments_of keeps
/// (S - 1) * C within it), C apart.
template <class A>
struct SegmentArrays {
  A* first;
  A* scratch;
  Index channels;
  SegmentArrays(const View& v, const Plan& p, A* first_, A* scratch_) noexcept
      : first(first_), scratch(scratch_), channels(v.channels) {
    BATCHNORM_ASSERT((p.segments - 1) * v.channels <= kSegmentScratch, "the segment scratch holds the view");
    static_cast<void>(p);
  }
  A* operator[](Index s) const noexcept { return s == 0 ? first : scratch + (s - 1) * channels; }
};

/// Segmented views (p.segments > 1): f(sub, sub_plan, offset, s0, s1) sums the channels of
/// each segment into s0[0..C), s1[0..C) (zero on entry), on the threads; the segments' sums are
/// then added in segment order: sum0[c] = sum_s s0_s[c], sum1 likewise (segment 0's sums are
/// summed in sum0, sum1 themselves).
template <class T, class A, class F>
void segment_sums(const View& v, const Plan& p, F f, A* sum0, A* sum1) noexcept {
  A t0[kSegmentScratch], t1[kSegmentScratch];
  const SegmentArrays<A> s0(v, p, sum0, t0), s1(v, p, sum1, t1);
  const Index n = p.segments * v.channels;
  std::fill(sum0, sum0 + v.channels, A(0)), std::fill(sum1, sum1 + v.channels, A(0));
  std::fill(t0, t0 + (n - v.channels), A(0)), std::fill(t1, t1 + (n - v.channels), A(0));
  for_each_segment<T>(v, p, [&](Index s, const View& sub, const Plan& sp, Index off) { f(sub, sp, off, s0[s], s1[s]); });
  for (Index c = 0; c < v.channels; ++c) {
    A a = 0, b = 0;
    for (Index s = 0; s < p.segments; ++s) a += s0[s][c], b += s1[s][c];
    sum0[c] = a, sum1[c] = b;
  }
}

}  // namespace detail
BATCHNORM_END_NAMESPACE
