// One cell of the suite (our module, one op on one shape and layout) behind an interface that
// carries no Eigen or batchnorm type, so that translation units compiled with different flags
// can each build their own (bench_pair.cpp). Pointers only cross: Eigen tensors must not pass
// between translation units built with different -march flags.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace bench::pair {

/// What a cell runs: dims channels first ((N, C) or (N, C, H, W)); layout 0 nchw, 1 colmajor,
/// 2 nhwc; op 0 forward train, 1 forward eval, 2 backward train; x, dy, out: caller buffers of
/// the tensor's size.
struct Spec {
  std::vector<std::int64_t> dims;
  int layout = 0, op = 0;
  bool f64 = false;
  void *x = nullptr, *dy = nullptr, *out = nullptr;
};

class Cell {
 public:
  virtual ~Cell() = default;
  virtual void run() = 0;  ///< one call of the op
  virtual const char* isa() const = 0;  ///< batchnorm::active_isa() of the cell's translation unit
};

/// Defined in pair_native.cpp (-march=native) and pair_default.cpp (default flags).
std::unique_ptr<Cell> make_native(const Spec& spec);
std::unique_ptr<Cell> make_default(const Spec& spec);

}  // namespace bench::pair
