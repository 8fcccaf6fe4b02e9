// batchnorm::functional: the running (inference) statistics.
#pragma once

#include "../config.hpp"

#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "../detail/errors.hpp"
#include "../detail/exact.hpp"
#include "view.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace functional {

/// The weight f of the new batch in the running-statistics update, PyTorch's convention:
///   f = momentum                          if momentum is a number,
///   f = 1 / num_batches_tracked           if momentum is nullopt (cumulative moving average),
/// where num_batches_tracked is the count AFTER the increment for this batch (so the first
/// training batch from a fresh counter has f = 1 and replaces the running statistics).
/// Note that PyTorch's momentum weights the NEW statistic (Keras/TF "decay" = 1 - momentum).
inline double momentum_factor(std::optional<double> momentum, std::int64_t num_batches_tracked) {
  constexpr const char* op = "batchnorm::functional::momentum_factor";
  if (momentum) {
    batchnorm::detail::check_momentum(op, *momentum);
    return *momentum;
  }
  if (num_batches_tracked < 1)
    batchnorm::detail::throw_invalid(op, "num_batches_tracked must be at least 1 (counted after the increment), got " +
                                             std::to_string(num_batches_tracked));
  return 1.0 / static_cast<double>(num_batches_tracked);
}

namespace detail_running {
using batchnorm::detail::saturate;

/// (1 - f) * old + f * batch, with f == 0 giving old and f == 1 giving batch exactly (so that an
/// infinite old or batch value does not turn into 0 * inf = NaN), rounded once to T.
template <class T, class A>
T blend(T old, A batch, A f) noexcept {
  if (f == 0) return old;
  if (f == 1) return saturate<T>(batch);
  return saturate<T>((1 - f) * static_cast<A>(old) + f * batch);
}

/// The update of update_running_stats for batches of `count` values a channel (f in [0, 1] and
/// count >= 2 when unbiased, checked by the caller), its Bessel factor count / (count - 1) (1 for
/// the biased variance) taken once; operator() updates one channel.
template <class A>
struct Update {
  A f, bessel;
  Update(Index count, A f_, bool unbiased) noexcept
      : f(f_), bessel(unbiased ? static_cast<A>(count) / static_cast<A>(count - 1) : A(1)) {}
  template <class T>
  void operator()(A mean, A var, T& running_mean, T& running_var) const noexcept {
    running_mean = blend(running_mean, mean, f);
    running_var = blend(running_var, var * bessel, f);
  }
};
}  // namespace detail_running

/// Running-statistics update from the batch statistics of `count` values a channel, per channel:
///   running_mean = (1 - f) * running_mean + f * mean
///   running_var  = (1 - f) * running_var  + f * var * count / (count - 1)   (unbiased, PyTorch)
///   running_var  = (1 - f) * running_var  + f * var                         (biased: Keras, Flax, ONNX)
/// var is the biased batch variance (batch_stats); `unbiased` picks what running_var averages
/// (BatchNormOptions::running_var_unbiased). Evaluated in accum_t<T>, rounded once to T; a value
/// beyond T's range becomes +-inf (never NaN: f == 0 keeps the old value, f == 1 takes the
/// batch's). count == 0 (an empty batch) changes nothing, as PyTorch. Throws
/// std::invalid_argument if count < 0, if count == 1 with `unbiased` (no unbiased variance of
/// one value), or if f is outside [0, 1]; nothing is changed then.
template <class T>
void update_running_stats(Index channels, const accum_t<T>* mean, const accum_t<T>* var, Index count, double factor,
                          T* running_mean, T* running_var, bool unbiased = true) {
  using A = accum_t<T>;
  constexpr const char* op = "batchnorm::functional::update_running_stats";
  if (!(factor >= 0 && factor <= 1))
    batchnorm::detail::throw_invalid(op, "factor must be in [0, 1], got " + batchnorm::detail::to_string_exact(factor));
  if (count < 0 || (unbiased && count == 1))
    batchnorm::detail::throw_invalid(op, std::string(unbiased ? "expected more than 1 value per channel (or none) for "
                                                                "the unbiased variance, got "
                                                              : "expected a count of at least 0, got ") +
                                             std::to_string(count));
  if (count == 0) return;
  const detail_running::Update<A> update(count, static_cast<A>(factor), unbiased);
  for (Index c = 0; c < channels; ++c) update(mean[c], var[c], running_mean[c], running_var[c]);
}

}  // namespace functional
BATCHNORM_END_NAMESPACE
