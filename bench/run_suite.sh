#!/usr/bin/env bash
# Build batchnorm_bench (cmake --preset release, target batchnorm_bench only), run the benchmark
# suite once with JSON output, and write results.md, chart.png and readme_table.md (report.py,
# gnuplot) into build/bench-results, or with --publish into bench/results (the tracked copy).
# Runnable from any directory.
#
#   bench/run_suite.sh [--short] [--min-time SECONDS] [--filter REGEX] [--out-dir DIR | --publish]
#                      [--no-build]
#
#   --short        resnet_s1 and mlp only, f32, threads:1, min time 0.05 s: every implementation
#                  (batchnorm, oneDNN, libtorch) on the same subset
#   --min-time S   Google Benchmark's --benchmark_min_time (default 0.2, 0.05 with --short)
#   --filter R     a --benchmark_filter regex of your own (replaces the --short one)
#   --out-dir DIR  where results.json, meta.txt, results.md, chart.png, readme_table.md go (default
#                  build/bench-results)
#   --publish      write them into bench/results, the copy the README's tables come from
#   --no-build     use the binary already in build/release
#
# Recorded with the results (meta.txt and the header of results.md): date (UTC), git revision,
# uname -m / -r, lscpu model name, CPU count and AVX-512 availability, the compiler's
# --version line and -march=native target, the CMake build type and the exact compile flags
# and definitions of batchnorm_bench (from its flags.make), the Debian package versions of
# oneDNN, libtorch, Google Benchmark and Eigen, the load average and how busy the CPUs were
# just before the run.
# The machine is shared: numbers taken while something else runs (a compiler) are noisy,
# the threads:2 ones most of all.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname -- "$here")"
short=0
min_time=""
filter=""
out_dir="$root/build/bench-results"
publish=0
out_given=0
build=1

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --short) short=1 ;;
    --min-time) min_time="${2:?--min-time needs a value}"; shift ;;
    --filter) filter="${2:?--filter needs a value}"; shift ;;
    --out-dir) out_dir="${2:?--out-dir needs a value}"; out_given=1; shift ;;
    --publish) publish=1 ;;
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "run_suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ((short)); then
  : "${min_time:=0.05}"
  : "${filter:=^[^/]+/f32/[^/]+/(resnet_s1|mlp)/[^/]+/threads:1(/|$)}"
fi
: "${min_time:=0.2}"
: "${filter:=.}"
if ((publish)); then
  ((!out_given)) || { echo "run_suite.sh: --publish writes bench/results; drop --out-dir" >&2; exit 2; }
  out_dir="$here/results"
fi
# The revision before anything is written: --publish overwrites tracked files, which would make
# every published run look like a run of modified code.
revision="$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
mkdir -p "$out_dir"
out_dir="$(cd -- "$out_dir" && pwd)"

cd "$root"
build_dir="$root/build/release"
if ((build)); then
  cmake --preset release
  cmake --build --preset release --target batchnorm_bench
fi
bin="$build_dir/bench/batchnorm_bench"
[[ -x "$bin" ]] || { echo "run_suite.sh: $bin not found (drop --no-build)" >&2; exit 1; }

# --- what produced these numbers ----------------------------------------------------------------
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt" | head -n 1; }
flags_value() {
  local f="$build_dir/bench/CMakeFiles/batchnorm_bench.dir/flags.make"
  [[ -f "$f" ]] && sed -n "s/^$1 = //p" "$f" | head -n 1 || true
}
cxx="$(cache_value CMAKE_CXX_COMPILER)"
cxx="${cxx:-g++}"
march="$("$cxx" -march=native -Q --help=target 2>/dev/null | sed -n 's/^ *-march=[[:space:]]*//p' | head -n 1 || true)"
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then avx512=yes; else avx512=no; fi
packages="$(dpkg-query -W -f='${Package} ${Version}, ' libdnnl-dev libtorch-dev libbenchmark-dev libeigen3-dev 2>/dev/null || true)"
# Percentage of all CPUs busy over one second before the run: the machine is shared, and what
# others run shows up in our figures (threads:2 most: a busy CPU delays every parallel region
# by a scheduler time slice).
cpu_busy_percent() {
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
busy="$(cpu_busy_percent)"
meta="$out_dir/meta.txt"
{
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "git: $revision"
  echo "machine: $(uname -m), Linux $(uname -r)"
  echo "CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), $(nproc) CPUs, AVX-512: $avx512"
  echo "compiler: $("$cxx" --version | head -n 1), -march=native = ${march:-?}"
  echo "build type: $(cache_value CMAKE_BUILD_TYPE)"
  echo "flags: $(flags_value CXX_FLAGS)"
  echo "definitions: $(flags_value CXX_DEFINES)"
  echo "packages: ${packages%, }"
  echo "load average at start: $(cut -d ' ' -f 1-3 /proc/loadavg)"
  echo "CPUs busy before the run (1 s sample): $busy%"
} >"$meta"
cat "$meta"
if [[ "$busy" != "?" ]] && ((busy > 10)); then
  echo "run_suite.sh: warning: the CPUs were $busy% busy before the run; the figures will be noisy" \
    "(threads:2 ones most)" >&2
fi

# --- run ------------------------------------------------------------------------------------------
json="$out_dir/results.json"
args=(--benchmark_filter="$filter" --benchmark_min_time="$min_time"
      --benchmark_out="$json" --benchmark_out_format=json)
echo "running: $bin ${args[*]}"
"$bin" "${args[@]}"

python3 "$here/report.py" --json "$json" --meta "$meta" --out-dir "$out_dir" \
  --run "batchnorm_bench --benchmark_filter='$filter' --benchmark_min_time=$min_time"
