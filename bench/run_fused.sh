#!/usr/bin/env bash
# Build batchnorm_fused_bench (cmake --preset release; oneDNN's rows when libdnnl-dev is
# installed), run it, and write bench/results/fused.md: per cell (shape, layout, op, threads) the
# fused ReLU and add-ReLU of this library against the same work as separate passes (the module,
# then a ReLU pass) and against oneDNN, warm and cold, as ratios of times measured in the same
# run. Runnable from any directory.
#
#   bench/run_fused.sh [--out-dir DIR] [--repetitions R] [--filter REGEX] [--no-build]
#
# Each benchmark reports the median of its calls (bench::measure in harness.hpp: warm, a call
# right after a call on the same tensors; cold, after the baseline has run over other buffers);
# a cell's figure is the median over R repetitions (default 3). Ratios above 1 mean the fused
# call is faster.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname -- "$here")"
out_dir="$here/results"
reps=3
filter='.'
build=1
while (($#)); do
  case "$1" in
    --out-dir) out_dir="${2:?--out-dir needs a value}"; shift ;;
    --repetitions) reps="${2:?--repetitions needs a value}"; shift ;;
    --filter) filter="${2:?--filter needs a value}"; shift ;;
    --no-build) build=0 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_fused.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out_dir"
out_dir="$(cd -- "$out_dir" && pwd)"
cd "$root"
if ((build)); then
  cmake --preset release
  cmake --build --preset release --target batchnorm_fused_bench
fi
bin="$root/build/release/bench/batchnorm_fused_bench"
[ -x "$bin" ] || { echo "run_fused.sh: $bin not built" >&2; exit 1; }
{
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "git: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' (modified tree)')"
  echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs"
  echo "command: bench/run_fused.sh --repetitions $reps --filter '$filter'"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out_dir/fused_meta.txt"
"$bin" --benchmark_filter="$filter" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
  --benchmark_min_time=0.2 --benchmark_out="$out_dir/fused.json" --benchmark_out_format=json > /dev/null
python3 - "$out_dir" <<'PY'
import json, sys, os
out = sys.argv[1]
data = json.load(open(os.path.join(out, "fused.json")))
cells = {}
for b in data["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    impl, dtype, op, shape, layout, threads = b["run_name"].split("/")[:6]
    cells.setdefault((op, shape, layout, threads), {})[impl] = b
meta = open(os.path.join(out, "fused_meta.txt")).read().strip().splitlines()
isa = data.get("context", {}).get("batchnorm_isa", "?")
lines = ["# Fused ReLU and add-ReLU: benchmark", "", "| | |", "|---|---|"]
lines += [f"| {l.split(': ', 1)[0]} | {l.split(': ', 1)[1]} |" for l in meta]
lines += [f"| batchnorm ISA | {isa} |", "",
          "float32, BatchNorm2d. `fused`: this library's one pass (`activation(Activation::relu)`, or",
          "`forward_add_relu` / `backward_add_relu`); `ms`: its median warm time. Each ratio is the",
          "other implementation's time over the fused one's, measured in the same run (above 1: the fused",
          "call is faster). `separate`: the module, then a ReLU pass (or `max(y + residual, 0)`) over y",
          "on the same threads; backward, a ReLU backward pass from the kept output, then the module's",
          "backward. `oneDNN`: `fuse_norm_relu`; for add-ReLU, its batch norm then a binary add with a",
          "ReLU post-op (oneDNN 2.6 has no fused add-ReLU; no backward row). warm: a call right after a",
          "call on the same tensors; cold: after the memory baseline ran over other buffers.", ""]
def ratio(cell, other, fused, cond):
    if other not in cell or fused not in cell:
        return "-"
    return f"{cell[other]['ms_' + cond] / cell[fused]['ms_' + cond]:.2f}"
head = ("| op | shape | layout | threads | ReLU ms | separate warm | separate cold | oneDNN warm | oneDNN cold "
        "| add-ReLU ms | separate warm | separate cold | oneDNN warm | oneDNN cold |")
lines += [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
summary = {}
order = {"forward_train": 0, "forward_eval": 1, "backward_train": 2}
for key in sorted(cells, key=lambda k: (order.get(k[0], 9), k[1], k[2], k[3])):
    c = cells[key]
    row = list(key[:3]) + [key[3].split(":")[1]]
    for fused, sep, dnn in (("batchnorm_relu", "batchnorm+relu", "onednn_relu"),
                            ("batchnorm_add_relu", "batchnorm+add_relu", "onednn+add_relu")):
        row.append(f"{c[fused]['ms_warm']:.3f}" if fused in c else "-")
        row += [ratio(c, sep, fused, "warm"), ratio(c, sep, fused, "cold"),
                ratio(c, dnn, fused, "warm"), ratio(c, dnn, fused, "cold")]
        for other, cond in ((sep, "warm"), (sep, "cold"), (dnn, "warm"), (dnn, "cold")):
            if other in c and fused in c:
                summary.setdefault((key[0], other, cond), []).append(c[other]["ms_" + cond] / c[fused]["ms_" + cond])
    lines.append("| " + " | ".join(row) + " |")
lines += ["", "Median over the cells above of each ratio:", "",
          "| op | against | warm | cold |", "|---|---|---:|---:|"]
def med(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
for op in sorted({k[0] for k in summary}, key=lambda o: order.get(o, 9)):
    for other in ("batchnorm+relu", "onednn_relu", "batchnorm+add_relu", "onednn+add_relu"):
        if (op, other, "warm") in summary:
            lines.append(f"| {op} | {other} | {med(summary[(op, other, 'warm')]):.2f} | "
                         f"{med(summary[(op, other, 'cold')]):.2f} |")
open(os.path.join(out, "fused.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
