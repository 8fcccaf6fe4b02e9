// batchnorm: the communicator customization point of synchronized batch norm (data-parallel
// training over several processes). No dependency: batchnorm/mpi.hpp implements it over MPI,
// other engines (NCCL, Gloo, Horovod, threads) implement it themselves.
#pragma once

#include "config.hpp"

#include <cstddef>
#include <stdexcept>
#include <string>

#include "detail/moments.hpp"

BATCHNORM_BEGIN_NAMESPACE

/// How the buffers of the ranks combine in Communicator::all_reduce. Both are reductions over
/// records laid out by the library (see combine()); an engine never looks inside them.
enum class ReduceOp {
  /// A status record, then per-channel (count, mean, M2) triples merged as Chan et al.
  moments,
  /// A status record, then values added (the gradient sums of backward).
  sum,
};

/// The status record that heads every all-reduce buffer: 2 doubles.
///   [0] the number of ranks whose call failed before the collective (added),
///   [1] the lowest such rank, or -1 if none (the smallest non-negative value wins).
inline constexpr std::size_t kStatusSize = 2;

/// out <- a (+) b for the all-reduce buffers of n doubles of two disjoint groups of ranks, a's
/// ranks all before b's; out may be a or b (each record is read before it is written):
///   status:   failed = failed_a + failed_b,  first = the lower of the two (-1: none)
///   moments:  per channel (n, mean, M2), Chan, Golub and LeVeque (1979):
///               n = n_a + n_b,  delta = mean_b - mean_a,
///               mean = mean_a + delta * n_b / n,  M2 = M2_a + M2_b + delta^2 * n_a * n_b / n
///             (an empty side changes nothing: ranks without samples are neutral);
///   sum:      out[i] = a[i] + b[i].
/// Never sums of squares. Deterministic: the same inputs in the same order give the same bits.
inline void combine_into(const double* a, const double* b, double* out, std::size_t n, ReduceOp op) noexcept {
  if (n < kStatusSize) return;
  const double failed = a[0] + b[0];
  const double first = a[1] >= 0 && (b[1] < 0 || a[1] < b[1]) ? a[1] : b[1];
  out[0] = failed, out[1] = first;
  if (op == ReduceOp::sum) {
    for (std::size_t i = kStatusSize; i < n; ++i) out[i] = a[i] + b[i];
    return;
  }
  for (std::size_t i = kStatusSize; i + 3 <= n; i += 3) {
    detail::Moments<double> acc{a[i], a[i + 1], a[i + 2]};
    acc.merge(b[i], b[i + 1], b[i + 2]);
    out[i] = acc.n, out[i + 1] = acc.mean, out[i + 2] = acc.m2;
  }
}

/// b <- a (+) b (combine_into): the argument order of an MPI user function (invec, inoutvec).
inline void combine(const double* a, double* b, std::size_t n, ReduceOp op) noexcept { combine_into(a, b, b, n, op); }

/// For engines without user-defined reductions, which all-gather instead: the buffers of P ranks
/// gathered rank after rank (`gathered`, P * n values) folded in rank order into out[0..n):
///   out = ((buffer_0 (+) buffer_1) (+) buffer_2) ... (+) buffer_{P-1}
/// Every rank folding the same gathered bytes gets the same result.
inline void fold_gathered(const double* gathered, std::size_t ranks, std::size_t n, ReduceOp op, double* out) noexcept {
  if (ranks == 0) return;
  for (std::size_t i = 0; i < n; ++i) out[i] = gathered[i];
  for (std::size_t r = 1; r < ranks; ++r) combine_into(out, gathered + r * n, out, n, op);
}

/// The all-reduce a synchronized BatchNorm needs, over the processes ("ranks") of one
/// data-parallel group. Implement it to plug in an engine:
///
///   all_reduce(data, n, op): on return, data[0..n) holds on EVERY rank the same bytes: the
///   buffers of all ranks folded with combine() in rank order (a grouping of your choice, e.g.
///   a reduction tree, as long as every rank receives the one result; a reduce to one rank and
///   a broadcast does it). Engines with user-defined reductions call combine() in them (MPI:
///   batchnorm/mpi.hpp); engines with only built-in sums can all-gather the buffers and fold
///   them locally with fold_gathered() (PyTorch's SyncBatchNorm all-gathers too).
///
/// Every rank of the group must make the same sequence of calls with the same n (the modules
/// guarantee it as long as every rank calls forward/backward alike, see BatchNorm). Errors of
/// the engine itself should throw (or abort, as MPI's default error handler does).
class Communicator {
 public:
  virtual ~Communicator() = default;
  /// This process's rank in [0, size()).
  virtual int rank() const = 0;
  /// The number of ranks.
  virtual int size() const = 0;
  /// See the class comment.
  virtual void all_reduce(double* data, std::size_t n, ReduceOp op) = 0;
};

/// The communicator of a group of one: all_reduce leaves the buffer as it is. A module built
/// with it behaves as the local one (and pays for nothing but the status record).
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce(double*, std::size_t, ReduceOp) override {}
};

/// Thrown by a synchronized module on the ranks whose own call was fine when another rank's
/// call failed its checks before the collective (that rank throws its own error). Every rank
/// leaves the call having changed nothing, so the group stays consistent.
class PeerError : public std::runtime_error {
 public:
  PeerError(const std::string& what, int failed_ranks, int first_rank)
      : std::runtime_error(what), failed_ranks_(failed_ranks), first_rank_(first_rank) {}
  /// How many ranks failed, and the lowest of them.
  int failed_ranks() const noexcept { return failed_ranks_; }
  int first_rank() const noexcept { return first_rank_; }

 private:
  int failed_ranks_;
  int first_rank_;
};

BATCHNORM_END_NAMESPACE
