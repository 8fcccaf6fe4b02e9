// batchnorm benchmarks: forward (training, eval) and backward (training) over the named shapes
// and layouts of harness.hpp, float and double, 1 and 2 threads, each warm and cold against its
// memory baseline measured in the same benchmark (x_copy_*, x_triad_*: 1.0 is the memory limit);
// the two floors of a training kernel; a naive Eigen-expression batch norm, and oneDNN /
// libtorch when they were found.
#include <batchnorm/batchnorm.hpp>

#include <cstdio>
#include <cstring>

#include "competitors.hpp"
#include "harness.hpp"

namespace {

using bench::Layout;
using bench::Op;
using bench::Shape;

/// Our module on TensorMaps of rank R in the layout's dims and storage order, over buffers that
/// start `shift` bytes past a 64-byte boundary.
template <class T, int R, int StorageOrder>
void run_ours(benchmark::State& state, const Shape& shape, Layout layout, Op op, int threads, std::size_t shift) {
  using Map = Eigen::TensorMap<Eigen::Tensor<T, R, StorageOrder>>;
  using Module = batchnorm::BatchNorm<T, R == 2 ? 1 : R - 2>;
  Eigen::array<Eigen::Index, R> dims;
  for (int a = 0; a < R; ++a) dims[std::size_t(a)] = Eigen::Index(shape.dims[std::size_t(a)]);
  if (layout == Layout::nhwc) std::rotate(dims.begin() + 1, dims.begin() + 2, dims.end());  // C last
  const auto n = static_cast<std::size_t>(shape.size());
  bench::Buffer<T> x(n, 1, shift), dy(n, 2, shift), out(n, 3, shift);
  Map xm(x.data(), dims), dym(dy.data(), dims), outm(out.data(), dims);
  Module bn(batchnorm::BatchNormOptions(shape.dims[1]).channels_last(layout == Layout::nhwc));
  bench::set_threads(threads);
  bn.forward(xm, outm);  // backward needs a forward
  if (op == Op::forward_eval) bn.eval();
  bench::measure<T>(state, op, n, threads, [&] {
    if (op == Op::backward_train) bn.backward(xm, dym, outm);
    else bn.forward(xm, outm);
  });
}

template <class T>
void run_ours_any(benchmark::State& state, const Shape& shape, Layout layout, Op op, int threads, std::size_t shift = 0) {
  const bool col = layout == Layout::colmajor;
  if (shape.dims.size() == 2)
    col ? run_ours<T, 2, Eigen::ColMajor>(state, shape, layout, op, threads, shift)
        : run_ours<T, 2, Eigen::RowMajor>(state, shape, layout, op, threads, shift);
  else
    col ? run_ours<T, 4, Eigen::ColMajor>(state, shape, layout, op, threads, shift)
        : run_ours<T, 4, Eigen::RowMajor>(state, shape, layout, op, threads, shift);
}

/// The hand-rolled alternative: Eigen Tensor expressions (reductions and broadcasts), training
/// forward of a RowMajor (N, C, H, W) tensor.
void run_eigen_naive(benchmark::State& state, const Shape& shape, int threads) {
  const Eigen::Index N = shape.dims[0], C = shape.dims[1], H = shape.dims[2], W = shape.dims[3];
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(N, C, H, W), y(N, C, H, W);
  x.setRandom();
  const Eigen::array<Eigen::Index, 3> red{0, 2, 3};
  const Eigen::array<Eigen::Index, 4> bshape{1, C, 1, 1}, bcast{N, 1, H, W};
  bench::measure<float>(state, Op::forward_train, static_cast<std::size_t>(x.size()), threads, [&] {
    const Eigen::Tensor<float, 1, Eigen::RowMajor> mean = x.mean(red);
    const Eigen::Tensor<float, 4, Eigen::RowMajor> centred = x - mean.reshape(bshape).broadcast(bcast);
    const Eigen::Tensor<float, 1, Eigen::RowMajor> var = centred.square().mean(red);
    y = centred * (var + 1e-5f).rsqrt().reshape(bshape).broadcast(bcast);
  });
}

/// The floor of a training kernel in a layout where each channel spans the whole tensor
/// (channels-last, ColMajor, (N, C) RowMajor): its statistics need every value before the first
/// output, so a tensor larger than the last-level cache is read twice from memory. Timed: a
/// read-only pass (x; x and dy for backward), then the write pass (y = s * x; the triad for
/// backward), both at full bandwidth with no arithmetic to speak of. measure() runs it with
/// plain and non-temporal stores and counts the faster. No kernel in such a layout can beat it.
/// With `exact` (floor_exact), the read pass does the arithmetic of this library's accurate
/// statistics (exact_sums_range: sums of x - c in double) instead of plain sums: the floor of an
/// algorithm held to the accuracy bar, where that arithmetic, not memory, is the limit.
template <class T>
void run_floor_spanning(benchmark::State& state, const Shape& shape, Op op, int threads, bool exact) {
  const auto n = static_cast<std::size_t>(shape.size());
  bench::Buffer<T> x(n, 1), dy(n, 2), out(n, 3);
  const T* d = op == Op::backward_train ? dy.data() : nullptr;
  bench::measure<T>(state, op, n, threads, [&](bool stream) {
    if (exact) benchmark::DoNotOptimize(bench::read_exact_sums(x.data(), d, n, threads, x.data()[0]));
    else benchmark::DoNotOptimize(bench::read_sum(x.data(), d, n, threads));
    if (d) bench::triad_baseline(x.data(), d, out.data(), n, threads, stream);
    else bench::scale_baseline(x.data(), out.data(), n, threads, stream);
  });
}

/// The floor of a training kernel in RowMajor (N, C, H, W), where channel c is N rows of H * W
/// values: an exact kernel reads each channel from memory once (its statistics), reads it again
/// from L2 and writes the output. Timed: exactly that, for groups of neighbouring channels whose
/// inputs fit in 1 MiB of L2 (their rows are contiguous for each n, so the reads run in long
/// streams the hardware prefetches, not one short row at a time), the groups split among the
/// threads: the read pass (sum_range over x; x and dy for backward), then the write pass over
/// the same rows (y = s * x; the triad for backward). `exact`: as run_floor_spanning.
template <class T>
void run_floor_blocked(benchmark::State& state, const Shape& shape, Op op, int threads, bool exact) {
  const auto n = static_cast<std::size_t>(shape.size());
  const auto N = static_cast<std::size_t>(shape.dims[0]), C = static_cast<std::size_t>(shape.dims[1]);
  const std::size_t row = n / (N * C);
  bench::Buffer<T> x(n, 1), dy(n, 2), out(n, 3);
  const T* d = op == Op::backward_train ? dy.data() : nullptr;
  const std::size_t channel_bytes = N * row * sizeof(T) * (d ? 2 : 1);
  const std::size_t group = std::clamp<std::size_t>((std::size_t(1) << 20) / std::max<std::size_t>(1, channel_bytes), 1, C);
  const std::size_t groups = (C + group - 1) / group;
  bench::measure<T>(state, op, n, threads, [&](bool stream) {
    bench::split(groups, threads, [&](std::size_t g0, std::size_t g1) {
      for (std::size_t g = g0; g < g1; ++g) {
        const std::size_t c0 = g * group, run = (std::min(C, c0 + group) - c0) * row;
        double s = 0;
        for (std::size_t i = 0; i < N; ++i) {
          const std::size_t o = (i * C + c0) * row;
          if (exact) s += bench::exact_sums_range(x.data(), d, o, o + run, x.data()[0]);
          else s += static_cast<double>(bench::sum_range(x.data(), d, o, o + run));
        }
        benchmark::DoNotOptimize(s);
        for (std::size_t i = 0; i < N; ++i) {
          const std::size_t o = (i * C + c0) * row;
          if (d) bench::triad_range(x.data(), d, out.data(), o, o + run, stream);
          else bench::scale_range(x.data(), out.data(), o, o + run, T(0.5), stream);
        }
      }
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
#ifndef NDEBUG
  std::fprintf(stderr,
               "batchnorm_bench: refusing to report from a debug build (NDEBUG is not defined); "
               "configure with -DCMAKE_BUILD_TYPE=Release (cmake --preset release)\n");
  return 2;
#endif
  // --print-isa: print the kernel copy this binary runs (batchnorm::active_isa(): runtime
  // dispatch, capped by BATCHNORM_ISA) and exit. The JSON context records it too.
  const char* isa = batchnorm::isa_name(batchnorm::active_isa());
  if (argc == 2 && std::strcmp(argv[1], "--print-isa") == 0) {
    std::printf("%s\n", isa);
    return 0;
  }
  benchmark::AddCustomContext("batchnorm_isa", isa);
  bench::for_each_cell([](const Shape& s, Layout l, Op o, int threads) {
    benchmark::RegisterBenchmark(bench::bench_name("batchnorm", "f32", o, s, l, threads).c_str(),
                                 [s, l, o, threads](benchmark::State& st) { run_ours_any<float>(st, s, l, o, threads); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(bench::bench_name("batchnorm", "f64", o, s, l, threads).c_str(),
                                 [s, l, o, threads](benchmark::State& st) { run_ours_any<double>(st, s, l, o, threads); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    // The same on buffers 16 bytes past a cache line, as a std::vector's large block from glibc's
    // malloc: vectors stored at the output's addresses are not aligned.
    benchmark::RegisterBenchmark(bench::bench_name("batchnorm_malloc", "f32", o, s, l, threads).c_str(),
                                 [s, l, o, threads](benchmark::State& st) { run_ours_any<float>(st, s, l, o, threads, 16); })
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  });
  for (const int threads : {1, 2})
    for (const Shape& s : bench::shapes())
      for (const Op o : {Op::forward_train, Op::backward_train}) {
        for (const Layout l : {Layout::blocked, Layout::spanning}) {
          if (l == Layout::blocked && s.dims.size() == 2) continue;  // (N, C): rows of one value
          for (const bool exact : {false, true}) {
            const auto run_floor = [s, o, l, threads, exact](auto zero, benchmark::State& st) {
              using T = decltype(zero);
              if (l == Layout::blocked) run_floor_blocked<T>(st, s, o, threads, exact);
              else run_floor_spanning<T>(st, s, o, threads, exact);
            };
            const char* impl = exact ? "floor_exact" : "floor";
            benchmark::RegisterBenchmark(bench::bench_name(impl, "f32", o, s, l, threads).c_str(),
                                         [run_floor](benchmark::State& st) { run_floor(0.0f, st); })
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
            benchmark::RegisterBenchmark(bench::bench_name(impl, "f64", o, s, l, threads).c_str(),
                                         [run_floor](benchmark::State& st) { run_floor(0.0, st); })
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
          }
        }
      }
  // Eigen expressions are ~400x memcpy: one shape is enough to make the point.
  const Shape& small = bench::shapes()[2];
  benchmark::RegisterBenchmark(bench::bench_name("eigen_naive", "f32", Op::forward_train, small, Layout::nchw, 1).c_str(),
                               [&small](benchmark::State& st) { run_eigen_naive(st, small, 1); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
#ifdef BATCHNORM_BENCH_HAVE_ONEDNN
  bench::register_onednn_benchmarks();
#endif
#ifdef BATCHNORM_BENCH_HAVE_LIBTORCH
  bench::register_libtorch_benchmarks();
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
