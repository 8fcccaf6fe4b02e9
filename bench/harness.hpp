// The benchmark harness: the named shapes, layouts and operations, aligned seeded buffers, the
// memory-bandwidth baselines, and measure(), which times a kernel and its baseline interleaved
// in the same benchmark and reports their ratio.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace bench {

/// A named shape, channels first: (N, C, H, W) or (N, C).
struct Shape {
  const char* name;
  std::vector<std::int64_t> dims;
  std::int64_t size() const {
    std::int64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
};

/// The one table of shapes: ResNet-50 stage 1 and 3, a small conv net, MLP activations.
inline const std::vector<Shape>& shapes() {
  static const std::vector<Shape> table{
      {"resnet_s1", {32, 64, 56, 56}}, {"resnet_s3", {64, 256, 14, 14}}, {"small", {8, 32, 32, 32}},
      {"mlp", {4096, 1024}},           {"mlp_wide", {256, 2048}},
  };
  return table;
}

/// nchw: RowMajor channels first (PyTorch's memory order). colmajor: ColMajor channels first
/// (Eigen's default). nhwc: channels last, RowMajor (N, H, W, C); for (N, C) shapes nhwc is
/// the same memory as nchw and is skipped.
/// spanning: not a layout of ours, the floor benchmark of any layout whose channels span the
/// whole tensor (nhwc, colmajor, and oneDNN's nhwc).
enum class Layout { nchw, colmajor, nhwc, spanning };
inline const char* layout_name(Layout l) {
  return l == Layout::nchw ? "nchw" : l == Layout::colmajor ? "colmajor" : l == Layout::nhwc ? "nhwc" : "spanning";
}

enum class Op { forward_train, forward_eval, backward_train };
inline const char* op_name(Op o) {
  return o == Op::forward_train ? "forward_train" : o == Op::forward_eval ? "forward_eval" : "backward_train";
}

/// "<impl>/<dtype>/<op>/<shape>/<layout>/threads:<t>", the naming every benchmark follows.
inline std::string bench_name(const std::string& impl, const std::string& dtype, Op op, const Shape& s, Layout l,
                              int threads) {
  return impl + "/" + dtype + "/" + op_name(op) + "/" + s.name + "/" + layout_name(l) + "/threads:" +
         std::to_string(threads);
}

template <class T>
const char* dtype_name() {
  return sizeof(T) == 4 ? "f32" : "f64";
}

/// 64-byte aligned buffer of n values, filled with a seeded N(1, 2) sample.
template <class T>
struct Buffer {
  std::unique_ptr<T[], void (*)(void*)> p{nullptr, std::free};
  std::size_t n = 0;
  explicit Buffer(std::size_t size, std::uint32_t seed = 0) : n(size) {
    const std::size_t bytes = std::max<std::size_t>(64, ((size * sizeof(T) + 63) / 64) * 64);
    p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    std::mt19937 gen(seed);
    std::normal_distribution<double> d(1.0, 2.0);
    for (std::size_t k = 0; k < n; ++k) p[k] = static_cast<T>(d(gen));
  }
  T* data() const { return p.get(); }
};

inline void set_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

/// Calls f(begin, end) on `threads` equal parts of [0, n).
template <class F>
void split(std::size_t n, int threads, F f) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t) f(n * std::size_t(t) / std::size_t(threads), n * std::size_t(t + 1) / std::size_t(threads));
#else
  (void)threads;
  f(std::size_t(0), n);
#endif
}

/// memcpy of n values (glibc picks non-temporal stores for large sizes), on `threads` threads.
template <class T>
void memcpy_baseline(const T* src, T* dst, std::size_t n, int threads) {
  split(n, threads, [&](std::size_t b, std::size_t e) { std::memcpy(dst + b, src + b, (e - b) * sizeof(T)); });
}

/// STREAM triad c = a + s * b over n values, with non-temporal stores where the ISA has them
/// (as the best memcpy), or plain ones if !stream, on `threads` threads.
template <class T>
void triad_baseline(const T* a, const T* b, T* c, std::size_t n, int threads, [[maybe_unused]] bool stream = true) {
  split(n, threads, [&](std::size_t begin, std::size_t end) {
    std::size_t k = begin;
#if defined(__AVX__)
    constexpr std::size_t w = 32 / sizeof(T);
    for (; stream && k < end && (reinterpret_cast<std::uintptr_t>(c + k) % 32) != 0; ++k) c[k] = a[k] + T(0.5) * b[k];
    for (; stream && k + w <= end; k += w) {
      if constexpr (sizeof(T) == 4)
        _mm256_stream_ps(c + k, _mm256_add_ps(_mm256_loadu_ps(a + k), _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_loadu_ps(b + k))));
      else
        _mm256_stream_pd(c + k, _mm256_add_pd(_mm256_loadu_pd(a + k), _mm256_mul_pd(_mm256_set1_pd(0.5), _mm256_loadu_pd(b + k))));
    }
    _mm_sfence();
#endif
    for (; k < end; ++k) c[k] = a[k] + T(0.5) * b[k];
  });
}

/// out = s * x over n values with non-temporal stores where the ISA has them, or plain ones if
/// !stream (the write pass of a forward), on `threads` threads.
template <class T>
void scale_baseline(const T* x, T* out, std::size_t n, int threads, [[maybe_unused]] bool stream = true) {
  split(n, threads, [&](std::size_t begin, std::size_t end) {
    std::size_t k = begin;
#if defined(__AVX__)
    constexpr std::size_t w = 32 / sizeof(T);
    for (; stream && k < end && (reinterpret_cast<std::uintptr_t>(out + k) % 32) != 0; ++k) out[k] = T(0.5) * x[k];
    for (; stream && k + w <= end; k += w) {
      if constexpr (sizeof(T) == 4)
        _mm256_stream_ps(out + k, _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_loadu_ps(x + k)));
      else
        _mm256_stream_pd(out + k, _mm256_mul_pd(_mm256_set1_pd(0.5), _mm256_loadu_pd(x + k)));
    }
    _mm_sfence();
#endif
    for (; k < end; ++k) out[k] = T(0.5) * x[k];
  });
}

/// Sum of a[k] (+ b[k] when b is given) over n values, with 4 vector accumulators (no
/// reduction-order constraint, so it runs at the read bandwidth), on `threads` threads: the
/// statistics pass of a training kernel reduced to its loads.
template <class T>
T read_sum(const T* a, const T* b, std::size_t n, int threads) {
  typedef T vec __attribute__((vector_size(64)));
  constexpr std::size_t w = 64 / sizeof(T);
  std::vector<T> part(static_cast<std::size_t>(threads), T(0));
  split(n, threads, [&](std::size_t begin, std::size_t end) {
    vec s0{}, s1{}, s2{}, s3{};
    std::size_t k = begin;
    // s += the w values at p. By reference, not a vector returned by value: without AVX-512 a
    // 64-byte vector has no register to be returned in (GCC's -Wpsabi note about that ABI).
    const auto add = [](vec& s, const T* p) {
      vec v;
      std::memcpy(&v, p, sizeof v);
      s += v;
    };
    for (; k + 4 * w <= end; k += 4 * w) {
      add(s0, a + k), add(s1, a + k + w), add(s2, a + k + 2 * w), add(s3, a + k + 3 * w);
      if (b) add(s0, b + k), add(s1, b + k + w), add(s2, b + k + 2 * w), add(s3, b + k + 3 * w);
    }
    T t = 0;
    for (; k < end; ++k) t += a[k] + (b ? b[k] : T(0));
    const vec s = (s0 + s1) + (s2 + s3);
    for (std::size_t l = 0; l < w; ++l) t += s[l];
#ifdef _OPENMP
    part[static_cast<std::size_t>(omp_get_thread_num())] = t;
#else
    part[0] = t;
#endif
  });
  T total = 0;
  for (const T v : part) total += v;
  return total;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Times kernel() every iteration and, interleaved, the baseline over the same bytes: memcpy of
/// n values for forwards (an ideal forward reads x once and writes y once), a triad for backward
/// (reads x and dy once, writes dx once). Reports bytes_per_second for the ideal traffic and the
/// counter x_memcpy / x_triad = median(kernel) / median(baseline): 1.0 is the memory limit.
template <class T, class Kernel>
void measure(benchmark::State& state, Op op, std::size_t n, int threads, Kernel kernel) {
  using Clock = std::chrono::steady_clock;
  set_threads(threads);
  const bool triad = op == Op::backward_train;
  Buffer<T> a(n, 101), b(n, 102), c(n, 103);
  kernel();  // warm up
  std::vector<double> ours, base;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    kernel();
    benchmark::ClobberMemory();
    ours.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    state.PauseTiming();
    const auto t1 = Clock::now();
    if (triad) triad_baseline(a.data(), b.data(), c.data(), n, threads);
    else memcpy_baseline(a.data(), c.data(), n, threads);
    benchmark::ClobberMemory();
    base.push_back(std::chrono::duration<double>(Clock::now() - t1).count());
    state.ResumeTiming();
  }
  const std::size_t bytes = (triad ? 3 : 2) * n * sizeof(T);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  state.counters[triad ? "x_triad" : "x_memcpy"] = median(ours) / median(base);
  state.counters["baseline_ms"] = median(base) * 1e3;
}

}  // namespace bench
