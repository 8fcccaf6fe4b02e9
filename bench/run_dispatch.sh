#!/usr/bin/env bash
# What runtime CPU dispatch costs: build batchnorm_bench (-march=native) and
# batchnorm_bench_default (the compiler's default flags, kernels chosen at run time) from the
# same bench_batchnorm.cpp, time every cell of our suite (benchmarks named batchnorm/...; not
# floor, eigen_naive or the competitors) in both, alternating; then batchnorm_bench_pair, which
# holds both copies of every cell in one process (bench_pair.cpp); and write dispatch.md: per
# cell default / native in both protocols, the worst ratios and the cells above 1.10.
# Runnable from any directory.
#
#   bench/run_dispatch.sh [--build-dir DIR] [--publish] [--repetitions R] [--min-time S]
#                         [--filter REGEX] [--no-build] [--pair-only] [--report-only]
#
#   --build-dir DIR  a Release configure of its own (default build/bench-dispatch): benchmarks
#                    on, tests and examples off, oneDNN and libtorch off (neither binary needs
#                    them, so both link the same libraries)
#   --publish        write bench/results/dispatch.md and dispatch_meta.txt (default: DIR/results)
#   --repetitions R  runs of each binary per cell (default 5)
#   --min-time S     Google Benchmark's --benchmark_min_time per run (default 0.05)
#   --filter REGEX   which of our cells (default ^batchnorm/, all of them); must select
#                    batchnorm/ names only
#   --no-build       use the binaries already in DIR
#   --pair-only      run batchnorm_bench_pair only; the two binaries' runs already in DIR stay
#   --report-only    write dispatch.md again from the JSON of the last run (DIR/dispatch-raw)
#
# Protocol. For each cell, R times: one process of each binary with --benchmark_filter for that
# cell alone, the order alternating (default first in odd repetitions, native first in even
# ones), so the two binaries of a pair run seconds apart on a shared machine. Each process times
# the cell with the suite's measure() (bench/harness.hpp); a run's time is its median warm time
# (ms_warm: a call right after a call on the same tensors). A cell's time is the median over its
# R runs; its ratio is median(default) / median(native). Then batchnorm_bench_pair with the same
# filter (pair/ for batchnorm/), --benchmark_repetitions=R, --benchmark_min_time=0.2: each
# iteration calls the native and the default copy once each, on the same buffers, the order
# alternating; a repetition's ratio is median(default calls) / median(native calls), the cell's
# the median over the R repetitions. Separate processes see different memory pages and machine
# states, and their times spread by 10-40% here; the pair shares all of that, so its ratio
# isolates the code.
# Each binary's active ISA (--print-isa, batchnorm::active_isa()) is recorded in the header and
# checked in every run's JSON context; BATCHNORM_ISA, if set, applies to both.
# Recorded like run_suite.sh: date (UTC), git revision, machine, CPU, caches, compiler and
# -march=native target, both binaries' compile flags, package versions, load before the run.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname -- "$here")"
build_dir="$root/build/bench-dispatch"
publish=0
reps=5
min_time=0.05
filter='^batchnorm/'
build=1
run=1
binaries=1

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --build-dir) build_dir="${2:?--build-dir needs a value}"; shift ;;
    --publish) publish=1 ;;
    --repetitions) reps="${2:?--repetitions needs a value}"; shift ;;
    --min-time) min_time="${2:?--min-time needs a value}"; shift ;;
    --filter) filter="${2:?--filter needs a value}"; shift ;;
    --no-build) build=0 ;;
    --pair-only) binaries=0 ;;
    --report-only) build=0; run=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run_dispatch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { echo "run_dispatch.sh: --repetitions needs a positive integer" >&2; exit 2; }
mkdir -p "$build_dir"
build_dir="$(cd -- "$build_dir" && pwd)"
if ((publish)); then out_dir="$here/results"; else out_dir="$build_dir/results"; fi
mkdir -p "$out_dir"
raw="$build_dir/dispatch-raw"
meta="$out_dir/dispatch_meta.txt"
native="$build_dir/bench/batchnorm_bench"
default="$build_dir/bench/batchnorm_bench_default"
pair="$build_dir/bench/batchnorm_bench_pair"
run_line="bench/run_dispatch.sh --repetitions $reps --min-time $min_time"
if ((publish)); then run_line+=" --publish"; fi
[[ "$filter" == '^batchnorm/' ]] || run_line+=" --filter '$filter'"
((binaries)) || run_line+=" --pair-only"

# --- build ----------------------------------------------------------------------------------------
if ((build)); then
  echo "configuring $build_dir (log: configure.log)"
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBATCHNORM_BUILD_BENCHMARKS=ON \
    -DBATCHNORM_BUILD_TESTS=OFF -DBATCHNORM_BUILD_EXAMPLES=OFF -DBATCHNORM_INSTALL=OFF \
    -DBATCHNORM_BENCH_NATIVE=ON -DBATCHNORM_BENCH_ONEDNN=OFF -DBATCHNORM_BENCH_LIBTORCH=OFF \
    >"$build_dir/configure.log" 2>&1 || { tail -n 30 "$build_dir/configure.log" >&2; exit 1; }
  echo "building batchnorm_bench, batchnorm_bench_default and batchnorm_bench_pair (log: build.log)"
  cmake --build "$build_dir" -j 2 --target batchnorm_bench batchnorm_bench_default batchnorm_bench_pair \
    >"$build_dir/build.log" 2>&1 || { tail -n 40 "$build_dir/build.log" >&2; exit 1; }
fi

if ((run)); then
  for bin in "$native" "$default" "$pair"; do
    [[ -x "$bin" ]] || { echo "run_dispatch.sh: $bin not found (drop --no-build)" >&2; exit 1; }
  done

  # --- what produced these numbers --------------------------------------------------------------
  cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt" | head -n 1; }
  flags_value() {  # target, variable
    local f="$build_dir/bench/CMakeFiles/$1.dir/flags.make"
    [[ -f "$f" ]] && sed -n "s/^$2 = //p" "$f" | head -n 1 || true
  }
  cxx="$(cache_value CMAKE_CXX_COMPILER)"
  cxx="${cxx:-g++}"
  march="$("$cxx" -march=native -Q --help=target 2>/dev/null | sed -n 's/^ *-march=[[:space:]]*//p' | head -n 1 || true)"
  if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then avx512=yes; else avx512=no; fi
  caches="$(lscpu 2>/dev/null | sed -n 's/^\(L[123][di]\{0,1\}\) cache:[[:space:]]*/\1 /p' | paste -sd ',' - | sed 's/,/, /g')"
  packages="$(dpkg-query -W -f='${Package} ${Version}, ' libbenchmark-dev libeigen3-dev 2>/dev/null || true)"
  cpu_busy_percent() {  # all CPUs, over one second: the machine is shared
    [[ -r /proc/stat ]] || { echo "?"; return; }
    local -a a b
    local i total=0 idle
    read -r -a a </proc/stat
    sleep 1
    read -r -a b </proc/stat
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    idle=$((b[4] + b[5] - a[4] - a[5]))
    echo $((total > 0 ? 100 * (total - idle) / total : 0))
  }
  if ((binaries)); then
    native_isa="$("$native" --print-isa)"
    default_isa="$("$default" --print-isa)"
    busy="$(cpu_busy_percent)"
    {
      echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
      echo "git: $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
      echo "machine: $(uname -m), Linux $(uname -r)"
      echo "CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), $(nproc) CPUs, AVX-512: $avx512"
      echo "caches: ${caches:-?}"
      echo "compiler: $("$cxx" --version | head -n 1), -march=native = ${march:-?}"
      echo "build type: $(cache_value CMAKE_BUILD_TYPE)"
      echo "native flags (batchnorm_bench): $(flags_value batchnorm_bench CXX_FLAGS)"
      echo "default flags (batchnorm_bench_default): $(flags_value batchnorm_bench_default CXX_FLAGS)"
      echo "active ISA: native $native_isa, default $default_isa (batchnorm::active_isa(); BATCHNORM_ISA=${BATCHNORM_ISA:-unset})"
      echo "packages: ${packages%, }"
      echo "protocol: $reps runs of each binary per cell, alternating, --benchmark_min_time=$min_time; warm time (measure()'s ms_warm)"
      echo "load average at start: $(cut -d ' ' -f 1-3 /proc/loadavg)"
      echo "CPUs busy before the run (1 s sample): $busy%"
    } >"$meta"
    cat "$meta"
    if [[ "$busy" != "?" ]] && ((busy > 10)); then
      echo "run_dispatch.sh: warning: the CPUs were $busy% busy before the run; the figures will be noisy" \
        "(threads:2 ones most)" >&2
    fi

    # --- run ----------------------------------------------------------------------------------------
    mapfile -t cells < <("$default" --benchmark_list_tests --benchmark_filter="$filter")
    ((${#cells[@]})) || { echo "run_dispatch.sh: no benchmark matches '$filter'" >&2; exit 1; }
    for c in "${cells[@]}"; do
      [[ "$c" == batchnorm/* ]] || { echo "run_dispatch.sh: '$c' is not ours; --filter must select batchnorm/ cells" >&2; exit 2; }
    done
    rm -rf "$raw"
    mkdir -p "$raw"
    echo "running ${#cells[@]} cells x $reps repetitions x 2 binaries (JSON and console.log in $raw)"
    start=$SECONDS
    for i in "${!cells[@]}"; do
      c="${cells[$i]}"
      for ((r = 1; r <= reps; r++)); do
        if ((r % 2)); then order=(default native); else order=(native default); fi
        for which in "${order[@]}"; do
          if [[ "$which" == native ]]; then bin="$native"; else bin="$default"; fi
          "$bin" --benchmark_filter="^${c}\$" --benchmark_min_time="$min_time" \
            --benchmark_out="$raw/$(printf '%03d' "$i").$which.$r.json" --benchmark_out_format=json \
            >>"$raw/console.log" 2>&1 || { tail -n 20 "$raw/console.log" >&2; exit 1; }
        done
      done
      printf '[%3d/%d, %4d s] %s\n' $((i + 1)) "${#cells[@]}" $((SECONDS - start)) "${c%/real_time}"
    done
    echo "load average at end: $(cut -d ' ' -f 1-3 /proc/loadavg)" >>"$meta"
  fi

  # --- the same cells, both copies in one process ------------------------------------------------
  [[ -f "$meta" ]] || { echo "run_dispatch.sh: $meta not found (run without --pair-only first)" >&2; exit 1; }
  pair_filter="${filter//batchnorm\//pair/}"
  sed -i '/^pair /d' "$meta"
  {
    echo "pair date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
    echo "pair git: $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "pair flags (batchnorm_bench_pair, pair_native.cpp adds -march=native): $(flags_value batchnorm_bench_pair CXX_FLAGS) $(flags_value batchnorm_bench_pair CXX_DEFINES)"
    echo "pair protocol: --benchmark_repetitions=$reps --benchmark_min_time=0.2, both copies alternating call by call"
    echo "pair CPUs busy before the run (1 s sample): $(cpu_busy_percent)%"
  } >>"$meta"
  mkdir -p "$raw"
  rm -f "$raw/pair.json"
  echo "running batchnorm_bench_pair --benchmark_filter='$pair_filter' ($reps repetitions)"
  "$pair" --benchmark_filter="$pair_filter" --benchmark_min_time=0.2 --benchmark_repetitions="$reps" \
    --benchmark_out="$raw/pair.json" --benchmark_out_format=json >"$raw/pair.log" 2>&1 ||
    { tail -n 20 "$raw/pair.log" >&2; exit 1; }
  echo "pair load average at end: $(cut -d ' ' -f 1-3 /proc/loadavg)" >>"$meta"
fi

[[ -f "$meta" ]] || { echo "run_dispatch.sh: $meta not found (run without --report-only first)" >&2; exit 1; }
python3 "$here/dispatch_report.py" --raw "$raw" --meta "$meta" --out "$out_dir/dispatch.md" --run "$run_line"
