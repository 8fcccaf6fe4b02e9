// Synchronized batch norm over MPI against the local module: a training step (forward +
// backward) on each rank's own batch, run under `mpirun -np P` (bench/run_mpi.sh runs P = 1, 2,
// 4 and writes bench/results/mpi.md). Weak scaling: every rank holds the per-rank shape below,
// so the synchronized module normalizes over P times the samples.
//
// Every rank runs every benchmark with the same fixed iteration count (the collectives must
// match, and Google Benchmark would otherwise pick counts per process). Each iteration starts
// after a barrier; its time is the slowest rank's (an all-reduce of the per-rank times, outside
// the timed region), reported through manual timing. Only rank 0 prints.
//
// Counters: comm_bytes = bytes of the two all-reduce buffers of a step (forward 8 * (2 + 3C),
// backward 8 * (2 + 2C)), the same for any P; allreduce_us = the time of those two all-reduces
// alone (same buffers, median of the iterations).
#include <batchnorm/batchnorm.hpp>
#include <batchnorm/mpi.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

struct Shape {
  const char* name;
  Eigen::Index n, c, h, w;  // per rank; h = w = 1: an (N, C) batch
};

/// Per-rank shapes: a ResNet stage-3 block at batch 16, a tiny batch at the same layer (where
/// small batches make synchronized statistics necessary), and MLP activations.
const std::vector<Shape>& shapes() {
  static const std::vector<Shape> table{
      {"resnet_s3_n16", 16, 256, 14, 14}, {"resnet_s3_n2", 2, 256, 14, 14}, {"mlp_n256", 256, 1024, 1, 1}};
  return table;
}

constexpr int kIterations = 200;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double slowest(double t) {
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

template <int R>
void run_step(benchmark::State& state, const Shape& s, bool synchronized) {
  batchnorm::MpiCommunicator comm;
  Eigen::array<Eigen::Index, R> dims;
  if constexpr (R == 4) dims = {s.n, s.c, s.h, s.w};
  else dims = {s.n, s.c};
  Eigen::Tensor<float, R, Eigen::RowMajor> x(dims), dy(dims), y(dims), dx(dims);
  std::mt19937 gen(static_cast<std::uint32_t>(1 + comm.rank()));
  std::normal_distribution<float> d(1.0f, 2.0f);
  for (Eigen::Index k = 0; k < x.size(); ++k) x.data()[k] = d(gen), dy.data()[k] = d(gen);
  batchnorm::BatchNorm<float, R == 4 ? 2 : 1> local(batchnorm::BatchNormOptions(s.c));
  batchnorm::BatchNorm<float, R == 4 ? 2 : 1> sync(batchnorm::BatchNormOptions(s.c), comm);
  auto& bn = synchronized ? sync : local;
  bn.forward(x, y), bn.backward(x, dy, dx);  // warm up
  std::vector<double> reduce_times;
  std::vector<double> buffer(batchnorm::kStatusSize + 3 * static_cast<std::size_t>(s.c), 0.0);
  for (auto _ : state) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = std::chrono::steady_clock::now();
    bn.forward(x, y);
    bn.backward(x, dy, dx);
    const double t = seconds_since(t0);
    benchmark::ClobberMemory();
    state.SetIterationTime(slowest(t));
    if (synchronized) {  // the two all-reduces of a step, alone
      MPI_Barrier(MPI_COMM_WORLD);
      const auto t1 = std::chrono::steady_clock::now();
      comm.all_reduce(buffer.data(), buffer.size(), batchnorm::ReduceOp::moments);
      comm.all_reduce(buffer.data(), batchnorm::kStatusSize + 2 * static_cast<std::size_t>(s.c), batchnorm::ReduceOp::sum);
      reduce_times.push_back(slowest(seconds_since(t1)));
    }
  }
  const auto C = static_cast<double>(s.c);
  state.counters["ranks"] = comm.size();
  state.counters["comm_bytes"] = synchronized ? 8.0 * ((2 + 3 * C) + (2 + 2 * C)) : 0.0;
  if (!reduce_times.empty()) {
    std::nth_element(reduce_times.begin(), reduce_times.begin() + static_cast<std::ptrdiff_t>(reduce_times.size() / 2),
                     reduce_times.end());
    state.counters["allreduce_us"] = reduce_times[reduce_times.size() / 2] * 1e6;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(x.size()));
}

/// Rank 0 reports; the others run silently.
class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
#ifndef NDEBUG
  std::fprintf(stderr, "batchnorm_mpi_bench: refusing to report from a debug build (NDEBUG is not defined)\n");
  return 2;
#endif
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (const Shape& s : shapes())
    for (const bool synchronized : {false, true}) {
      const std::string name = std::string(synchronized ? "sync" : "local") + "/" + s.name;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [s, synchronized](benchmark::State& st) {
                                     if (s.h == 1) run_step<2>(st, s, synchronized);
                                     else run_step<4>(st, s, synchronized);
                                   })
          ->Iterations(kIterations)
          ->Repetitions(3)
          ->ReportAggregatesOnly(true)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  // Only rank 0 writes --benchmark_out: the others drop the flags before Google Benchmark sees them.
  if (rank != 0)
    argc = static_cast<int>(std::remove_if(argv + 1, argv + argc,
                                           [](const char* a) { return std::string(a).rfind("--benchmark_out", 0) == 0; }) -
                            argv);
  benchmark::Initialize(&argc, argv);
  NullReporter quiet;
  if (rank == 0) benchmark::RunSpecifiedBenchmarks();
  else benchmark::RunSpecifiedBenchmarks(&quiet);
  benchmark::Shutdown();
  MPI_Finalize();
  return 0;
}
