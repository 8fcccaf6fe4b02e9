// batchnorm::functional: View, Index and accum_t (defined in batchnorm/view.hpp, below both
// layers), under the names the functional API has always used.
#pragma once

#include "../view.hpp"
