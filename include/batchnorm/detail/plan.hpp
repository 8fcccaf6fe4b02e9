// batchnorm: the plan, decided once per call from the view, the vector width and the number of
// threads (which never changes a result). Free to change; not public API.
//
// Every kernel (isa/drivers.hpp) starts with make_plan and runs what it names; nothing else
// re-derives "few channels?" or "short rows?". The traversals, one file each under isa/:
//
//   Path::row        rows of kRowMin values or more (or a single row, but see kOneRowLanes):
//                    channel c is `outer` rows of `inner` contiguous values; loops run along the
//                    rows with per-channel constants, one channel a group (row_path.hpp).
//   Path::row_short  the same with a channel of at most kChunk values: a group holds several
//                    channels whose passes run together, so their latencies overlap.
//   Path::lane       shorter rows: for fixed o the values of a tile of whole channels are one
//                    contiguous run of "lanes"; loops run across lanes with per-lane constants
//                    and partial sums in registers, and lanes fold into channels (lane_path.hpp).
//   Path::wide_rows  lane-path rows of a vector or more: per-channel constants instead, read in
//                    memory order, each row one run across a chunk of channels (wide_rows.hpp).
//
// A group (one thread's unit) finishes its statistics and then its elementwise pass, so the
// second pass finds the group in cache when it fits. With few channels, short rows, or rows of up
// to kSegmentRowWide values in a long batch, the threads split the batch into `segments` instead
// (segments_of), each segment planned on its own. Every sum has an order
// fixed by the view alone: results are bitwise the same for any number of threads.
#pragma once

#include <algorithm>
#include <numeric>

#include "../isa.hpp"
#include "../view.hpp"
#include "tuning.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

enum class Path { row, row_short, lane, wide_rows };

struct Plan {
  Path path = Path::row;
  int lanes = 1;          ///< values of T per vector of the ISA that runs
  Index group = 1;        ///< channels per group (row: 1; row_short: several; lane paths: whole tiles)
  Index groups = 0;       ///< number of groups
  Index segments = 1;     ///< batch segments the threads take instead of groups (1: none)
  bool parallel = false;  ///< run groups on OpenMP threads
  bool stream = false;    ///< write the output with non-temporal stores (stream_bytes() a thread)
  bool short_rows = false;  ///< row path with rows under kRowMin (outer <= 1: one row a channel),
                            ///< streamed only where a row is whole vectors on their grid
  bool exact_dx = false;  ///< float training dx in double (channels of at most kExactDxCount values)

  bool row() const noexcept { return path == Path::row || path == Path::row_short; }
};

inline int max_threads() noexcept {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Channels per lane tile: whole channels, at most kLanes lanes.
inline Index tile_channels(const View& v) noexcept { return std::max<Index>(1, kLanes / std::max<Index>(1, v.inner)); }

/// Tests set the streaming threshold through this (bytes of output a thread; 0: the CPU's),
/// so that they run the same paths on every CPU. Set it only while no kernel runs.
inline Index stream_bytes_override = 0;

/// Bytes of output a thread from which the elementwise passes write with non-temporal stores,
/// unless a test set stream_bytes_override: kStreamBytes on CPUs other than AMD's; on AMD's,
/// kStreamSharedBytesAmd where the threads share the rows (shared_rows: a lane or wide-row plan
/// whose channel groups run on two or more threads), kStreamBytesAmd otherwise (tuning.hpp).
inline Index stream_bytes(bool shared_rows) noexcept {
  static const bool amd = cpu_is_amd();
  if (stream_bytes_override > 0) return stream_bytes_override;
  if (!amd) return kStreamBytes;
  return shared_rows ? kStreamSharedBytesAmd : kStreamBytesAmd;
}

/// Lane-path rows kPageBytes or more apart put a strip's rows in the same L1 sets: such strips
/// stay narrow.
template <class T>
constexpr bool rows_share_sets(Index stride) noexcept {
  return stride * static_cast<Index>(sizeof(T)) >= kPageBytes;
}

/// The batch segments of a view, from the view alone (never the thread count), so results do
/// not depend on it; their statistics and sums merge in segment order. Views with enough values
/// for threads and at least kSegments rows are cut into segments that run on the threads instead
/// of channel groups: kSegments of them with few channels (fewer than kFewChannels) or rows of at
/// most kSegmentRowMax values (channels * inner); with lane-path rows of at most kSegmentRowWide
/// values and kSegmentWideOuter rows or more, the largest power of two up to kSegments whose
/// segments after the first fit the scratch ((S - 1) * C <= kSegmentScratch; (N, C): 2 from 683
/// channels, 4 from 293, 8 below).
/// Otherwise 1.
template <class T>
Index segments_of(const View& v) noexcept {
  if (v.size() < kParallelMin || v.outer < kSegments) return 1;
  const Index row = v.channels * v.inner;
  if (v.channels < kFewChannels || row <= kSegmentRowMax) return kSegments;
  if (row > kSegmentRowWide || v.inner >= kRowMin || v.outer < kSegmentWideOuter) return 1;
  Index s = 2;
  while (2 * s <= kSegments && (2 * s - 1) * v.channels <= kSegmentScratch) s *= 2;
  return s;
}

/// The plan for a view of T with vectors of `lanes` values. Row paths take one channel a group
/// (short channels: about kShortGroupBytes of them, at least one group per thread). Lane paths
/// take a range of whole tiles a group, one range per thread, or, with fewer tiles than
/// threads, an even share of the channels rounded to whole vectors of lanes. Lanes are
/// independent: the partition never changes a result.
/// elementwise: a pass with no sums (normalize), whose results cannot depend on the plan; a view
/// whose channel groups would share every row on two or more threads then splits its batch into
/// one segment a thread instead, each of kElementwiseSegmentRows rows or more (the thread count
/// may decide this: every value is computed the same way in any segment).
template <class T>
Plan make_plan(const View& v, int lanes, bool elementwise = false) noexcept {
  Plan p;
  p.lanes = lanes;
  const Index C = v.channels;
  const int threads = v.size() >= kParallelMin ? max_threads() : 1;
  p.parallel = threads > 1;
  p.segments = segments_of<T>(v);
  p.exact_dx = sizeof(T) == sizeof(float) && v.count() > 0 && v.count() <= kExactDxCount;
  // One row: the row path, unless its channels are shorter than a vector and the lane path
  // takes them (kOneRowLanes).
  const bool one_row_lanes = v.outer == 1 && v.inner < lanes && (elementwise || v.inner <= kOneRowLanes);
  if (v.inner >= kRowMin || (v.outer <= 1 && !one_row_lanes)) {
    const bool short_channels = v.outer * v.inner <= kChunk;
    p.path = short_channels ? Path::row_short : Path::row;
    const Index bytes = std::max<Index>(1, v.outer * v.inner * static_cast<Index>(sizeof(T)));
    p.group = short_channels ? std::max<Index>(1, std::min(kShortGroupBytes / bytes, (C + threads - 1) / threads)) : 1;
    p.short_rows = v.inner < kRowMin;
  } else {
    p.path = v.inner >= lanes ? Path::wide_rows : Path::lane;
    const Index ct = tile_channels(v);
    const Index tiles = (C + ct - 1) / ct;
    p.group = ct * ((tiles + threads - 1) / threads);
    if (tiles < threads && C * v.inner >= threads * kSegmentLanes) {
      const Index W = lanes, I = std::max<Index>(1, v.inner);
      const Index unit = W / std::gcd(W, I);  // channels that make a whole number of vectors
      const Index share = (C + threads - 1) / threads;
      p.group = std::min(p.group, (share + unit - 1) / unit * unit);
    }
  }
  p.groups = C > 0 ? (C + p.group - 1) / p.group : 0;
  // Streamed from stream_bytes() of output a thread: the threads that take part, at most one a
  // group or segment. Channel groups of the lane and wide-row paths on two or more threads share
  // every row (the views whose batch segments_of splits are those that would share short rows, or
  // rows of up to kSegmentRowWide values in a long batch). (Stores never change a result.)
  const auto shares_rows = [&] {
    return p.segments == 1 && !p.row() && std::min<Index>(threads, p.groups) > 1;
  };
  if (elementwise && shares_rows() && v.outer >= kElementwiseSegmentRows * threads) p.segments = threads;
  const Index working = std::max<Index>(1, std::min<Index>(threads, p.segments > 1 ? p.segments : p.groups));
  p.stream = v.size() * static_cast<Index>(sizeof(T)) / working >= stream_bytes(shares_rows());
  return p;
}

/// make_plan of a pass with no sums (normalize: inference forward).
template <class T>
Plan make_elementwise_plan(const View& v, int lanes) noexcept {
  return make_plan<T>(v, lanes, true);
}

/// Tests watch the plans the kernels run through this hook (nullptr: nobody watches). It is
/// called once per kernel call, from the calling thread, with the plan of the whole view and
/// the Isa of the copy that runs it.
inline void (*plan_observer)(const Plan&, Isa) = nullptr;

/// Tests see the streamed lane tiles whose rows start misaligned (narrow_apply_shifted in
/// isa/store.hpp) through this hook (nullptr: nobody watches): called with the tile's rows,
/// from the thread that writes them.
inline void (*shifted_rows_observer)(Index rows) = nullptr;

/// Tests see the elementwise passes of segmented views whose segments all read one set of tile
/// constants, filled once (segments_apply_exact in isa/drivers.hpp), through this hook (nullptr:
/// nobody watches): called once per such pass with the tile's channels, from the calling thread.
inline void (*shared_tile_observer)(Index channels) = nullptr;

/// Tests see the lane path's one-pass statistics (lane_moments in isa/lane_path.hpp) through
/// this hook (nullptr: nobody watches): called for each tile of a row block after a channel's
/// first with its lanes and how many of them were two-passed again (the one pass declined),
/// from the thread that sums them.
inline void (*one_pass_observer)(Index lanes, Index redone) = nullptr;

/// Tests see the lane constants built many channels at once (affine_lanes in isa/store.hpp)
/// through this hook (nullptr: nobody watches): called with the tile's channels, from the thread
/// that builds them.
inline void (*affine_lanes_observer)(Index channels) = nullptr;

/// Tests see the dx lane constants built many channels at once (dx_lanes in isa/store.hpp)
/// through this hook (nullptr: nobody watches): called with the tile's channels, from the thread
/// that builds them.
inline void (*dx_lanes_observer)(Index channels) = nullptr;

/// Tests see the float dx taken in double row by row across channels (exact_dx of a view of
/// inner 1, isa/store.hpp) through this hook (nullptr: nobody watches): called with the values
/// of each block of channels, from the thread that writes them.
inline void (*exact_dx_rows_observer)(Index values) = nullptr;

}  // namespace detail
BATCHNORM_END_NAMESPACE
