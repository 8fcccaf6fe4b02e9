// batchnorm: folding an eval-mode batch norm into the linear layer before or after it, for
// inference (one pass over the activations less). Weights and biases in PyTorch's layouts, as
// Eigen tensors of either storage order (the index order is PyTorch's):
//   Linear                   weight (out, in)              bias (out)
//   Conv1d/2d/3d             weight (O, I / groups, k...)  bias (O)
//   ConvTranspose1d/2d/3d    weight (I, O / groups, k...)  bias (O)
// The arithmetic is in double, each result rounded once to the layer's type.
#pragma once

#include "config.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <unsupported/Eigen/CXX11/Tensor>

#include "batch_norm.hpp"
#include "detail/errors.hpp"

BATCHNORM_BEGIN_NAMESPACE

/// An eval-mode batch norm as the affine map it is, per channel c, in double:
///   bn(x)_c = x_c * scale_c + shift_c
///   scale_c = weight_c / sqrt(running_var_c + eps),   shift_c = bias_c - running_mean_c * scale_c
/// (weight 1 and bias 0 when affine is off).
struct ChannelAffine {
  std::vector<double> scale, shift;
};

namespace detail_fold {

/// channel_affine, its errors naming the operation op.
template <class Scalar, int D>
ChannelAffine channel_affine(const BatchNorm<Scalar, D>& bn, const std::string& op) {
  if (bn.is_training())
    detail::throw_logic(op, "the module is in training mode; a fold uses the running statistics (call eval() first)");
  if (!bn.options().track_running_stats())
    detail::throw_logic(op, "the module keeps no running statistics (track_running_stats is off)");
  const Eigen::Index n = bn.num_features();
  const auto check = [&](const char* name, Eigen::Index size) {
    if (size != n)
      detail::throw_logic(op, std::string(name) + " has " + std::to_string(size) + " elements, expected " +
                                  std::to_string(n) + " (num_features)");
  };
  if (bn.options().affine()) check("weight", bn.weight().size()), check("bias", bn.bias().size());
  check("running_mean", bn.running_mean().size()), check("running_var", bn.running_var().size());
  const auto C = static_cast<std::size_t>(n);
  ChannelAffine a{std::vector<double>(C), std::vector<double>(C)};
  for (std::size_t c = 0; c < C; ++c) {
    const auto i = static_cast<Eigen::Index>(c);
    const double w = bn.options().affine() ? static_cast<double>(bn.weight()(i)) : 1.0;
    const double b = bn.options().affine() ? static_cast<double>(bn.bias()(i)) : 0.0;
    a.scale[c] = w / std::sqrt(static_cast<double>(bn.running_var()(i)) + bn.options().eps());
    a.shift[c] = b - static_cast<double>(bn.running_mean()(i)) * a.scale[c];
  }
  return a;
}

}  // namespace detail_fold

/// bn's eval map. std::logic_error if bn is in training mode or keeps no running statistics
/// (a fold uses the running statistics; a training-mode module normalizes with the batch's), or
/// if one of its tensors was resized away from num_features.
template <class Scalar, int D>
ChannelAffine channel_affine(const BatchNorm<Scalar, D>& bn) {
  return detail_fold::channel_affine(bn, "batchnorm::channel_affine");
}

/// A layer's weight and bias after a fold (the folded layer always has a bias).
template <class T, int R, int Layout>
struct Folded {
  Eigen::Tensor<T, R, Layout> weight;
  Eigen::Tensor<T, 1, Layout> bias;
};

/// The bias argument of the fold functions: a 1-D tensor of the weight's type and storage order,
/// or nullptr for a layer without bias (not deduced: nullptr works).
template <class T, int Layout>
using FoldBias = typename std::enable_if<true, const Eigen::Tensor<T, 1, Layout>*>::type;

namespace detail_fold {

/// The index along `axis` of the element at flat position k of a tensor of `dims`.
template <int Layout, class Dims>
Eigen::Index index_along(Eigen::Index k, const Dims& dims, int axis) {
  constexpr int R = static_cast<int>(Eigen::internal::array_size<Dims>::value);
  Eigen::Index stride = 1;
  if (Layout == Eigen::RowMajor)
    for (int a = R - 1; a > axis; --a) stride *= dims[static_cast<std::size_t>(a)];
  else
    for (int a = 0; a < axis; ++a) stride *= dims[static_cast<std::size_t>(a)];
  return (k / stride) % dims[static_cast<std::size_t>(axis)];
}

template <class Dims>
std::string dims_string(const Dims& dims) {
  std::vector<std::int64_t> v;
  for (const auto d : dims) v.push_back(static_cast<std::int64_t>(d));
  return detail::shape_string(v);
}

/// v rounded to T; std::invalid_argument naming the element if it rounds beyond T's range.
template <class T>
T narrow(const std::string& op, const char* what, Eigen::Index k, double v) {
  T out{};
  if (!detail::round_to(v, out))
    detail::throw_invalid(op, std::string("the folded ") + what + " element " + std::to_string(k) + " is " +
                                  detail::to_string_exact(v) + ", beyond the range of the layer's type");
  return out;
}

/// The rank checks of a fold of bn (SpatialDims D) into a layer whose weight has rank R: a
/// convolution of the same spatial rank (R = D + 2), or a Linear (R = 2) acting on C, which
/// needs a BatchNorm1d or a channels-last batch norm.
template <int D, int R, class Scalar>
void check_rank(const std::string& op, const BatchNorm<Scalar, D>& bn) {
  static_assert(R == 2 || R == D + 2,
                "fold: a convolution's weight has rank 2 + the batch norm's spatial rank; a Linear's has rank 2");
  if (R == 2 && D > 1 && !bn.options().channels_last())
    detail::throw_invalid(op, "a Linear acts on the last axis, and this batch norm's channels are not last "
                              "(a Linear folds with a BatchNorm1d, or a channels_last batch norm)");
}

template <class T, int L>
void check_bias(const std::string& op, const Eigen::Tensor<T, 1, L>* bias, Eigen::Index n) {
  if (bias && bias->dimension(0) != n)
    detail::throw_invalid(op, "expected a bias of " + std::to_string(n) + " elements, got " + std::to_string(bias->dimension(0)));
}

/// The preceding layer's output channel of each weight element is out_channel(k); its outputs
/// become bn's: W'[k] = W[k] * scale_o, b'_o = b_o * scale_o + shift_o.
template <class T, int R, int L, class OutChannel>
Folded<T, R, L> fold_preceding(const std::string& op, const ChannelAffine& a, const Eigen::Tensor<T, R, L>& weight,
                               const Eigen::Tensor<T, 1, L>* bias, OutChannel out_channel) {
  const auto C = static_cast<Eigen::Index>(a.scale.size());
  Folded<T, R, L> f{Eigen::Tensor<T, R, L>(weight.dimensions()), Eigen::Tensor<T, 1, L>(C)};
  for (Eigen::Index k = 0; k < weight.size(); ++k)
    f.weight.data()[k] = narrow<T>(op, "weight", k, static_cast<double>(weight.data()[k]) *
                                                        a.scale[static_cast<std::size_t>(out_channel(k))]);
  for (Eigen::Index o = 0; o < C; ++o) {
    const auto c = static_cast<std::size_t>(o);
    const double b = bias ? static_cast<double>((*bias)(o)) : 0.0;
    f.bias(o) = narrow<T>(op, "bias", o, b * a.scale[c] + a.shift[c]);
  }
  return f;
}

/// The following layer's input channel of each weight element is in_channel(k), its output
/// out(k): W'[k] = W[k] * scale_c, b'_o = b_o + sum over o's elements of W[k] * shift_c.
template <class T, int R, int L, class InChannel, class Out>
Folded<T, R, L> fold_following(const std::string& op, const ChannelAffine& a, const Eigen::Tensor<T, R, L>& weight,
                               const Eigen::Tensor<T, 1, L>* bias, Eigen::Index outputs, InChannel in_channel, Out out) {
  Folded<T, R, L> f{Eigen::Tensor<T, R, L>(weight.dimensions()), Eigen::Tensor<T, 1, L>(outputs)};
  std::vector<double> b(static_cast<std::size_t>(outputs), 0.0);
  for (Eigen::Index o = 0; o < outputs; ++o) b[static_cast<std::size_t>(o)] = bias ? static_cast<double>((*bias)(o)) : 0.0;
  for (Eigen::Index k = 0; k < weight.size(); ++k) {
    const auto c = static_cast<std::size_t>(in_channel(k));
    const double w = static_cast<double>(weight.data()[k]);
    f.weight.data()[k] = narrow<T>(op, "weight", k, w * a.scale[c]);
    b[static_cast<std::size_t>(out(k))] += w * a.shift[c];
  }
  for (Eigen::Index o = 0; o < outputs; ++o) f.bias(o) = narrow<T>(op, "bias", o, b[static_cast<std::size_t>(o)]);
  return f;
}

}  // namespace detail_fold

/// Linear or convolution, then bn (eval): one layer with weight W' and bias b',
///   W'[o, ...] = W[o, ...] * scale_o,   b'_o = b_o * scale_o + shift_o   (b = 0 without bias)
/// weight (out, in) or (O, I / groups, k...) with out = O = bn's num_features; bias nullptr
/// for a layer without one. Any groups (the output channel is the first index either way). A
/// convolution's spatial rank is bn's; a Linear folds into a BatchNorm1d or a channels-last one.
/// std::invalid_argument for mismatched shapes, or a folded value beyond T's range.
template <class Scalar, int D, class T, int R, int L>
Folded<T, R, L> fold_into_preceding(const BatchNorm<Scalar, D>& bn, const Eigen::Tensor<T, R, L>& weight,
                                    FoldBias<T, L> bias) {
  const std::string op = "batchnorm::fold_into_preceding";
  detail_fold::check_rank<D, R>(op, bn);
  const ChannelAffine a = detail_fold::channel_affine(bn, op);
  if (weight.dimension(0) != bn.num_features())
    detail::throw_invalid(op, "expected a weight of " + std::to_string(bn.num_features()) +
                                  " outputs (bn's num_features) along its first index, got " +
                                  detail_fold::dims_string(weight.dimensions()));
  detail_fold::check_bias(op, bias, weight.dimension(0));
  const auto dims = weight.dimensions();
  return detail_fold::fold_preceding(op, a, weight, bias,
                                     [&](Eigen::Index k) { return detail_fold::index_along<L>(k, dims, 0); });
}

/// Transposed convolution, then bn (eval): weight (I, O / groups, k...) with
/// O = groups * weight.dimension(1) = bn's num_features; the output channel of weight[i, j, ...]
/// is (i / (I / groups)) * (O / groups) + j. Otherwise as fold_into_preceding.
template <class Scalar, int D, class T, int R, int L>
Folded<T, R, L> fold_into_preceding_transposed(const BatchNorm<Scalar, D>& bn, const Eigen::Tensor<T, R, L>& weight,
                                               FoldBias<T, L> bias, Eigen::Index groups = 1) {
  static_assert(R == D + 2, "fold_into_preceding_transposed: weight (I, O / groups, k...) of rank 2 + the batch norm's spatial rank");
  const std::string op = "batchnorm::fold_into_preceding_transposed";
  const ChannelAffine a = detail_fold::channel_affine(bn, op);
  if (groups < 1 || weight.dimension(0) % groups != 0)
    detail::throw_invalid(op, "groups must be at least 1 and divide the input channels " +
                                  std::to_string(weight.dimension(0)) + ", got " + std::to_string(groups));
  const Eigen::Index per_group_out = weight.dimension(1), per_group_in = weight.dimension(0) / groups;
  if (bn.num_features() % groups != 0 || bn.num_features() / groups != per_group_out)
    detail::throw_invalid(op, "expected groups * weight.dimension(1) = " + std::to_string(bn.num_features()) +
                                  " outputs (bn's num_features), got " + std::to_string(groups) + " * " +
                                  std::to_string(per_group_out) + " from weight " + detail_fold::dims_string(weight.dimensions()));
  detail_fold::check_bias(op, bias, bn.num_features());
  const auto dims = weight.dimensions();
  return detail_fold::fold_preceding(op, a, weight, bias, [&](Eigen::Index k) {
    const Eigen::Index i = detail_fold::index_along<L>(k, dims, 0), j = detail_fold::index_along<L>(k, dims, 1);
    return (i / per_group_in) * per_group_out + j;
  });
}

/// bn (eval), then a Linear or a convolution without zero padding: one layer with
///   W'[o, c', ...] = W[o, c', ...] * scale_c,   b'_o = b_o + sum over c', k of W[o, c', k] * shift_c
/// where c = (o / (O / groups)) * (C / groups) + c' is the input channel of W[o, c', ...]
/// (c = c' for a Linear or groups = 1). weight (out, C) or (O, C / groups, k...) with C = bn's
/// num_features. `padding`: the convolution's zero padding per spatial dimension ({} for a
/// Linear), required so that a padded convolution cannot fold by omission: it must be 0 (a zero
/// border would have to become shift_c: no exact fold). Reflect, replicate and circular padding
/// copy normalized values and fold exactly: pass 0 for them. Stride and dilation may be anything.
template <class Scalar, int D, class T, int R, int L>
Folded<T, R, L> fold_into_following(const BatchNorm<Scalar, D>& bn, const Eigen::Tensor<T, R, L>& weight,
                                    FoldBias<T, L> bias, const std::array<Eigen::Index, static_cast<std::size_t>(R > 2 ? R - 2 : 0)>& padding,
                                    Eigen::Index groups = 1) {
  const std::string op = "batchnorm::fold_into_following";
  detail_fold::check_rank<D, R>(op, bn);
  const ChannelAffine a = detail_fold::channel_affine(bn, op);
  for (const Eigen::Index p : padding)
    if (p != 0)
      detail::throw_invalid(op, "a zero-padded convolution after batch norm has no exact fold (its zero border would "
                                "need to become the shift), got padding " + detail_fold::dims_string(padding));
  const Eigen::Index outputs = weight.dimension(0), per_group_in = weight.dimension(1);
  if (groups < 1 || outputs % groups != 0 || (R == 2 && groups != 1))
    detail::throw_invalid(op, "groups must be at least 1 (1 for a Linear) and divide the outputs " + std::to_string(outputs) +
                                  ", got " + std::to_string(groups));
  if (bn.num_features() % groups != 0 || bn.num_features() / groups != per_group_in)
    detail::throw_invalid(op, "expected groups * weight.dimension(1) = " + std::to_string(bn.num_features()) +
                                  " inputs (bn's num_features), got " + std::to_string(groups) + " * " +
                                  std::to_string(per_group_in) + " from weight " + detail_fold::dims_string(weight.dimensions()));
  detail_fold::check_bias(op, bias, outputs);
  const auto dims = weight.dimensions();
  const Eigen::Index per_group_out = outputs / groups;
  return detail_fold::fold_following(
      op, a, weight, bias, outputs,
      [&](Eigen::Index k) {
        const Eigen::Index o = detail_fold::index_along<L>(k, dims, 0), ci = detail_fold::index_along<L>(k, dims, 1);
        return (o / per_group_out) * per_group_in + ci;
      },
      [&](Eigen::Index k) { return detail_fold::index_along<L>(k, dims, 0); });
}

BATCHNORM_END_NAMESPACE
