// The benchmark harness: the named shapes, layouts and operations, aligned seeded buffers, the
// memory-bound reference passes (copy, triad, read), and measure(), which times a kernel and
// its baseline in the same benchmark, warm and cold, and reports their ratios.
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
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
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

/// The one table of shapes: ResNet-50 stage 1 and 3, a small conv net, MLP activations, and an
/// MLP layer at a small batch (16 samples: the per-channel work weighs most).
inline const std::vector<Shape>& shapes() {
  static const std::vector<Shape> table{
      {"resnet_s1", {32, 64, 56, 56}}, {"resnet_s3", {64, 256, 14, 14}}, {"small", {8, 32, 32, 32}},
      {"mlp", {4096, 1024}},           {"mlp_wide", {256, 2048}},        {"mlp_b16", {16, 4096}},
  };
  return table;
}

/// nchw: RowMajor channels first (PyTorch's memory order). colmajor: ColMajor channels first
/// (Eigen's default). nhwc: channels last, RowMajor (N, H, W, C); for (N, C) shapes nhwc is
/// the same memory as nchw and is skipped.
/// spanning and blocked are not layouts of ours but the two floor benchmarks: spanning, of any
/// layout whose channels span the whole tensor (nhwc, colmajor, (N, C) RowMajor, oneDNN's nhwc);
/// blocked, of layouts that hold each channel in long rows (nchw of (N, C, H, W), oneDNN's
/// nchw and its blocked formats).
enum class Layout { nchw, colmajor, nhwc, spanning, blocked };
inline const char* layout_name(Layout l) {
  switch (l) {
    case Layout::nchw: return "nchw";
    case Layout::colmajor: return "colmajor";
    case Layout::nhwc: return "nhwc";
    case Layout::spanning: return "spanning";
    case Layout::blocked: return "blocked";
  }
  return "?";
}

enum class Op { forward_train, forward_eval, backward_train };
inline const char* op_name(Op o) {
  return o == Op::forward_train ? "forward_train" : o == Op::forward_eval ? "forward_eval" : "backward_train";
}

/// Calls f(shape, layout, op, threads) for every cell of our suite: 1 and 2 threads, every
/// shape, nchw, colmajor and nhwc (nhwc skipped for (N, C), where it is nchw), every op.
template <class F>
void for_each_cell(F f) {
  for (const int threads : {1, 2})
    for (const Shape& s : shapes())
      for (const Layout l : {Layout::nchw, Layout::colmajor, Layout::nhwc})
        for (const Op o : {Op::forward_train, Op::forward_eval, Op::backward_train})
          if (l != Layout::nhwc || s.dims.size() != 2) f(s, l, o, threads);
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

/// Buffer of n values starting `shift` bytes past a 64-byte boundary (0: aligned; 16: where
/// glibc's malloc puts a large block, as in a std::vector), filled with a seeded N(1, 2) sample.
template <class T>
struct Buffer {
  std::unique_ptr<T[], void (*)(void*)> p{nullptr, std::free};
  std::size_t n = 0, shift = 0;
  explicit Buffer(std::size_t size, std::uint32_t seed = 0, std::size_t shift_bytes = 0)
      : n(size), shift(shift_bytes / sizeof(T)) {
    const std::size_t bytes = std::max<std::size_t>(64, (((size + shift) * sizeof(T) + 63) / 64) * 64);
    p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    std::mt19937 gen(seed);
    std::normal_distribution<double> d(1.0, 2.0);
    for (std::size_t k = 0; k < n; ++k) data()[k] = static_cast<T>(d(gen));
  }
  T* data() const { return p.get() + shift; }
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

// --- Memory-bound reference passes -----------------------------------------------------------
// Each has a serial range form (begin, end), which the floors run per channel, and a parallel
// form over [0, n) on `threads` threads. `stream`: non-temporal stores (SSE2's 16-byte ones, so
// a default-flags build and a -march=native one time the same baseline), else plain stores.
// Neither wins everywhere: streaming beyond the last-level cache, plain stores within it, and
// plain ones when the output is read again soon (warm).

/// out[k] = s * x[k] (s = 1: a copy) for k in [begin, end).
template <class T>
void scale_range(const T* x, T* out, std::size_t begin, std::size_t end, T s, [[maybe_unused]] bool stream) {
  std::size_t k = begin;
#if defined(__SSE2__)
  if (stream) {
    constexpr std::size_t w = 16 / sizeof(T);
    for (; k < end && (reinterpret_cast<std::uintptr_t>(out + k) % 16) != 0; ++k) out[k] = s * x[k];
    for (; k + w <= end; k += w) {
      if constexpr (sizeof(T) == 4)
        _mm_stream_ps(reinterpret_cast<float*>(out + k), _mm_mul_ps(_mm_set1_ps(float(s)), _mm_loadu_ps(reinterpret_cast<const float*>(x + k))));
      else
        _mm_stream_pd(reinterpret_cast<double*>(out + k), _mm_mul_pd(_mm_set1_pd(double(s)), _mm_loadu_pd(reinterpret_cast<const double*>(x + k))));
    }
    _mm_sfence();
  }
#endif
  for (; k < end; ++k) out[k] = s * x[k];
}

/// STREAM triad c[k] = a[k] + 0.5 * b[k] for k in [begin, end).
template <class T>
void triad_range(const T* a, const T* b, T* c, std::size_t begin, std::size_t end, [[maybe_unused]] bool stream) {
  std::size_t k = begin;
#if defined(__SSE2__)
  if (stream) {
    constexpr std::size_t w = 16 / sizeof(T);
    for (; k < end && (reinterpret_cast<std::uintptr_t>(c + k) % 16) != 0; ++k) c[k] = a[k] + T(0.5) * b[k];
    for (; k + w <= end; k += w) {
      if constexpr (sizeof(T) == 4)
        _mm_stream_ps(reinterpret_cast<float*>(c + k),
                      _mm_add_ps(_mm_loadu_ps(reinterpret_cast<const float*>(a + k)),
                                 _mm_mul_ps(_mm_set1_ps(0.5f), _mm_loadu_ps(reinterpret_cast<const float*>(b + k)))));
      else
        _mm_stream_pd(reinterpret_cast<double*>(c + k),
                      _mm_add_pd(_mm_loadu_pd(reinterpret_cast<const double*>(a + k)),
                                 _mm_mul_pd(_mm_set1_pd(0.5), _mm_loadu_pd(reinterpret_cast<const double*>(b + k)))));
    }
    _mm_sfence();
  }
#endif
  for (; k < end; ++k) c[k] = a[k] + T(0.5) * b[k];
}

/// Sum of a[k] (+ b[k] when b is given) for k in [begin, end), with 4 vector accumulators (no
/// reduction-order constraint, so it runs at the read bandwidth): the statistics pass of a
/// training kernel reduced to its loads.
template <class T>
T sum_range(const T* a, const T* b, std::size_t begin, std::size_t end) {
  typedef T vec __attribute__((vector_size(64)));
  constexpr std::size_t w = 64 / sizeof(T);
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
  return t;
}

/// The statistics pass of an exact training kernel reduced to its loads and the arithmetic this
/// library's accuracy needs per value, with 4 independent vectors in memory order (no
/// reduction-order constraint) and c a constant near the data's mean:
///   forward  (b == nullptr):  s1 += x - c in double (float: both widened, the difference
///                             exact),  s2 += (x - c)^2 in T (float: 8 terms, then into double)
///   backward:                 s0 += dy in T (float: 8 terms, then into double),
///                             s1 += dy * (x - c) in double (float: widened, the product exact)
/// Float with AVX-512 in intrinsics (GCC 12 widens a vector extension's halves poorly: a 16-lane
/// float vector into two 8-lane double ones takes four conversions and two shuffles). Returns a
/// value that depends on every sum.
template <class T>
double exact_sums_range(const T* a, const T* b, std::size_t begin, std::size_t end, T c) {
  std::size_t k = begin;
  double t = 0;
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == sizeof(float)) {
    constexpr std::size_t U = 4, w = 16;
    const __m512 cv = _mm512_set1_ps(c);
    const __m512d cd = _mm512_set1_pd(static_cast<double>(c));
    __m512 s0[U];          // forward: the squares; backward: dy (T, 8 terms)
    __m512d s1[U][2], f0[U][2];  // s1 in double; f0: s0's flushed terms
    for (std::size_t u = 0; u < U; ++u)
      s0[u] = _mm512_setzero_ps(), s1[u][0] = s1[u][1] = f0[u][0] = f0[u][1] = _mm512_setzero_pd();
    const auto wide = [](const float* p, int h) { return _mm512_maskz_cvtps_pd(0xFF, _mm256_loadu_ps(p + 8 * h)); };
    const auto halves = [](__m512 v, int h) {
      const __m512d d = _mm512_castps_pd(v);
      return _mm512_maskz_cvtps_pd(0xFF, _mm256_castpd_ps(h ? _mm512_maskz_extractf64x4_pd(0xF, d, 1)
                                                            : _mm512_maskz_extractf64x4_pd(0xF, d, 0)));
    };
    std::size_t terms = 0;
    for (; k + U * w <= end; k += U * w) {
      for (std::size_t u = 0; u < U; ++u) {
        const float* p = reinterpret_cast<const float*>(a) + k + u * w;
        if (b) {
          const float* q = reinterpret_cast<const float*>(b) + k + u * w;
          s0[u] = _mm512_add_ps(s0[u], _mm512_loadu_ps(q));
          for (int h = 0; h < 2; ++h) s1[u][h] = _mm512_fmadd_pd(wide(q, h), _mm512_sub_pd(wide(p, h), cd), s1[u][h]);
        } else {
          const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(p), cv);
          s0[u] = _mm512_fmadd_ps(d, d, s0[u]);
          for (int h = 0; h < 2; ++h) s1[u][h] = _mm512_add_pd(s1[u][h], _mm512_sub_pd(wide(p, h), cd));
        }
      }
      if (++terms == 8) {  // the T sums into double, as the kernels flush them
        for (std::size_t u = 0; u < U; ++u) {
          for (int h = 0; h < 2; ++h) f0[u][h] = _mm512_add_pd(f0[u][h], halves(s0[u], h));
          s0[u] = _mm512_setzero_ps();
        }
        terms = 0;
      }
    }
    alignas(64) double lanes[8];
    for (std::size_t u = 0; u < U; ++u)
      for (int h = 0; h < 2; ++h) {
        _mm512_store_pd(lanes, _mm512_add_pd(_mm512_add_pd(s1[u][h], f0[u][h]), halves(s0[u], h)));
        for (const double v : lanes) t += v;
      }
  } else
#endif
  {
    typedef T vec __attribute__((vector_size(64)));
    typedef double dvec __attribute__((vector_size(64)));
    constexpr std::size_t w = 64 / sizeof(T), U = 4, L = 64 / sizeof(double);
    vec s0[U] = {};  // forward: the squares; backward: dy
    dvec s1[U] = {}, f0[U] = {};  // f0: s0's flushed terms (float)
    const auto load = [](vec& v, const T* p) { std::memcpy(&v, p, sizeof v); };
    std::size_t terms = 0;
    for (; k + U * w <= end; k += U * w) {
      for (std::size_t u = 0; u < U; ++u) {
        vec x, g{};
        load(x, a + k + u * w);
        if (b) load(g, b + k + u * w), s0[u] += g;
        else s0[u] += (x - c) * (x - c);
        if constexpr (sizeof(T) == sizeof(double)) {
          s1[u] += b ? g * (x - c) : x - c;
        } else {  // float without AVX-512: each value widened
          for (std::size_t l = 0; l < w; ++l) {
            const double d = static_cast<double>(x[l]) - static_cast<double>(c);
            s1[u][l % L] += b ? static_cast<double>(g[l]) * d : d;
          }
        }
      }
      if (sizeof(T) < sizeof(double) && ++terms == 8) {  // the T sums into double, every 8 terms
        for (std::size_t u = 0; u < U; ++u) {
          for (std::size_t l = 0; l < w; ++l) f0[u][l % L] += static_cast<double>(s0[u][l]);
          s0[u] = vec{};
        }
        terms = 0;
      }
    }
    for (std::size_t u = 0; u < U; ++u) {
      for (std::size_t l = 0; l < w; ++l) t += static_cast<double>(s0[u][l]);
      for (std::size_t l = 0; l < L; ++l) t += s1[u][l] + f0[u][l];
    }
  }
  for (; k < end; ++k) {  // both sums, in double
    const double d = static_cast<double>(a[k]) - static_cast<double>(c);
    t += b ? static_cast<double>(b[k]) + static_cast<double>(b[k]) * d : d + d * d;
  }
  return t;
}

/// A copy of n values: the baseline of forwards (an ideal forward reads x once, writes y once).
template <class T>
void copy_baseline(const T* src, T* dst, std::size_t n, int threads, bool stream) {
  split(n, threads, [&](std::size_t b, std::size_t e) { scale_range(src, dst, b, e, T(1), stream); });
}

/// The STREAM triad over n values: the baseline of backward (reads x and dy, writes dx).
template <class T>
void triad_baseline(const T* a, const T* b, T* c, std::size_t n, int threads, bool stream) {
  split(n, threads, [&](std::size_t begin, std::size_t end) { triad_range(a, b, c, begin, end, stream); });
}

/// out = 0.5 * x over n values: the write pass of a forward.
template <class T>
void scale_baseline(const T* x, T* out, std::size_t n, int threads, bool stream) {
  split(n, threads, [&](std::size_t b, std::size_t e) { scale_range(x, out, b, e, T(0.5), stream); });
}

/// The sum of f(begin, end) over the shares of [0, n) that split gives the threads, each share's
/// f run on its thread.
template <class R, class F>
R sum_of_shares(std::size_t n, int threads, F f) {
  std::vector<R> part(static_cast<std::size_t>(threads), R(0));
  split(n, threads, [&](std::size_t begin, std::size_t end) {
#ifdef _OPENMP
    part[static_cast<std::size_t>(omp_get_thread_num())] = f(begin, end);
#else
    part[0] = f(begin, end);
#endif
  });
  R total = 0;
  for (const R v : part) total += v;
  return total;
}

/// sum_range over n values on `threads` threads.
template <class T>
T read_sum(const T* a, const T* b, std::size_t n, int threads) {
  return sum_of_shares<T>(n, threads, [&](std::size_t begin, std::size_t end) { return sum_range(a, b, begin, end); });
}

/// exact_sums_range over n values on `threads` threads.
template <class T>
double read_exact_sums(const T* a, const T* b, std::size_t n, int threads, T c) {
  return sum_of_shares<double>(n, threads,
                               [&](std::size_t begin, std::size_t end) { return exact_sums_range(a, b, begin, end, c); });
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Times kernel() and a baseline over the same bytes (a copy of n values for forwards, the
/// triad for backward) in two conditions, in every iteration:
///   cold: a call right after the other one ran over different buffers of the same size (the
///         kernel after the baseline, the baseline after the kernel), so a tensor larger than
///         the L2 cache comes from the last-level cache or memory, as in a network whose layer
///         input was written long ago;
///   warm: a second call right after the first, on the same buffers (back to back), as in a
///         network where x was just written by the previous layer.
/// The baseline alternates non-temporal and plain stores between iterations and counts the
/// faster of the two per condition ("best of plain and non-temporal stores"). A kernel that
/// takes a bool (the floors) gets the same alternation and the same best-of.
/// Counters, each condition c in {warm, cold}: ms_c, the kernel's median time; baseline_ms_c,
/// the baseline's; x_copy_c (forwards) or x_triad_c (backward) = ms_c / baseline_ms_c (1.0: the
/// memory limit, below 1: the data fits in cache). Google Benchmark's own time is the warm
/// kernel call.
template <class T, class Kernel>
void measure(benchmark::State& state, Op op, std::size_t n, int threads, Kernel kernel) {
  using Clock = std::chrono::steady_clock;
  constexpr bool variants = std::is_invocable_v<Kernel&, bool>;
  set_threads(threads);
  const bool triad = op == Op::backward_train;
  Buffer<T> a(n, 101), b(n, 102), c(n, 103);
  bool stream = false;
  const auto run_kernel = [&] {
    if constexpr (variants) kernel(stream);
    else kernel();
    benchmark::ClobberMemory();
  };
  const auto run_baseline = [&] {
    if (triad) triad_baseline(a.data(), b.data(), c.data(), n, threads, stream);
    else copy_baseline(a.data(), c.data(), n, threads, stream);
    benchmark::ClobberMemory();
  };
  const auto timed = [](auto&& f) {
    const auto t0 = Clock::now();
    f();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  // [stream][warm]: the kernel's and the baseline's times
  std::vector<double> ours[2][2], base[2][2];
  run_kernel();  // warm up (page faults, first-use dispatch)
  run_baseline();
  for (auto _ : state) {
    state.PauseTiming();
    ours[stream][0].push_back(timed(run_kernel));
    state.ResumeTiming();
    ours[stream][1].push_back(timed(run_kernel));
    state.PauseTiming();
    base[stream][0].push_back(timed(run_baseline));
    base[stream][1].push_back(timed(run_baseline));
    stream = !stream;
    state.ResumeTiming();
  }
  const auto best = [](std::vector<double>(&t)[2][2], int warm) {
    const double plain = median(t[0][warm]), nt = median(t[1][warm]);
    return t[1][warm].empty() ? plain : t[0][warm].empty() ? nt : std::min(plain, nt);
  };
  const std::size_t bytes = (triad ? 3 : 2) * n * sizeof(T);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
  for (const int warm : {1, 0}) {
    const std::string c_name = warm ? "warm" : "cold";
    // A kernel without variants ran in both halves: its median over all of them.
    std::vector<double> all = ours[0][warm];
    all.insert(all.end(), ours[1][warm].begin(), ours[1][warm].end());
    const double kernel_s = variants ? best(ours, warm) : median(all), base_s = best(base, warm);
    state.counters["ms_" + c_name] = kernel_s * 1e3;
    state.counters["baseline_ms_" + c_name] = base_s * 1e3;
    state.counters[std::string(triad ? "x_triad_" : "x_copy_") + c_name] = kernel_s / base_s;
  }
  if constexpr (variants) {
    const auto stores = [&](int warm) {
      return median(ours[1][warm]) < median(ours[0][warm]) ? "non-temporal" : "plain";
    };
    state.SetLabel(std::string("warm: ") + stores(1) + " stores, cold: " + stores(0) + " stores");
  }
}

}  // namespace bench
