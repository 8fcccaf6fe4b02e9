// The kernel layer (detail/plan.hpp, detail/dispatch.hpp, batchnorm/isa.hpp): which copy runs,
// which traversal each plan names (shapes computed from the tuning constants and the running
// copy's vector width, each asserting through the plan observer that its path ran), SIMD tails
// and misalignments of that width, and the invariants of the kernels: empty channels, float
// statistics beyond float's range, running statistics that overflow, channels of two values.
// ctest runs the whole suite once per BATCHNORM_ISA value, so each copy passes all of this.
#include <catch2/catch.hpp>

#include <batchnorm/batchnorm.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "support/compare.hpp"
#include "support/naive.hpp"
#include "support/plans.hpp"
#include "support/tensors.hpp"
#include "support/tolerance.hpp"

using namespace batchnorm_test;
namespace F = batchnorm::functional;
namespace D = batchnorm::detail;
using F::View;

namespace {

template <class T>
using Acc = F::accum_t<T>;

/// The same double, bit for bit; any NaN equals any NaN (IEEE 754 leaves NaN payloads open).
bool same_bits(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, sizeof a) == 0;
}

/// Inputs of an inference forward of view v: x, running statistics (variances from 0.5 up),
/// weight and bias, from seeds seed to seed + 4.
template <class T>
struct EvalInputs {
  std::vector<T> x, rm, rv, w, b;
  EvalInputs(const View& v, std::uint32_t seed)
      : x(normal_values<T>(static_cast<std::size_t>(v.size()), 3.0, 2.0, seed)),
        rm(normal_values<T>(static_cast<std::size_t>(v.channels), 3.0, 0.5, seed + 1)),
        rv(normal_values<T>(static_cast<std::size_t>(v.channels), 0.0, 1.0, seed + 2)),
        w(normal_values<T>(static_cast<std::size_t>(v.channels), 1.0, 0.3, seed + 3)),
        b(normal_values<T>(static_cast<std::size_t>(v.channels), 0.0, 0.3, seed + 4)) {
    for (T& e : rv) e = e * e + T(0.5);
  }
  void forward(const View& v, std::vector<T>& y) const {
    F::forward_inference(x.data(), v, rm.data(), rv.data(), w.data(), b.data(), 1e-5, y.data());
  }
  /// The reference y of view v.
  std::vector<double> reference(const View& v) const {
    return naive_batch_norm(x, x, v, false, w, b, 1e-5, rm, rv).y;  // dy unused here
  }
};

/// Values of T per vector of the copy that runs.
template <class T>
int active_lanes() {
  int lanes = 0;
  D::with_kernels(batchnorm::active_isa(), [&](auto kernels) { lanes = decltype(kernels)::template lanes<T>; });
  return lanes;
}

/// Training forward and backward of the functional layer against the long double reference;
/// the pointers x, dy may be misaligned. Returns nothing; CHECKs inside.
template <class T>
void check_training(const View& v, std::size_t misalign, std::uint32_t seed, double mean = 3.0, double std = 2.0) {
  const auto n = static_cast<std::size_t>(v.size());
  const auto C = static_cast<std::size_t>(v.channels);
  std::vector<T> xs(n + misalign + 1), dys(n + misalign + 1), ys(n + misalign + 1), dxs(n + misalign + 1);
  const auto xv = normal_values<T>(n, mean, std, seed);
  const auto dyv = normal_values<T>(n, 0.5, 1.0, seed + 1);
  T* x = xs.data() + misalign;
  T* dy = dys.data() + misalign;
  T* y = ys.data() + misalign;
  T* dx = dxs.data() + misalign;
  std::copy(xv.begin(), xv.end(), x);
  std::copy(dyv.begin(), dyv.end(), dy);
  const auto w = normal_values<T>(C, 1.0, 0.3, seed + 2);
  const auto b = normal_values<T>(C, 0.0, 0.3, seed + 3);
  const double eps = 1e-3;
  std::vector<Acc<T>> mean_out(C), invstd(C);
  std::vector<T> dw(C), db(C);
  F::forward_training(x, v, w.data(), b.data(), static_cast<T*>(nullptr), static_cast<T*>(nullptr), 0.0, eps, y,
                      mean_out.data(), invstd.data());
  F::backward_training(x, dy, v, mean_out.data(), invstd.data(), w.data(), dx, dw.data(), db.data());
  const auto ref = naive_batch_norm(xv, dyv, v, true, w, b, eps);
  const double tol = naive_tol<T>();
  CHECK(worst_rel_err(mean_out, ref.mean) <= tol);
  CHECK(worst_rel_err(std::vector<T>(y, y + n), ref.y) <= tol);
  CHECK(worst_rel_err(std::vector<T>(dx, dx + n), ref.dx) <= tol);
  CHECK(worst_rel_err(dw, ref.dweight) <= tol);
  CHECK(worst_rel_err(db, ref.dbias) <= tol);
}

const char* path_name(D::Path p) {
  switch (p) {
    case D::Path::row: return "row";
    case D::Path::row_short: return "row_short";
    case D::Path::lane: return "lane";
    default: return "wide_rows";
  }
}

}  // namespace

TEST_CASE("the active copy is the CPU's widest under the BATCHNORM_ISA cap, and it is the one that runs",
          "[dispatch]") {
  const batchnorm::Isa cpu = D::cpu_isa();
  batchnorm::Isa cap = batchnorm::Isa::avx512;
  if (const char* env = std::getenv("BATCHNORM_ISA"); env && *env) {
    const std::string s(env);
    cap = s == "sse2" ? batchnorm::Isa::sse2 : s == "avx2" ? batchnorm::Isa::avx2 : batchnorm::Isa::avx512;
  }
  const batchnorm::Isa expected = D::compiled_isa(cpu < cap ? cpu : cap);
  INFO("cpu " << batchnorm::isa_name(cpu) << ", cap " << batchnorm::isa_name(cap) << ", active "
              << batchnorm::isa_name(batchnorm::active_isa()));
  CHECK(batchnorm::active_isa() == expected);
  // The copy that runs a kernel says so through the plan observer.
  PlanLog plans;
  std::vector<float> x{4, 7, 13, 16};
  Acc<float> mean = 0, m2 = 0;
  F::batch_moments(x.data(), View{4, 1, 1}, &mean, &m2);
  REQUIRE(PlanLog::log().size() == 1);
  CHECK(PlanLog::log()[0].second == expected);
  CHECK(mean == 10.0);
  CHECK(m2 == 90.0);
}

TEST_CASE("BATCHNORM_ISA with an unknown value is std::invalid_argument naming the variable and its values",
          "[dispatch]") {
  const char* old = std::getenv("BATCHNORM_ISA");
  const std::string saved = old ? old : "";
  REQUIRE(setenv("BATCHNORM_ISA", "avx1024", 1) == 0);
  try {
    (void)D::isa_cap_from_environment();
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    CHECK(what.find("BATCHNORM_ISA") != std::string::npos);
    CHECK(what.find("sse2, avx2 or avx512") != std::string::npos);
    CHECK(what.find("avx1024") != std::string::npos);
  }
  REQUIRE(setenv("BATCHNORM_ISA", "sse2", 1) == 0);
  CHECK(D::isa_cap_from_environment() == batchnorm::Isa::sse2);
  if (old) setenv("BATCHNORM_ISA", saved.c_str(), 1);
  else unsetenv("BATCHNORM_ISA");
}

TEMPLATE_TEST_CASE("each traversal of the plan runs on the shapes made for it and agrees with the reference",
                   "[dispatch][paths]", float, double) {
  using T = TestType;
  const F::Index W = active_lanes<T>();
  REQUIRE(W >= 2);
  struct Case {
    View v;
    D::Path path;
    F::Index segments;
  };
  const F::Index seg_rows = D::kSegments * (D::kParallelMin / 2 + 1);  // 2 channels: >= kParallelMin values
  const std::vector<Case> cases{
      {{3, 2, D::kRowMin + 3}, D::Path::row, 1},
      {{1, 3, 5 * D::kChunk + 1}, D::Path::row, 1},  // one row of several chunks
      {{2, 9, D::kChunk / 2}, D::Path::row_short, 1},
      // One row: channels shorter than a vector take the lane path up to kOneRowLanes values.
      {{1, 7, 3}, 3 < W ? D::Path::lane : D::Path::row_short, 1},
      {{1, 7, D::kOneRowLanes + 1}, D::Path::row_short, 1},
      {{50, 3, 1}, D::Path::lane, 1},
      {{40, D::kLanes + 5, 1}, D::Path::lane, 1},  // two tiles
      {{30, 5, W - 1}, D::Path::lane, 1},
      {{30, 5, W}, D::Path::wide_rows, 1},
      {{20, D::kWideChannels + 3, 2 * W + 3}, D::Path::wide_rows, 1},
      {{seg_rows, 2, 1}, D::Path::lane, D::kSegments},
      // Rows of kSegmentRowMax values split the batch; one value more, the channels.
      {{512, D::kSegmentRowMax, 1}, D::Path::lane, D::kSegments},
      {{512, D::kSegmentRowMax + 1, 1}, D::Path::lane, 1},
      // Longer rows split the batch from kSegmentWideOuter rows, into as many segments as the
      // scratch holds: (S - 1) * C <= kSegmentScratch.
      {{D::kSegmentWideOuter - 1, 300, 1}, D::Path::lane, 1},
      {{D::kSegmentWideOuter, 300, 1}, D::Path::lane, 4},
      {{D::kSegmentWideOuter, D::kSegmentRowWide, 1}, D::Path::lane, 2},  // two lane tiles
      {{D::kSegmentWideOuter, D::kSegmentRowWide + 1, 1}, D::Path::lane, 1},
      {{D::kSegmentWideOuter, 64, D::kSegmentRowWide / 64}, D::Path::wide_rows, 8},
      {{D::kSegments * 4, 2, D::kRowMin * 2}, D::Path::row, D::kSegments},
      {{D::kParallelMin / (6 * W) + 1, 2, 3 * W}, D::Path::wide_rows, D::kSegments},
  };
  std::uint32_t seed = 11;
  for (const Case& c : cases) {
    INFO("view (" << c.v.outer << ", " << c.v.channels << ", " << c.v.inner << "), expected path " << path_name(c.path)
                  << ", W " << W);
    const D::Plan p = D::make_plan<T>(c.v, static_cast<int>(W));
    CHECK(p.path == c.path);
    CHECK(p.segments == c.segments);
    PlanLog plans;
    static std::atomic<long> shared_tiles{0};
    shared_tiles = 0;
    static F::Index expected_channels = 0;
    expected_channels = c.v.channels;
    D::shared_tile_observer = [](F::Index ch) {
      if (ch == expected_channels) ++shared_tiles;  // a tile of every channel, or not counted
    };
    check_training<T>(c.v, 0, seed += 5);
    D::shared_tile_observer = nullptr;
    // Segments of the lane path or of wide rows read one set of constants, filled once for y and
    // once for dx, when the view is one tile; row-path segments (and unsegmented views) take
    // theirs per channel, segments of several tiles per tile. That no
    // segment refills the shared set is BATCHNORM_ASSERT's (TileConstants::holds), checked in
    // the Debug (asan) build.
    const bool row = c.path == D::Path::row || c.path == D::Path::row_short;
    const bool one_tile = c.path == D::Path::wide_rows ? c.v.channels <= D::kWideChannels
                                                       : D::tile_channels(c.v) >= c.v.channels;
    CHECK(shared_tiles == (c.segments > 1 && !row && one_tile ? 2 : 0));
    REQUIRE(!PlanLog::log().empty());
    for (const auto& [ran, isa] : PlanLog::log()) {
      CHECK(isa == batchnorm::active_isa());
      CHECK(ran.lanes == W);
      CHECK(ran.segments == c.segments);
      if (c.segments == 1) CHECK(path_name(ran.path) == std::string(path_name(c.path)));
    }
  }
}

TEMPLATE_TEST_CASE("SIMD tails and misalignments of the running copy's width, row and lane paths", "[dispatch][tails]",
                   float, double) {
  using T = TestType;
  const F::Index W = active_lanes<T>();
  std::uint32_t seed = 101;
  for (const F::Index n : {F::Index(1), W - 1, W, W + 1, 2 * W + 3}) {
    if (n < 1) continue;
    for (F::Index misalign = 0; misalign < W; ++misalign) {
      INFO("n " << n << ", misalign " << misalign << ", W " << W);
      check_training<T>(View{1, 2, n + 1}, static_cast<std::size_t>(misalign), seed += 4);  // row of n + 1 (m >= 2)
      check_training<T>(View{D::kRowMin / 4, 2, D::kRowMin + n}, static_cast<std::size_t>(misalign), seed += 4);
      check_training<T>(View{9, n, 1}, static_cast<std::size_t>(misalign), seed += 4);  // n lanes
      check_training<T>(View{9, 3, n}, static_cast<std::size_t>(misalign), seed += 4);  // rows of n values
    }
  }
}

TEMPLATE_TEST_CASE("streamed outputs whose rows start misaligned: a partial narrow lane tile streams its aligned vectors",
                   "[dispatch][tails]", float, double) {
  using T = TestType;
  const F::Index W = active_lanes<T>();
  // (N, C) with C = kLanes + 16: a full lane tile, then a tile of 16 lanes that is not the whole
  // row (narrow: 16 lanes are at most kNarrowVectors vectors); rows a whole number of vectors
  // apart; 10 MiB, and outputs stream from 1 MiB a thread here (StreamFrom), so that forward
  // and backward stream. x, y, dy, dx
  // start 3 values past an address of the vector's alignment (the vectors' storage is at least
  // 16-byte aligned), so every row of the second tile starts misaligned and
  // narrow_apply_shifted writes it.
  const View v{(10 << 20) / (static_cast<F::Index>(sizeof(float)) * (D::kLanes + 16)) + 1, D::kLanes + 16, 1};
  REQUIRE(v.channels % W == 0);
  REQUIRE(16 <= D::kNarrowVectors * W);
  static std::atomic<long> rows{0};
  rows = 0;
  const StreamFrom stream(1 << 20);
  const ThreadsAtMost threads(2);  // streaming is decided per thread: two keep every pass streamed
  D::shifted_rows_observer = [](F::Index r) { rows += static_cast<long>(r); };
  check_training<T>(v, 3, 71);
  D::shifted_rows_observer = nullptr;
  if (W == 1) CHECK(rows == 0);
  else CHECK(rows == 2 * v.outer);  // y, then dx: every row of the second tile, once each
}

TEST_CASE("the CPU's streaming threshold: lower on AMD's CPUs where two threads share every row", "[dispatch][stream]") {
  // 1 MiB of float on two threads, 512 KiB a thread: (N, 1024) splits its channels, so both
  // threads write part of every row (stream_bytes(true)); (N, 256) splits the batch
  // (stream_bytes(false)). Only AMD's shared-row threshold is that low (tuning.hpp).
  const ThreadsAtMost threads(2);
  if (D::max_threads() < 2) {
    WARN("one thread only: the shared-row threshold is not reached");
    return;
  }
  REQUIRE(D::stream_bytes_override == 0);
  const View shared{256, 1024, 1}, segmented{1024, 256, 1};
  const int W = static_cast<int>(active_lanes<float>());
  const D::Plan ps = D::make_plan<float>(shared, W), pg = D::make_plan<float>(segmented, W);
  REQUIRE(ps.segments == 1);
  REQUIRE(ps.groups >= 2);
  REQUIRE(pg.segments == D::kSegments);
  CHECK(D::stream_bytes(true) <= D::stream_bytes(false));
  CHECK(ps.stream == D::cpu_is_amd());
  CHECK(!pg.stream);
  // The kernels run the plan made here.
  const PlanLog plans;
  check_training<float>(shared, 0, 91);
  REQUIRE(!PlanLog::log().empty());
  for (const auto& [ran, isa] : PlanLog::log()) CHECK(ran.stream == ps.stream);
}

TEMPLATE_TEST_CASE("inference forward splits the batch among the threads where their channel groups would share rows",
                   "[dispatch][threads]", float, double) {
  using T = TestType;
  const ThreadsAtMost threads(2);
  if (D::max_threads() < 2) {
    WARN("one thread only: no channel groups to share rows");
    return;
  }
  const int W = static_cast<int>(active_lanes<T>());
  // (N, C) of one lane tile split into two channel groups; wide rows of several chunks. A small
  // batch, (16, 4096), keeps its channel groups: every segment would compute every channel's
  // constants (kElementwiseSegmentRows).
  {
    const View small{16, 4096, 1};
    REQUIRE(small.outer < 2 * D::kElementwiseSegmentRows);
    const D::Plan plan = D::make_elementwise_plan<T>(small, W);
    CHECK(plan.segments == 1);
    CHECK(plan.groups >= 2);
  }
  for (const View v : {View{256, 1024, 1}, View{2 * D::kElementwiseSegmentRows + 1, 3 * D::kWideChannels, 32}}) {
    INFO("view (" << v.outer << ", " << v.channels << ", " << v.inner << ")");
    const D::Plan shared = D::make_plan<T>(v, W), plan = D::make_elementwise_plan<T>(v, W);
    REQUIRE(shared.segments == 1);
    REQUIRE(shared.groups >= 2);
    CHECK(plan.segments == 2);
    CHECK(plan.path == shared.path);
    const EvalInputs<T> in(v, 31);
    std::vector<T> y2(static_cast<std::size_t>(v.size())), y1(y2.size());
    {
      const PlanLog plans;
      in.forward(v, y2);
      REQUIRE(PlanLog::log().size() == 1);
      CHECK(PlanLog::log()[0].first.segments == 2);
    }
    {
      const ThreadsAtMost one(1);
      in.forward(v, y1);
    }
    CHECK(y1 == y2);
    CHECK(worst_rel_err(y2, in.reference(v)) <= naive_tol<T>());
  }
}

TEMPLATE_TEST_CASE("inference forward of one row takes the lane path where channels are shorter than a vector",
                   "[dispatch][one_row]", float, double) {
  using T = TestType;
  const int W = static_cast<int>(active_lanes<T>());
  // Channels of 1 value (a batch of one (N, C) sample), of W - 1, and of W: the row path again.
  for (const View v : {View{1, 4096, 1}, View{1, 300, W - 1}, View{1, 33, W}}) {
    INFO("view (" << v.outer << ", " << v.channels << ", " << v.inner << "), W " << W);
    const bool lanes = v.inner < W;
    const EvalInputs<T> in(v, 41);
    std::vector<T> y(static_cast<std::size_t>(v.size()));
    {
      const PlanLog plans;
      in.forward(v, y);
      REQUIRE(PlanLog::log().size() == 1);
      CHECK(path_name(PlanLog::log()[0].first.path) == std::string(lanes ? "lane" : "row_short"));
    }
    CHECK(worst_rel_err(y, in.reference(v)) <= naive_tol<T>());
  }
}

TEMPLATE_TEST_CASE("empty channels give zero moments and zero sums, reading nothing", "[dispatch][empty]", float,
                   double) {
  using T = TestType;
  for (const View v : {View{4, 3, 0}, View{0, 3, 5}, View{0, 3, 1}, View{7, 2, 0}}) {
    INFO("view (" << v.outer << ", " << v.channels << ", " << v.inner << ")");
    std::vector<T> x(1, T(5));  // never read: the view is empty
    std::vector<Acc<T>> mean(3, -1), m2(3, -1), s0(3, -1), s1(3, -1), centre(3, 2.0);
    F::batch_moments(x.data(), v, mean.data(), m2.data());
    F::backward_sums(x.data(), x.data(), v, centre.data(), s0.data(), s1.data());
    for (F::Index c = 0; c < v.channels; ++c) {
      CHECK(mean[static_cast<std::size_t>(c)] == 0);
      CHECK(m2[static_cast<std::size_t>(c)] == 0);
      CHECK(s0[static_cast<std::size_t>(c)] == 0);
      CHECK(s1[static_cast<std::size_t>(c)] == 0);
    }
  }
  // The modules: a ColMajor BatchNorm2d batch of N = 0, and a RowMajor (N, C, 0, W).
  batchnorm::BatchNorm2d<T> bn(batchnorm::BatchNormOptions(3));
  Eigen::Tensor<T, 4, Eigen::ColMajor> e0(0, 3, 4, 4);
  Eigen::Tensor<T, 4, Eigen::RowMajor> e1(2, 3, 0, 4);
  auto y0 = bn.forward(e0);
  auto dx0 = bn.backward(e0, e0);
  auto y1 = bn.forward(e1);
  auto dx1 = bn.backward(e1, e1);
  CHECK(y0.size() == 0);
  CHECK(dx1.size() == 0);
  for (int c = 0; c < 3; ++c) {
    CHECK(bn.weight_grad()(c) == 0);
    CHECK(bn.bias_grad()(c) == 0);
    CHECK(bn.running_mean()(c) == 0);  // empty batches leave the running statistics alone
    CHECK(bn.running_var()(c) == 1);
  }
}

TEMPLATE_TEST_CASE("lane statistics: one pass about the mean so far, two passes where a block's mean moved",
                   "[dispatch][one_pass]", float, double) {
  using T = TestType;
  // Channels by c % 3: 1e4 + N(0, 0.1) (|mean| / std = 1e5), N(0, 1), and a step from about 0
  // to about 1e3 halfway through the batch (every block after the step has a mean far from the
  // mean before it). The one pass must run on the first two kinds and be declined, lane by
  // lane, on the third; the statistics are the reference's either way, and a channel's result
  // does not depend on its neighbours' being declined.
  static std::atomic<long> lanes{0}, redone{0};
  const auto watch = [] {
    lanes = 0, redone = 0;
    D::one_pass_observer = [](F::Index l, F::Index r) { lanes += static_cast<long>(l), redone += static_cast<long>(r); };
  };
  const F::Index W = active_lanes<T>();
  REQUIRE(W >= 2);
  for (const View v : {View{3000, 3, 1}, View{1500, 40, 1}, View{700, 3, W - 1}, View{400, 5, std::max<F::Index>(1, W / 2 - 1)}}) {
    INFO("view (" << v.outer << ", " << v.channels << ", " << v.inner << "), W " << W);
    REQUIRE(D::make_plan<T>(v, static_cast<int>(W)).path == D::Path::lane);
    const auto n = static_cast<std::size_t>(v.size());
    const auto noise = normal_values<T>(n, 0.0, 1.0, 503);
    const auto make = [&](bool step) {
      std::vector<T> x(n);
      for (F::Index o = 0; o < v.outer; ++o)
        for (F::Index c = 0; c < v.channels; ++c)
          for (F::Index i = 0; i < v.inner; ++i) {
            const auto at = static_cast<std::size_t>((o * v.channels + c) * v.inner + i);
            const double e = static_cast<double>(noise[at]);
            x[at] = static_cast<T>(c % 3 == 0 ? 1e4 + 0.1 * e : c % 3 == 1 || !step ? e : (2 * o >= v.outer ? 1e3 : 0.0) + e);
          }
      return x;
    };
    std::vector<Acc<T>> mean(static_cast<std::size_t>(v.channels)), m2(mean), mean2(mean), m22(mean);
    const auto x = make(true);
    watch();
    F::batch_moments(x.data(), v, mean.data(), m2.data());
    D::one_pass_observer = nullptr;
    CHECK(lanes > 0);
    CHECK(redone > 0);
    CHECK(redone < lanes);
    const auto ref = naive_batch_norm(x, std::vector<T>(n, T(0)), v, true, std::vector<T>(mean.size(), T(1)),
                                      std::vector<T>(mean.size(), T(0)), 1e-5);
    const auto m = static_cast<double>(v.count());
    for (std::size_t c = 0; c < mean.size(); ++c) {
      INFO("channel " << c);
      const double sd = std::sqrt(static_cast<double>(ref.var[c]));
      CHECK(std::abs(static_cast<double>(mean[c]) - static_cast<double>(ref.mean[c])) <= naive_tol<T>() * sd);
      CHECK(std::abs(static_cast<double>(m2[c]) / m - static_cast<double>(ref.var[c])) <=
            naive_tol<T>() * static_cast<double>(ref.var[c]));
    }
    // Without the steps nothing is declined, and the other channels are bitwise the same.
    const auto x2 = make(false);
    watch();
    F::batch_moments(x2.data(), v, mean2.data(), m22.data());
    D::one_pass_observer = nullptr;
    CHECK(lanes > 0);
    CHECK(redone == 0);
    for (std::size_t c = 0; c < mean.size(); ++c)
      if (c % 3 != 2) CHECK((mean2[c] == mean[c] && m22[c] == m2[c]));
  }
}

TEST_CASE("float statistics beyond float's range are exact: no overflow or underflow of partial sums",
          "[dispatch][range]") {
  // {1e30, -1e30, 2e30, -2e30}: the deviations square past float's range.
  for (const View v : {View{1, 1, 4}, View{4, 1, 1}, View{2, 1, 2}}) {
    std::vector<float> x{1e30f, -1e30f, 2e30f, -2e30f}, y(4);
    Acc<float> mean = 0, invstd = 0;
    F::forward_training(x.data(), v, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                        static_cast<float*>(nullptr), static_cast<float*>(nullptr), 0.0, 1e-5, y.data(), &mean,
                        &invstd);
    const double sd = std::sqrt((1e60 + 1e60 + 4e60 + 4e60) / 4);  // float inputs, exact in double
    for (std::size_t k = 0; k < 4; ++k)
      CHECK(rel_err(y[k], static_cast<double>(x[k]) / sd) <= kFloatTrainTol);
    CHECK(mean == 0);
  }
  // Near float's maximum: sums of x - s overflow float as well.
  {
    std::vector<float> x{3e38f, -3e38f, 3e38f, -3e38f, 1e38f}, y(5);
    Acc<float> mean = 0, m2 = 0;
    F::batch_moments(x.data(), View{5, 1, 1}, &mean, &m2);
    const double exact_mean = static_cast<double>(x[4]) / 5;  // of the float values
    double exact_m2 = 0;
    for (float v : x) exact_m2 += (static_cast<double>(v) - static_cast<double>(x[4]) / 5) * (static_cast<double>(v) - static_cast<double>(x[4]) / 5);
    CHECK(rel_err(mean / exact_mean, 1.0) <= 1e-12);
    CHECK(rel_err(m2 / exact_m2, 1.0) <= 1e-12);
    (void)y;
  }
  // Tiny spreads: deviations of 5e-26 square below float's smallest value; eps 1e-300 lets the
  // variance decide: y = -1, 1.
  {
    std::vector<float> x{1e-25f, 0.0f}, y(2);
    Acc<float> mean = 0, invstd = 0;
    F::forward_training(x.data(), View{2, 1, 1}, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                        static_cast<float*>(nullptr), static_cast<float*>(nullptr), 0.0, 1e-300, y.data(), &mean,
                        &invstd);
    CHECK(rel_err(y[0], 1.0) <= kFloatTrainTol);
    CHECK(rel_err(y[1], -1.0) <= kFloatTrainTol);
  }
}

TEST_CASE("double statistics near double's range: a one-pass sum of squares that overflows is declined",
          "[dispatch][range]") {
  // A channel of nb zeros, then nb values b + a, b - a, ... (nb a block of the lane path, a
  // chunk of the row path), with nb b^2 = 0.9 DBL_MAX and nb a^2 = 0.2 DBL_MAX: summed in one
  // pass about the mean so far (0), the second block's cross term s1^2 / nb = nb b^2 is finite
  // but its squares, nb (a^2 + b^2), overflow, while the exact M2, nb a^2 + nb b^2 / 2, is
  // finite; double has no exact redo, so the one pass must decline.
  const double big = std::numeric_limits<double>::max();
  struct Case {
    View v;
    F::Index nb;
  };
  for (const Case& c : {Case{View{512, 3, 1}, 256}, Case{View{1, 3, 2 * D::kChunk}, D::kChunk}}) {
    const View v = c.v;
    INFO("view (" << v.outer << ", " << v.channels << ", " << v.inner << ")");
    const double b = std::sqrt(big / static_cast<double>(c.nb) * 0.9), a = std::sqrt(big / static_cast<double>(c.nb) * 0.2);
    std::vector<double> x(static_cast<std::size_t>(v.size()));
    for (F::Index o = 0; o < v.outer; ++o)
      for (F::Index ch = 0; ch < v.channels; ++ch)
        for (F::Index i = 0; i < v.inner; ++i) {
          const F::Index j = o * v.inner + i;  // position within the channel
          x[static_cast<std::size_t>((o * v.channels + ch) * v.inner + i)] =
              j < c.nb ? 0.0 : b + (j % 2 == 0 ? a : -a);
        }
    std::vector<double> mean(3), m2(3);
    F::batch_moments(x.data(), v, mean.data(), m2.data());
    for (F::Index ch = 0; ch < 3; ++ch) {
      long double s = 0, q = 0;
      const auto m = static_cast<long double>(v.count());
      for (F::Index o = 0; o < v.outer; ++o)
        for (F::Index i = 0; i < v.inner; ++i) s += x[static_cast<std::size_t>((o * v.channels + ch) * v.inner + i)];
      for (F::Index o = 0; o < v.outer; ++o)
        for (F::Index i = 0; i < v.inner; ++i) {
          const long double d = x[static_cast<std::size_t>((o * v.channels + ch) * v.inner + i)] - s / m;
          q += d * d;
        }
      const auto k = static_cast<std::size_t>(ch);
      CHECK(std::isfinite(m2[k]));
      CHECK(rel_err(mean[k], static_cast<double>(s / m)) <= kDoubleTol);
      CHECK(rel_err(m2[k], static_cast<double>(q)) <= kDoubleTol);
    }
  }
}

TEST_CASE("a large bias brings a float product beyond float's range back: y is finite and exact",
          "[dispatch][range]") {
  // x = {-3, 1, 1, 1}: mean 0, biased variance 3. weight * xhat reaches 4.3e38 (beyond float's
  // 3.4e38) while weight * xhat + bias = 2.8e38 and -2.9e38: finite.
  const float w = -2.5e38f, b = -1.5e38f;
  const double eps = 1e-5, invstd = 1 / std::sqrt(3.0 + eps);
  // The constants mark the channel for the exact path (that is what the kernels then run).
  const auto cf = F::detail_forward::normalize_coef<float>(0.0, invstd, &w, &b, 0);
  CHECK(cf.exact);
  batchnorm::BatchNorm1d<float> bn(batchnorm::BatchNormOptions(1).eps(eps));
  bn.weight()(0) = w;
  bn.bias()(0) = b;
  Eigen::Tensor<float, 2> x(4, 1);
  x.setValues({{-3.0f}, {1.0f}, {1.0f}, {1.0f}});
  const auto expect = [&](F::Index k) {
    return static_cast<double>(x(k, 0)) * invstd * static_cast<double>(w) + static_cast<double>(b);
  };
  const Eigen::Tensor<float, 2> y = bn.forward(x);
  bn.running_mean()(0) = 0;
  bn.running_var()(0) = 3;
  bn.eval();
  const Eigen::Tensor<float, 2> y_eval = bn.forward(x);
  for (F::Index k = 0; k < 4; ++k) {
    INFO("value " << k);
    CHECK(rel_err(y(k, 0), expect(k)) <= kFloatTrainTol);
    CHECK(rel_err(y_eval(k, 0), expect(k)) <= kFloatTrainTol);
  }
}

TEST_CASE("a product beyond float's range that the remainder mean - head brings back: the exact path",
          "[dispatch][range]") {
  // head = float(1e11), mean = head + 4000 (its remainder folds into r), ulp(head) = 8192. At
  // x = head + ulp, (x - head) * 5e34 = 4.1e38 overflows float while (x - mean) * 5e34 = 2.1e38
  // does not: the channel is marked exact by the float constant r = -tail * 5e34 = -2e38, and y
  // and dx are finite. Channel 1 of C (every other channel common), as (N, C) (lane constants, a
  // vector of channels at a time) and (1, C, N) (row path); N > kExactDxCount: float dx in T.
  using A = double;
  const double head = static_cast<double>(1e11f), mean_c = head + 4000, ulp = 8192, scale = 5e34;
  const F::Index N = D::kExactDxCount + 1, C = 9;
  const float w = static_cast<float>(scale);
  const auto cf = F::detail_forward::normalize_coef<float>(mean_c, 1.0, &w, nullptr, 0);
  REQUIRE(cf.exact);
  std::vector<A> mean(C, 0.5), invstd(C, 1.0), sum_dy(C, 0.0), sum_dy_d(C, 0.0);
  std::vector<float> weight(C, 1.0f);
  mean[1] = mean_c, weight[1] = w;
  sum_dy_d[1] = -static_cast<A>(2 * N);  // q = -kc * invstd^2 * sum_dy_d / m = scale (m = 2N)
  const F::detail_backward::DxCoef<float> dx_coef(mean.data(), invstd.data(), weight.data(), sum_dy.data(), sum_dy_d.data(), A(2 * N));
  REQUIRE(dx_coef(1).exact);
  std::vector<float> x(static_cast<std::size_t>(N * C)), dy(x.size());
  for (F::Index n = 0; n < N; ++n)
    for (F::Index c = 0; c < C; ++c) {
      const auto k = static_cast<std::size_t>(n * C + c);
      x[k] = c == 1 ? static_cast<float>(head + (n % 2 ? ulp : 0.0)) : 0.25f * static_cast<float>(n - c);
      dy[k] = 0.5f - 0.125f * static_cast<float>(n);
    }
  std::vector<float> xt(x.size()), dyt(x.size());
  for (F::Index n = 0; n < N; ++n)
    for (F::Index c = 0; c < C; ++c) {
      xt[static_cast<std::size_t>(c * N + n)] = x[static_cast<std::size_t>(n * C + c)];
      dyt[static_cast<std::size_t>(c * N + n)] = dy[static_cast<std::size_t>(n * C + c)];
    }
  for (const bool lanes : {true, false}) {
    INFO((lanes ? "(N, C): lane constants" : "(1, C, N): row path"));
    const View v = lanes ? View{N, C, 1} : View{1, C, N};
    const std::vector<float>& xs = lanes ? x : xt;
    const std::vector<float>& dys = lanes ? dy : dyt;
    std::vector<float> y(x.size()), dx(x.size());
    static std::atomic<long> built;
    built = 0;
    D::affine_lanes_observer = [](F::Index channels) { built += static_cast<long>(channels); };
    D::dx_lanes_observer = [](F::Index channels) { built += static_cast<long>(channels); };
    F::normalize(xs.data(), v, mean.data(), invstd.data(), weight.data(), static_cast<const float*>(nullptr), y.data());
    F::backward_dx(xs.data(), dys.data(), v, mean.data(), invstd.data(), weight.data(), 2 * N, sum_dy.data(),
                   sum_dy_d.data(), dx.data());
    D::affine_lanes_observer = nullptr, D::dx_lanes_observer = nullptr;
    if (lanes) CHECK(built == 2 * C);  // both passes built their constants a vector of channels at a time
    for (F::Index n = 0; n < N; ++n) {
      INFO("n " << n);
      const auto k = static_cast<std::size_t>(lanes ? n * C + 1 : N + n);
      const double d = (static_cast<double>(xs[k]) - mean_c) * scale;
      REQUIRE(std::isfinite(y[k]));
      REQUIRE(std::isfinite(dx[k]));
      CHECK(rel_err(y[k], d) <= kFloatTrainTol);
      CHECK(rel_err(dx[k], static_cast<double>(dys[k]) * scale + d) <= kFloatTrainTol);
    }
  }
  // The module, training forward of such a channel (4 values, 3 of them one ulp above the
  // fourth): the batch mean's remainder brings (x - head) * p back. Every ISA copy runs it.
  batchnorm::BatchNorm1d<float> bn{batchnorm::BatchNormOptions(C)};
  bn.weight()(1) = -3.4e38f;
  Eigen::Tensor<float, 2, Eigen::RowMajor> xm(4, C);
  xm.setConstant(1.0f);
  const float lo = 9.9999998e10f, hi = std::nextafter(std::nextafter(lo, 1e20f), 1e20f);
  xm(0, 1) = lo, xm(1, 1) = hi, xm(2, 1) = hi, xm(3, 1) = hi;
  const Eigen::Tensor<float, 2, Eigen::RowMajor> ym = bn.forward(xm);
  const long double m = (static_cast<long double>(lo) + 3.0L * hi) / 4;
  const long double is = 1 / std::sqrt(((lo - m) * (lo - m) + 3 * (hi - m) * (hi - m)) / 4 + 1e-5L);
  for (F::Index n = 1; n < 4; ++n) {  // n = 0: -sqrt(3) * weight, beyond float's range
    INFO("n " << n);
    CHECK(rel_err(ym(n, 1), static_cast<double>((hi - m) * is * static_cast<long double>(bn.weight()(1)))) <=
          kFloatTrainTol);
  }
}

TEST_CASE("eval-mode backward in place: gradient sums taken again in double read the original dy",
          "[dispatch][range]") {
  // An Inf among x makes the float gradient sums of its channel non-finite, so they are taken
  // again in double (group_grad_sums), reading dy once more; in place, dx = dy * weight * invstd
  // must not have overwritten it by then. dbias = sum dy stays finite and exact; dweight = +inf.
  for (const auto& dims : {Eigen::array<Eigen::Index, 4>{1, 2, 4, 1}, Eigen::array<Eigen::Index, 4>{2, 2, 4, 5},
                           Eigen::array<Eigen::Index, 4>{3, 2, 1, 40}}) {
    INFO("shape " << dims[0] << "x" << dims[1] << "x" << dims[2] << "x" << dims[3]);
    batchnorm::BatchNorm2d<float> bn(batchnorm::BatchNormOptions(2));
    bn.weight().setConstant(2.0f);
    bn.eval();
    Eigen::Tensor<float, 4> x(dims), dy(dims), dx(dims);
    x.setConstant(0.5f);
    x(0, 0, 0, 0) = std::numeric_limits<float>::infinity();
    dy.setConstant(1.0f);
    (void)bn.forward(x);
    bn.backward(x, dy, dx);
    const double n = static_cast<double>(x.size() / 2);
    CHECK(bn.bias_grad()(0) == n);
    CHECK(bn.bias_grad()(1) == n);
    CHECK(std::isinf(bn.weight_grad()(0)));
    const Eigen::Tensor<float, 1> dweight = bn.weight_grad(), dbias = bn.bias_grad();
    bn.backward(x, dy, dy);  // in place
    for (Eigen::Index c = 0; c < 2; ++c) {
      CHECK(bn.bias_grad()(c) == dbias(c));
      CHECK(bn.weight_grad()(c) == dweight(c));
    }
    for (Eigen::Index k = 0; k < x.size(); ++k) CHECK(dy.data()[k] == dx.data()[k]);
  }
}

TEST_CASE("the kernels' invstd is invstd_of bitwise, a vector of channels at a time, tail included",
          "[dispatch][invstd]") {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  // Edge values first (zero, denormal, negative, inf, NaN, huge), then random variances.
  std::vector<double> var{0.0, 4.9e-324, 1e-300, -0.0, -1.0, inf, nan, 1.7e308, 1e-5, 1.0, 3.0, 0.25};
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> exponent(-30.0, 30.0);
  for (int i = 0; i < 41; ++i) var.push_back(std::pow(10.0, exponent(rng)));
  // Each length from 0 to every value: every tail of the vector width, in place and not.
  for (const double eps : {1e-5, 1e-3, 1e-300}) {
    for (std::size_t n = 0; n <= var.size(); ++n) {
      INFO("eps " << eps << ", n " << n);
      std::vector<double> out(n + 1, -7.0), in_place(var.begin(), var.begin() + static_cast<std::ptrdiff_t>(n));
      D::with_kernels(batchnorm::active_isa(), [&](auto kernels) {
        kernels.run_invstd(var.data(), static_cast<F::Index>(n), eps, out.data());
        kernels.run_invstd(in_place.data(), static_cast<F::Index>(n), eps, in_place.data());
      });
      // inference_stats (the module's eval forward) takes its invstd the same way.
      std::vector<double> stats_mean(n + 1, -7.0), stats_invstd(n + 1, -7.0);
      F::inference_stats(static_cast<F::Index>(n), var.data(), var.data(), eps, stats_mean.data(), stats_invstd.data());
      for (std::size_t c = 0; c < n; ++c) {
        const double want = F::invstd_of(var[c], eps);
        INFO("var " << var[c]);
        CHECK(same_bits(out[c], want));
        CHECK(same_bits(in_place[c], want));
        CHECK(same_bits(stats_invstd[c], want));
        CHECK(same_bits(stats_mean[c], var[c]));
      }
      CHECK(out[n] == -7.0);  // nothing written past n
      CHECK(stats_mean[n] == -7.0);
      CHECK(stats_invstd[n] == -7.0);
    }
  }
}

TEMPLATE_TEST_CASE("lane constants of channels of one value, many channels at once: the bits of the scalar form",
                   "[dispatch][affine_lanes]", float, double) {
  using T = TestType;
  using A = Acc<T>;
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const F::Index W = active_lanes<T>();
  // The same values as (N, C) (channels of one value a row: the lane constants built a vector of
  // channels at a time, affine_lanes), transposed as (1, C, N) (one row: built the same way on
  // the row path, where N is a vector or more) and twice as (2, C, N) (constants channel by
  // channel: the scalar form); y must be the same bits. Every tail of the vector width, and
  // channels at the edge of float's range (the exact path) or NaN among common ones.
  for (const F::Index N : {F::Index(3), F::Index(40)})
  for (const F::Index C : {F::Index(2), F::Index(7), F::Index(8), F::Index(9), F::Index(19), F::Index(300)}) {
    const View lanes{N, C, 1}, rows{1, C, N}, twice{2, C, N};
    const D::Plan row_plan = D::make_elementwise_plan<T>(rows, static_cast<int>(W));
    const bool rows_build = row_plan.row() && row_plan.short_rows;
    if (N == 40) REQUIRE(rows_build);  // a vector or more of values: the row path on every copy
    std::vector<T> x = normal_values<T>(static_cast<std::size_t>(N * C), 3.0, 2.0, 51);
    std::vector<T> rm = normal_values<T>(static_cast<std::size_t>(C), 3.0, 0.5, 52);
    std::vector<T> rv = normal_values<T>(static_cast<std::size_t>(C), 0.0, 1.0, 53);
    std::vector<T> w = normal_values<T>(static_cast<std::size_t>(C), 1.0, 0.3, 54);
    std::vector<T> b = normal_values<T>(static_cast<std::size_t>(C), 0.0, 0.3, 55);
    std::vector<A> mean(static_cast<std::size_t>(C)), invstd(static_cast<std::size_t>(C));
    for (F::Index c = 0; c < C; ++c) {
      const auto k = static_cast<std::size_t>(c);
      rv[k] = rv[k] * rv[k];
      if (c % 5 == 3) rv[k] = 0;  // invstd 1 / sqrt(eps)
      mean[k] = static_cast<A>(rm[k]) + A(1) / A(3);  // not exact in T: a remainder for r
      invstd[k] = F::invstd_of(static_cast<A>(rv[k]), 1e-5);
    }
    const auto edge = [&](F::Index c, double m, double var, double weight) {
      if (c >= C) return;
      const auto k = static_cast<std::size_t>(c);
      rm[k] = static_cast<T>(m), mean[k] = static_cast<A>(m), rv[k] = static_cast<T>(var), w[k] = static_cast<T>(weight);
      invstd[k] = F::invstd_of(static_cast<A>(var), 1e-5);
    };
    // float: p = 3e38 / sqrt(1e-4 + eps) beyond the common range (and float's): the exact path
    // gives y = bias where x = mean, the lane constants would give (x - mean) * inf = NaN.
    edge(1, 1.0, 1e-4, 3e38);
    x[1] = 1;
    edge(11, 1e34, 1.0, 1.0);  // float: |mean| beyond the common range
    edge(17, nan, 1.0, 1.0);
    edge(250, 1.0, inf, 1.0);
    std::vector<T> xt(x.size()), xt2(2 * x.size());
    for (F::Index n = 0; n < N; ++n)
      for (F::Index c = 0; c < C; ++c) xt[static_cast<std::size_t>(c * N + n)] = x[static_cast<std::size_t>(n * C + c)];
    std::copy(xt.begin(), xt.end(), xt2.begin());
    std::copy(xt.begin(), xt.end(), xt2.begin() + static_cast<std::ptrdiff_t>(xt.size()));
    for (int affine = 0; affine < 3; ++affine) {  // weight and bias, no weight, no bias
      const T* wp = affine == 1 ? nullptr : w.data();
      const T* bp = affine == 2 ? nullptr : b.data();
      for (const bool running : {true, false}) {
        INFO("N " << N << ", C " << C << ", affine " << affine << ", "
                  << (running ? "forward_inference" : "normalize"));
        const auto run = [&](const std::vector<T>& in, const View& v, std::vector<T>& y) {
          if (running) F::forward_inference(in.data(), v, rm.data(), rv.data(), wp, bp, 1e-5, y.data());
          else F::normalize(in.data(), v, mean.data(), invstd.data(), wp, bp, y.data());
        };
        std::vector<T> y(x.size()), yt(x.size()), yt2(xt2.size());
        static std::atomic<long> built;
        const auto built_by = [&](const std::vector<T>& in, const View& v, std::vector<T>& out) {
          built = 0;
          D::affine_lanes_observer = [](F::Index channels) { built += static_cast<long>(channels); };
          run(in, v, out);
          D::affine_lanes_observer = nullptr;
          return static_cast<F::Index>(built);
        };
        CHECK(built_by(x, lanes, y) == C);
        CHECK(built_by(xt, rows, yt) == (rows_build ? C : 0));
        CHECK(built_by(xt2, twice, yt2) == 0);
        for (F::Index n = 0; n < N; ++n)
          for (F::Index c = 0; c < C; ++c) {
            INFO("n " << n << ", c " << c);
            const T want = yt2[static_cast<std::size_t>(c * N + n)];
            CHECK(same_bits(y[static_cast<std::size_t>(n * C + c)], want));
            CHECK(same_bits(yt[static_cast<std::size_t>(c * N + n)], want));
            CHECK(same_bits(yt2[static_cast<std::size_t>((C + c) * N + n)], want));
          }
      }
    }
  }
}

TEMPLATE_TEST_CASE("dx constants of channels of one value, many channels at once: the bits of the scalar form",
                   "[dispatch][affine_lanes]", float, double) {
  using T = TestType;
  using A = Acc<T>;
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const F::Index W = active_lanes<T>();
  // As above, for backward_dx: (N, C) (dx constants built a vector of channels at a time,
  // dx_lanes), (1, C, N) (the same on the row path) against (2, C, N) (channel by channel).
  // N > kExactDxCount: float dx in T. Every view takes the count of the largest, 2N.
  for (const F::Index N : {D::kExactDxCount + 1, F::Index(40)})
  for (const F::Index C : {F::Index(2), F::Index(7), F::Index(9), F::Index(19), F::Index(300)}) {
    const View lanes{N, C, 1}, rows{1, C, N}, twice{2, C, N};
    const D::Plan row_plan = D::make_plan<T>(rows, static_cast<int>(W));
    const bool rows_build = row_plan.row() && row_plan.short_rows;
    REQUIRE(rows_build);  // more than a vector of values: the row path on every copy
    const auto n = static_cast<std::size_t>(N * C), nc = static_cast<std::size_t>(C);
    const std::vector<T> x = normal_values<T>(n, 3.0, 2.0, 61), dy = normal_values<T>(n, 0.0, 1.0, 62);
    std::vector<T> w = normal_values<T>(nc, 1.0, 0.3, 63);
    std::vector<A> mean(nc), invstd(nc), sum_dy(nc), sum_dy_d(nc);
    const std::vector<T> m0 = normal_values<T>(nc, 3.0, 0.5, 64), s0 = normal_values<T>(nc, 0.0, 4.0, 65),
                         s1 = normal_values<T>(nc, 0.0, 4.0, 66), v0 = normal_values<T>(nc, 0.0, 1.0, 67);
    for (std::size_t k = 0; k < nc; ++k) {
      mean[k] = static_cast<A>(m0[k]) + A(1) / A(3);  // not exact in T: a tail
      invstd[k] = F::invstd_of(static_cast<A>(v0[k]) * static_cast<A>(v0[k]), 1e-5);
      sum_dy[k] = static_cast<A>(s0[k]), sum_dy_d[k] = static_cast<A>(s1[k]);
    }
    const auto edge = [&](F::Index c, double m, double is, double weight) {
      if (c >= C) return;
      const auto k = static_cast<std::size_t>(c);
      mean[k] = static_cast<A>(m), invstd[k] = static_cast<A>(is), w[k] = static_cast<T>(weight);
    };
    edge(1, 1.0, 1e20, 1e20);  // float: p and q beyond the common range
    edge(8, 1e34, 1.0, 1.0);   // float: |mean| beyond it
    edge(17, nan, 1.0, 1.0);
    edge(250, 1.0, inf, 1.0);
    std::vector<T> xt(2 * n), dyt(2 * n);  // twice: the second copy for (2, C, N)
    for (F::Index o = 0; o < N; ++o)
      for (F::Index c = 0; c < C; ++c)
        for (const std::size_t copy : {std::size_t(0), n}) {
          xt[copy + static_cast<std::size_t>(c * N + o)] = x[static_cast<std::size_t>(o * C + c)];
          dyt[copy + static_cast<std::size_t>(c * N + o)] = dy[static_cast<std::size_t>(o * C + c)];
        }
    for (const bool affine : {true, false}) {
      INFO("N " << N << ", C " << C << (affine ? ", weight" : ", no weight"));
      const T* wp = affine ? w.data() : nullptr;
      std::vector<T> dx(n), dxt(n), dxt2(2 * n);
      static std::atomic<long> built;
      const auto built_by = [&](const T* xp, const T* dyp, const View& v, T* out) {
        built = 0;
        D::dx_lanes_observer = [](F::Index channels) { built += static_cast<long>(channels); };
        F::backward_dx(xp, dyp, v, mean.data(), invstd.data(), wp, 2 * N, sum_dy.data(), sum_dy_d.data(), out);
        D::dx_lanes_observer = nullptr;
        return static_cast<F::Index>(built);
      };
      CHECK(built_by(x.data(), dy.data(), lanes, dx.data()) == C);
      CHECK(built_by(xt.data(), dyt.data(), rows, dxt.data()) == C);
      CHECK(built_by(xt.data(), dyt.data(), twice, dxt2.data()) == 0);
      std::vector<T> in_place(dyt.begin(), dyt.begin() + static_cast<std::ptrdiff_t>(n));  // dx over dy
      CHECK(built_by(xt.data(), in_place.data(), rows, in_place.data()) == C);
      for (F::Index o = 0; o < N; ++o)
        for (F::Index c = 0; c < C; ++c) {
          INFO("n " << o << ", c " << c);
          const T want = dxt2[static_cast<std::size_t>(c * N + o)];
          CHECK(same_bits(dx[static_cast<std::size_t>(o * C + c)], want));
          CHECK(same_bits(dxt[static_cast<std::size_t>(c * N + o)], want));
          CHECK(same_bits(dxt2[n + static_cast<std::size_t>(c * N + o)], want));
          CHECK(same_bits(in_place[static_cast<std::size_t>(c * N + o)], want));
        }
    }
  }
}

TEST_CASE("a running statistic that overflows float becomes inf, never NaN", "[dispatch][range]") {
  for (const double momentum : {1.0, 0.5, 0.1}) {
    INFO("momentum " << momentum);
    batchnorm::BatchNorm1d<float> bn(batchnorm::BatchNormOptions(1).momentum(momentum));
    Eigen::Tensor<float, 2> x(2, 1);
    x.setValues({{3e38f}, {-3e38f}});  // unbiased variance 1.8e77: beyond float
    (void)bn.forward(x);
    CHECK(std::isinf(bn.running_var()(0)));
    CHECK(bn.running_var()(0) > 0);
    CHECK(bn.running_mean()(0) == 0);
    // A second step: (1 - f) * inf + f * var stays inf; with f == 1 it takes the batch's.
    (void)bn.forward(x);
    CHECK(std::isinf(bn.running_var()(0)));
  }
  // Momentum 0 keeps the old statistics, whatever the batch (0 * inf would be NaN).
  batchnorm::BatchNorm1d<float> keep(batchnorm::BatchNormOptions(1).momentum(0.0));
  Eigen::Tensor<float, 2> x(2, 1);
  x.setValues({{3e38f}, {-3e38f}});
  (void)keep.forward(x);
  CHECK(keep.running_var()(0) == 1);
  CHECK(keep.running_mean()(0) == 0);
}

TEMPLATE_TEST_CASE("the float accuracy bar holds for channels of 2 to 40 values, dx included", "[dispatch][small]",
                   float, double) {
  using T = TestType;
  std::uint32_t seed = 7;
  for (const F::Index m : {2, 3, 4, 5, 8, 16, 17, 40}) {
    for (int trial = 0; trial < 20; ++trial) {
      INFO("m " << m << ", trial " << trial);
      check_training<T>(View{m, 6, 1}, 0, seed += 3, 1.0, 0.1);
      check_training<T>(View{1, 5, m}, 0, seed += 3, 1.0, 0.1);
    }
  }
}

TEMPLATE_TEST_CASE("float dx of channels of at most kExactDxCount values is taken in double, block by block in memory order",
                   "[dispatch][small]", float, double) {
  using T = TestType;
  const F::Index B = D::kExactDxChannels;
  std::uint32_t seed = 911;
  // (N, C) rows and rows of inner values, with channel blocks whole, partial and beyond one.
  for (const View v : {View{16, 2 * B + 3, 1}, View{2, B + 1, 8}, View{3, B, 5}, View{4, 3 * B, 1}}) {
    INFO("view " << v.outer << "x" << v.channels << "x" << v.inner);
    PlanLog plans;
    static std::atomic<long> lanes_values;
    lanes_values = 0;
    D::exact_dx_rows_observer = [](F::Index values) { lanes_values += static_cast<long>(values); };
    check_training<T>(v, 1, seed += 7);
    D::exact_dx_rows_observer = nullptr;
    REQUIRE(!PlanLog::log().empty());
    // Inner 1: the float dx in double row by row across channels (every value, at least once).
    if (v.inner == 1 && std::is_same_v<T, float>) CHECK(lanes_values >= static_cast<long>(v.size()));
    else CHECK(lanes_values == 0);
    const bool exact = std::is_same_v<T, float>;
    CHECK(std::any_of(PlanLog::log().begin(), PlanLog::log().end(),
                      [&](const PlanLog::Entry& e) { return e.first.exact_dx == exact; }));
    CHECK(std::none_of(PlanLog::log().begin(), PlanLog::log().end(),
                       [&](const PlanLog::Entry& e) { return e.first.exact_dx != exact; }));
  }
}
