// The cells of pair_cell.hpp, included once by each of pair_native.cpp and pair_default.cpp. The
// class templates live in an anonymous namespace: the two translation units instantiate them
// with different flags, and the linker must not merge the two copies.
#pragma once

#include <batchnorm/batchnorm.hpp>

#include <algorithm>

#include "pair_cell.hpp"

namespace bench::pair {
namespace {

template <class T, int R, int Order>
class CellT final : public Cell {
 public:
  using Map = Eigen::TensorMap<Eigen::Tensor<T, R, Order>>;
  CellT(const Spec& s, const Eigen::array<Eigen::Index, R>& dims, Eigen::Index channels)
      : bn_(batchnorm::BatchNormOptions(channels).channels_last(s.layout == 2)),
        x_(static_cast<T*>(s.x), dims),
        dy_(static_cast<T*>(s.dy), dims),
        out_(static_cast<T*>(s.out), dims),
        op_(s.op) {
    bn_.forward(x_, out_);  // backward needs a forward
    if (op_ == 1) bn_.eval();
  }
  void run() override {
    if (op_ == 2) bn_.backward(x_, dy_, out_);
    else bn_.forward(x_, out_);
  }
  const char* isa() const override { return batchnorm::isa_name(batchnorm::active_isa()); }

 private:
  batchnorm::BatchNorm<T, R == 2 ? 1 : R - 2> bn_;
  Map x_, dy_, out_;
  int op_;
};

template <class T, int R>
std::unique_ptr<Cell> make_rank(const Spec& s) {
  Eigen::array<Eigen::Index, R> dims;
  for (int a = 0; a < R; ++a) dims[std::size_t(a)] = Eigen::Index(s.dims[std::size_t(a)]);
  const Eigen::Index channels = dims[1];
  if (s.layout == 2) std::rotate(dims.begin() + 1, dims.begin() + 2, dims.end());  // C last
  if (s.layout == 1) return std::make_unique<CellT<T, R, Eigen::ColMajor>>(s, dims, channels);
  return std::make_unique<CellT<T, R, Eigen::RowMajor>>(s, dims, channels);
}

template <class T>
std::unique_ptr<Cell> make_type(const Spec& s) {
  return s.dims.size() == 2 ? make_rank<T, 2>(s) : make_rank<T, 4>(s);
}

}  // namespace
}  // namespace bench::pair
