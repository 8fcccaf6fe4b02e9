// The default-flags cells of bench_pair: the kernels run the copy chosen at run time.
#include "pair_cell_impl.hpp"

std::unique_ptr<bench::pair::Cell> bench::pair::make_default(const Spec& s) {
  return s.f64 ? make_type<double>(s) : make_type<float>(s);
}
