// batchnorm::functional: stateless batch normalization on raw pointers and a strided
// (outer, C, inner) View. No Eigen types; nothing allocated (the backward passes take a 2*C
// workspace, or allocate it when given none); every function checks its arguments first
// (std::invalid_argument) and then cannot fail.
#pragma once

#include "functional/backward.hpp"
#include "functional/forward.hpp"
#include "functional/running_stats.hpp"
#include "functional/stats.hpp"
#include "functional/view.hpp"
