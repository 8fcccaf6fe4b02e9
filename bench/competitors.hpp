// Competitors compiled into the benchmark binary when their libraries are found (see
// bench/CMakeLists.txt): each registers its benchmarks under the harness' naming.
#pragma once

namespace bench {
#ifdef BATCHNORM_BENCH_HAVE_ONEDNN
void register_onednn_benchmarks();
#endif
#ifdef BATCHNORM_BENCH_HAVE_LIBTORCH
void register_libtorch_benchmarks();
#endif
}  // namespace bench
