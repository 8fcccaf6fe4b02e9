// batchnorm: configuration macros. Every BATCHNORM_ macro is defined here and nowhere else.
#pragma once

#include <cassert>

#define BATCHNORM_VERSION_MAJOR 0
#define BATCHNORM_VERSION_MINOR 1
#define BATCHNORM_VERSION_PATCH 0

/// Internal invariant check (not for user errors, which throw). Define BATCHNORM_ASSERT before
/// including any batchnorm header to route it elsewhere; the default is assert().
#ifndef BATCHNORM_ASSERT
#define BATCHNORM_ASSERT(cond, msg) assert((cond) && (msg))
#endif
