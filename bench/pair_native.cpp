// The -march=native cells of bench_pair (bench/CMakeLists.txt sets the flag on this file).
#include "pair_cell_impl.hpp"

std::unique_ptr<bench::pair::Cell> bench::pair::make_native(const Spec& s) {
  return s.f64 ? make_type<double>(s) : make_type<float>(s);
}
