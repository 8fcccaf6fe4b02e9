// batchnorm: the module template behind BatchNorm1d, BatchNorm2d and BatchNorm3d.
#pragma once

#include "config.hpp"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <unsupported/Eigen/CXX11/Tensor>

#include "communicator.hpp"
#include "detail/eigen.hpp"
#include "detail/errors.hpp"
#include "functional.hpp"
#include "options.hpp"
#include "state.hpp"

BATCHNORM_BEGIN_NAMESPACE

namespace detail {
template <int SpatialDims>
struct ModuleTraits;
template <>
struct ModuleTraits<1> {
  static constexpr const char* name = "BatchNorm1d";
  static constexpr bool accepts_rank(int r) noexcept { return r == 2 || r == 3; }
};
template <>
struct ModuleTraits<2> {
  static constexpr const char* name = "BatchNorm2d";
  static constexpr bool accepts_rank(int r) noexcept { return r == 4; }
};
template <>
struct ModuleTraits<3> {
  static constexpr const char* name = "BatchNorm3d";
  static constexpr bool accepts_rank(int r) noexcept { return r == 5; }
};

template <int SpatialDims, int Rank>
constexpr bool check_rank() noexcept {
  static_assert(SpatialDims != 1 || ModuleTraits<1>::accepts_rank(Rank),
                "BatchNorm1d takes rank 2 (N, C) or rank 3 (N, C, L) tensors");
  static_assert(SpatialDims != 2 || ModuleTraits<2>::accepts_rank(Rank), "BatchNorm2d takes rank 4 (N, C, H, W) tensors");
  static_assert(SpatialDims != 3 || ModuleTraits<3>::accepts_rank(Rank),
                "BatchNorm3d takes rank 5 (N, C, D, H, W) tensors");
  return true;
}
}  // namespace detail

/// Batch normalization over the channel axis of an Eigen::Tensor or Eigen::TensorMap, with
/// PyTorch 1.13's semantics (torch.nn.BatchNorm1d/2d/3d). Use the aliases BatchNorm1d<T>,
/// BatchNorm2d<T>, BatchNorm3d<T>; T is float or double.
///
/// Owns the parameters (weight, bias), the running statistics, their gradients and the
/// statistics of the last forward: O(C) memory, nothing input-sized. backward takes the input
/// of the last forward explicitly. Every call checks its arguments first and, when it throws,
/// changes nothing (strong guarantee). The module is not thread-safe (use one per thread), except
/// for its const members: infer() may run on many threads at once while nobody calls a non-const
/// member.
///
/// Synchronized batch norm (PyTorch's SyncBatchNorm): built with a Communicator, the module
/// takes its training statistics over the samples of every rank of the communicator's group
/// (see the constructor); the API is the same.
template <class Scalar, int SpatialDims>
class BatchNorm {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "batchnorm modules take float or double");

 public:
  using Traits = detail::ModuleTraits<SpatialDims>;
  using Acc = functional::accum_t<Scalar>;
  using Vector = Eigen::Tensor<Scalar, 1>;

  /// True for the tensor ranks forward/backward accept (others fail to compile).
  static constexpr bool accepts_rank(int rank) noexcept { return Traits::accepts_rank(rank); }

  /// Builds the module; throws std::invalid_argument if num_features < 1, eps is not positive
  /// and finite, or momentum is outside [0, 1]. Parameters and running statistics start as
  /// PyTorch's: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0.
  explicit BatchNorm(const BatchNormOptions& options) : options_(options) {
    const std::string op = std::string(Traits::name) + "::" + Traits::name;
    if (options.num_features() < 1)
      detail::throw_invalid(op, "num_features must be at least 1, got " + std::to_string(options.num_features()));
    detail::check_eps(op.c_str(), options.eps());
    if (options.momentum()) detail::check_momentum(op.c_str(), *options.momentum());
    if (options.activation() != Activation::none && options.activation() != Activation::relu)
      detail::throw_invalid(op, "unknown activation " + std::to_string(static_cast<int>(options.activation())));
    const auto c = static_cast<Eigen::Index>(options.num_features());
    if (options.affine()) {
      weight_.resize(c), bias_.resize(c), weight_grad_.resize(c), bias_grad_.resize(c);
      weight_grad_.setZero(), bias_grad_.setZero();
    }
    if (options.track_running_stats()) running_mean_.resize(c), running_var_.resize(c);
    save_mean_.assign(static_cast<std::size_t>(c), Acc(0));
    save_invstd_.assign(static_cast<std::size_t>(c), Acc(0));
    workspace_.assign(static_cast<std::size_t>(2 * c), Acc(0));
    reset_parameters();
  }

  /// The synchronized module: as BatchNorm(options), and in training mode every forward takes
  /// the batch statistics over the samples of all ranks of comm (one all_reduce of
  /// 2 + 3 * num_features doubles: per channel (count, mean, M2), merged as Chan et al.), and
  /// every backward after such a forward adds the ranks' gradient sums (one all_reduce of
  /// 2 + 2 * num_features doubles) so that dx is that of the concatenated batch:
  ///   m = sum_r m_r,  dx = k_c * (dy - sum_dy_c / m - xhat * dweight_c / m)  with the global sums.
  /// Running statistics use the global count (unbiased var * m / (m - 1)) and are the same
  /// bytes on every rank. weight_grad() and bias_grad() are this rank's contributions, as
  /// PyTorch's SyncBatchNorm: summed over the ranks (the data-parallel gradient all-reduce does
  /// it) they are the gradients of the concatenated batch. Ranks may hold different batch sizes,
  /// including none. Eval mode is local (running statistics, no communication), as in PyTorch.
  ///
  /// Collective rules: every rank builds its module with the same options and calls forward and
  /// backward alike (same order, same mode). Errors stay collective: a rank whose call fails its
  /// checks (wrong shape or channel count, backward before forward, ...) still joins the
  /// all_reduce, flagging the failure; then it throws its own error and every other rank throws
  /// PeerError, and nothing changed anywhere. One value per channel over all ranks in training
  /// throws the same std::invalid_argument on every rank. comm must outlive the module. A group
  /// of one rank (comm.size() == 1) makes no call to comm: the module is then the local one.
  BatchNorm(const BatchNormOptions& options, Communicator& comm) : BatchNorm(options) {
    comm_ = &comm;
    reduce_.assign(kStatusSize + 3 * static_cast<std::size_t>(options.num_features()), 0.0);
  }

  /// The communicator of a synchronized module, nullptr for a local one.
  Communicator* communicator() const noexcept { return comm_; }

  const BatchNormOptions& options() const noexcept { return options_; }
  std::int64_t num_features() const noexcept { return options_.num_features(); }

  void train(bool on = true) noexcept { training_ = on; }
  void eval() noexcept { training_ = false; }
  bool is_training() const noexcept { return training_; }

  /// weight = 1, bias = 0 and reset_running_stats(), as torch's reset_parameters().
  void reset_parameters() {
    reset_running_stats();
    if (options_.affine()) weight_.setConstant(Scalar(1)), bias_.setZero();
  }
  /// running_mean = 0, running_var = 1, num_batches_tracked = 0.
  void reset_running_stats() {
    if (options_.track_running_stats()) running_mean_.setZero(), running_var_.setConstant(Scalar(1));
    num_batches_tracked_ = 0;
  }

  /// gamma; std::logic_error when affine is off. Keep its size num_features.
  Vector& weight() { return affine_only("weight", weight_); }
  const Vector& weight() const { return affine_only("weight", weight_); }
  /// beta; std::logic_error when affine is off.
  Vector& bias() { return affine_only("bias", bias_); }
  const Vector& bias() const { return affine_only("bias", bias_); }
  /// d loss / d weight and d loss / d bias of the last backward call (overwritten, not
  /// accumulated; zero before the first backward). std::logic_error when affine is off.
  const Vector& weight_grad() const { return affine_only("weight_grad", weight_grad_); }
  const Vector& bias_grad() const { return affine_only("bias_grad", bias_grad_); }
  /// Running statistics; std::logic_error when track_running_stats is off.
  Vector& running_mean() { return tracking_only("running_mean", running_mean_); }
  const Vector& running_mean() const { return tracking_only("running_mean", running_mean_); }
  Vector& running_var() { return tracking_only("running_var", running_var_); }
  const Vector& running_var() const { return tracking_only("running_var", running_var_); }
  std::int64_t& num_batches_tracked() { return tracking_only("num_batches_tracked", num_batches_tracked_); }
  std::int64_t num_batches_tracked() const { return tracking_only("num_batches_tracked", num_batches_tracked_); }

  /// The module's state under PyTorch's names, each key prefix + name (prefix as PyTorch's
  /// module path with its dot, e.g. "layer1.0.bn1."):
  ///   weight, bias                      [C]   affine on
  ///   running_mean, running_var         [C]   track_running_stats on
  ///   num_batches_tracked               []    track_running_stats on; I64, 0-dimensional
  /// Parameters and statistics are F32 for a float module, F64 for a double one.
  StateDict state_dict(const std::string& prefix = "") const {
    StateDict out;
    const std::vector<std::int64_t> c{options_.num_features()};
    check_state("state_dict");
    if (options_.affine()) {
      out.emplace(prefix + "weight", StateTensor::from_values(weight_.data(), c));
      out.emplace(prefix + "bias", StateTensor::from_values(bias_.data(), c));
    }
    if (options_.track_running_stats()) {
      out.emplace(prefix + "running_mean", StateTensor::from_values(running_mean_.data(), c));
      out.emplace(prefix + "running_var", StateTensor::from_values(running_var_.data(), c));
      out.emplace(prefix + "num_batches_tracked", StateTensor::from_values(&num_batches_tracked_, {}));
    }
    return out;
  }

  /// Loads the entries state_dict(prefix) would write, from this library or from PyTorch (the
  /// same layer's keys in a model's state_dict). Parameters and statistics may be F64, F32, F16
  /// or BF16 of shape [C]: F16 and BF16 convert exactly, F64 into float rounds to nearest (a
  /// finite value beyond float's range is an error, not Inf); num_batches_tracked must be I64 of
  /// shape [] holding 0 to 2^63 - 2 (PyTorch's loader fills in 0 for a checkpoint older than
  /// PyTorch 0.4.1 that lacks it; here it is a missing key). Keys that begin with prefix and are
  /// none of those are unexpected.
  /// strict: a missing or unexpected key, a wrong shape, a dtype that does not convert or a
  /// tensor whose byte count does not match its shape is std::invalid_argument listing every
  /// such key with what was expected and what was found. strict = false ignores unexpected keys
  /// and keeps the current value of missing ones, and returns both lists (PyTorch's
  /// missing_keys / unexpected_keys); wrong shapes and dtypes still throw. A call that throws
  /// changes nothing. The saved statistics of the last forward are not part of the state: a
  /// backward after a load still refers to the forward before it.
  LoadResult load_state_dict(const StateDict& dict, const std::string& prefix = "", bool strict = true) {
    const std::string fn = op("load_state_dict");
    const auto c = options_.num_features();
    check_state("load_state_dict");  // the tensors have num_features elements: the commit cannot fail
    LoadResult result;
    std::vector<std::string> problems;
    // name, destination (nullptr: num_batches_tracked), converted values
    struct Entry {
      const char* name;
      Vector* to;
      std::vector<Scalar> values;
      std::int64_t count = 0;
      bool found = false;
    };
    std::vector<Entry> entries;
    if (options_.affine()) {
      entries.push_back({"weight", &weight_, {}});
      entries.push_back({"bias", &bias_, {}});
    }
    if (options_.track_running_stats()) {
      entries.push_back({"running_mean", &running_mean_, {}});
      entries.push_back({"running_var", &running_var_, {}});
      entries.push_back({"num_batches_tracked", nullptr, {}});
    }
    for (Entry& e : entries) {
      const std::string key = prefix + e.name;
      const auto it = dict.find(key);
      const std::string expected =
          e.to ? "a floating tensor (F64, F32, F16 or BF16) of shape [" + std::to_string(c) + "]" : "I64 of shape []";
      if (it == dict.end()) {
        result.missing_keys.push_back(key);
        if (strict) problems.push_back("missing key \"" + key + "\" (expected " + expected + ")");
        continue;
      }
      const StateTensor& t = it->second;
      const std::string found = std::string(dtype_name(t.dtype)) + " of shape " + shape_list(t.shape);
      const std::vector<std::int64_t> want = e.to ? std::vector<std::int64_t>{c} : std::vector<std::int64_t>{};
      if (t.shape != want || (e.to ? !is_loadable_floating(t.dtype) : t.dtype != Dtype::I64)) {
        problems.push_back("key \"" + key + "\": expected " + expected + ", found " + found);
        continue;
      }
      const std::size_t bytes = static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype);
      if (t.data.size() != bytes) {
        problems.push_back("key \"" + key + "\": " + found + " needs " + std::to_string(bytes) + " bytes of data, found " +
                           std::to_string(t.data.size()));
        continue;
      }
      e.found = true;
      if (!e.to) {
        e.count = static_cast<std::int64_t>(detail::load_le<std::uint64_t>(t.data.data()));
        if (e.count < 0 || e.count == std::numeric_limits<std::int64_t>::max())  // the next forward adds 1
          problems.push_back("key \"" + key + "\": expected a count from 0 to 2^63 - 2, found " + std::to_string(e.count));
        continue;
      }
      e.values.resize(static_cast<std::size_t>(c));
      for (std::int64_t i = 0; i < c; ++i) {
        if (!t.to_scalar(i, e.values[static_cast<std::size_t>(i)])) {
          problems.push_back("key \"" + key + "\": element " + std::to_string(i) + " is " +
                             detail::to_string_exact(t.to_double(i)) + ", beyond the range of float");
          break;
        }
      }
    }
    for (const auto& kv : dict) {
      const std::string& key = kv.first;
      if (key.compare(0, prefix.size(), prefix) != 0) continue;
      const bool known = std::any_of(entries.begin(), entries.end(),
                                     [&](const Entry& e) { return key.compare(prefix.size(), std::string::npos, e.name) == 0; });
      if (known) continue;
      result.unexpected_keys.push_back(key);
      if (strict) problems.push_back("unexpected key \"" + key + "\"");
    }
    if (!problems.empty()) {
      std::string message = std::to_string(problems.size()) + " problem(s) loading the state";
      if (!prefix.empty()) message += " under prefix \"" + prefix + "\"";
      for (const std::string& p : problems) message += "; " + p;
      detail::throw_invalid(fn, message + "; nothing was changed");
    }
    // Commit: nothing below throws.
    for (Entry& e : entries) {
      if (!e.found) continue;
      if (e.to) {
        std::copy(e.values.begin(), e.values.end(), e.to->data());
      } else {
        num_batches_tracked_ = e.count;
      }
    }
    return result;
  }

  /// y = BN(x) into a new tensor of x's shape and storage order. In training mode (or with
  /// track_running_stats off) it normalizes with the batch statistics and, when tracking, updates
  /// the running statistics and num_batches_tracked; in eval mode with tracking it normalizes
  /// with the running statistics.
  template <class X>
  Eigen::Tensor<Scalar, detail::tensor_rank_v<X>, detail::is_row_major_v<X> ? Eigen::RowMajor : Eigen::ColMajor>
  forward(const X& x) {
    check_input_type<X>();
    Eigen::Tensor<Scalar, detail::tensor_rank_v<X>, detail::is_row_major_v<X> ? Eigen::RowMajor : Eigen::ColMajor> y(
        x.dimensions());
    forward(x, y);
    return y;
  }

  /// y = BN(x) into y (Tensor or TensorMap of x's shape and storage order); allocates nothing.
  /// y may be x itself (in place).
  template <class X, class Y>
  void forward(const X& x, Y&& y) {
    check_input_type<X>();
    check_output_type<X, Y>();
    forward_impl(x, static_cast<const Scalar*>(nullptr), y);
  }

  /// Residual blocks: y = relu(BN(x) + residual) in one pass (oneDNN's fuse_norm_add_relu), BN
  /// in the module's mode as forward(x, y), then the residual added in T to BN's T result and
  /// ReLU applied (whatever options().activation() says). residual: x's shape and storage order;
  /// y may be the residual (in place) but not x. The backward of this forward is
  /// backward_add_relu. Allocates nothing.
  template <class X, class R, class Y>
  void forward_add_relu(const X& x, const R& residual, Y&& y) {
    check_input_type<X>();
    check_input_type<R>();
    check_output_type<X, Y>();
    static_assert(detail::is_row_major_v<X> == detail::is_row_major_v<R>,
                  "batchnorm: x and residual must have the same storage order");
    if (detail::Shape::of(residual) != detail::Shape::of(x))
      detail::throw_invalid(op("forward_add_relu"), "expected residual of the shape of x " +
                                                       detail::shape_string(detail::Shape::of(x)) + ", got " +
                                                       detail::shape_string(detail::Shape::of(residual)));
    if (y.data() == x.data() && x.size() > 0)
      detail::throw_invalid(op("forward_add_relu"), "y may be the residual but not x");
    forward_impl(x, residual.data(), y, "forward_add_relu");
  }

 private:
  /// forward(x, y), or forward_add_relu when residual is not null (fn names the call).
  template <class X, class Y>
  void forward_impl(const X& x, const Scalar* residual, Y& y, const char* fn = "forward") {
    const Activation act = residual ? Activation::relu : options_.activation();
    if (synchronizing() && training_) return forward_synchronized(x, y, residual, fn);
    const functional::View v = check_forward(x, y, fn);
    const bool batch_stats = training_ || !options_.track_running_stats();
    if (batch_stats && v.count() == 1) throw_one_value(fn, detail::Shape::of(x));
    const Scalar* w = options_.affine() ? weight_.data() : nullptr;
    const Scalar* b = options_.affine() ? bias_.data() : nullptr;
    if (batch_stats) {
      const bool update = training_ && options_.track_running_stats();
      const double factor = update ? functional::momentum_factor(options_.momentum(), num_batches_tracked_ + 1) : 0.0;
      functional::forward_training(x.data(), v, w, b, update ? running_mean_.data() : nullptr,
                                   update ? running_var_.data() : nullptr, factor, options_.eps(), y.data(),
                                   save_mean_.data(), save_invstd_.data(), options_.running_var_unbiased(), act,
                                   residual);
      if (update) ++num_batches_tracked_;
    } else {
      functional::inference_stats(v.channels, running_mean_.data(), running_var_.data(), options_.eps(),
                                  save_mean_.data(), save_invstd_.data());
      functional::normalize(x.data(), v, save_mean_.data(), save_invstd_.data(), w, b, y.data(), act, residual);
    }
    saved_ = Saved{true, batch_stats, detail::Shape::of(x), detail::is_row_major_v<X>, false, v.count(), residual != nullptr};
  }

 public:

  /// Inference that changes nothing: y = BN(x) with the running statistics, whatever the mode,
  /// as forward(x, y) in eval mode gives it, but const: it records nothing for a backward, so
  /// several threads may call it at once on one module (while nobody calls a non-const member).
  /// Allocates nothing; y may be x. std::logic_error with track_running_stats off (no running
  /// statistics: eval normalizes with the batch's, which is forward()).
  template <class X, class Y>
  void infer(const X& x, Y&& y) const {
    check_input_type<X>();
    check_output_type<X, Y>();
    if (!options_.track_running_stats())
      detail::throw_logic(op("infer"), "no running statistics (track_running_stats is off); use forward()");
    const functional::View v = check_forward(x, y, "infer");
    functional::forward_inference(x.data(), v, running_mean_.data(), running_var_.data(),
                                  options_.affine() ? weight_.data() : nullptr, options_.affine() ? bias_.data() : nullptr,
                                  options_.eps(), y.data(), options_.activation());
  }

  /// As infer(x, y) for forward_add_relu: y = relu(BN(x) + residual) with the running statistics,
  /// const (many threads at once). y may be the residual but not x.
  template <class X, class R, class Y>
  void infer_add_relu(const X& x, const R& residual, Y&& y) const {
    check_input_type<X>();
    check_input_type<R>();
    check_output_type<X, Y>();
    static_assert(detail::is_row_major_v<X> == detail::is_row_major_v<R>,
                  "batchnorm: x and residual must have the same storage order");
    constexpr const char* fn = "infer_add_relu";
    if (!options_.track_running_stats())
      detail::throw_logic(op(fn), "no running statistics (track_running_stats is off); use forward_add_relu()");
    const functional::View v = check_forward(x, y, fn);
    if (detail::Shape::of(residual) != detail::Shape::of(x))
      detail::throw_invalid(op(fn), "expected residual of the shape of x " + detail::shape_string(detail::Shape::of(x)) +
                                        ", got " + detail::shape_string(detail::Shape::of(residual)));
    if (y.data() == x.data() && x.size() > 0) detail::throw_invalid(op(fn), "y may be the residual but not x");
    functional::forward_inference(x.data(), v, running_mean_.data(), running_var_.data(),
                                  options_.affine() ? weight_.data() : nullptr, options_.affine() ? bias_.data() : nullptr,
                                  options_.eps(), y.data(), Activation::relu, residual.data());
  }

  /// As infer(x, y), into a new tensor of x's shape and storage order.
  template <class X>
  Eigen::Tensor<Scalar, detail::tensor_rank_v<X>, detail::is_row_major_v<X> ? Eigen::RowMajor : Eigen::ColMajor>
  infer(const X& x) const {
    check_input_type<X>();
    Eigen::Tensor<Scalar, detail::tensor_rank_v<X>, detail::is_row_major_v<X> ? Eigen::RowMajor : Eigen::ColMajor> y(
        x.dimensions());
    infer(x, y);
    return y;
  }

  /// dx = d loss / d x for the last forward, given its input x and dy = d loss / d y, into a new
  /// tensor; weight_grad() and bias_grad() receive d loss / d weight and d loss / d bias. The
  /// statistics are those the last forward normalized with: batch statistics after a training
  /// forward (full backward through mean and variance), running statistics after an eval forward
  /// (constants). Throws std::logic_error before any forward.
  template <class X, class DY>
  Eigen::Tensor<Scalar, detail::tensor_rank_v<X>, detail::is_row_major_v<X> ? Eigen::RowMajor : Eigen::ColMajor>
  backward(const X& x, const DY& dy) {
    check_input_type<X>();
    Eigen::Tensor<Scalar, detail::tensor_rank_v<X>, detail::is_row_major_v<X> ? Eigen::RowMajor : Eigen::ColMajor> dx(
        x.dimensions());
    backward(x, dy, dx);
    return dx;
  }

  /// As backward(x, dy), into dx (Tensor or TensorMap of x's shape and storage order);
  /// allocates nothing. dx may be dy itself (in place).
  template <class X, class DY, class DX>
  void backward(const X& x, const DY& dy, DX&& dx) {
    check_input_type<X>();
    check_input_type<DY>();
    check_output_type<X, DX>();
    static_assert(detail::is_row_major_v<X> == detail::is_row_major_v<DY>,
                  "batchnorm: x and dy must have the same storage order");
    backward_impl(x, dy, dx, static_cast<const Scalar*>(nullptr), static_cast<Scalar*>(nullptr), "backward");
  }

  /// The backward of forward_add_relu(x, residual, y): g = dy where y was positive (or NaN), 0
  /// elsewhere, the decision recomputed from x, residual and the saved statistics (bitwise the
  /// forward's; nothing input-sized was kept); dresidual = g, dx = the batch norm backward of g,
  /// weight_grad() and bias_grad() as backward(). x and residual: the forward's inputs; weight
  /// and bias as they were in that forward. dresidual may be the residual (in place) but not x,
  /// dy or dx; dx may be dy or x but not dresidual. Allocates
  /// nothing. std::logic_error if the last forward was not forward_add_relu.
  template <class X, class R, class DY, class DX, class DR>
  void backward_add_relu(const X& x, const R& residual, const DY& dy, DX&& dx, DR&& dresidual) {
    check_input_type<X>();
    check_input_type<R>();
    check_input_type<DY>();
    check_output_type<X, DX>();
    check_output_type<X, DR>();
    static_assert(detail::is_row_major_v<X> == detail::is_row_major_v<DY> &&
                      detail::is_row_major_v<X> == detail::is_row_major_v<R>,
                  "batchnorm: x, residual and dy must have the same storage order");
    constexpr const char* fn = "backward_add_relu";
    const detail::Shape shape = detail::Shape::of(x);
    for (const auto& [name, other] : {std::pair<const char*, detail::Shape>{"residual", detail::Shape::of(residual)},
                                      {"output dresidual", detail::Shape::of(dresidual)}})
      if (other != shape)
        detail::throw_invalid(op(fn), std::string("expected ") + name + " of the shape of x " + detail::shape_string(shape) +
                                          ", got " + detail::shape_string(other));
    if (x.size() > 0) {
      const Scalar* g = dresidual.data();
      if (g == x.data() || g == dy.data() || g == dx.data())
        detail::throw_invalid(op(fn), "dresidual may be the residual but not x, dy or dx");
    }
    backward_impl(x, dy, dx, residual.data(), dresidual.data(), fn);
  }

 private:
  struct Saved {
    bool valid = false;
    bool batch_stats = false;
    detail::Shape shape;
    bool row_major = false;
    bool synchronized = false;  // statistics over every rank of comm_
    std::int64_t count = 0;     // values a channel the statistics were taken over (all ranks)
    bool add_relu = false;      // forward_add_relu (its backward is backward_add_relu)
  };

  static std::string op(const char* fn) { return std::string(Traits::name) + "::" + fn; }

  /// backward(x, dy, dx), or backward_add_relu when residual is not null (fn names the call):
  /// with ReLU (the module's activation, or add-relu) the gradient g of the ReLU first (into dx,
  /// or dresidual), then the batch norm backward of g.
  template <class X, class DY, class DX>
  void backward_impl(const X& x, const DY& dy, DX& dx, const Scalar* residual, Scalar* dresidual, const char* fn) {
    const bool add = residual != nullptr;
    if (saved_.valid && saved_.add_relu != add)
      detail::throw_logic(op(fn), add ? "the last forward was not forward_add_relu; use backward()"
                                      : "the last forward was forward_add_relu; use backward_add_relu()");
    const bool relu = add || options_.activation() == Activation::relu;
    if (relu && !add && x.size() > 0 && dx.data() == x.data())
      detail::throw_invalid(op(fn), "with the ReLU activation dx may be dy but not x (x is read after dx is written)");
    // A synchronized module communicates after a synchronized forward, or when there was none
    // (then every rank fails together).
    if (synchronizing() && (saved_.synchronized || !saved_.valid)) return backward_synchronized(x, dy, dx, residual, dresidual, fn);
    const functional::View v = check_backward(x, dy, dx, fn);
    const bool affine = options_.affine();
    const Scalar* w = affine ? weight_.data() : nullptr;
    Scalar* dw = affine ? weight_grad_.data() : nullptr;
    Scalar* db = affine ? bias_grad_.data() : nullptr;
    const Scalar* g = relu ? relu_grad(x, dy, v, residual, add ? dresidual : dx.data()) : dy.data();
    if (saved_.batch_stats)
      functional::backward_training(x.data(), g, v, save_mean_.data(), save_invstd_.data(), w, dx.data(), dw, db,
                                    workspace_.data());
    else
      functional::backward_inference(x.data(), g, v, save_mean_.data(), save_invstd_.data(), w, dx.data(), dw, db,
                                     workspace_.data());
  }

  /// g = dy where the last forward's output (ReLU of BN(x), + residual) was positive, into out;
  /// returns out.
  template <class X, class DY>
  Scalar* relu_grad(const X& x, const DY& dy, const functional::View& v, const Scalar* residual, Scalar* out) const {
    functional::relu_grad(x.data(), dy.data(), v, save_mean_.data(), save_invstd_.data(),
                          options_.affine() ? weight_.data() : nullptr, options_.affine() ? bias_.data() : nullptr, out,
                          residual);
    return out;
  }

  /// Training calls communicate: a communicator of more than one rank. A group of one takes the
  /// local path (one pass less over the data), whose results are the same.
  bool synchronizing() const { return comm_ && comm_->size() > 1; }

  /// The checks of forward(x, y) (or of fn(x, y)); returns x's view.
  template <class X, class Y>
  functional::View check_forward(const X& x, const Y& y, const char* fn = "forward") const {
    (void)active_isa();  // BATCHNORM_ISA is read (and may throw) before anything changes
    const detail::Shape shape = detail::Shape::of(x);
    check_shape(fn, shape);
    if (detail::Shape::of(y) != shape)
      detail::throw_invalid(op(fn), "expected output y of shape " + detail::shape_string(shape) + ", got " +
                                        detail::shape_string(detail::Shape::of(y)));
    check_state(fn);
    return detail::make_view(shape, detail::is_row_major_v<X>, options_.channels_last());
  }

  [[noreturn]] void throw_one_value(const char* fn, const detail::Shape& shape) const {
    detail::throw_invalid(op(fn), "expected more than 1 value per channel when " +
                                             std::string(training_ ? "training" : "normalizing with batch statistics (track_running_stats off)") +
                                             ", got input of shape " + detail::shape_string(shape));
  }

  /// The checks of backward(x, dy, dx); returns x's view.
  template <class X, class DY, class DX>
  functional::View check_backward(const X& x, const DY& dy, const DX& dx, const char* fn = "backward") const {
    (void)active_isa();
    if (!saved_.valid) detail::throw_logic(op(fn), "called before any forward");
    const detail::Shape shape = detail::Shape::of(x);
    if (shape != saved_.shape || detail::is_row_major_v<X> != saved_.row_major)
      detail::throw_invalid(op(fn), "x must be the input of the last forward, of shape " +
                                                detail::shape_string(saved_.shape) + ", got " + detail::shape_string(shape) +
                                                (detail::is_row_major_v<X> != saved_.row_major ? " in the other storage order" : ""));
    if (detail::Shape::of(dy) != shape)
      detail::throw_invalid(op(fn), "expected dy of the shape of x " + detail::shape_string(shape) + ", got " +
                                                detail::shape_string(detail::Shape::of(dy)));
    if (detail::Shape::of(dx) != shape)
      detail::throw_invalid(op(fn), "expected output dx of the shape of x " + detail::shape_string(shape) +
                                                ", got " + detail::shape_string(detail::Shape::of(dx)));
    check_state(fn);
    return detail::make_view(shape, detail::is_row_major_v<X>, options_.channels_last());
  }

  /// The collective step of a synchronized call: reduce_[0, n) holds this rank's status record
  /// (written here from `error`) and its payload; after the all_reduce, if any rank failed,
  /// this one throws its own error or PeerError. Nothing has been changed before this point.
  void all_reduce_checked(const char* fn, std::size_t n, ReduceOp reduce_op, const std::exception_ptr& error) {
    reduce_[0] = error ? 1.0 : 0.0;
    reduce_[1] = error ? static_cast<double>(comm_->rank()) : -1.0;
    comm_->all_reduce(reduce_.data(), n, reduce_op);
    if (error) std::rethrow_exception(error);
    if (reduce_[0] > 0) {
      const int failed = static_cast<int>(reduce_[0]), first = static_cast<int>(reduce_[1]);
      throw PeerError(op(fn) + ": " + std::to_string(failed) + " rank(s) failed their checks, first rank " +
                          std::to_string(first) + " (which throws the reason); nothing was changed",
                      failed, first);
    }
  }

  /// Training forward over every rank of comm_ (see the constructor): local moments, one
  /// all_reduce (status, then per-channel (count, mean, M2)), then as forward_training with
  /// the global statistics: running update with the global count m, invstd, normalize.
  template <class X, class Y>
  void forward_synchronized(const X& x, Y& y, const Scalar* residual, const char* fn) {
    const std::size_t C = static_cast<std::size_t>(options_.num_features());
    std::exception_ptr error;
    functional::View v;
    try {
      v = check_forward(x, y, fn);
    } catch (...) {
      error = std::current_exception();
    }
    double* triples = reduce_.data() + kStatusSize;
    if (!error) {
      // Local moments (mean, M2) into the scratch workspace_, then (m_r, mean, M2) per channel.
      Acc* mean = workspace_.data();
      Acc* m2 = workspace_.data() + C;
      functional::batch_moments(x.data(), v, mean, m2);
      for (std::size_t c = 0; c < C; ++c)
        triples[3 * c] = static_cast<double>(v.count()), triples[3 * c + 1] = mean[c], triples[3 * c + 2] = m2[c];
    } else {
      std::fill(triples, triples + 3 * C, 0.0);  // neutral: no samples
    }
    all_reduce_checked(fn, kStatusSize + 3 * C, ReduceOp::moments, error);
    const auto m = static_cast<std::int64_t>(triples[0]);  // every channel has the same count
    if (m == 1)
      detail::throw_invalid(op(fn),
                            "expected more than 1 value per channel when training, got 1 over all " +
                                std::to_string(comm_->size()) + " ranks");
    // From here nothing throws (m != 1, the factor is in [0, 1]). save_invstd_ holds the biased
    // var, then invstd, as in forward_training.
    for (std::size_t c = 0; c < C; ++c) {
      save_mean_[c] = m > 0 ? static_cast<Acc>(triples[3 * c + 1]) : Acc(0);
      save_invstd_[c] = m > 0 ? static_cast<Acc>(triples[3 * c + 2]) / static_cast<Acc>(m) : Acc(0);
    }
    if (options_.track_running_stats()) {
      const double factor = functional::momentum_factor(options_.momentum(), num_batches_tracked_ + 1);
      functional::update_running_stats(static_cast<functional::Index>(C), save_mean_.data(), save_invstd_.data(),
                                       static_cast<functional::Index>(m), factor, running_mean_.data(),
                                       running_var_.data(), options_.running_var_unbiased());
      ++num_batches_tracked_;
    }
    for (std::size_t c = 0; c < C; ++c) save_invstd_[c] = functional::invstd_of(save_invstd_[c], options_.eps());
    functional::normalize(x.data(), v, save_mean_.data(), save_invstd_.data(),
                          options_.affine() ? weight_.data() : nullptr, options_.affine() ? bias_.data() : nullptr,
                          y.data(), residual ? Activation::relu : options_.activation(), residual);
    saved_ = Saved{true, true, detail::Shape::of(x), detail::is_row_major_v<X>, true, m, residual != nullptr};
  }

  /// Training backward after a synchronized forward: local sums (backward_sums), one
  /// all_reduce (status, then sum_dy and sum_dy_d of every channel, added), this rank's dweight
  /// and dbias from its own sums, dx from the global sums over the global count.
  template <class X, class DY, class DX>
  void backward_synchronized(const X& x, const DY& dy, DX& dx, const Scalar* residual, Scalar* dresidual,
                             const char* fn) {
    const std::size_t C = static_cast<std::size_t>(options_.num_features());
    std::exception_ptr error;
    functional::View v;
    try {
      v = check_backward(x, dy, dx, fn);
    } catch (...) {
      error = std::current_exception();
    }
    double* sums = reduce_.data() + kStatusSize;  // sum_dy [0, C), sum_dy_d [C, 2C)
    const Scalar* g = dy.data();  // with ReLU, its gradient (relu_grad) in dx or dresidual
    if (!error) {
      if (residual || options_.activation() == Activation::relu)
        g = relu_grad(x, dy, v, residual, residual ? dresidual : dx.data());
      functional::backward_sums(x.data(), g, v, save_mean_.data(), workspace_.data(), workspace_.data() + C);
      std::copy(workspace_.begin(), workspace_.end(), sums);
    } else {
      std::fill(sums, sums + 2 * C, 0.0);
    }
    all_reduce_checked(fn, kStatusSize + 2 * C, ReduceOp::sum, error);
    if (options_.affine())  // this rank's contributions: dbias = sum dy, dweight = invstd * sum dy * d
      functional::param_grads(static_cast<functional::Index>(C), workspace_.data(), workspace_.data() + C,
                              save_invstd_.data(), weight_grad_.data(), bias_grad_.data());
    if (v.size() > 0)
      functional::backward_dx(x.data(), g, v, save_mean_.data(), save_invstd_.data(),
                              options_.affine() ? weight_.data() : nullptr, static_cast<functional::Index>(saved_.count),
                              sums, sums + C, dx.data());
  }

  template <class X>
  static constexpr void check_input_type() noexcept {
    static_assert(detail::is_dense_tensor_v<X>,
                  "batchnorm: inputs must be Eigen::Tensor or Eigen::TensorMap (evaluate expressions first)");
    static_assert(std::is_same_v<detail::tensor_scalar_t<X>, Scalar>, "batchnorm: tensor scalar type must be the module's");
    static_assert(detail::check_rank<SpatialDims, detail::tensor_rank_v<X>>(), "");
  }

  template <class X, class Y>
  static constexpr void check_output_type() noexcept {
    static_assert(detail::is_dense_tensor_v<Y>,
                  "batchnorm: outputs must be Eigen::Tensor or Eigen::TensorMap of non-const data");
    static_assert(detail::is_writable_tensor_v<Y>, "batchnorm: the output must be writable (not a const TensorMap)");
    static_assert(std::is_same_v<detail::tensor_scalar_t<Y>, Scalar>, "batchnorm: tensor scalar type must be the module's");
    static_assert(detail::tensor_rank_v<Y> == detail::tensor_rank_v<X>, "batchnorm: output rank must equal input rank");
    static_assert(detail::is_row_major_v<Y> == detail::is_row_major_v<X>,
                  "batchnorm: output storage order must equal the input's");
  }

  /// Checks the channel count against num_features, naming the expected layout.
  void check_shape(const char* fn, const detail::Shape& s) const {
    const int ca = detail::channel_axis(s.rank, options_.channels_last());
    if (s.dims[static_cast<std::size_t>(ca)] == options_.num_features()) return;
    const std::string c = std::to_string(options_.num_features());
    std::string expected;
    if (s.rank == 2) expected = "(N, " + c + ")";
    else if (options_.channels_last())
      expected = s.rank == 3 ? "(N, L, " + c + ")" : s.rank == 4 ? "(N, H, W, " + c + ")" : "(N, D, H, W, " + c + ")";
    else
      expected = s.rank == 3 ? "(N, " + c + ", L)" : s.rank == 4 ? "(N, " + c + ", H, W)" : "(N, " + c + ", D, H, W)";
    detail::throw_invalid(op(fn), "expected input of shape " + expected + ", got " + detail::shape_string(s));
  }

  /// The user may resize the tensors returned by weight() etc.; catch that before reading them.
  void check_state(const char* fn) const {
    const auto c = static_cast<Eigen::Index>(options_.num_features());
    auto check = [&](const char* name, const Vector& t) {
      if (t.size() != c)
        detail::throw_logic(op(fn), std::string(name) + " has " + std::to_string(t.size()) + " elements, expected " +
                                        std::to_string(c) + " (num_features)");
    };
    if (options_.affine()) check("weight", weight_), check("bias", bias_);
    if (options_.track_running_stats()) check("running_mean", running_mean_), check("running_var", running_var_);
  }

  template <class V>
  V& affine_only(const char* name, V& v) const {
    if (!options_.affine()) detail::throw_logic(op(name), "no such parameter: affine is off");
    return v;
  }
  template <class V>
  V& tracking_only(const char* name, V& v) const {
    if (!options_.track_running_stats()) detail::throw_logic(op(name), "no running statistics: track_running_stats is off");
    return v;
  }

  BatchNormOptions options_;
  bool training_ = true;
  Vector weight_, bias_, weight_grad_, bias_grad_, running_mean_, running_var_;
  std::int64_t num_batches_tracked_ = 0;
  std::vector<Acc> save_mean_, save_invstd_;  // statistics of the last forward (mean, invstd)
  std::vector<Acc> workspace_;                // 2*C scratch of backward: nothing allocated per call
  Saved saved_;
  Communicator* comm_ = nullptr;  // synchronized module: the group's communicator
  std::vector<double> reduce_;    // its all_reduce buffer: status record, then 3*C values
};

template <class Scalar>
using BatchNorm1d = BatchNorm<Scalar, 1>;
template <class Scalar>
using BatchNorm2d = BatchNorm<Scalar, 2>;
template <class Scalar>
using BatchNorm3d = BatchNorm<Scalar, 3>;

BATCHNORM_END_NAMESPACE
