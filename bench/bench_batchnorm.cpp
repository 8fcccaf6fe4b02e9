// batchnorm benchmarks: forward (training, eval) and backward (training) on a table of named
// shapes and layouts, each against a memory-bandwidth baseline over the same bytes, measured in
// the same benchmark: memcpy x -> y for forwards (read x, write y), a triad for backward (read x
// and dy, write dx). The user counter x_memcpy / x_triad is the median time of our kernel over
// the median time of its baseline: 1.0 is the memory limit. A naive Eigen-expression batch norm
// is the "hand-rolled" competitor.
#include <benchmark/benchmark.h>

#include <batchnorm/batchnorm.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  const char* name;
  std::vector<Eigen::Index> dims;  // (N, C, ...) channels first
};

// The named shapes: ResNet-50 stages, a small conv net, MLP activations.
const std::vector<Shape> kShapes{
    {"resnet_s1", {32, 64, 56, 56}},
    {"resnet_s3", {64, 256, 14, 14}},
    {"small", {8, 32, 32, 32}},
    {"mlp", {4096, 1024}},
    {"mlp_wide", {256, 2048}},
};

enum class Layout { nchw, colmajor, nhwc };
const char* layout_name(Layout l) { return l == Layout::nchw ? "nchw" : l == Layout::colmajor ? "colmajor" : "nhwc"; }

enum class Op { forward_train, forward_eval, backward_train };
const char* op_name(Op o) {
  return o == Op::forward_train ? "forward_train" : o == Op::forward_eval ? "forward_eval" : "backward_train";
}

/// 64-byte aligned, seeded buffer.
template <class T>
struct Buffer {
  std::unique_ptr<T[], void (*)(void*)> p{nullptr, std::free};
  std::size_t n = 0;
  explicit Buffer(std::size_t size, std::uint32_t seed = 0) : n(size) {
    const std::size_t bytes = ((size * sizeof(T) + 63) / 64) * 64;
    p.reset(static_cast<T*>(std::aligned_alloc(64, std::max<std::size_t>(bytes, 64))));
    std::mt19937 gen(seed);
    std::normal_distribution<double> d(1.0, 2.0);
    for (std::size_t k = 0; k < n; ++k) p[k] = static_cast<T>(d(gen));
  }
  T* data() const { return p.get(); }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

/// Runs a module call on a TensorMap of rank R with the layout's dims and storage order.
template <class T, int R, int StorageOrder>
struct Runner {
  using Map = Eigen::TensorMap<Eigen::Tensor<T, R, StorageOrder>>;
  using Module = batchnorm::BatchNorm<T, R == 2 ? 1 : R - 2>;

  static void run(benchmark::State& state, const Shape& shape, Layout layout, Op op) {
    Eigen::array<Eigen::Index, R> dims;
    for (int a = 0; a < R; ++a) dims[static_cast<std::size_t>(a)] = shape.dims[static_cast<std::size_t>(a)];
    if (layout == Layout::nhwc && R > 2) std::rotate(dims.begin() + 1, dims.begin() + 2, dims.end());  // C last
    std::size_t n = 1;
    for (auto d : dims) n *= static_cast<std::size_t>(d);
    Buffer<T> x(n, 1), dy(n, 2), out(n, 3), base_out(n, 4);
    Map xm(x.data(), dims), dym(dy.data(), dims), outm(out.data(), dims);
    Module bn(batchnorm::BatchNormOptions(shape.dims[1]).channels_last(layout == Layout::nhwc));
    bn.forward(xm, outm);  // the backward needs a forward; also warms up
    if (op == Op::forward_eval) bn.eval();
    const bool triad = op == Op::backward_train;
    std::vector<double> ours, baseline;
    for (auto _ : state) {
      const auto t0 = Clock::now();
      if (op == Op::backward_train) bn.backward(xm, dym, outm);
      else bn.forward(xm, outm);
      benchmark::ClobberMemory();
      ours.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      state.PauseTiming();
      const auto t1 = Clock::now();
      if (triad) {
        const T* a = x.data();
        const T* b = dy.data();
        T* c = base_out.data();
        for (std::size_t k = 0; k < n; ++k) c[k] = a[k] + T(0.5) * b[k];
      } else {
        std::memcpy(base_out.data(), x.data(), n * sizeof(T));
      }
      benchmark::ClobberMemory();
      baseline.push_back(std::chrono::duration<double>(Clock::now() - t1).count());
      state.ResumeTiming();
    }
    const std::size_t bytes = (triad ? 3 : 2) * n * sizeof(T);
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(bytes));
    state.counters[triad ? "x_triad" : "x_memcpy"] = median(ours) / median(baseline);
  }
};

template <class T>
void run_bench(benchmark::State& state, const Shape& shape, Layout layout, Op op) {
  const auto rank = shape.dims.size();
  const bool col = layout == Layout::colmajor;
  if (rank == 2) col ? Runner<T, 2, Eigen::ColMajor>::run(state, shape, layout, op) : Runner<T, 2, Eigen::RowMajor>::run(state, shape, layout, op);
  else if (rank == 4) col ? Runner<T, 4, Eigen::ColMajor>::run(state, shape, layout, op) : Runner<T, 4, Eigen::RowMajor>::run(state, shape, layout, op);
  else state.SkipWithError("unsupported rank");
}

/// The hand-rolled alternative: Eigen Tensor expressions (reductions and broadcasts), training
/// forward of a RowMajor (N, C, H, W) tensor.
void naive_eigen_forward(benchmark::State& state, const Shape& shape) {
  const auto N = shape.dims[0], C = shape.dims[1], H = shape.dims[2], W = shape.dims[3];
  Eigen::Tensor<float, 4, Eigen::RowMajor> x(N, C, H, W), y(N, C, H, W);
  x.setRandom();
  const Eigen::array<Eigen::Index, 3> red{0, 2, 3};
  const Eigen::array<Eigen::Index, 4> bshape{1, C, 1, 1}, bcast{N, 1, H, W};
  std::vector<double> ours, baseline;
  Eigen::Tensor<float, 4, Eigen::RowMajor> copy(N, C, H, W);
  for (auto _ : state) {
    const auto t0 = Clock::now();
    const Eigen::Tensor<float, 1, Eigen::RowMajor> mean = x.mean(red);
    const Eigen::Tensor<float, 4, Eigen::RowMajor> centred = x - mean.reshape(bshape).broadcast(bcast);
    const Eigen::Tensor<float, 1, Eigen::RowMajor> var = centred.square().mean(red);
    y = centred * (var + 1e-5f).rsqrt().reshape(bshape).broadcast(bcast);
    benchmark::ClobberMemory();
    ours.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    state.PauseTiming();
    const auto t1 = Clock::now();
    std::memcpy(copy.data(), x.data(), static_cast<std::size_t>(x.size()) * sizeof(float));
    benchmark::ClobberMemory();
    baseline.push_back(std::chrono::duration<double>(Clock::now() - t1).count());
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * 2 * x.size() * 4);
  state.counters["x_memcpy"] = median(ours) / median(baseline);
}

}  // namespace

int main(int argc, char** argv) {
#ifndef NDEBUG
  std::fprintf(stderr, "batchnorm_bench: refusing to report from a debug build (NDEBUG is not defined); "
                       "build with -DCMAKE_BUILD_TYPE=Release\n");
  return 2;
#endif
  for (const Shape& s : kShapes)
    for (const Layout l : {Layout::nchw, Layout::colmajor, Layout::nhwc})
      for (const Op o : {Op::forward_train, Op::forward_eval, Op::backward_train}) {
        if (l == Layout::nhwc && s.dims.size() == 2) continue;  // (N, C) has no channels-last variant
        const std::string base = std::string(op_name(o)) + "/" + s.name + "/" + layout_name(l);
        benchmark::RegisterBenchmark(("batchnorm/f32/" + base).c_str(), [s, l, o](benchmark::State& st) {
          run_bench<float>(st, s, l, o);
        })->Unit(benchmark::kMillisecond)->UseRealTime();
        benchmark::RegisterBenchmark(("batchnorm/f64/" + base).c_str(), [s, l, o](benchmark::State& st) {
          run_bench<double>(st, s, l, o);
        })->Unit(benchmark::kMillisecond)->UseRealTime();
      }
  benchmark::RegisterBenchmark("eigen_naive/f32/forward_train/small/nchw", [](benchmark::State& st) {
    naive_eigen_forward(st, kShapes[2]);
  })->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
