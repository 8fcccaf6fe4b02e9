// batchnorm: one ISA copy of the kernels, in dependency order. No include guard: included by
// detail/dispatch.hpp once per ISA, inside namespace detail::<isa>, which defines kBytes (the
// vector width) and kIsa; every file of isa/ assumes that and includes nothing itself.
#include "simd.hpp"
#include "sums.hpp"
#include "row_path.hpp"
#include "lane_path.hpp"
#include "wide_rows.hpp"
#include "store.hpp"
#include "drivers.hpp"
