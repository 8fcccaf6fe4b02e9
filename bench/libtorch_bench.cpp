// libtorch's batch normalization (Debian's libtorch-dev, PyTorch 1.13) under the harness'
// naming: impl "libtorch", every shape of bench::shapes(), forward_train, forward_eval and
// backward_train, f32 and f64, 1 and 2 threads, layouts nchw (contiguous) and, for 4D shapes,
// nhwc (torch::MemoryFormat::ChannelsLast); (N, C) shapes are contiguous only.
//
// * Entry points: the ATen operators themselves, no nn::Module and no autograd graph (inputs
//   are created under c10::InferenceMode): at::native_batch_norm (training = true updates the
//   running statistics with momentum 0.1, as our module does; training = false is eval with
//   running_mean / running_var) and at::native_batch_norm_backward (train = true, from the
//   save_mean / save_invstd of one training forward, output_mask {dx, dgamma, dbeta}).
//   On CPU both dispatch to batch_norm_cpu / batch_norm_backward_cpu.
// * Outputs are allocated by every call, inside the timed kernel: libtorch 1.13 has no CPU
//   out= kernel (native_batch_norm.out dispatches to CUDA and MPS only, and
//   native_batch_norm_backward.out is the functional op followed by a copy). The allocation
//   is part of the figure; its page faults are not: with glibc's defaults a large output
//   (32 MiB and more, or a heap top trimmed after the free) is a fresh mmap in every call
//   whose first touch page-faults, which made libtorch 3-9x slower on this machine (resnet_s1
//   eval f64 57 -> 4.9 ms, backward f32 24 -> 7.5 ms).
//   register_libtorch_benchmarks() therefore raises glibc's mmap and trim thresholds, so a
//   freed output is reused as jemalloc / tcmalloc (PyTorch's advice for CPU) would. This is
//   process-wide: batchnorm and oneDNN do not allocate in their timed code; eigen_naive does
//   (1 MiB temporaries, which glibc's dynamic threshold keeps on the heap anyway).
// * Threads: Debian's libtorch uses the OpenMP parallel backend (the same libgomp as our
//   binary). at::set_num_threads(t) sets both ATen's count and omp_set_num_threads; without
//   it ATen's lazy initialisation resets OpenMP to its own default (1 thread on this 2-core VM)
//   at the first parallel_for. ATen runs loops shorter than its grain size (32768) serially.
#include "competitors.hpp"
#include "harness.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <malloc.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <tuple>

namespace bench {
namespace {

constexpr double eps = 1e-5;
constexpr double momentum = 0.1;

template <class T>
void run(benchmark::State& state, const Shape& shape, Layout layout, Op op, int threads) {
  at::set_num_threads(threads);
  c10::InferenceMode no_autograd;
  const auto n = static_cast<std::size_t>(shape.size());
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const auto format = layout == Layout::nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  // The seeded values of bench::Buffer, as our benchmarks use, in the layout's memory order.
  auto filled = [&](at::IntArrayRef sizes, std::uint32_t seed, at::MemoryFormat f) {
    at::Tensor t = at::empty(sizes, options.memory_format(f));
    const Buffer<T> source(static_cast<std::size_t>(t.numel()), seed);
    std::memcpy(t.data_ptr<T>(), source.data(), static_cast<std::size_t>(t.numel()) * sizeof(T));
    return t;
  };
  const std::int64_t C = shape.dims[1];
  const at::Tensor x = filled(shape.dims, 1, format), dy = filled(shape.dims, 2, format);
  const at::Tensor weight = filled({C}, 4, at::MemoryFormat::Contiguous);
  const at::Tensor bias = filled({C}, 5, at::MemoryFormat::Contiguous);
  at::Tensor running_mean = at::zeros({C}, options), running_var = at::ones({C}, options);

  if (op != Op::backward_train) {
    const bool training = op == Op::forward_train;
    measure<T>(state, op, n, threads, [&] {
      const auto result = at::native_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps);
      benchmark::DoNotOptimize(std::get<0>(result).data_ptr());
    });
    return;
  }

  const auto saved = at::native_batch_norm(x, weight, bias, running_mean, running_var, true, momentum, eps);
  const at::Tensor save_mean = std::get<1>(saved), save_invstd = std::get<2>(saved);
  measure<T>(state, op, n, threads, [&] {
    const auto grads = at::native_batch_norm_backward(dy, x, weight, running_mean, running_var, save_mean, save_invstd,
                                                      true, eps, std::array<bool, 3>{true, true, true});
    benchmark::DoNotOptimize(std::get<0>(grads).data_ptr());
  });
}

template <class T>
void register_dtype(const Shape& s, Layout l, Op op, int threads) {
  benchmark::RegisterBenchmark(bench_name("libtorch", dtype_name<T>(), op, s, l, threads).c_str(),
                               [s, l, op, threads](benchmark::State& st) { run<T>(st, s, l, op, threads); })
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

}  // namespace

void register_libtorch_benchmarks() {
  // 1 GiB: outputs come from the heap and are reused, and the heap's top stays mapped.
  if (mallopt(M_MMAP_THRESHOLD, 1 << 30) == 0 || mallopt(M_TRIM_THRESHOLD, 1 << 30) == 0)
    std::fprintf(stderr, "libtorch: mallopt failed; large outputs will page-fault in every call\n");
  for (const int threads : {1, 2})
    for (const Shape& s : shapes())
      for (const Layout l : {Layout::nchw, Layout::nhwc})
        for (const Op op : {Op::forward_train, Op::forward_eval, Op::backward_train}) {
          if (l == Layout::nhwc && s.dims.size() == 2) continue;  // (N, C): channels last is nchw
          register_dtype<float>(s, l, op, threads);
          register_dtype<double>(s, l, op, threads);
        }
}

}  // namespace bench
