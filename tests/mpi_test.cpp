// Synchronized batch norm over MPI (batchnorm/mpi.hpp): run by ctest under `mpirun -np 1`, 2
// and 3. Every rank holds a shard of one global batch (uneven shards; with 3 ranks, rank 1 holds
// no sample) and runs the synchronized module; every rank also runs the local module on the
// whole batch as the reference. y, dx, the running statistics and the rank-summed dweight/dbias
// must equal the reference within 1e-6 * (1 + |ref|) (float) or 1e-12 * (1 + |ref|) (double),
// and the running statistics must be the same bytes on every rank. Errors must be collective:
// every rank throws, none hangs (ctest's timeout would catch a hang), nothing changes.
//
// Every rank runs the same test cases in the same order (the collectives must match), so
// checks use CHECK, never REQUIRE: a rank that left a test case early would hang the others.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <batchnorm/batchnorm.hpp>
#include <batchnorm/mpi.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "support/tensors.hpp"
#include "support/tolerance.hpp"

namespace {

using batchnorm::BatchNormOptions;
using batchnorm_test::rel_err;

/// The bar: |got - ref| <= tol * (1 + |ref|).
template <class T>
constexpr double sync_tol() {
  return sizeof(T) == sizeof(float) ? 1e-6 : 1e-12;
}

/// Samples of each rank for a global batch of N: uneven shards, the sizes growing with the
/// rank; with 3 ranks or more, rank 1 holds none.
std::vector<Eigen::Index> shard_sizes(Eigen::Index N, int P) {
  std::vector<Eigen::Index> sizes(static_cast<std::size_t>(P), 0);
  std::vector<int> holders;
  for (int r = 0; r < P; ++r)
    if (!(P >= 3 && r == 1)) holders.push_back(r);
  const auto q = static_cast<Eigen::Index>(holders.size());
  const Eigen::Index weights = q * (q + 1) / 2;
  Eigen::Index given = 0;
  for (Eigen::Index i = 0; i < q; ++i) {
    const Eigen::Index n = i + 1 == q ? N - given : N * (i + 1) / weights;
    sizes[static_cast<std::size_t>(holders[static_cast<std::size_t>(i)])] = n;
    given += n;
  }
  return sizes;
}

/// Rows [n0, n0 + n) of the batch axis (axis 0) of t, as a tensor of its own.
template <class Tensor>
Tensor batch_slice(const Tensor& t, Eigen::Index n0, Eigen::Index n) {
  constexpr int R = Tensor::NumDimensions;
  Eigen::array<Eigen::Index, R> offsets{}, extents;
  for (std::size_t a = 0; a < static_cast<std::size_t>(R); ++a) extents[a] = t.dimensions()[a];
  offsets[0] = n0;
  extents[0] = n;
  Tensor out = t.slice(offsets, extents);
  return out;
}

/// Every check of tensors a and b (same shape): elementwise within tol * (1 + |b|).
template <class A, class B>
void check_close(const A& a, const B& b, double tol, const char* what) {
  double worst = 0;
  for (Eigen::Index k = 0; k < a.size(); ++k)
    worst = std::max(worst, rel_err(static_cast<double>(a.data()[k]), static_cast<double>(b.data()[k])));
  INFO(what << ": worst |got - ref| / (1 + |ref|) = " << worst << ", tolerance " << tol);
  CHECK(worst <= tol);
}

/// True on every rank when v holds the same bytes on every rank (compared with rank 0's).
template <class T>
bool same_bytes_on_all_ranks(const std::vector<T>& v) {
  std::vector<T> root(v);
  MPI_Bcast(root.data(), static_cast<int>(root.size() * sizeof(T)), MPI_BYTE, 0, MPI_COMM_WORLD);
  int same = std::memcmp(root.data(), v.data(), v.size() * sizeof(T)) == 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &same, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return same == 1;
}

bool same_string_on_all_ranks(const std::string& s) {
  std::vector<char> v(256, '\0');
  std::copy_n(s.begin(), std::min<std::size_t>(s.size(), 255), v.begin());
  return same_bytes_on_all_ranks(v);
}

template <class T>
std::vector<T> values_of(const Eigen::Tensor<T, 1>& t) {
  return std::vector<T>(t.data(), t.data() + t.size());
}

/// Rank sums of a parameter gradient, in double, and of its magnitudes.
template <class T>
std::vector<double> summed_over_ranks(const Eigen::Tensor<T, 1>& g, bool magnitudes = false) {
  std::vector<double> v(g.data(), g.data() + g.size());
  if (magnitudes)
    for (auto& e : v) e = std::abs(e);
  MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return v;
}

/// The summed per-rank gradients against the single-process one: the bar, plus the rounding of
/// each rank's contribution to T (half an ulp of each, at most 2^-24 |g_r| for float), which
/// local contributions carry by design (PyTorch's SyncBatchNorm's too) and which no summation
/// can undo: with dy ~ N(0, 1) the ranks' sums are ~sqrt(m_r) and cancel in the total.
template <class T>
void check_summed_grad(const Eigen::Tensor<T, 1>& g, const Eigen::Tensor<T, 1>& ref, double tol, const char* what) {
  const auto sum = summed_over_ranks(g), magnitude = summed_over_ranks(g, true);
  const double unit = std::is_same_v<T, float> ? 0x1p-24 : 0x1p-53;
  for (Eigen::Index c = 0; c < g.size(); ++c) {
    const auto k = static_cast<std::size_t>(c);
    const double r = static_cast<double>(ref(c));
    INFO(what << ", channel " << c << ": summed " << sum[k] << ", single process " << r);
    CHECK(std::abs(sum[k] - r) <= tol * (1 + std::abs(r)) + unit * magnitude[k]);
  }
}

/// Three training steps (forward + backward, new data each) of the synchronized module on this
/// rank's shard against the local module on the whole batch; then an eval forward (local).
/// dims: the global tensor's dimensions, batch first, in the module's index order. add_relu:
/// the steps are forward_add_relu / backward_add_relu with a residual (dresidual checked too).
template <class T, int SpatialDims, int R, int Layout>
void check_against_whole_batch(const Eigen::array<Eigen::Index, R>& dims, const BatchNormOptions& options,
                               double mean, double std, std::uint32_t seed, bool add_relu = false) {
  using Tensor = Eigen::Tensor<T, R, Layout>;
  batchnorm::MpiCommunicator comm;
  const int P = comm.size(), rank = comm.rank();
  const auto sizes = shard_sizes(dims[0], P);
  Eigen::Index n0 = 0;
  for (int r = 0; r < rank; ++r) n0 += sizes[static_cast<std::size_t>(r)];
  const Eigen::Index n = sizes[static_cast<std::size_t>(rank)];
  INFO("rank " << rank << " of " << P << ": samples [" << n0 << ", " << n0 + n << ") of " << dims[0]);

  batchnorm::BatchNorm<T, SpatialDims> whole(options), sync(options, comm);
  if (options.affine()) {
    // Parameters off their init, the same on every rank, of order 1 as in training: the bar
    // 1e-6 * (1 + |ref|) is for outputs of order 1. (With weight ~10 and std 0.1, dx is ~100
    // and its float rounding alone, in any float implementation, is ~1e-5 of it.)
    const auto C = static_cast<T>(options.num_features());
    for (Eigen::Index c = 0; c < options.num_features(); ++c) {
      const T w = T(0.75) + T(0.5) * static_cast<T>(c) / C, b = T(0.1) * static_cast<T>(c % 3) - T(0.1);
      whole.weight()(c) = sync.weight()(c) = w;
      whole.bias()(c) = sync.bias()(c) = b;
    }
  }
  Eigen::Index total = 1;
  for (auto d : dims) total *= d;
  constexpr double tol = sync_tol<T>();
  for (std::uint32_t step = 0; step < 3; ++step) {
    INFO("step " << step);
    const auto xv = batchnorm_test::normal_values<T>(static_cast<std::size_t>(total), mean + step, std, seed + 2 * step);
    const auto dyv = batchnorm_test::normal_values<T>(static_cast<std::size_t>(total), 0.0, 1.0, seed + 2 * step + 1);
    const Tensor x = Eigen::TensorMap<const Tensor>(xv.data(), dims);
    const Tensor dy = Eigen::TensorMap<const Tensor>(dyv.data(), dims);
    const auto rv = batchnorm_test::normal_values<T>(static_cast<std::size_t>(total), 0.0, 1.0, seed + 50 + step);
    const Tensor res = Eigen::TensorMap<const Tensor>(rv.data(), dims);
    Tensor y_ref(dims), dx_ref(dims), dres_ref(dims);
    if (add_relu) {
      whole.forward_add_relu(x, res, y_ref);
      whole.backward_add_relu(x, res, dy, dx_ref, dres_ref);
    } else {
      y_ref = whole.forward(x);
      dx_ref = whole.backward(x, dy);
    }

    const Tensor xs = batch_slice(x, n0, n), dys = batch_slice(dy, n0, n), ress = batch_slice(res, n0, n);
    Tensor y(xs.dimensions()), dx(xs.dimensions()), dres(xs.dimensions());
    if (add_relu) {
      sync.forward_add_relu(xs, ress, y);
      sync.backward_add_relu(xs, ress, dys, dx, dres);
      check_close(dres, batch_slice(dres_ref, n0, n), tol, "dresidual");
    } else {
      y = sync.forward(xs);
      dx = sync.backward(xs, dys);
    }
    check_close(y, batch_slice(y_ref, n0, n), tol, "y");
    check_close(dx, batch_slice(dx_ref, n0, n), tol, "dx");
    if (options.track_running_stats()) {
      check_close(sync.running_mean(), whole.running_mean(), tol, "running_mean");
      check_close(sync.running_var(), whole.running_var(), tol, "running_var");
      CHECK(sync.num_batches_tracked() == whole.num_batches_tracked());
      CHECK(same_bytes_on_all_ranks(values_of(sync.running_mean())));
      CHECK(same_bytes_on_all_ranks(values_of(sync.running_var())));
    }
    if (options.affine()) {
      check_summed_grad(sync.weight_grad(), whole.weight_grad(), tol, "dweight");
      check_summed_grad(sync.bias_grad(), whole.bias_grad(), tol, "dbias");
    }
  }
  // Eval mode is local, no communication: with running statistics it normalizes as the whole
  // batch's module does; without, with this shard's own batch statistics (PyTorch's
  // SyncBatchNorm too), i.e. as a local module given the shard.
  whole.eval(), sync.eval();
  const auto xv = batchnorm_test::normal_values<T>(static_cast<std::size_t>(total), mean, std, seed + 99);
  const Tensor x = Eigen::TensorMap<const Tensor>(xv.data(), dims);
  const Tensor xs = batch_slice(x, n0, n);
  if (options.track_running_stats()) {
    check_close(sync.forward(xs), batch_slice(whole.forward(x), n0, n), tol, "eval y");
  } else if (n > 1) {
    batchnorm::BatchNorm<T, SpatialDims> local(options);
    if (options.affine()) local.weight() = sync.weight(), local.bias() = sync.bias();
    local.eval();
    check_close(sync.forward(xs), local.forward(xs), 0.0, "eval y, batch statistics of the shard");
  }
}

}  // namespace

TEMPLATE_TEST_CASE("synchronized BatchNorm2d equals BatchNorm2d on the concatenated batch", "[mpi]", float, double) {
  using T = TestType;
  // Float: the large-mean data of the core issue (|mean| / std = 1e5); double: moderate data
  // (its 1e-12 bar is below what |mean| / std = 1e5 leaves of a double mean).
  const double mean = std::is_same_v<T, float> ? 1e4 : 1.0, std = std::is_same_v<T, float> ? 0.1 : 2.0;
  SECTION("RowMajor (N, C, H, W)") {
    check_against_whole_batch<T, 2, 4, Eigen::RowMajor>({11, 3, 4, 5}, BatchNormOptions(3), mean, std, 11);
  }
  SECTION("ColMajor (N, C, H, W)") {
    check_against_whole_batch<T, 2, 4, Eigen::ColMajor>({11, 3, 4, 5}, BatchNormOptions(3), mean, std, 12);
  }
  SECTION("RowMajor (N, C, H, W), Keras' conventions (biased running variance, eps 1e-3)") {
    check_against_whole_batch<T, 2, 4, Eigen::RowMajor>({11, 3, 4, 5}, BatchNormOptions::keras(3).momentum(0.5), mean,
                                                       std, 14);
  }
  // The ReLU's decision is recomputed from each rank's shard and the all-reduced statistics.
  // (Seeds whose outputs stay away from the kink by more than the bar: a value within it of 0
  // may be masked on one side only.)
  SECTION("RowMajor (N, C, H, W), the ReLU activation") {
    check_against_whole_batch<T, 2, 4, Eigen::RowMajor>({11, 3, 4, 5}, BatchNormOptions(3).activation(batchnorm::Activation::relu),
                                                       mean, std, 15);
  }
  SECTION("ColMajor (N, C, H, W), forward_add_relu and backward_add_relu") {
    check_against_whole_batch<T, 2, 4, Eigen::ColMajor>({11, 3, 4, 5}, BatchNormOptions(3), mean, std, 16, true);
  }
  SECTION("channels-last (N, H, W, C), cumulative average, no affine") {
    check_against_whole_batch<T, 2, 4, Eigen::RowMajor>(
        {11, 4, 5, 18}, BatchNormOptions(18).channels_last(true).momentum(std::nullopt).affine(false), mean, std, 13);
  }
}

TEMPLATE_TEST_CASE("synchronized BatchNorm1d equals BatchNorm1d on the concatenated batch", "[mpi]", float, double) {
  using T = TestType;
  const double mean = std::is_same_v<T, float> ? 1e4 : 1.0, std = std::is_same_v<T, float> ? 0.1 : 2.0;
  // 150 values a channel: float dx differs from the single-process float dx by the grouping of
  // its float partial sums of dy * (x - mean), amplified by weight * invstd^3 (1e3 at std 0.1):
  // 1.2e-6 of (1 + |dx|) was measured at 13 values a channel, 3e-7 from ~100 (see the note on
  // float gradient sums in README.md).
  SECTION("(N, C), 40 channels") {
    check_against_whole_batch<T, 1, 2, Eigen::RowMajor>({150, 40}, BatchNormOptions(40), mean, std, 21);
  }
  SECTION("(N, C, L) ColMajor, track_running_stats off") {
    check_against_whole_batch<T, 1, 3, Eigen::ColMajor>({9, 5, 7}, BatchNormOptions(5).track_running_stats(false),
                                                       mean, std, 22);
  }
}

TEST_CASE("one value per channel over all ranks throws the same error on every rank", "[mpi][errors]") {
  batchnorm::MpiCommunicator comm;
  batchnorm::BatchNorm1d<double> bn(BatchNormOptions(3), comm);
  // One sample in all: rank 0 holds it, the others hold none.
  Eigen::Tensor<double, 2> x(comm.rank() == 0 ? 1 : 0, 3);
  x.setConstant(2.0);
  std::string message;
  try {
    (void)bn.forward(x);
  } catch (const std::invalid_argument& e) {
    message = e.what();
  }
  INFO(message);
  CHECK(message.find("expected more than 1 value per channel when training, got") != std::string::npos);
  CHECK(same_string_on_all_ranks(message));
  CHECK(bn.num_batches_tracked() == 0);
  CHECK(bn.running_mean()(0) == 0.0);
  CHECK(bn.running_var()(0) == 1.0);
  // The group is still in step: a valid call works on every rank.
  Eigen::Tensor<double, 2> x2(2, 3);
  x2.setValues({{1, 2, 3}, {3, 4, 5}});
  const auto y = bn.forward(x2);
  CHECK(bn.num_batches_tracked() == 1);
  CHECK(std::abs(bn.running_mean()(0) - 0.2) < 1e-15);  // 0.9 * 0 + 0.1 * 2
}

TEST_CASE("a rank with the wrong channel count fails without hanging the others", "[mpi][errors]") {
  batchnorm::MpiCommunicator comm;
  const int P = comm.size(), bad = P - 1;
  batchnorm::BatchNorm2d<float> bn(BatchNormOptions(4), comm);
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(2, comm.rank() == bad ? 5 : 4, 3, 3);
  x.setRandom();
  bool own = false, peer = false;
  int first = -2;
  std::string message;
  try {
    (void)bn.forward(x);
  } catch (const batchnorm::PeerError& e) {
    peer = true, first = e.first_rank(), message = e.what();
  } catch (const std::invalid_argument& e) {
    own = true, message = e.what();
  }
  INFO(message);
  if (comm.rank() == bad) {
    CHECK(own);
    CHECK(message == "BatchNorm2d::forward: expected input of shape (N, 4, H, W), got (2, 5, 3, 3)");
  } else {
    CHECK(peer);
    CHECK(first == bad);
    CHECK(message.find("1 rank(s) failed their checks, first rank " + std::to_string(bad)) != std::string::npos);
  }
  CHECK(bn.num_batches_tracked() == 0);
  CHECK(bn.running_var()(1) == 1.0f);

  // Backward: a good forward everywhere, then one rank passes dy of the wrong shape.
  Eigen::Tensor<float, 4, Eigen::RowMajor> good(2, 4, 3, 3), dy(2, 4, 3, comm.rank() == bad ? 2 : 3);
  good.setRandom(), dy.setRandom();
  (void)bn.forward(good);
  bool threw = false;
  try {
    (void)bn.backward(good, dy);
  } catch (const batchnorm::PeerError&) {
    threw = comm.rank() != bad;
  } catch (const std::invalid_argument&) {
    threw = comm.rank() == bad;
  }
  CHECK(threw);
  CHECK(bn.weight_grad()(0) == 0.0f);  // nothing written
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int failed = Catch::Session().run(argc, argv);
  int any = failed != 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
