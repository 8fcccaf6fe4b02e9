// Three translation units compiled with different flags (tu_default.cpp: the compiler's
// defaults; tu_native.cpp: -march=native; tu_flags.cpp: defaults and BATCHNORM_NO_DISPATCH),
// linked into one program (main.cpp). Each runs the same training
// forward through batchnorm and reports the Isa of the copy that ran it (plan observer) and its
// own active_isa(). Were the instantiations of the two merged by the linker (an ODR violation),
// one of them would report the other's copy.
#pragma once

#include <string>
#include <vector>

struct TuResult {
  std::string ran;     // isa_name of the copy that ran the kernel
  std::string active;  // isa_name(active_isa()) in that translation unit
  std::vector<float> y;
};

TuResult run_default(const std::vector<float>& x);
TuResult run_native(const std::vector<float>& x);
TuResult run_flags(const std::vector<float>& x);
