// batchnorm: the tuning constants of the kernels, in one place. Free to change; not public API.
// Each says its unit and its reason. They were measured on the project's benchmark machine: a
// 2-core x86-64 virtual machine with AVX-512, 48 KiB L1d, 2 MiB L2 per core and 32 MiB L3 (the
// figures and the runs behind them are in bench/results and the commit messages). They depend
// on the cache sizes, not on the vector width, except where a comment says so.
#pragma once

#include <algorithm>

#include "../view.hpp"

BATCHNORM_BEGIN_NAMESPACE
namespace detail {

// --- Which traversal (plan.hpp) ------------------------------------------------------------
/// values: rows at least this long take the row path (vectorised along a row); shorter rows
/// take the lane path (vectorised across neighbouring channels), whose tiles hold a row.
inline constexpr Index kRowMin = 1024;
/// values: a lane-path tile holds whole channels, at most this many values of a row (its
/// per-lane constants and sums are stack arrays of this size).
inline constexpr Index kLanes = 1024;
static_assert(kRowMin <= kLanes, "a lane tile must hold one channel of the longest lane-path row");
/// values: a view of one row (outer 1) takes the row path, one channel at a time, except where
/// its channels are shorter than a vector: the elementwise pass (inference forward) then always
/// takes the lane path, the other passes up to this many values a channel. Measured on Zen 5
/// (one thread, warm, medians of 5, time lane / row path): eval (1, 4096) float 0.48, double
/// 0.41, (1, 4096, 8) float 0.58, (1, 1024, 4) 0.74 and 0.57; training and backward (1, 1024,
/// inner) at inner 2, 3, 4: float 0.48-0.72, 0.60-0.81, 0.73-0.90, double 0.57-0.61, 0.73-0.79,
/// 0.80-0.85; at inner 6 1.0-1.13.
inline constexpr Index kOneRowLanes = 4;

// --- Row path (row_path.hpp) -----------------------------------------------------------------
/// values: a two-pass chunk of the row path, read twice from L1 (8 KiB of float).
inline constexpr Index kChunk = 2048;
/// bytes of short channels (one chunk each) per group, so that their per-channel latencies
/// overlap (L1-sized).
inline constexpr Index kShortGroupBytes = 1 << 14;

// --- Lane path (lane_path.hpp) ---------------------------------------------------------------
/// rows: the first statistics block of the lane path (two passes, the second from L2): at least
/// kBlockRows, at most kBlockRowsMax, about kBlockBytes of a full tile in between; more rows
/// amortise the per-lane work of a block.
inline constexpr Index kBlockRows = 64;
inline constexpr Index kBlockRowsMax = 256;
inline constexpr Index kBlockBytes = 1 << 18;
/// rows: the later statistics blocks (one pass; the lanes whose one pass is declined take two
/// after it, from L2): at least kBlockRows, at most kOnePassRowsMax, about kOnePassBytes of a
/// full tile in between. Measured against blocks as the first (minimum of 3 runs of 201 calls,
/// float moments, one thread): 8192x64 0.088 -> 0.083 ms, 256x2040 0.116 -> 0.106, 100352x64
/// 1.34 -> 1.21, double 4096x1024 1.48 -> 1.34; four times more again lost on double (the
/// declined lanes then re-read from memory).
inline constexpr Index kOnePassRowsMax = 1024;
inline constexpr Index kOnePassBytes = 1 << 20;
/// rows: a block of the lane path's gradient sums, and of its elementwise pass.
inline constexpr Index kSumRows = 64;
inline constexpr Index kApplyRows = 256;
/// vectors: lane tiles of at most this many vectors keep their sums and constants in registers
/// (16 vector registers hold two sums and the constants); also the width of two-pass statistic
/// strips whose rows are 4 KiB apart or more.
inline constexpr int kNarrowVectors = 8;
/// vectors: the strips of the lane path's one-pass statistics (two sums a vector: 8 spilled
/// registers).
inline constexpr int kOnePassStripVectors = 4;
/// vectors: strips of two-pass statistics whose rows are under 4 KiB apart (memory read in 1 KiB
/// runs of float with AVX-512).
inline constexpr int kWideStripVectors = 16;
/// bytes: rows this far apart or more put a strip's rows in the same L1 sets (4 KiB aliasing).
inline constexpr Index kPageBytes = 4096;

// --- Wide rows (wide_rows.hpp) ---------------------------------------------------------------
/// rows: a statistics block when rows hold a vector or more (L1).
inline constexpr Index kWideBlockRows = 16;
/// channels: a chunk of the wide-row traversal (its per-channel constants and sums are stack
/// arrays of this size).
inline constexpr Index kWideChannels = 64;
/// bytes: a row block of a wide-row chunk (L2).
inline constexpr Index kWideBlockBytes = 1 << 18;

// --- Precision (sums.hpp) --------------------------------------------------------------------
/// additions: partial sums in T take at most this many terms a lane before they move to double;
/// for float that bounds the relative error of a partial sum by 7 * 2^-24.
inline constexpr int kFlush = 8;
/// values a channel: float training backward computes dx in double at or below this count,
/// where dx is nearly pure cancellation (m = 2: dx = k * (dy - mean dy - xhat * mean dy*xhat)
/// with xhat = +-1) and T arithmetic would cost more than the 1e-5 accuracy bar.
inline constexpr Index kExactDxCount = 16;
/// channels whose dx constants (four accum_t<T> each, on the stack) the exact dx pass of
/// kExactDxCount takes at a time, row by row.
inline constexpr Index kExactDxChannels = 128;

// --- Stores (store.hpp) ----------------------------------------------------------------------
/// bytes of output a thread: from this size the elementwise passes (forward and backward) write
/// with non-temporal stores, on CPUs other than AMD's (stream_bytes() in plan.hpp). A thread's
/// tensors then fill its L2 (x and y, or x, dy and dx), and a plain store costs a read of the
/// line and a write-back later. Measured on Intel (Cooper Lake, 1 thread, back to back (warm)
/// and after a pass over other buffers (cold)), AVX-512 copy of n bytes: non-temporal / plain
/// 0.98 warm and 0.80 cold at 1 MiB, 0.70-0.85 both from 1.25 to 12 MiB, 1.3 warm at 768 KiB;
/// kernels at 1-2 MiB (float and double, every layout) alike: backward 0.7-0.9, eval 0.65-0.8.
/// The outputs then leave the cache: a layer that reads them next reads them from memory.
/// Short rows of the row path (Plan::short_rows) that are not whole aligned vectors keep plain
/// stores.
inline constexpr Index kStreamBytes = 1 << 20;
/// bytes of output a thread: the same on AMD's CPUs, whose shared L3 keeps far larger outputs
/// faster with plain stores. Measured on Zen 5 (32 MiB L3; float (N, 256), warm, time with
/// non-temporal stores / plain): eval on 1 thread 1.33 at 1 MiB, 1.2-1.3 at 4-8 MiB, 0.8 at 12
/// MiB, 0.6 at 16 MiB; backward 1.1 at 2 MiB, 1.04 at 10 MiB, 0.95 at 12 MiB, 0.86 at 16 MiB;
/// on 2 threads splitting the batch (segments_of) plain stores are faster up to 16 MiB in all
/// (8 MiB a thread): eval 1.2-1.7, backward 1.2-1.6.
inline constexpr Index kStreamBytesAmd = 12 << 20;
/// bytes of output a thread: the same on AMD's CPUs where the threads share every row (channel
/// groups of the lane and wide-row paths on two or more threads). Plain stores there bring each
/// core's lines into the other's cache (L2 prefetches run on past a thread's part of a row);
/// non-temporal stores do not. Measured on Zen 5 (2 threads, float, warm, time with
/// non-temporal stores / plain): (N, C) RowMajor 64x1024 to 4096x1024, 128x512 to 4096x512 and
/// 2048x2048: eval 0.45-0.8, training 0.6-0.9, backward 0.8-1.0; (N, C, L) 256x64x32,
/// 1024x64x32, 128x32x64: eval 0.5-0.8, training 0.75-1.0, backward 0.75-0.95. Cold (after a
/// copy of 64 MiB of other buffers), (N, C) and (N, C, L) from 0.5 to 8 MiB: eval 0.65-1.0,
/// training 0.8-1.1, backward 0.85-1.1; the one loss, backward of 4096x1024 in the suite (1.1
/// warm, 1.2 cold), is a pass the gradient sums dominate. 128 KiB a thread streams every
/// parallel float view of this kind (kParallelMin).
inline constexpr Index kStreamSharedBytesAmd = 128 << 10;

// --- Threads (parallel.hpp) ------------------------------------------------------------------
/// values: views smaller than this run on one thread (a fork/join costs more).
inline constexpr Index kParallelMin = 1 << 16;
/// channels: fewer than this, and the threads split the batch instead of the channels.
inline constexpr Index kFewChannels = 4;
/// segments: the batch splits into this many (fixed by the view, never by the thread count, so
/// results are the same for any number of threads).
inline constexpr Index kSegments = 8;
/// values: a lane view of fewer tiles than threads splits its channels among the threads only
/// when its rows hold at least this many values a thread (less would be a vector or less each).
inline constexpr Index kSegmentLanes = 64;
/// values: rows (channels * inner) of at most this many split the batch too: split by channels,
/// the threads would share every row, and each core's L2 prefetcher then pulls in the lines the
/// other core writes (measured, two threads, in L2: ColMajor 8x32x32x32 training 0.081 ->
/// 0.042 ms, (N, C) 2048x128 0.086 -> 0.051 ms), and an output that is not 64-byte aligned has
/// one cache line in every row that both threads write (resnet_s3 channels-last eval 2.2x the
/// aligned time). Bounded by the segment scratch (kSegmentScratch).
inline constexpr Index kSegmentRowMax = 256;
/// values: longer lane-path rows, up to this many values, split the batch too when there are
/// kSegmentWideOuter rows or more, into as many segments as the scratch holds (segments_of).
/// Split by channels instead, each thread reads a part of every row (runs of a few KiB, on
/// which, likely, the prefetchers restart at every page). Measured on Zen 5 (float, warm, time
/// split by rows / split by channels; (N, C) RowMajor 1024x1024, 2048x1024, 4096x1024, 2048x512 and
/// ColMajor 32x64x56x56, i.e. (3136, 64, 32)): two threads, eval 0.47-0.66, training 0.55-0.89,
/// backward 0.43-0.71; one thread, eval 0.93-1.0, training 1.0-1.13, backward 1.0-1.11 (each
/// segment starts its statistics with a two-pass block, lane_moments), 1.2-1.25 at 256 rows,
/// hence kSegmentWideOuter.
inline constexpr Index kSegmentRowWide = 2048;
/// rows: the fewest with which rows of more than kSegmentRowMax values split the batch.
inline constexpr Index kSegmentWideOuter = 1024;
/// rows a thread: from this many, the elementwise pass (inference forward) of a view whose
/// channel groups would share every row splits the batch among the threads instead (make_plan).
/// Each segment computes every channel's constants, so with fewer rows a segment the split
/// costs more than it saves. Measured on Zen 5 (float eval, two threads, warm, medians of 5
/// back-to-back runs of each, time split by rows / split by channels): (N, C) 16x4096 1.54,
/// 32x4096 1.17, 32x2048 1.11; 64x1024 and 64x4096 1.0; 96x2048 0.78, 128x1024 0.80, 256x1024
/// 0.66, 256x2048 0.71.
inline constexpr Index kElementwiseSegmentRows = 32;
/// values: the per-channel statistics or sums of the segments after the first (the first keeps
/// them in the caller's arrays), in two stack arrays of this many A values (32 KiB for double).
inline constexpr Index kSegmentScratch = 2048;
static_assert((kSegments - 1) * std::max(kFewChannels - 1, kSegmentRowMax) <= kSegmentScratch &&
                  kSegmentRowWide <= kSegmentScratch,
              "the scratch holds the segments after the first of every segmented view");

}  // namespace detail
BATCHNORM_END_NAMESPACE
