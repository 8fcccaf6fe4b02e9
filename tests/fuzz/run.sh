#!/bin/sh
# Fuzzing batchnorm's module API with libFuzzer (tests/fuzz/fuzz_batch_norm.cpp), and the
# safetensors reader (tests/fuzz/fuzz_safetensors.cpp: smoke test fuzz.smoke.safetensors; long
# sessions of it: FUZZER=fuzz_safetensors, seeds corpus_safetensors/, as below).
#
#   tests/fuzz/run.sh                 configure build/fuzz with clang++-14, build the fuzz target,
#                                     run the smoke tests: ctest -L fuzz (fuzz.smoke.sse2/avx2/avx512,
#                                     each BATCHNORM_FUZZ_RUNS inputs from a fixed seed, default
#                                     6000, or BATCHNORM_FUZZ_SECONDS if sooner, default 300; set
#                                     them in the environment to change them). The same binary
#                                     fuzzes the same inputs every run (smoke.cmake).
#   tests/fuzz/run.sh --hours N       one long session instead: N hours, on build/fuzz/long/corpus
#                                     (seeded from tests/fuzz/corpus, grows and is kept between
#                                     sessions), BATCHNORM_ISA from the environment (default: unset,
#                                     the widest path); one worker (-fork=1, the machine is shared)
#                                     that keeps going after a crash (-ignore_crashes=1), so a
#                                     session collects every crash, not only the first.
#
# Crashes (oracle failures, sanitizer reports): the smoke tests write them to
# build/fuzz/tests/fuzz/smoke_<isa>/crash-<sha1>, a long session to build/fuzz/long/crash-<sha1>.
# Each one is a reproducer; replay it (prints the decoded case: shape, layout, options, values):
#   build/fuzz/tests/fuzz/fuzz_batch_norm build/fuzz/long/crash-<sha1>
#   BATCHNORM_ISA=sse2 build/fuzz/tests/fuzz/fuzz_batch_norm <crash file>
# and minimise it with
#   build/fuzz/tests/fuzz/fuzz_batch_norm -minimize_crash=1 -runs=10000 <crash file>
# BATCHNORM_FUZZ_PRINT=1 prints the decoded case of every input (also of passing ones).
# The seed corpus comes from tests/fuzz/make_seeds.py; never write crash files into it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build/fuzz
hours=""
while [ $# -gt 0 ]; do
  case $1 in
    --hours)
      hours=${2:-}
      # libFuzzer reads -max_total_time=0 as "no limit".
      awk "BEGIN { exit !(\"$hours\" + 0 > 0) }" ||
        { echo "run.sh: --hours needs a positive number of hours, got '$hours'" >&2; exit 2; }
      shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p "$root/build"
cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DBATCHNORM_FUZZ=ON -DBATCHNORM_BUILD_EXAMPLES=OFF \
  -DBATCHNORM_FUZZ_RUNS="${BATCHNORM_FUZZ_RUNS:-6000}" -DBATCHNORM_FUZZ_SECONDS="${BATCHNORM_FUZZ_SECONDS:-300}" > "$build.configure.log" 2>&1 ||
  { tail -20 "$build.configure.log"; exit 1; }
cmake --build "$build" -j2 --target fuzz_batch_norm fuzz_safetensors > "$build.build.log" 2>&1 ||
  { grep -E "error|warning" "$build.build.log" | head -30; exit 1; }
name=${FUZZER:-fuzz_batch_norm}
case $name in
  fuzz_batch_norm) seeds=$here/corpus; long=$build/long; max_len=1024 ;;
  fuzz_safetensors) seeds=$here/corpus_safetensors; long=$build/long_safetensors; max_len=4096 ;;
  *) echo "run.sh: FUZZER must be fuzz_batch_norm or fuzz_safetensors, got '$name'" >&2; exit 2 ;;
esac
fuzzer=$build/tests/fuzz/$name

if [ -z "$hours" ]; then
  exec ctest --test-dir "$build" -L fuzz --output-on-failure
fi

seconds=$(awk "BEGIN { printf \"%d\", $hours * 3600 }")
mkdir -p "$long/corpus"
cp -n "$seeds"/* "$long/corpus/" 2>/dev/null || true
echo "$name: fuzzing for $hours h ($seconds s), BATCHNORM_ISA=${BATCHNORM_ISA:-<unset>}; crashes go to $long/"
exec "$fuzzer" -fork=1 -ignore_crashes=1 -max_total_time="$seconds" -max_len="$max_len" -timeout=60 -print_final_stats=1 \
  -artifact_prefix="$long/" "$long/corpus"
