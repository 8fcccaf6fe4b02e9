// batchnorm: batch normalization over Eigen tensors with PyTorch's semantics.
// Umbrella header: everything public. The library never prints.
#pragma once

#include "batch_norm.hpp"
#include "communicator.hpp"
#include "config.hpp"
#include "fold.hpp"
#include "functional.hpp"
#include "isa.hpp"
#include "options.hpp"
#include "state.hpp"
