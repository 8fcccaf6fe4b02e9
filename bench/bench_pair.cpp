// Runtime dispatch against -march=native in one process: every cell of our suite built twice,
// in pair_native.cpp (-march=native: only the avx512 copy of the kernels on an AVX-512 machine)
// and pair_default.cpp (the compiler's default flags: the copy chosen at run time), on the same
// buffers, called alternately (native first in even iterations, default first in odd ones).
// Counters: ms_native and ms_default, the medians of each copy's calls (warm: each call follows
// a call on the same buffers), and ratio = ms_default / ms_native. Unlike two binaries run one
// after the other (run_dispatch.sh), both copies share the process, its memory pages and the
// machine's state at that moment, so the ratio isolates the code.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "harness.hpp"
#include "pair_cell.hpp"

namespace {

using bench::Layout;
using bench::Op;
using bench::Shape;

template <class T>
void run_pair(benchmark::State& state, const Shape& shape, Layout layout, Op op, int threads) {
  using Clock = std::chrono::steady_clock;
  const auto n = static_cast<std::size_t>(shape.size());
  bench::Buffer<T> x(n, 1), dy(n, 2), out(n, 3);
  bench::set_threads(threads);
  bench::pair::Spec spec;
  spec.dims = shape.dims;
  spec.layout = layout == Layout::nchw ? 0 : layout == Layout::colmajor ? 1 : 2;
  spec.op = op == Op::forward_train ? 0 : op == Op::forward_eval ? 1 : 2;
  spec.f64 = sizeof(T) == 8;
  spec.x = x.data(), spec.dy = dy.data(), spec.out = out.data();
  const auto native = bench::pair::make_native(spec);
  const auto dflt = bench::pair::make_default(spec);
  const auto timed = [](bench::pair::Cell& c) {
    const auto t0 = Clock::now();
    c.run();
    benchmark::ClobberMemory();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  native->run(), dflt->run();  // warm up
  std::vector<double> tn, td;
  bool native_first = true;
  for (auto _ : state) {
    if (native_first) tn.push_back(timed(*native)), td.push_back(timed(*dflt));
    else td.push_back(timed(*dflt)), tn.push_back(timed(*native));
    native_first = !native_first;
  }
  const double mn = bench::median(tn), md = bench::median(td);
  state.counters["ms_native"] = mn * 1e3;
  state.counters["ms_default"] = md * 1e3;
  state.counters["ratio"] = md / mn;
  state.SetLabel(std::string("native ") + native->isa() + ", default " + dflt->isa());
}

}  // namespace

int main(int argc, char** argv) {
#ifndef NDEBUG
  std::fprintf(stderr, "batchnorm_bench_pair: refusing to report from a debug build (NDEBUG is not defined)\n");
  return 2;
#endif
  bench::for_each_cell([](const Shape& s, Layout l, Op o, int threads) {
    benchmark::RegisterBenchmark(bench::bench_name("pair", "f32", o, s, l, threads).c_str(),
                                 [s, l, o, threads](benchmark::State& st) { run_pair<float>(st, s, l, o, threads); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(bench::bench_name("pair", "f64", o, s, l, threads).c_str(),
                                 [s, l, o, threads](benchmark::State& st) { run_pair<double>(st, s, l, o, threads); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  });
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
