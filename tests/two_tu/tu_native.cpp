#define TU_FUNCTION run_native
#include "tu_body.hpp"
