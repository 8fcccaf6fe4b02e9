// batchnorm::functional: forward passes, training (batch statistics) and inference (running).
#pragma once

#include "../config.hpp"

#include <cmath>
#include <string>
#include <type_traits>

#include "../detail/errors.hpp"
#include "../detail/coef.hpp"
#include "../detail/dispatch.hpp"
#include "running_stats.hpp"
#include "stats.hpp"
#include "view.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace functional {

/// invstd_c = 1 / sqrt(var_c + eps), the inverse standard deviation used to normalize.
template <class A>
A invstd_of(A var, double eps) noexcept {
  return A(1) / std::sqrt(var + static_cast<A>(eps));
}

namespace detail_forward {

/// Constants of y = (x - head) * p + r for one channel normalized with (mean, invstd):
///   head = T(mean),  p = T(invstd * weight),  r = T(bias - (mean - head) * invstd * weight)
/// so that (x - mean) * invstd * weight + bias = (x - head) * p + r, with the small remainder
/// mean - head folded into r in accum_t<T>. x - head is exact when x is within a factor 2 of head
/// (Sterbenz), so a channel with a large mean and a small spread loses nothing to cancellation;
/// PyTorch's folded x * alpha + (bias - mean * alpha) does (x * alpha is large there). Float
/// channels at the edge of float's range (needs_exact) are marked for the double path.
/// Always inlined into the kernels' loops over channels: called once a channel, out of line it
/// costs a tenth of a small batch's training forward (16x4096 float).
template <class T>
BATCHNORM_ALWAYS_INLINE batchnorm::detail::Coef<T> normalize_coef(accum_t<T> mean, accum_t<T> invstd, const T* weight,
                                                                  const T* bias, Index c) noexcept {
  using A = accum_t<T>;
  batchnorm::detail::Coef<T> cf;
  const A scale = invstd * (weight ? static_cast<A>(weight[c]) : A(1));
  cf.head = static_cast<T>(mean);
  cf.p = static_cast<T>(scale);
  const A b = bias ? static_cast<A>(bias[c]) : A(0);
  const A r = b - (mean - static_cast<A>(cf.head)) * scale;
  cf.r = static_cast<T>(r);
  if (batchnorm::detail::needs_exact<T>(mean, invstd, scale, 0, r))
    cf.exact = true, cf.em = mean, cf.eq = scale, cf.er = b;  // y = (x - mean) * scale + bias in double
  return cf;
}

/// The constants functor of the forward passes: normalize_coef of channel c from its inputs
/// (AffineInputs: mean_c, and invstd_c or var_c with eps). Its inputs let the kernels build the
/// constants of many channels at once, the same bits (the vector twin in isa/store.hpp).
template <class T, class M>
struct AffineCoef : batchnorm::detail::AffineInputs<T, M> {
  using affine_inputs = batchnorm::detail::AffineInputs<T, M>;  // the kernels' vector twin computes this formula
  BATCHNORM_ALWAYS_INLINE batchnorm::detail::Coef<T> operator()(Index c) const noexcept {
    using A = accum_t<T>;
    const A mean_c = static_cast<A>(this->mean[c]);
    const A invstd_c = this->invstd ? static_cast<A>(this->invstd[c]) : invstd_of(static_cast<A>(this->var[c]), this->eps);
    return normalize_coef<T>(mean_c, invstd_c, this->weight, this->bias, c);
  }
};

inline void check_common(const char* op, const View& v, const void* x, const void* y, double eps) {
  detail_stats::check_view(op, v);
  batchnorm::detail::check_eps(op, eps);
  detail_stats::check_pointer(op, "x", x, v.size() > 0);
  detail_stats::check_pointer(op, "y", y, v.size() > 0);
}

/// The checks of an epilogue (activation, residual): a known activation, and y not x when a
/// residual is added (the kernels may write y before they have read x; y may be the residual).
inline void check_epilogue(const char* op, Activation act, const void* x, const void* residual, const void* y) {
  if (act != Activation::none && act != Activation::relu)
    batchnorm::detail::throw_invalid(op, "unknown activation " + std::to_string(static_cast<int>(act)));
  if (residual && y == x && x != nullptr)
    batchnorm::detail::throw_invalid(op, "with a residual, y may be the residual but not x");
}

/// f(tag) with the kernels' epilogue tag of (act, residual): a null void* for the plain formula,
/// else a null pointer to the detail::Act that adds the residual and/or applies ReLU.
template <class F>
void with_epilogue(Activation act, bool residual, F f) {
  using batchnorm::detail::Act;
  const bool relu = act == Activation::relu;
  if (residual && relu) f(static_cast<Act<true, true>*>(nullptr));
  else if (residual) f(static_cast<Act<true, false>*>(nullptr));
  else if (relu) f(static_cast<Act<false, true>*>(nullptr));
  else f(static_cast<void*>(nullptr));
}

/// y = coef's formula with the epilogue tag over the view (normalize, forward_inference).
template <class T, class Kernels, class Coef, class Tag>
void apply_epilogue(Kernels kernels, const T* x, const T* residual, const View& v, const Coef& coef, T* y, Tag*) {
  if constexpr (std::is_void_v<Tag>) kernels.run_normalize(x, v, coef, y);
  else kernels.run_act(x, residual, v, coef, y, Tag{});
}

}  // namespace detail_forward

/// The statistics inference normalizes with, per channel:
///   mean_c = running_mean_c,   invstd_c = 1 / sqrt(running_var_c + eps)    (in accum_t<T>)
/// Feed them to backward_inference.
template <class T>
void inference_stats(Index channels, const T* running_mean, const T* running_var, double eps, accum_t<T>* mean,
                     accum_t<T>* invstd) {
  batchnorm::detail::check_eps("batchnorm::functional::inference_stats", eps);
  // Inside the dispatch, which throws for a bad BATCHNORM_ISA: a call that throws writes nothing.
  batchnorm::detail::dispatch([&](auto kernels) {
    for (Index c = 0; c < channels; ++c) {
      mean[c] = static_cast<accum_t<T>>(running_mean[c]);
      invstd[c] = static_cast<accum_t<T>>(running_var[c]);
    }
    // invstd_of in vectors of channels (the kernels' invstd, the same bits), in place.
    kernels.run_invstd(invstd, channels, eps, invstd);
  });
}

/// Normalize with given per-channel statistics:
///   y = (x - mean_c) * invstd_c * weight_c + bias_c
/// computed as (x - head_c) * p_c + r_c with head_c = mean_c rounded to T (normalize_coef): T
/// arithmetic per value, no cancellation at large |mean| / std.
/// weight == nullptr means 1, bias == nullptr means 0 (affine off). y may equal x (in place);
/// other overlaps are not allowed. NaN/Inf propagate.
/// The epilogue, in T after the value above is rounded to T (the same bits as without it):
///   residual given:        y = y + residual        (residual: a tensor of x's shape and order)
///   act == Activation::relu: y = y <= 0 ? 0 : y
/// With a residual, y may equal the residual but not x.
template <class T>
void normalize(const T* x, View v, const accum_t<T>* mean, const accum_t<T>* invstd, const T* weight, const T* bias,
               T* y, Activation act = Activation::none, const T* residual = nullptr) {
  constexpr const char* op = "batchnorm::functional::normalize";
  detail_stats::check_view(op, v);
  detail_stats::check_pointer(op, "x", x, v.size() > 0);
  detail_stats::check_pointer(op, "y", y, v.size() > 0);
  detail_stats::check_pointer(op, "mean", mean, v.channels > 0);
  detail_stats::check_pointer(op, "invstd", invstd, v.channels > 0);
  detail_forward::check_epilogue(op, act, x, residual, y);
  detail_forward::AffineCoef<T, accum_t<T>> coef;
  coef.mean = mean, coef.invstd = invstd, coef.weight = weight, coef.bias = bias;
  batchnorm::detail::dispatch([&](auto kernels) {
    detail_forward::with_epilogue(act, residual != nullptr, [&](auto tag) {
      detail_forward::apply_epilogue(kernels, x, residual, v, coef, y, tag);
    });
  });
}

/// The gradient of the ReLU of normalize(x) (+ residual), from the statistics it normalized with:
///   g = y <= 0 ? 0 : dy,   y = normalize(x, mean, invstd, weight, bias) (+ residual)
/// y recomputed with normalize's arithmetic: the decision of the forward that wrote y with
/// Activation::relu (forward_training's save_mean, save_invstd; or inference_stats' of the
/// running statistics, with which normalize gives forward_inference's bits), bitwise. Nothing
/// input-sized is kept between the forward and this call. Without a residual, one pass (reads x,
/// dy; g may equal dy, not x); with one, two (y into g, then g = dy where y > 0, both vectorised
/// and threaded: g may equal the residual, not x or dy). Feed g to backward_training / backward_inference as their dy.
template <class T>
void relu_grad(const T* x, const T* dy, View v, const accum_t<T>* mean, const accum_t<T>* invstd, const T* weight,
               const T* bias, T* g, const T* residual = nullptr) {
  constexpr const char* op = "batchnorm::functional::relu_grad";
  detail_stats::check_view(op, v);
  detail_stats::check_pointer(op, "x", x, v.size() > 0);
  detail_stats::check_pointer(op, "dy", dy, v.size() > 0);
  detail_stats::check_pointer(op, "g", g, v.size() > 0);
  detail_stats::check_pointer(op, "mean", mean, v.channels > 0);
  detail_stats::check_pointer(op, "invstd", invstd, v.channels > 0);
  if (v.size() > 0 && g == x) batchnorm::detail::throw_invalid(op, "g may not be x (x is read after g is written)");
  if (v.size() > 0 && residual && g == dy)
    batchnorm::detail::throw_invalid(op, "with a residual, g may not be dy (g holds y before dy is read)");
  detail_forward::AffineCoef<T, accum_t<T>> coef;
  coef.mean = mean, coef.invstd = invstd, coef.weight = weight, coef.bias = bias;
  using batchnorm::detail::Act;
  batchnorm::detail::dispatch([&](auto kernels) {
    if (!residual) return kernels.run_act(x, dy, v, coef, g, Act<false, true, true>{});
    kernels.run_act(x, residual, v, coef, g, Act<true, true>{});
    // g = y <= 0 ? 0 : dy, in place, by the same pass with the identity map (mean 0, invstd 1,
    // no affine: (y - 0) * 1 + 0 is y, -0 becoming 0, which decides alike) over all values as
    // one channel: vectorised and threaded as every elementwise pass.
    const accum_t<T> zero = 0, one = 1;
    detail_forward::AffineCoef<T, accum_t<T>> identity;
    identity.mean = &zero, identity.invstd = &one, identity.weight = nullptr, identity.bias = nullptr;
    // Rows of a sample's values where they are long enough for the rows to be shared among the
    // threads, else one row.
    const bool rows = v.channels * v.inner >= 1024;
    const View all{rows ? v.outer : 1, 1, rows ? v.channels * v.inner : v.size()};
    kernels.run_act(g, dy, all, identity, g, Act<false, true, true>{});
  });
}

/// Training forward (PyTorch's batch_norm with training=True), per channel c over its m values:
///   mean_c = sum x / m,   var_c = sum (x - mean_c)^2 / m      (biased; batch_moments)
///   invstd_c = 1 / sqrt(var_c + eps)
///   y = (x - mean_c) * invstd_c * weight_c + bias_c           (as in normalize)
/// and, when running_mean and running_var are given, the running update with factor f
/// (momentum_factor): running = (1 - f) * running + f * batch, with the unbiased var_c * m / (m - 1)
/// (running_var_unbiased, PyTorch) or the biased var_c (Keras, Flax, ONNX; update_running_stats).
/// save_mean and save_invstd (accum_t<T>, C values each) receive mean_c and invstd_c for
/// backward_training. Each channel is normalized right after its statistics are taken, while
/// its values are still in cache.
/// m == 1 throws std::invalid_argument ("expected more than 1 value per channel when
/// training"); m == 0 (an empty batch) writes save_mean = 0, save_invstd = 1/sqrt(eps) and leaves
/// the running statistics alone, as PyTorch. All checks come first: a call that throws writes
/// nothing. weight/bias nullptr: affine off. y may equal x. act and residual: normalize's
/// epilogue (y = relu(y + residual)), in the same pass.
template <class T>
void forward_training(const T* x, View v, const T* weight, const T* bias, T* running_mean, T* running_var,
                      double factor, double eps, T* y, accum_t<T>* save_mean, accum_t<T>* save_invstd,
                      bool running_var_unbiased = true, Activation act = Activation::none,
                      const T* residual = nullptr) {
  using A = accum_t<T>;
  constexpr const char* op = "batchnorm::functional::forward_training";
  detail_forward::check_common(op, v, x, y, eps);
  detail_forward::check_epilogue(op, act, x, residual, y);
  detail_stats::check_pointer(op, "save_mean", save_mean, v.channels > 0);
  detail_stats::check_pointer(op, "save_invstd", save_invstd, v.channels > 0);
  if ((running_mean == nullptr) != (running_var == nullptr))
    batchnorm::detail::throw_invalid(op, "running_mean and running_var must both be given or both be null");
  if (!(factor >= 0 && factor <= 1))
    batchnorm::detail::throw_invalid(op, "factor must be in [0, 1], got " + batchnorm::detail::to_string_exact(factor));
  const Index m = v.count();
  if (m == 1)
    batchnorm::detail::throw_invalid(op, "expected more than 1 value per channel when training, got 1 (outer " +
                                             std::to_string(v.outer) + ", inner " + std::to_string(v.inner) + ")");
  detail_forward::AffineCoef<T, A> coef;
  coef.mean = save_mean, coef.invstd = save_invstd, coef.weight = weight, coef.bias = bias;
  batchnorm::detail::dispatch([&](auto kernels) {
    // save_invstd holds M2, then var, then invstd: no scratch memory. invstd_of in vectors of
    // channels (the kernels' invstd, the same bits).
    const auto finish = [&](Index c0, Index nc) {
      if (m == 0) {
        for (Index c = c0; c < c0 + nc; ++c) save_invstd[c] = invstd_of(A(0), eps);
        return;
      }
      const A count = static_cast<A>(m);
      for (Index c = c0; c < c0 + nc; ++c) save_invstd[c] /= count;  // var = M2 / m
      if (running_mean) {
        const detail_running::Update<A> update(m, static_cast<A>(factor), running_var_unbiased);
        for (Index c = c0; c < c0 + nc; ++c) update(save_mean[c], save_invstd[c], running_mean[c], running_var[c]);
      }
      kernels.run_invstd(save_invstd + c0, nc, eps, save_invstd + c0);
    };
    detail_forward::with_epilogue(act, residual != nullptr, [&](auto tag) {
      kernels.run_forward_training(x, v, finish, coef, y, save_mean, save_invstd, residual, tag);
    });
  });
}

/// Inference forward with running statistics (PyTorch's batch_norm with training=False):
///   y = (x - running_mean_c) / sqrt(running_var_c + eps) * weight_c + bias_c
/// running_mean is exact in T, so x - running_mean is the only rounding before the scale.
/// Any m, including 1 and 0. y may equal x. act and residual: normalize's epilogue.
template <class T>
void forward_inference(const T* x, View v, const T* running_mean, const T* running_var, const T* weight,
                       const T* bias, double eps, T* y, Activation act = Activation::none,
                       const T* residual = nullptr) {
  constexpr const char* op = "batchnorm::functional::forward_inference";
  detail_forward::check_common(op, v, x, y, eps);
  detail_stats::check_pointer(op, "running_mean", running_mean, v.channels > 0);
  detail_stats::check_pointer(op, "running_var", running_var, v.channels > 0);
  detail_forward::check_epilogue(op, act, x, residual, y);
  // invstd_c = invstd_of(running_var_c, eps), taken as the constants are built.
  detail_forward::AffineCoef<T, T> coef;
  coef.mean = running_mean, coef.var = running_var, coef.eps = eps, coef.weight = weight, coef.bias = bias;
  batchnorm::detail::dispatch([&](auto kernels) {
    detail_forward::with_epilogue(act, residual != nullptr, [&](auto tag) {
      detail_forward::apply_epilogue(kernels, x, residual, v, coef, y, tag);
    });
  });
}

}  // namespace functional
BATCHNORM_END_NAMESPACE
