// Fused activation benchmarks (bench/run_fused.sh): batch norm followed by ReLU, and the residual
// block's relu(BN(x) + residual), fused in one pass against the same work as separate passes,
// and against oneDNN where it has the fusion. float, RowMajor (N, C, H, W) ("nchw") and
// channels-last ("nhwc"), ResNet-50 stage 1 and 3 and the small conv net of harness.hpp, 1 and
// 2 threads; each benchmark times its kernel and a memory baseline in the same benchmark, warm
// and cold (bench::measure: x_copy_* for forwards, x_triad_* for backward).
//
// impl (first field of the name):
//   batchnorm_relu          BatchNormOptions::activation(Activation::relu): forward writes
//                           max(BN(x), 0); backward recomputes the ReLU decision from x and the
//                           saved statistics (nothing input-sized kept) and masks dy
//   batchnorm+relu          the module, then a separate ReLU pass in place over y (forward); a
//                           ReLU backward pass g = y > 0 ? dy : 0 from the kept output y, then
//                           the module's backward of g (backward)
//   batchnorm_add_relu      forward_add_relu / backward_add_relu (dresidual and dx)
//   batchnorm+add_relu      the module, then y = max(y + residual, 0) in one pass; backward as
//                           batchnorm+relu, with g written as dresidual
//   onednn_relu             oneDNN 2.6 batch normalization with normalization_flags::fuse_norm_relu
//                           (its backward reads the workspace the forward wrote: a bit mask of
//                           the output's sign, kept between the calls)
//   onednn+add_relu         oneDNN's batch normalization, then a binary add with a ReLU post-op
//                           (oneDNN 2.6 has no fuse_norm_add_relu); forwards only
// The separate passes run on the same threads, as Eigen array expressions (vectorised).
#include <batchnorm/batchnorm.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>

#include "harness.hpp"

#ifdef BATCHNORM_BENCH_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

using bench::Layout;
using bench::Op;
using bench::Shape;
using Map = Eigen::TensorMap<Eigen::Tensor<float, 4, Eigen::RowMajor>>;

using Array = Eigen::Map<Eigen::ArrayXf>;
using ConstArray = Eigen::Map<const Eigen::ArrayXf>;

/// y = max(y (+ r), 0) over n values, split among the threads, each share an Eigen array
/// expression (vectorised by Eigen; a plain loop here compiles to a branch per value).
void relu_pass(float* y, const float* r, std::size_t n, int threads) {
  bench::split(n, threads, [&](std::size_t b, std::size_t e) {
    const auto len = static_cast<Eigen::Index>(e - b);
    Array out(y + b, len);
    if (r) out = (out + ConstArray(r + b, len)).max(0.0f);
    else out = out.max(0.0f);
  });
}

/// g = y > 0 ? dy : 0 over n values (ReLU backward from the kept output), as relu_pass.
void relu_backward_pass(const float* y, const float* dy, float* g, std::size_t n, int threads) {
  bench::split(n, threads, [&](std::size_t b, std::size_t e) {
    const auto len = static_cast<Eigen::Index>(e - b);
    Array(g + b, len) = (ConstArray(y + b, len) > 0.0f).select(ConstArray(dy + b, len), 0.0f);
  });
}

enum class Impl { fused_relu, separate_relu, fused_add_relu, separate_add_relu };

const char* impl_name(Impl impl) {
  switch (impl) {
    case Impl::fused_relu: return "batchnorm_relu";
    case Impl::separate_relu: return "batchnorm+relu";
    case Impl::fused_add_relu: return "batchnorm_add_relu";
    case Impl::separate_add_relu: return "batchnorm+add_relu";
  }
  return "?";
}

Eigen::array<Eigen::Index, 4> dims_of(const Shape& shape, Layout layout) {
  Eigen::array<Eigen::Index, 4> dims;
  for (std::size_t a = 0; a < 4; ++a) dims[a] = static_cast<Eigen::Index>(shape.dims[a]);
  if (layout == Layout::nhwc) std::rotate(dims.begin() + 1, dims.begin() + 2, dims.end());  // C last
  return dims;
}

void run_ours(benchmark::State& state, const Shape& shape, Layout layout, Op op, int threads, Impl impl) {
  const auto dims = dims_of(shape, layout);
  const auto n = static_cast<std::size_t>(shape.size());
  bench::Buffer<float> x(n, 1), dy(n, 2), r(n, 3), y(n, 4), dx(n, 5), dr(n, 6);
  Map xm(x.data(), dims), dym(dy.data(), dims), rm(r.data(), dims), ym(y.data(), dims), dxm(dx.data(), dims),
      drm(dr.data(), dims);
  auto options = batchnorm::BatchNormOptions(shape.dims[1]).channels_last(layout == Layout::nhwc);
  if (impl == Impl::fused_relu) options.activation(batchnorm::Activation::relu);
  batchnorm::BatchNorm2d<float> bn(options);
  const bool add = impl == Impl::fused_add_relu || impl == Impl::separate_add_relu;
  const bool fused = impl == Impl::fused_relu || impl == Impl::fused_add_relu;
  bench::set_threads(threads);
  if (op == Op::forward_eval) bn.eval();
  const auto forward = [&] {
    if (impl == Impl::fused_add_relu) {
      bn.forward_add_relu(xm, rm, ym);
    } else {
      bn.forward(xm, ym);
      if (!fused) relu_pass(y.data(), add ? r.data() : nullptr, n, threads);
    }
  };
  forward();  // backward needs a forward (and the separate ReLU backward its output y)
  bench::measure<float>(state, op, n, threads, [&] {
    if (op != Op::backward_train) return forward();
    if (impl == Impl::fused_add_relu) {
      bn.backward_add_relu(xm, rm, dym, dxm, drm);
    } else if (fused) {
      bn.backward(xm, dym, dxm);
    } else {
      float* g = add ? dr.data() : dx.data();  // the ReLU's gradient: dresidual, or dx in place
      relu_backward_pass(y.data(), dy.data(), g, n, threads);
      bn.backward(xm, Map(g, dims), dxm);
    }
  });
}

#ifdef BATCHNORM_BENCH_HAVE_ONEDNN
using dnnl::memory;
using dnnl::normalization_flags;
using dnnl::prop_kind;
using Tag = memory::format_tag;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory filled(const memory::desc& md, std::uint32_t seed) {
  memory m(md, cpu_engine());
  const bench::Buffer<float> source(md.get_size() / sizeof(float), seed);
  std::memcpy(m.get_data_handle(), source.data(), md.get_size());
  return m;
}

/// onednn_relu (fuse_norm_relu), or, with add, onednn+add_relu (batch normalization, then a
/// binary add with a ReLU post-op).
void run_onednn(benchmark::State& state, const Shape& shape, Layout layout, Op op, int threads, bool add) {
  bench::set_threads(threads);  // before the primitives are created: they fix their thread count then
  dnnl::stream stream(cpu_engine());
  const memory::desc md(memory::dims(shape.dims.begin(), shape.dims.end()), memory::data_type::f32,
                        layout == Layout::nhwc ? Tag::nhwc : Tag::nchw);
  const memory::desc channel_md({shape.dims[1]}, memory::data_type::f32, Tag::x);
  const auto n = static_cast<std::size_t>(shape.size());
  auto flags = normalization_flags::use_scale | normalization_flags::use_shift;
  if (op == Op::forward_eval) flags = flags | normalization_flags::use_global_stats;
  if (!add) flags = flags | normalization_flags::fuse_norm_relu;
  const auto kind = op == Op::forward_eval ? prop_kind::forward_inference : prop_kind::forward_training;
  const dnnl::batch_normalization_forward::primitive_desc fwd_pd({kind, md, 1e-5f, flags}, cpu_engine());
  memory src = filled(md, 1), dst(md, cpu_engine()), residual = filled(md, 3);
  memory scale = filled(channel_md, 4), shift = filled(channel_md, 5);
  memory mean(fwd_pd.mean_desc(), cpu_engine()), variance(fwd_pd.variance_desc(), cpu_engine());
  std::fill_n(static_cast<float*>(mean.get_data_handle()), shape.dims[1], 0.5f);
  std::fill_n(static_cast<float*>(variance.get_data_handle()), shape.dims[1], 2.0f);
  memory workspace(fwd_pd.workspace_desc(), cpu_engine());
  const std::unordered_map<int, memory> fwd_args{{DNNL_ARG_SRC, src},     {DNNL_ARG_DST, dst},
                                                 {DNNL_ARG_SCALE, scale}, {DNNL_ARG_SHIFT, shift},
                                                 {DNNL_ARG_MEAN, mean},   {DNNL_ARG_VARIANCE, variance},
                                                 {DNNL_ARG_WORKSPACE, workspace}};
  dnnl::batch_normalization_forward forward(fwd_pd);
  std::string label = fwd_pd.impl_info_str();
  if (op != Op::backward_train) {
    if (!add) {
      state.SetLabel(label);
      bench::measure<float>(state, op, n, threads, [&] {
        forward.execute(stream, fwd_args);
        stream.wait();
      });
      return;
    }
    dnnl::post_ops post;
    post.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(post);
    const dnnl::binary::primitive_desc add_pd({dnnl::algorithm::binary_add, md, md, md}, attr, cpu_engine());
    dnnl::binary binary(add_pd);
    const std::unordered_map<int, memory> add_args{{DNNL_ARG_SRC_0, dst}, {DNNL_ARG_SRC_1, residual}, {DNNL_ARG_DST, dst}};
    state.SetLabel(label + " + " + add_pd.impl_info_str());
    bench::measure<float>(state, op, n, threads, [&] {
      forward.execute(stream, fwd_args);
      binary.execute(stream, add_args);
      stream.wait();
    });
    return;
  }
  forward.execute(stream, fwd_args);  // the batch statistics and the ReLU workspace backward reads
  stream.wait();
  const dnnl::batch_normalization_backward::primitive_desc bwd_pd({prop_kind::backward, md, md, 1e-5f, flags},
                                                                  cpu_engine(), fwd_pd);
  memory diff_dst = filled(md, 2), diff_src(md, cpu_engine()), diff_scale(channel_md, cpu_engine()),
         diff_shift(channel_md, cpu_engine());
  const std::unordered_map<int, memory> bwd_args{
      {DNNL_ARG_SRC, src},           {DNNL_ARG_MEAN, mean},           {DNNL_ARG_VARIANCE, variance},
      {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_SCALE, scale},         {DNNL_ARG_SHIFT, shift},
      {DNNL_ARG_WORKSPACE, workspace}, {DNNL_ARG_DIFF_SRC, diff_src}, {DNNL_ARG_DIFF_SCALE, diff_scale},
      {DNNL_ARG_DIFF_SHIFT, diff_shift}};
  dnnl::batch_normalization_backward backward(bwd_pd);
  state.SetLabel(bwd_pd.impl_info_str());
  bench::measure<float>(state, op, n, threads, [&] {
    backward.execute(stream, bwd_args);
    stream.wait();
  });
}
#endif

}  // namespace

int main(int argc, char** argv) {
#ifndef NDEBUG
  std::fprintf(stderr, "batchnorm_fused_bench: refusing to report from a debug build (NDEBUG is not defined)\n");
  return 2;
#endif
  const auto reg = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  for (const int threads : {1, 2})
    for (const Shape& s : bench::shapes()) {
      if (s.dims.size() != 4) continue;
      for (const Layout l : {Layout::nchw, Layout::nhwc})
        for (const Op o : {Op::forward_train, Op::forward_eval, Op::backward_train}) {
          for (const Impl impl : {Impl::fused_relu, Impl::separate_relu, Impl::fused_add_relu, Impl::separate_add_relu})
            reg(bench::bench_name(impl_name(impl), "f32", o, s, l, threads),
                [s, l, o, threads, impl](benchmark::State& st) { run_ours(st, s, l, o, threads, impl); });
#ifdef BATCHNORM_BENCH_HAVE_ONEDNN
          for (const bool add : {false, true}) {
            if (add && o == Op::backward_train) continue;
            reg(bench::bench_name(add ? "onednn+add_relu" : "onednn_relu", "f32", o, s, l, threads),
                [s, l, o, threads, add](benchmark::State& st) { run_onednn(st, s, l, o, threads, add); });
          }
#endif
        }
    }
  benchmark::AddCustomContext("batchnorm_isa", batchnorm::isa_name(batchnorm::active_isa()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
