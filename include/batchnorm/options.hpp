// batchnorm: BatchNormOptions, libtorch style (chained setters, getters of the same name).
#pragma once

#include "config.hpp"
#include "view.hpp"

#include <cstdint>
#include <optional>

BATCHNORM_BEGIN_NAMESPACE

/// Options of BatchNorm1d/2d/3d, with torch::nn::BatchNormOptions' names and defaults:
///   BatchNorm2d<float> bn(BatchNormOptions(64).eps(1e-5).momentum(0.1).affine(true));
/// The values are checked when a module is built from them (std::invalid_argument).
class BatchNormOptions {
 public:
  /* implicit */ BatchNormOptions(std::int64_t num_features) : num_features_(num_features) {}

  /// Named presets: every default of a framework's batch-norm layer, in this library's terms
  /// (momentum is always the weight of the NEW batch, as PyTorch's). README "Conventions of other
  /// frameworks" has the table these come from.
  ///   pytorch: eps 1e-5, momentum 0.1, unbiased running variance (the defaults above);
  ///   keras:   eps 1e-3, momentum 0.01 (Keras' momentum 0.99 on the old value), biased;
  ///   onnx:    eps 1e-5, momentum 0.1 (ONNX's momentum 0.9 on the old value), biased;
  ///   flax:    eps 1e-5, momentum 0.01 (Flax's momentum 0.99 on the old value), biased.
  static BatchNormOptions pytorch(std::int64_t num_features) { return BatchNormOptions(num_features); }
  static BatchNormOptions keras(std::int64_t num_features) {
    return BatchNormOptions(num_features).eps(1e-3).momentum(0.01).running_var_unbiased(false);
  }
  static BatchNormOptions onnx(std::int64_t num_features) {
    return BatchNormOptions(num_features).eps(1e-5).momentum(0.1).running_var_unbiased(false);
  }
  static BatchNormOptions flax(std::int64_t num_features) {
    return BatchNormOptions(num_features).eps(1e-5).momentum(0.01).running_var_unbiased(false);
  }

  /// C, the number of channels.
  BatchNormOptions& num_features(std::int64_t v) { return num_features_ = v, *this; }
  std::int64_t num_features() const noexcept { return num_features_; }

  /// Added to the variance before the square root; must be positive and finite. Default 1e-5.
  BatchNormOptions& eps(double v) { return eps_ = v, *this; }
  double eps() const noexcept { return eps_; }

  /// Weight of the NEW batch statistic in the running update, in [0, 1]; std::nullopt for the
  /// cumulative moving average (factor 1/num_batches_tracked). Default 0.1.
  BatchNormOptions& momentum(std::optional<double> v) { return momentum_ = v, *this; }
  std::optional<double> momentum() const noexcept { return momentum_; }

  /// Which batch variance the running variance averages: the unbiased one, var * m / (m - 1)
  /// over the m values of a channel (PyTorch, default true), or the biased one, var (Keras/TF,
  /// Flax, ONNX, MXNet). The batch is always normalized with the biased variance.
  BatchNormOptions& running_var_unbiased(bool v) { return running_var_unbiased_ = v, *this; }
  bool running_var_unbiased() const noexcept { return running_var_unbiased_; }

  /// Learnable per-channel weight (gamma, init 1) and bias (beta, init 0). Default true.
  BatchNormOptions& affine(bool v) { return affine_ = v, *this; }
  bool affine() const noexcept { return affine_; }

  /// Keep running_mean/running_var/num_batches_tracked and use them in eval mode. Default true.
  /// When false, eval mode normalizes with batch statistics too (PyTorch).
  BatchNormOptions& track_running_stats(bool v) { return track_running_stats_ = v, *this; }
  bool track_running_stats() const noexcept { return track_running_stats_; }

  /// Channels-last data: the channel is the LAST index, (N, L, C), (N, H, W, C), (N, D, H, W, C),
  /// instead of index 1. Never guessed from the shape. Default false. (For BatchNorm1d on rank-2
  /// (N, C) input both settings mean the same.)
  BatchNormOptions& channels_last(bool v) { return channels_last_ = v, *this; }
  bool channels_last() const noexcept { return channels_last_; }

  /// The activation fused into the module's output: Activation::relu makes forward (and infer)
  /// write max(BN(x), 0) in the same pass, and backward pass dy only where that output was
  /// positive (the decision recomputed from x and the saved statistics, bitwise the forward's: no
  /// input-sized mask is kept). Default Activation::none.
  BatchNormOptions& activation(Activation v) { return activation_ = v, *this; }
  Activation activation() const noexcept { return activation_; }

 private:
  std::int64_t num_features_;
  double eps_ = 1e-5;
  std::optional<double> momentum_ = 0.1;
  bool running_var_unbiased_ = true;
  bool affine_ = true;
  bool track_running_stats_ = true;
  bool channels_last_ = false;
  Activation activation_ = Activation::none;
};

BATCHNORM_END_NAMESPACE
