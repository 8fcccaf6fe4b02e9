// Compiled with -DBATCHNORM_NO_DISPATCH and the default flags: one copy, the flags' (sse2).
#define TU_FUNCTION run_flags
#include "tu_body.hpp"
