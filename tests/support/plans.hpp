// Test support: the plans the kernels run, watched (PlanLog) and their streaming pinned
// (StreamFrom); the OpenMP thread count capped for a scope (ThreadsAtMost).
#pragma once

#include <batchnorm/functional.hpp>

#include <algorithm>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace batchnorm_test {

/// Records the plans the kernels run, with the Isa of the copy that runs each, while alive
/// (batchnorm::detail::plan_observer is process-wide; tests run one at a time).
struct PlanLog {
  using Entry = std::pair<batchnorm::detail::Plan, batchnorm::Isa>;
  static std::vector<Entry>& log() {
    static std::vector<Entry> l;
    return l;
  }
  PlanLog() {
    log().clear();
    batchnorm::detail::plan_observer = [](const batchnorm::detail::Plan& p, batchnorm::Isa isa) {
      log().emplace_back(p, isa);
    };
  }
  ~PlanLog() { batchnorm::detail::plan_observer = nullptr; }
  PlanLog(const PlanLog&) = delete;
  PlanLog& operator=(const PlanLog&) = delete;
  /// How many of the plans recorded so far stream their output.
  static long streamed() {
    return static_cast<long>(std::count_if(log().begin(), log().end(), [](const Entry& e) { return e.first.stream; }));
  }
};

/// While alive, the elementwise passes stream from `bytes` of output a thread on every CPU
/// (batchnorm::detail::stream_bytes_override; the threshold of the CPU differs between vendors),
/// so that a test runs the same paths anywhere.
class StreamFrom {
 public:
  explicit StreamFrom(batchnorm::Index bytes) : saved_(batchnorm::detail::stream_bytes_override) {
    batchnorm::detail::stream_bytes_override = bytes;
  }
  ~StreamFrom() { batchnorm::detail::stream_bytes_override = saved_; }
  StreamFrom(const StreamFrom&) = delete;
  StreamFrom& operator=(const StreamFrom&) = delete;

 private:
  batchnorm::Index saved_;
};

/// While alive, OpenMP runs at most `threads` threads (nothing without OpenMP); the count
/// before is restored at the end of the scope.
class ThreadsAtMost {
 public:
  explicit ThreadsAtMost(int threads) {
#ifdef _OPENMP
    saved_ = omp_get_max_threads();
    omp_set_num_threads(std::min(saved_, threads));
#else
    (void)threads;
#endif
  }
  ~ThreadsAtMost() {
#ifdef _OPENMP
    omp_set_num_threads(saved_);
#endif
  }
  ThreadsAtMost(const ThreadsAtMost&) = delete;
  ThreadsAtMost& operator=(const ThreadsAtMost&) = delete;

 private:
  int saved_ = 1;
};

}  // namespace batchnorm_test
