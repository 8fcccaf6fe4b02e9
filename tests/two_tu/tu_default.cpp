#define TU_FUNCTION run_default
#include "tu_body.hpp"
