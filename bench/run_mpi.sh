#!/usr/bin/env bash
# Build batchnorm_mpi_bench (cmake --preset release; needs libopenmpi-dev openmpi-bin), run it
# under mpirun with 1, 2 and 4 ranks of this machine (one OpenMP thread a rank), and write
# bench/results/mpi.md: per shape and rank count, the training step (forward + backward) of the
# local and the synchronized module, their ratio, the two all-reduces alone, and the bytes a
# step communicates. Runnable from any directory.
#
#   bench/run_mpi.sh [--ranks "1 2 4"] [--out-dir DIR] [--no-build]
#
# More ranks than cores run oversubscribed (4 ranks on a 2-core machine): those rows measure the
# protocol, not a cluster.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname -- "$here")"
ranks="1 2 4"
out_dir="$here/results"
build=1
while (($#)); do
  case "$1" in
    --ranks) ranks="${2:?--ranks needs a value}"; shift ;;
    --out-dir) out_dir="${2:?--out-dir needs a value}"; shift ;;
    --no-build) build=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_mpi.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out_dir"
out_dir="$(cd -- "$out_dir" && pwd)"
cd "$root"
if ((build)); then
  cmake --preset release
  cmake --build --preset release --target batchnorm_mpi_bench
fi
bin="$root/build/release/bench/batchnorm_mpi_bench"
[ -x "$bin" ] || { echo "run_mpi.sh: $bin not built (is MPI installed? apt-get install libopenmpi-dev openmpi-bin)" >&2; exit 1; }

flags=()
if mpirun --version 2>&1 | grep -q "Open MPI"; then flags=(--oversubscribe --allow-run-as-root); fi
{
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified tree)')"
  echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
  echo "MPI: $(mpirun --version 2>&1 | head -1)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out_dir/mpi_meta.txt"
for np in $ranks; do
  OMP_NUM_THREADS=1 mpirun "${flags[@]}" -np "$np" "$bin" --benchmark_out="$out_dir/mpi_np$np.json" \
    --benchmark_out_format=json > /dev/null
done
python3 - "$out_dir" $ranks <<'PY'
import json, sys, os
out, ranks = sys.argv[1], sys.argv[2:]
rows = {}
for np_ in ranks:
    for b in json.load(open(os.path.join(out, f"mpi_np{np_}.json")))["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        kind, shape = b["run_name"].split("/")[:2]
        rows.setdefault((shape, int(np_)), {})[kind] = b
meta = open(os.path.join(out, "mpi_meta.txt")).read().strip().splitlines()
lines = ["# Synchronized batch norm over MPI: benchmark", "", "| | |", "|---|---|"]
lines += [f"| {l.split(': ', 1)[0]} | {l.split(': ', 1)[1]} |" for l in meta]
lines += ["", "A training step (forward + backward, float32, RowMajor) of each rank's own batch, median of",
          "3 x 200 steps, each the slowest rank's time. `local`: BatchNorm on the rank's batch alone;",
          "`sync`: BatchNorm(options, MpiCommunicator), statistics over every rank's batch.",
          "`all-reduces`: the step's two MPI_Allreduce calls alone; `bytes/step`: their buffers.", "",
          "| per-rank shape | ranks | local us | sync us | sync / local | all-reduces us | bytes/step |",
          "|---|---:|---:|---:|---:|---:|---:|"]
for (shape, np_), r in sorted(rows.items()):
    loc, syn = r["local"]["real_time"], r["sync"]["real_time"]
    lines.append(f"| {shape} | {np_} | {loc:.1f} | {syn:.1f} | {syn / loc:.2f} | "
                 f"{r['sync']['allreduce_us']:.1f} | {int(r['sync']['comm_bytes'])} |")
open(os.path.join(out, "mpi.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
