// Test support: the kernels' non-temporal stores, watched and pinned.
#pragma once

#include <batchnorm/functional.hpp>

#include <atomic>

namespace batchnorm_test {

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

/// While alive, counts the kernel calls whose plan streams (batchnorm::detail::plan_observer,
/// process-wide: tests run one at a time).
class StreamedPlans {
 public:
  StreamedPlans() {
    counter() = 0;
    batchnorm::detail::plan_observer = [](const batchnorm::detail::Plan& p, batchnorm::Isa) {
      if (p.stream) ++counter();
    };
  }
  ~StreamedPlans() { batchnorm::detail::plan_observer = nullptr; }
  StreamedPlans(const StreamedPlans&) = delete;
  StreamedPlans& operator=(const StreamedPlans&) = delete;
  /// The count since construction or the last reset().
  long count() const { return counter(); }
  void reset() { counter() = 0; }

 private:
  static std::atomic<long>& counter() {
    static std::atomic<long> c{0};
    return c;
  }
};

}  // namespace batchnorm_test
