// oneDNN's batch normalization (Debian's libdnnl-dev, oneDNN 2.6 C++ API) under the harness'
// naming: impl "onednn", every shape of bench::shapes(), forward_train, forward_eval and
// backward_train, 1 and 2 threads, in every memory format oneDNN offers for the shape.
//
// * f32 only: oneDNN 2.6 has no f64 data type, so no f64 batch normalization.
// * Formats (layout field of the name):
//     4D (N, C, H, W): nchw (format_tag::nchw), nhwc (format_tag::nhwc) and oneDNN's blocked
//     nChw16c and nChw8c (channels in blocks of 16 or 8 innermost: oneDNN's own formats for
//     AVX-512 and AVX2, whichever the CPU has gets the JIT kernel, the other the reference one;
//     no user tensor is stored like this, so a user pays a reorder into and out of it, which
//     is not timed here). Every shape has C % 16 == 0, so the blocked formats hold no padding.
//     2D (N, C): format_tag::nc (layout "nchw") and format_tag::cn (layout "colmajor": the
//     ColMajor memory of (N, C)); a format oneDNN turns down is skipped with a note on stderr.
// * The label of each benchmark is oneDNN's implementation name (e.g. bnorm_jit:avx2, ncsp_bnorm:any,
//   bnorm_ref:any), so the report shows which kernel a format got.
// * The primitive, its memories (src, dst, scale, shift, mean, variance, workspace, diffs) are
//   created outside the timed kernel, which executes the primitive and waits on the stream.
//   forward_train is prop_kind::forward_training with use_scale | use_shift (it writes mean and
//   variance; oneDNN keeps no running statistics, that O(C) update is the caller's);
//   forward_eval is forward_inference with use_global_stats; backward_train is
//   prop_kind::backward (dx, dgamma, dbeta) from the statistics of one training forward.
// * Threads: Debian builds oneDNN with the OpenMP runtime (DNNL_CPU_RUNTIME == OMP), so it uses
//   omp_get_max_threads() of the calling thread, which bench::set_threads() sets (checked:
//   DNNL_VERBOSE=1 reports nthr:1 / nthr:2, and 2 threads are faster on an idle machine).
//   oneDNN may split a primitive's work by the thread count when it is created, so the
//   primitive is created after set_threads(); its primitive cache keys on the thread count.
#include "competitors.hpp"
#include "harness.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

namespace bench {
namespace {

using dnnl::memory;
using dnnl::normalization_flags;
using dnnl::prop_kind;
using Tag = memory::format_tag;

constexpr float eps = 1e-5f;

struct Format {
  const char* name;  // the layout field of the benchmark name
  Tag tag;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::string name(Op op, const Shape& s, const Format& f, int threads) {
  return std::string("onednn/f32/") + op_name(op) + "/" + s.name + "/" + f.name + "/threads:" + std::to_string(threads);
}

memory::desc data_desc(const Shape& s, Tag tag) {
  return memory::desc(memory::dims(s.dims.begin(), s.dims.end()), memory::data_type::f32, tag);
}

/// A memory for md, zeroed (blocked formats may pad) and then filled with the seeded values
/// of bench::Buffer, as our benchmarks use.
memory filled(const memory::desc& md, std::uint32_t seed) {
  memory m(md, cpu_engine());
  const std::size_t bytes = md.get_size();
  const std::size_t values = bytes / sizeof(float);
  std::memset(m.get_data_handle(), 0, bytes);
  const Buffer<float> source(values, seed);
  std::memcpy(m.get_data_handle(), source.data(), values * sizeof(float));
  return m;
}

memory constant(const memory::desc& md, float value) {
  memory m(md, cpu_engine());
  float* p = static_cast<float*>(m.get_data_handle());
  std::fill(p, p + md.get_size() / sizeof(float), value);
  return m;
}

normalization_flags flags_for(Op op) {
  const auto affine = normalization_flags::use_scale | normalization_flags::use_shift;
  return op == Op::forward_eval ? affine | normalization_flags::use_global_stats : affine;
}

/// The forward primitive descriptor of op (the training forward for backward_train, whose
/// hint it is); empty if oneDNN has no implementation for the format.
dnnl::batch_normalization_forward::primitive_desc forward_pd(const memory::desc& md, Op op) {
  const auto kind = op == Op::forward_eval ? prop_kind::forward_inference : prop_kind::forward_training;
  return {{kind, md, eps, flags_for(op)}, cpu_engine(), /*allow_empty=*/true};
}

dnnl::batch_normalization_backward::primitive_desc backward_pd(
    const memory::desc& md, const dnnl::batch_normalization_forward::primitive_desc& hint) {
  return {{prop_kind::backward, md, md, eps, flags_for(Op::backward_train)}, cpu_engine(), hint, /*allow_empty=*/true};
}

bool supported(const Shape& s, Tag tag, Op op) {
  try {
    const auto md = data_desc(s, tag);
    const auto fwd = forward_pd(md, op);
    if (!fwd) return false;
    return op != Op::backward_train || bool(backward_pd(md, fwd));
  } catch (const dnnl::error&) {
    return false;
  }
}

void run(benchmark::State& state, const Shape& shape, Tag tag, Op op, int threads) {
  set_threads(threads);  // before the primitive is created: it fixes its thread count then
  dnnl::stream stream(cpu_engine());
  const auto md = data_desc(shape, tag);
  const auto n = static_cast<std::size_t>(shape.size());  // logical values: the baseline's bytes
  const std::int64_t C = shape.dims[1];
  const memory::desc channel_md({C}, memory::data_type::f32, Tag::x);

  const auto fwd_pd = forward_pd(md, op);
  if (!fwd_pd) {
    state.SkipWithError("oneDNN has no batch normalization for this format");
    return;
  }
  memory src = filled(md, 1), dst(md, cpu_engine());
  memory scale = filled(channel_md, 4), shift = filled(channel_md, 5);
  memory mean = constant(fwd_pd.mean_desc(), 0.5f), variance = constant(fwd_pd.variance_desc(), 2.0f);
  memory workspace(fwd_pd.workspace_desc(), cpu_engine());  // zero-sized unless fuse_norm_relu
  std::unordered_map<int, memory> fwd_args{{DNNL_ARG_SRC, src},         {DNNL_ARG_DST, dst},
                                           {DNNL_ARG_SCALE, scale},     {DNNL_ARG_SHIFT, shift},
                                           {DNNL_ARG_MEAN, mean},       {DNNL_ARG_VARIANCE, variance},
                                           {DNNL_ARG_WORKSPACE, workspace}};
  dnnl::batch_normalization_forward forward(fwd_pd);

  if (op != Op::backward_train) {
    state.SetLabel(fwd_pd.impl_info_str());
    measure<float>(state, op, n, threads, [&] {
      forward.execute(stream, fwd_args);
      stream.wait();
    });
    return;
  }

  forward.execute(stream, fwd_args);  // the batch statistics (and workspace) backward reads
  stream.wait();
  const auto bwd_pd = backward_pd(md, fwd_pd);
  if (!bwd_pd) {
    state.SkipWithError("oneDNN has no batch normalization backward for this format");
    return;
  }
  memory diff_dst = filled(bwd_pd.diff_dst_desc(), 2), diff_src(bwd_pd.diff_src_desc(), cpu_engine());
  memory diff_scale(channel_md, cpu_engine()), diff_shift(channel_md, cpu_engine());
  // oneDNN 2.6 wants DNNL_ARG_SHIFT with use_shift on backward too (invalid_arguments without),
  // although dx, dgamma and dbeta do not depend on beta.
  const std::unordered_map<int, memory> bwd_args{
      {DNNL_ARG_SRC, src},           {DNNL_ARG_MEAN, mean},           {DNNL_ARG_VARIANCE, variance},
      {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_SCALE, scale},         {DNNL_ARG_SHIFT, shift},
      {DNNL_ARG_WORKSPACE, workspace}, {DNNL_ARG_DIFF_SRC, diff_src}, {DNNL_ARG_DIFF_SCALE, diff_scale},
      {DNNL_ARG_DIFF_SHIFT, diff_shift}};
  dnnl::batch_normalization_backward backward(bwd_pd);
  state.SetLabel(bwd_pd.impl_info_str());
  measure<float>(state, op, n, threads, [&] {
    backward.execute(stream, bwd_args);
    stream.wait();
  });
}

}  // namespace

void register_onednn_benchmarks() {
  const std::vector<Format> formats_4d{{"nchw", Tag::nchw}, {"nhwc", Tag::nhwc}, {"nChw16c", Tag::nChw16c},
                                      {"nChw8c", Tag::nChw8c}};
  const std::vector<Format> formats_2d{{"nchw", Tag::nc}, {"colmajor", Tag::cn}};
  for (const int threads : {1, 2})
    for (const Shape& s : shapes())
      for (const Format& f : s.dims.size() == 2 ? formats_2d : formats_4d)
        for (const Op op : {Op::forward_train, Op::forward_eval, Op::backward_train}) {
          if (!supported(s, f.tag, op)) {
            if (threads == 1)
              std::fprintf(stderr, "onednn: no %s batch normalization for %s in format %s; skipped\n", op_name(op), s.name,
                           f.name);
            continue;
          }
          const Tag tag = f.tag;
          benchmark::RegisterBenchmark(name(op, s, f, threads).c_str(),
                                       [s, tag, op, threads](benchmark::State& st) { run(st, s, tag, op, threads); })
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime();
        }
}

}  // namespace bench
