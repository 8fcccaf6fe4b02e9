// batchnorm: the kernels the functional layer calls, one ISA copy: each makes the plan of its
// view (detail/plan.hpp), tells the plan observer, and runs the plan's traversal group by group,
// or segment by segment. The formulas, and the checks of the arguments, are the functional
// layer's (functional/*.hpp); what arrives here is valid. Free to change; not public API.
// No include guard: detail/dispatch.hpp includes the isa/ files once per ISA, inside namespace
// detail::<isa> (see isa/simd.hpp).

/// Notifies the plan observer (tests) of the plan of a kernel call.
inline void observe(const Plan& p) noexcept {
  if (plan_observer) plan_observer(p, kIsa);
}

/// coef_of, with `copy` (the constants that copy the input, copying_coef) for a channel marked
/// exact: VectorCoefs (isa/store.hpp).
template <class T, class CoefOf>
VectorCoefs<T, CoefOf> vector_coefs(const CoefOf& coef_of, const Coef<T>& copy, bool& any) noexcept {
  return {coef_of, copy, any};
}

/// The constants that copy an input for the channels an exact pass computes afterwards: Act
/// epilogues' (act_copying_coef), or copying_coef's for the plain formulas.
template <class T, bool HasU, class F>
Coef<T> copy_coef_for(bool out_is_u) noexcept {
  if constexpr (is_act<F>) return act_copying_coef<T, typename F::tag>();
  else return copying_coef<T>(HasU, HasU && out_is_u);
}

/// Channel c in double (Coef::exact), with F's formula: exact_act for an Act epilogue, exact_apply
/// otherwise.
template <class T, bool HasU, class F>
void exact_for(const T* x, const T* u, T* out, const View& v, Index c, const Coef<T>& cf) noexcept {
  if constexpr (is_act<F>) exact_act<typename F::tag>(x, u, out, v, c, cf);
  else exact_apply(x, HasU ? u : nullptr, out, v, c, cf);
}

/// group_apply, with the channels whose constants say `exact` (Coef::exact) computed in double
/// afterwards (exact_apply): the vector pass copies the input that out aliases for them, so the
/// exact pass reads the inputs intact. shared: the group's one tile of constants, filled
/// beforehand (segments_apply_exact), or null.
template <class T, bool HasU, class CoefOf, class F>
void group_apply_exact(const T* x, const T* u, T* out, const View& v, const Plan& p, Index c0, Index nc,
                       CoefOf coef_of, F f, TileConstants<T>* shared = nullptr) noexcept {
  bool any = shared && shared->exact;
  const Coef<T> copy = copy_coef_for<T, HasU, F>(out == u);
  group_apply<T, HasU>(x, u, out, v, p, c0, nc, vector_coefs<T>(coef_of, copy, any), f, shared);
  if (any)
    for (Index c = c0; c < c0 + nc; ++c)
      if (const Coef<T> cf = coef_of(c); cf.exact) exact_for<T, HasU, F>(x, u, out, v, c, cf);
}

/// group_apply_exact over the batch segments of a segmented view, on the threads. Every segment
/// has all C channels and the same inner, so the segments of the lane path or of wide rows use
/// the same tiles. When that is one tile ((0, C): C * inner values fit a lane tile, or at most
/// kWideChannels channels of wide rows), its constants are filled once, before the segments,
/// and read by all of them (filled per segment, they cost a third of an in-cache pass:
/// channels-last 16x8x8x256 eval on one thread, 0.064 -> 0.051 ms). A segment of one row, or
/// rows of kRowMin values or more, takes the row path and its constants per channel.
template <class T, bool HasU, class CoefOf, class F>
void segments_apply_exact(const T* x, const T* u, T* out, const View& v, const Plan& p, CoefOf coef_of,
                          F f) noexcept {
  const Path path = v.inner >= p.lanes ? Path::wide_rows : Path::lane;
  const bool one_tile = v.inner < kRowMin && (path == Path::wide_rows ? v.channels <= kWideChannels
                                                                      : tile_channels(v) >= v.channels);
  TileConstants<T> shared;
  if (one_tile) {
    const Coef<T> copy = copy_coef_for<T, HasU, F>(out == u);
    shared.holds(0, v.channels);
    fill_tile(shared, path, v.inner, 0, v.channels, vector_coefs<T>(coef_of, copy, shared.exact));
    shared.frozen = true;
    if (shared_tile_observer) shared_tile_observer(v.channels);
  }
  for_each_segment<T>(v, p, [&](Index, const View& sub, const Plan& sp, Index off) {
    BATCHNORM_ASSERT(!one_tile || sp.row() || sp.path == path, "segments take the path of the whole");
    group_apply_exact<T, HasU>(x + off, HasU ? u + off : nullptr, out + off, sub, sp, 0, sub.channels, coef_of, f,
                               one_tile && !sp.row() ? &shared : nullptr);
  });
}

/// Mean and M2 of the channels [c0, c0 + nc) of a group into mean[0..nc), m2[0..nc), by the
/// plan's traversal. Empty channels give mean 0, M2 0 and read nothing. Float statistics the
/// vector sums may have got wrong (float_moments_suspect: overflow, or underflow of tiny
/// deviations) are taken again exactly in double, unless the channel is constant.
template <class T, class A>
void group_moments(const T* x, const View& v, const Plan& p, Index c0, Index nc, A* mean, A* m2) noexcept {
  if (v.outer == 0 || v.inner == 0) {
    for (Index k = 0; k < nc; ++k) mean[k] = 0, m2[k] = 0;
    return;
  }
  switch (p.path) {
    case Path::row:
      for (Index k = 0; k < nc; ++k) {
        Moments<A> acc;
        channel_moments(x, v, c0 + k, acc);
        mean[k] = acc.mean, m2[k] = acc.m2;
      }
      break;
    case Path::row_short: short_moments(x, v, c0, nc, mean, m2); break;
    case Path::lane: lane_moments(x, v, c0, nc, mean, m2); break;
    case Path::wide_rows: wide_moments(x, v, c0, nc, mean, m2); break;
  }
  const A n = static_cast<A>(v.count());
  for (Index k = 0; k < nc; ++k) {
    if (!float_moments_suspect<T>(n, mean[k], m2[k])) continue;
    const T first = x[(c0 + k) * v.inner];
    bool constant = true;
    for_each_value(x, v, c0 + k, [&](T xv, Index) { constant = constant && xv == first; });
    if (!constant) exact_moments(x, v, c0 + k, mean[k], m2[k]);
  }
}

/// Per-channel mean and M2 over the whole view: the groups of the plan, or its batch segments
/// (moments of each segment, merged in segment order).
template <class T, class A>
void moments(const T* x, const View& v, A* mean, A* m2) noexcept {
  const Plan p = make_plan<T>(v, simd::Simd<T>::lanes);
  observe(p);
  if (p.segments > 1) {
    // Segment 0 into mean, m2; the others into the scratch (segment_arrays).
    A sm[kSegmentScratch], s2[kSegmentScratch];
    const SegmentArrays<A> means(v, p, mean, sm), m2s(v, p, m2, s2);
    for_each_segment<T>(v, p, [&](Index s, const View& sub, const Plan& sp, Index off) {
      group_moments(x + off, sub, sp, 0, sub.channels, means[s], m2s[s]);
    });
    // The segments merge in order (Moments::merge), with factors taken once per segment: every
    // channel has the same counts. A segment holds a row or more (outer >= kSegments), and a
    // segmented view has kParallelMin values or more, so no segment is empty.
    A n = static_cast<A>(segment_count(v, p.segments, 0));
    for (Index s = 1; s < p.segments; ++s) {
      const A nb = static_cast<A>(segment_count(v, p.segments, s));
      const ChanFactors<A> merge(n, nb);
      const A* ms = means[s];
      const A* qs = m2s[s];
      for (Index c = 0; c < v.channels; ++c) merge.apply(mean[c], m2[c], ms[c], qs[c]);
      n += nb;
    }
    return;
  }
  for_each_group(v, p, [&](Index c0, Index nc) { group_moments(x, v, p, c0, nc, mean + c0, m2 + c0); });
}

/// Sums over the channels of a group of dy and of dy * d, d = x - mean_c, into sum_dy[0..nc),
/// sum_dy_d[0..nc):
///   sum_dy = sum dy,   sum_dy_d = sum dy * d = sum dy * (x - head_c) - tail_c * sum_dy
/// coef_of(c) gives head_c and mean_c (a Coef<T>: head, em); the tail mean_c - head_c is taken
/// out of the sum once per channel instead of once per value, in double (a float tail of a
/// denormal mean would round to zero). after(o0, rows, t0, nt) is called
/// once the values of rows [o0, o0 + rows) of channels [t0, t0 + nt) have been summed, while they
/// are in cache (inference backward writes dx there: one pass over x and dy). Empty channels
/// give zero sums. Float sums that overflowed are taken again in double (exact_grad_sums).
struct NoAfter {
  void operator()(Index, Index, Index, Index) const noexcept {}
};

template <class T, class A, class CoefOf, class After = NoAfter>
void group_grad_sums(const T* x, const T* dy, const View& v, const Plan& p, Index c0, Index nc, CoefOf coef_of,
                     A* sum_dy, A* sum_dy_d, After after = {}) noexcept {
  if (v.outer == 0 || v.inner == 0) {
    for (Index k = 0; k < nc; ++k) sum_dy[k] = 0, sum_dy_d[k] = 0;
    return;
  }
  switch (p.path) {
    case Path::row:
    case Path::row_short: row_grad_sums(x, dy, v, c0, nc, coef_of, sum_dy, sum_dy_d, after); break;
    case Path::wide_rows: wide_grad_sums(x, dy, v, c0, nc, coef_of, sum_dy, sum_dy_d, after); break;
    case Path::lane: lane_grad_sums(x, dy, v, c0, nc, coef_of, sum_dy, sum_dy_d, after); break;
  }
  for (Index k = 0; k < nc; ++k) {
    const Coef<T> cf = coef_of(c0 + k);
    sum_dy_d[k] -= (static_cast<A>(cf.em) - static_cast<A>(cf.head)) * sum_dy[k];  // the tail, in A
    if (!std::isfinite(sum_dy[k]) || !std::isfinite(sum_dy_d[k])) {
      if constexpr (sizeof(T) < sizeof(A))  // a float partial sum overflowed (or NaN/Inf input)
        exact_grad_sums(x, dy, v, c0 + k, static_cast<A>(cf.em), sum_dy[k], sum_dy_d[k]);
    }
  }
}

/// out[c] = 1 / sqrt(var[c] + eps) for c < n: functional::invstd_of a vector of channels at a
/// time. Each operation is correctly rounded in both forms, so the bits are the scalar form's.
/// out may be var (in place).
template <class A>
void invstd(const A* var, Index n, double eps, A* out) noexcept {
  using S = simd::Simd<A>;
  constexpr Index W = S::lanes;
  const auto e = S::zero() + static_cast<A>(eps), one = S::zero() + A(1);
  Index c = 0;
  for (; c + W <= n; c += W) S::store(out + c, one / S::sqrt(S::load(var + c) + e));
  if (c < n) {  // zeros in the lanes past n: sqrt(eps), never stored
    const int r = static_cast<int>(n - c);
    S::store_n(out + c, one / S::sqrt(S::load_n(var + c, r) + e), r);
  }
}

// ---------------------------------------------------------------------------------------------
// The elementwise formulas, with the constants of functional/ (Coef): each is the T form of the
// formula stated on the functional function that uses it.

/// y = (x - head) * p + r                       (functional::normalize, forward_*)
inline constexpr auto affine_of = [](auto xv, auto, auto h, auto, auto p, auto, auto r) { return (xv - h) * p + r; };
/// dx = dy * p + ((x - head) * q + r)           (functional::backward_training, backward_dx):
/// each addition has one product operand, so a compiler that contracts into fused multiply-adds
/// does it the same way in every code path.
inline constexpr auto dx_of = [](auto xv, auto dyv, auto h, auto, auto p, auto q, auto r) {
  return dyv * p + ((xv - h) * q + r);
};
/// y = (x - head) * p + r with the epilogue Tag (detail/coef.hpp, Act), where the ReLU floor is
/// the channel's `tail` constant: 0 (the forward's constants leave it 0), -inf in the copying
/// constants (act_copying_coef). The affine part is affine_of's expression, so that its bits are
/// the plain forward's and Grad recomputes the forward's decision.
template <class Tag>
struct ActOf {
  using tag = Tag;
  static constexpr bool has_u = Tag::has_u;
  /// V: a vector of the ISA's (or the scalar twin); K: V (lane constants) or T (a channel's).
  template <class V, class K>
  V operator()(V xv, V uv, K h, K t, K p, K, K r) const noexcept {
    V y = (xv - h) * p + r;
    const V floor = V{} + t;  // t broadcast (0 + t is t, -inf included)
    if constexpr (Tag::grad) {
      return y <= floor ? V{} : uv;
    } else {
      if constexpr (Tag::add) y = y + uv;
      if constexpr (Tag::relu) y = y <= floor ? floor : y;
      return y;
    }
  }
};
/// dx = dy * p                                  (functional::backward_inference)
inline constexpr auto scale_of = [](auto dyv, auto, auto, auto, auto p, auto, auto) { return dyv * p; };

/// out = f(x, u) over every channel (the elementwise plan), coef_of(c) giving channel c's
/// constants: over the groups of the plan, or its batch segments. u is read only if HasU.
template <class T, bool HasU, class CoefOf, class F>
void apply_pass(const T* x, const T* u, const View& v, CoefOf coef_of, T* out, F f) noexcept {
  const Plan p = make_elementwise_plan<T>(v, simd::Simd<T>::lanes);
  observe(p);
  if (p.segments > 1) {
    segments_apply_exact<T, HasU>(x, u, out, v, p, coef_of, f);
  } else {
    for_each_group(v, p, [&](Index c0, Index nc) { group_apply_exact<T, HasU>(x, u, out, v, p, c0, nc, coef_of, f); });
  }
  simd::stream_fence();
}

/// y = affine_of(x) over every channel, coef_of(c) giving channel c's constants: over the
/// groups of the plan, or its batch segments.
template <class T, class CoefOf>
void normalize(const T* x, const View& v, CoefOf coef_of, T* y) noexcept {
  apply_pass<T, false>(x, nullptr, v, coef_of, y, affine_of);
}

/// out = the forward's constants with the epilogue Tag (ActOf), u the second input (residual or
/// dy) when Tag::has_u.
template <class T, class CoefOf, class Tag>
void act_pass(const T* x, const T* u, const View& v, CoefOf coef_of, T* out, Tag) noexcept {
  apply_pass<T, Tag::has_u>(x, u, v, coef_of, out, ActOf<Tag>{});
}

/// Training forward: per group, its moments into mean[c], m2[c], then finish(c0, nc) (turns
/// them into the statistics and constants coef_of reads), then y = affine_of(x) while the group
/// is in cache. Segmented plans: every channel's moments first (merged over the segments),
/// finish(0, C), then the elementwise pass over the segments.
/// With an Act epilogue Tag (u: its second input), y = ActOf<Tag>(x, u) instead of affine_of(x).
template <class T, class A, class Finish, class CoefOf, class Tag = void>
void forward_training(const T* x, const View& v, Finish finish, CoefOf coef_of, T* y, A* mean, A* m2,
                      const T* u = nullptr, Tag* = nullptr) noexcept {
  constexpr bool plain = std::is_void_v<Tag>;
  constexpr bool has_u = [] {
    if constexpr (plain) return false;
    else return Tag::has_u;
  }();
  const auto f = [] {
    if constexpr (plain) return affine_of;
    else return ActOf<Tag>{};
  }();
  const Plan p = make_plan<T>(v, simd::Simd<T>::lanes);
  if (p.segments > 1) {
    moments(x, v, mean, m2);
    call_baseline(finish, Index(0), v.channels);
    apply_pass<T, has_u>(x, u, v, coef_of, y, f);
    return;
  }
  observe(p);
  for_each_group(v, p, [&](Index c0, Index nc) {
    group_moments(x, v, p, c0, nc, mean + c0, m2 + c0);
    call_baseline(finish, c0, nc);
    group_apply_exact<T, has_u>(x, u, y, v, p, c0, nc, coef_of, f);
  });
  simd::stream_fence();
}

/// The gradient sums (group_grad_sums) of every channel, centre(c) giving mean_c as a Coef
/// (head, tail): over the groups of the plan, or its batch segments (added in segment order).
template <class T, class A, class Centre>
void grad_sums(const T* x, const T* dy, const View& v, Centre centre, A* sum_dy, A* sum_dy_d) noexcept {
  const Plan p = make_plan<T>(v, simd::Simd<T>::lanes);
  observe(p);
  if (p.segments > 1) {
    segment_sums<T>(
        v, p,
        [&](const View& sub, const Plan& sp, Index off, A* s0, A* s1) {
          group_grad_sums(x + off, dy + off, sub, sp, 0, sub.channels, centre, s0, s1);
        },
        sum_dy, sum_dy_d);
  } else {
    for_each_group(v, p, [&](Index c0, Index nc) {
      group_grad_sums(x, dy, v, p, c0, nc, centre, sum_dy + c0, sum_dy_d + c0);
    });
  }
}

/// dx = dx_of(x, dy) for channels [c0, c0 + nc) of the view (a group), dx_coef(c) giving the T
/// constants; with plan.exact_dx (float, channels of at most kExactDxCount values) the formula
/// in double instead, from dx_coef.exact(c) (see exact_dx).
template <class T, class DxCoef>
void group_dx(const T* x, const T* dy, const View& v, const Plan& p, Index c0, Index nc, const DxCoef& dx_coef,
              T* dx) noexcept {
  if (p.exact_dx) {
    using A = decltype(dx_coef.exact(c0).mean);
    A mean[kExactDxChannels], dp[kExactDxChannels], dq[kExactDxChannels], dr[kExactDxChannels];
    for (Index b0 = c0; b0 < c0 + nc; b0 += kExactDxChannels) {
      const Index nb = std::min(kExactDxChannels, c0 + nc - b0);
      for (Index j = 0; j < nb; ++j) {
        const auto e = dx_coef.exact(b0 + j);
        mean[j] = e.mean, dp[j] = e.p, dq[j] = e.q, dr[j] = e.r;
      }
      exact_dx(x, dy, v, b0, nb, mean, dp, dq, dr, dx);
    }
    return;
  }
  group_apply_exact<T, true>(x, dy, dx, v, p, c0, nc, dx_coef, dx_of);
}

/// dx of every channel: group_dx over the groups of the plan; over its batch segments,
/// segments_apply_exact (or group_dx per segment when the channels' dx is taken in double).
template <class T, class DxCoef>
void dx_pass(const T* x, const T* dy, const View& v, const DxCoef& dx_coef, T* dx) noexcept {
  const Plan p = make_plan<T>(v, simd::Simd<T>::lanes);
  observe(p);
  if (p.segments > 1 && !p.exact_dx) {
    segments_apply_exact<T, true>(x, dy, dx, v, p, dx_coef, dx_of);
  } else if (p.segments > 1) {
    for_each_segment<T>(v, p, [&](Index, const View& sub, const Plan& sp, Index off) {
      Plan whole = sp;
      whole.exact_dx = p.exact_dx;  // the count is the whole view's
      group_dx(x + off, dy + off, sub, whole, 0, sub.channels, dx_coef, dx + off);
    });
  } else {
    for_each_group(v, p, [&](Index c0, Index nc) { group_dx(x, dy, v, p, c0, nc, dx_coef, dx); });
  }
  simd::stream_fence();
}

/// Training backward: per group, its gradient sums into sum_dy, sum_dy_d, then params(c0, nc)
/// (dweight, dbias), then, if want_dx, dx while the group is in cache. Segmented plans: every
/// channel's sums, params(0, C), then dx over the segments.
template <class T, class A, class Centre, class Params, class DxCoef>
void backward_training(const T* x, const T* dy, const View& v, Centre centre, Params params, const DxCoef& dx_coef,
                       T* dx, A* sum_dy, A* sum_dy_d) noexcept {
  const Plan p = make_plan<T>(v, simd::Simd<T>::lanes);
  if (p.segments > 1) {
    grad_sums(x, dy, v, centre, sum_dy, sum_dy_d);
    call_baseline(params, Index(0), v.channels);
    if (dx) dx_pass(x, dy, v, dx_coef, dx);
    return;
  }
  observe(p);
  for_each_group(v, p, [&](Index c0, Index nc) {
    group_grad_sums(x, dy, v, p, c0, nc, centre, sum_dy + c0, sum_dy_d + c0);
    call_baseline(params, c0, nc);
    if (dx) group_dx(x, dy, v, p, c0, nc, dx_coef, dx);
  });
  simd::stream_fence();
}

/// Inference backward: dx = scale_of(dy) (scale_coef(c) gives p), and, with sums, the gradient
/// sums in the same pass (dx of a region written right after it is summed, still in cache),
/// then params(c0, nc). In place (dx == dy) the group's sums come first, then its dx: a channel
/// whose float sums are taken again in double (group_grad_sums) reads dy once more. Segmented
/// plans: the pass over each segment on the threads, the sums added in segment order, then
/// params(0, C).
template <class T, class A, class Centre, class ScaleCoef, class Params>
void backward_inference(const T* x, const T* dy, const View& v, Centre centre, ScaleCoef scale_coef, bool sums,
                        Params params, T* dx, A* sum_dy, A* sum_dy_d) noexcept {
  const Plan p = make_plan<T>(v, simd::Simd<T>::lanes);
  observe(p);
  // Channels [c0, c0 + nc) of the view w (at offset off of the whole, planned as wp).
  const auto pass = [&](const View& w, const Plan& wp, Index off, Index c0, Index nc, A* s0, A* s1) {
    if (sums && dx == dy) {
      group_grad_sums(x + off, dy + off, w, wp, c0, nc, centre, s0, s1);
      group_apply_exact<T, false>(dy + off, nullptr, dx + off, w, wp, c0, nc, scale_coef, scale_of);
    } else if (sums) {
      // Channels marked exact: copied by the vector pass, then dx = dy * p in double.
      bool any = false;
      const Coef<T> copy = copying_coef<T>(false, false);
      const auto vector_coef = vector_coefs<T>(scale_coef, copy, any);
      TileConstants<T> tc;
      group_grad_sums(x + off, dy + off, w, wp, c0, nc, centre, s0, s1, [&](Index o0, Index rows, Index t0, Index nt) {
        if (dx) region_apply<T, false>(dy + off, nullptr, dx + off, w, wp, o0, rows, t0, nt, vector_coef, scale_of, tc);
      });
      if (dx && any)
        for (Index c = c0; c < c0 + nc; ++c)
          if (const Coef<T> cf = scale_coef(c); cf.exact) exact_apply(dy + off, static_cast<const T*>(nullptr), dx + off, w, c, cf);
    } else if (dx) {
      group_apply_exact<T, false>(dy + off, nullptr, dx + off, w, wp, c0, nc, scale_coef, scale_of);
    }
  };
  if (p.segments > 1) {
    segment_sums<T>(
        v, p, [&](const View& sub, const Plan& sp, Index off, A* s0, A* s1) { pass(sub, sp, off, 0, sub.channels, s0, s1); },
        sum_dy, sum_dy_d);
    if (sums) call_baseline(params, Index(0), v.channels);
  } else {
    for_each_group(v, p, [&](Index c0, Index nc) {
      pass(v, p, 0, c0, nc, sum_dy + c0, sum_dy_d + c0);
      if (sums) call_baseline(params, c0, nc);
    });
  }
  simd::stream_fence();
}

/// This copy's kernels as static members, for the dispatcher (detail/dispatch.hpp), which hands
/// a Kernels of the selected copy to the caller's generic lambda.
struct Kernels {
  static constexpr Isa isa = kIsa;
  template <class T>
  static constexpr int lanes = simd::Simd<T>::lanes;
  template <class... Args>
  static void run_moments(Args&&... args) noexcept {
    moments(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_invstd(Args&&... args) noexcept {
    invstd(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_normalize(Args&&... args) noexcept {
    normalize(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_act(Args&&... args) noexcept {
    act_pass(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_forward_training(Args&&... args) noexcept {
    forward_training(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_grad_sums(Args&&... args) noexcept {
    grad_sums(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_dx(Args&&... args) noexcept {
    dx_pass(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_backward_training(Args&&... args) noexcept {
    backward_training(std::forward<Args>(args)...);
  }
  template <class... Args>
  static void run_backward_inference(Args&&... args) noexcept {
    backward_inference(std::forward<Args>(args)...);
  }
};
