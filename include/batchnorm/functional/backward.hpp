// batchnorm::functional: backward passes, hand-derived.
#pragma once

#include "../config.hpp"

#include <string>
#include <vector>

#include "../detail/errors.hpp"
#include "../detail/coef.hpp"
#include "../detail/dispatch.hpp"
#include "forward.hpp"
#include "running_stats.hpp"
#include "stats.hpp"
#include "view.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace functional {

namespace detail_backward {
inline void check(const char* op, const View& v, const void* x, const void* dy, const void* mean, const void* invstd) {
  detail_stats::check_view(op, v);
  detail_stats::check_pointer(op, "x", x, v.size() > 0);
  detail_stats::check_pointer(op, "dy", dy, v.size() > 0);
  detail_stats::check_pointer(op, "mean", mean, v.channels > 0);
  detail_stats::check_pointer(op, "invstd", invstd, v.channels > 0);
}

/// head/tail split of mean (see detail_forward::normalize_coef): d = (x - head) - tail = x - mean.
template <class T>
batchnorm::detail::Coef<T> centre_coef(accum_t<T> mean) noexcept {
  batchnorm::detail::Coef<T> cf;
  cf.head = static_cast<T>(mean);
  cf.tail = static_cast<T>(mean - static_cast<accum_t<T>>(cf.head));
  cf.em = mean;  // the gradient sums take the tail mean - head in double from it
  return cf;
}
/// The constants of dx for channel c from its sums over m values (see backward_training):
///   dx = dy * p + (x - head) * q + r
/// Its inputs (DxInputs) let the kernels build the constants of many channels at once, the
/// same bits (the vector twins in isa/store.hpp and isa/drivers.hpp).
template <class T>
struct DxCoef : batchnorm::detail::DxInputs<T, accum_t<T>> {
  using A = accum_t<T>;
  using Inputs = batchnorm::detail::DxInputs<T, A>;
  using Inputs::invstd, Inputs::mean, Inputs::m, Inputs::sum_dy, Inputs::sum_dy_d, Inputs::weight;
  using dx_inputs = Inputs;  // the kernels' vector twins compute this formula (has_dx_inputs)
  DxCoef(const A* mean_c, const A* invstd_c, const T* weight_c, const A* sum_dy_c, const A* sum_dy_d_c, A count) noexcept
      : Inputs{mean_c, invstd_c, weight_c, sum_dy_c, sum_dy_d_c, count} {}
  // r' - tail * q: one product operand (r' is used twice), so a compiler contracting into fused
  // multiply-adds does it as the vector twins do.
  BATCHNORM_ALWAYS_INLINE batchnorm::detail::Coef<T> operator()(Index c) const noexcept {
    const A kc = invstd[c] * (weight ? static_cast<A>(weight[c]) : A(1));
    const A q = -kc * (invstd[c] * (invstd[c] * (sum_dy_d[c] / m)));  // no invstd^3: it may overflow
    const A r = -kc * (sum_dy[c] / m);
    auto cf = centre_coef<T>(mean[c]);
    cf.p = static_cast<T>(kc);
    cf.q = static_cast<T>(q);
    const A r_head = r - (mean[c] - static_cast<A>(cf.head)) * q;
    cf.r = static_cast<T>(r_head);
    if (batchnorm::detail::needs_exact<T>(mean[c], invstd[c], kc, q, r_head))
      cf.exact = true, cf.em = mean[c], cf.ep = kc, cf.eq = q, cf.er = r;
    return cf;
  }
  /// The same constants in A, about mean_c itself: dx = dy * p + (x - mean) * q + r.
  struct Exact {
    A mean, p, q, r;
  };
  Exact exact(Index c) const noexcept {
    const A kc = invstd[c] * (weight ? static_cast<A>(weight[c]) : A(1));
    return {mean[c], kc, -kc * (invstd[c] * (invstd[c] * (sum_dy_d[c] / m))), -kc * (sum_dy[c] / m)};
  }
};

/// 2*C accumulators: the caller's workspace, or allocated here when it gave none.
template <class A>
struct Scratch {
  std::vector<A> own;
  A* sum_dy;
  A* sum_dy_d;
  Scratch(Index channels, A* workspace) {
    if (!workspace) own.resize(static_cast<std::size_t>(2 * channels)), workspace = own.data();
    sum_dy = workspace;
    sum_dy_d = workspace + channels;
  }
};
}  // namespace detail_backward

/// The parameter gradients of channels [0, channels) from the gradient sums of backward_sums:
///   dbias_c = sum_dy_c,   dweight_c = invstd_c * sum_dy_d_c      (rounded to T; +-inf beyond
/// T's range)
/// dweight or dbias may be nullptr (not wanted). Synchronized batch norm calls it with a rank's
/// own sums: its contributions, which the ranks' gradients add up to.
template <class T>
void param_grads(Index channels, const accum_t<T>* sum_dy, const accum_t<T>* sum_dy_d, const accum_t<T>* invstd,
                 T* dweight, T* dbias) noexcept {
  for (Index c = 0; c < channels; ++c) {
    if (dbias) dbias[c] = batchnorm::detail::saturate<T>(sum_dy[c]);
    if (dweight) dweight[c] = batchnorm::detail::saturate<T>(sum_dy_d[c] * invstd[c]);
  }
}

/// Training-mode backward (batch statistics), for channel c; sums run over its m values,
/// d = x - mean_c, xhat = d * invstd_c, k_c = weight_c * invstd_c:
///   dbias_c   = sum dy
///   dweight_c = sum dy * xhat = invstd_c * sum dy * d
///   dx        = k_c * (dy - dbias_c/m - xhat * dweight_c/m)
///             = dy * p + (x - head_c) * q + r,   head_c = mean_c rounded to T,
///   p = k_c,  q = -k_c * invstd_c * dweight_c/m,  r = -k_c * dbias_c/m - (mean_c - head_c) * q
/// "- dbias_c/m" is the path through mean_c, "- xhat * dweight_c/m" the path through var_c.
/// mean, invstd: save_mean/save_invstd of forward_training on the same x. Sums in accum_t<T>
/// (pass 1 reads x, dy), dx in T (pass 2 reads x, dy, writes dx), channel by channel so pass 2
/// finds the channel in cache when it fits. weight nullptr: affine off (weight 1). dx, dweight,
/// dbias may each be nullptr (not wanted). dx may equal dy or x. m == 0: dweight = dbias = 0.
/// workspace: 2*C accum_t<T> values of scratch, or nullptr to have them allocated here (the only
/// allocation of the functional layer). NaN/Inf propagate.
template <class T>
void backward_training(const T* x, const T* dy, View v, const accum_t<T>* mean, const accum_t<T>* invstd,
                       const T* weight, T* dx, T* dweight, T* dbias, accum_t<T>* workspace = nullptr) {
  using A = accum_t<T>;
  detail_backward::check("batchnorm::functional::backward_training", v, x, dy, mean, invstd);
  detail_backward::Scratch<A> scratch(v.channels, workspace);
  const A m = static_cast<A>(v.count());
  const detail_backward::DxCoef<T> dx_coef{mean, invstd, weight, scratch.sum_dy, scratch.sum_dy_d, m};
  const auto centre = [&](Index c) { return detail_backward::centre_coef<T>(mean[c]); };
  const auto params = [&](Index c0, Index nc) {
    param_grads(nc, scratch.sum_dy + c0, scratch.sum_dy_d + c0, invstd + c0, dweight ? dweight + c0 : nullptr,
                dbias ? dbias + c0 : nullptr);
  };
  T* dx_out = m > 0 ? dx : nullptr;
  batchnorm::detail::dispatch([&](auto kernels) {
    kernels.run_backward_training(x, dy, v, centre, params, dx_coef, dx_out, scratch.sum_dy, scratch.sum_dy_d);
  });
}

/// Pass 1 of backward_training alone, for batch norm whose statistics span several processes
/// (synchronized batch norm adds every rank's sums before pass 2), per channel c:
///   sum_dy_c = sum dy,   sum_dy_d_c = sum dy * (x - mean_c)
/// over the m = v.count() values of this view; dbias_c = sum_dy_c and dweight_c = invstd_c *
/// sum_dy_d_c are this view's contributions. The same sums, in the same order, as
/// backward_training's. mean: the statistics the forward normalized with (every rank's).
template <class T>
void backward_sums(const T* x, const T* dy, View v, const accum_t<T>* mean, accum_t<T>* sum_dy,
                   accum_t<T>* sum_dy_d) {
  constexpr const char* op = "batchnorm::functional::backward_sums";
  detail_stats::check_view(op, v);
  detail_stats::check_pointer(op, "x", x, v.size() > 0);
  detail_stats::check_pointer(op, "dy", dy, v.size() > 0);
  detail_stats::check_pointer(op, "mean", mean, v.channels > 0);
  detail_stats::check_pointer(op, "sum_dy", sum_dy, v.channels > 0);
  detail_stats::check_pointer(op, "sum_dy_d", sum_dy_d, v.channels > 0);
  const auto centre = [&](Index c) { return detail_backward::centre_coef<T>(mean[c]); };
  batchnorm::detail::dispatch([&](auto kernels) { kernels.run_grad_sums(x, dy, v, centre, sum_dy, sum_dy_d); });
}

/// Pass 2 of backward_training alone: dx from the sums of backward_sums taken over `count`
/// values a channel (all ranks' values: count >= v.count()), as backward_training:
///   dx = k_c * (dy - sum_dy_c / m - xhat * invstd_c * sum_dy_d_c / m),  m = count,
///   k_c = weight_c * invstd_c,  xhat = (x - mean_c) * invstd_c
/// evaluated as dy * p + (x - head_c) * q + r (backward_training). count >= 1 unless the view is
/// empty. dx may equal dy or x. NaN/Inf propagate.
template <class T>
void backward_dx(const T* x, const T* dy, View v, const accum_t<T>* mean, const accum_t<T>* invstd, const T* weight,
                 Index count, const accum_t<T>* sum_dy, const accum_t<T>* sum_dy_d, T* dx) {
  using A = accum_t<T>;
  constexpr const char* op = "batchnorm::functional::backward_dx";
  detail_backward::check(op, v, x, dy, mean, invstd);
  detail_stats::check_pointer(op, "sum_dy", sum_dy, v.channels > 0);
  detail_stats::check_pointer(op, "sum_dy_d", sum_dy_d, v.channels > 0);
  detail_stats::check_pointer(op, "dx", dx, v.size() > 0);
  if (v.size() == 0) return;
  if (count < v.count())
    batchnorm::detail::throw_invalid(op, "count must be at least the view's " + std::to_string(v.count()) +
                                             " values a channel, got " + std::to_string(count));
  const detail_backward::DxCoef<T> dx_coef{mean, invstd, weight, sum_dy, sum_dy_d, static_cast<A>(count)};
  batchnorm::detail::dispatch([&](auto kernels) { kernels.run_dx(x, dy, v, dx_coef, dx); });
}

/// Inference-mode backward: the statistics (running ones, from inference_stats) are constants.
///   dx        = dy * weight_c * invstd_c
///   dweight_c = sum dy * xhat,  xhat = (x - mean_c) * invstd_c
///   dbias_c   = sum dy
/// dx needs dy only; x is read only when dweight or dbias is wanted, in the same pass that
/// writes dx. Pointers and workspace as in backward_training. dx may equal dy. NaN/Inf propagate.
template <class T>
void backward_inference(const T* x, const T* dy, View v, const accum_t<T>* mean, const accum_t<T>* invstd,
                        const T* weight, T* dx, T* dweight, T* dbias, accum_t<T>* workspace = nullptr) {
  using A = accum_t<T>;
  detail_backward::check("batchnorm::functional::backward_inference", v, x, dy, mean, invstd);
  detail_backward::Scratch<A> scratch(v.channels, workspace);
  // dx = dy * p with p = weight_c * invstd_c.
  const auto scale_coef = [&](Index c) {
    batchnorm::detail::Coef<T> cf;
    const A p = invstd[c] * (weight ? static_cast<A>(weight[c]) : A(1));
    cf.p = static_cast<T>(p);
    if (batchnorm::detail::needs_exact<T>(0, 1, p, 0, 0)) cf.exact = true, cf.eq = p;  // dx = dy * p in double
    return cf;
  };
  const auto centre = [&](Index c) { return detail_backward::centre_coef<T>(mean[c]); };
  const auto params = [&](Index c0, Index nc) {
    param_grads(nc, scratch.sum_dy + c0, scratch.sum_dy_d + c0, invstd + c0, dweight ? dweight + c0 : nullptr,
                dbias ? dbias + c0 : nullptr);
  };
  const bool sums = dweight || dbias;
  batchnorm::detail::dispatch([&](auto kernels) {
    kernels.run_backward_inference(x, dy, v, centre, scale_coef, sums, params, dx, scratch.sum_dy, scratch.sum_dy_d);
  });
}

}  // namespace functional
BATCHNORM_END_NAMESPACE
