// Links tu_default.cpp (default flags), tu_native.cpp (-march=native) and tu_flags.cpp
// (BATCHNORM_NO_DISPATCH); see tu.hpp. Expects the default TU to run the copy its active_isa()
// names (sse2 under BATCHNORM_ISA=sse2), the native TU its own (avx512 on an AVX-512 machine,
// whatever BATCHNORM_ISA says) and the no-dispatch TU sse2 always, with results that agree. Prints "two_tu: ok" and exits 0, or says what differs and exits 1.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "tu.hpp"

int main() {
  std::vector<float> x(4 * 3 * 5 * 7);
  std::mt19937 gen(5);
  std::normal_distribution<float> d(2.0f, 3.0f);
  for (auto& v : x) v = d(gen);
  const TuResult a = run_default(x), b = run_native(x), c = run_flags(x);
  std::printf("default TU: ran %s, active %s; native TU: ran %s, active %s; no-dispatch TU: ran %s, active %s\n",
              a.ran.c_str(), a.active.c_str(), b.ran.c_str(), b.active.c_str(), c.ran.c_str(), c.active.c_str());
  bool ok = a.ran == a.active && b.ran == b.active && c.ran == "sse2" && c.active == "sse2";
  double worst = 0;
  for (std::size_t k = 0; k < x.size(); ++k)
    for (const TuResult* r : {&a, &c})
      worst = std::fmax(worst, std::fabs(static_cast<double>(r->y[k]) - b.y[k]) / (1 + std::fabs(static_cast<double>(b.y[k]))));
  std::printf("largest relative difference of y: %.3g\n", worst);
  ok = ok && worst <= 1e-5;
  std::printf("two_tu: %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
