#!/usr/bin/env python3
"""Turn run_dispatch.sh's JSON runs into dispatch.md: default-flags binary against -march=native.

Standard library only.

  dispatch_report.py --raw DIR --meta dispatch_meta.txt --out dispatch.md [--run "how it was run"]

DIR holds one Google Benchmark JSON file per run, named <cell index>.<native|default>.<rep>.json,
each with one of our benchmarks (batchnorm/<dtype>/<op>/<shape>/<layout>/threads:<t>). A run's
time is measure()'s median warm kernel time, ms_warm (from a binary older than the warm and cold
counters: x_memcpy or x_triad times baseline_ms, the kernel interleaved with its baseline). A
cell's time is the median over its runs, its ratio median(default) / median(native).
"""

import argparse
import glob
import json
import os
import statistics
import sys

LIMIT = 1.10  # the acceptance criterion: default / native at most 1.10 on every cell
OPS = ["forward_train", "forward_eval", "backward_train"]
SHAPES = ["resnet_s1", "resnet_s3", "small", "mlp", "mlp_wide", "mlp_b16"]  # harness order
LAYOUTS = ["nchw", "colmajor", "nhwc"]
DIMS = {"resnet_s1": "32x64x56x56", "resnet_s3": "64x256x14x14", "small": "8x32x32x32",
        "mlp": "4096x1024", "mlp_wide": "256x2048", "mlp_b16": "16x4096"}


def order(value, table):
    return (table.index(value), value) if value in table else (len(table), value)


def load(raw):
    """{cell: {"native": [ms...], "default": [ms...]}}, the ISAs the runs report, and how they
    timed (warm, interleaved)."""
    cells, isas, timing = {}, {"native": set(), "default": set()}, set()
    def run_of(path):  # (cell index, binary, repetition)
        index, which, rep, _ = os.path.basename(path).split(".")
        return int(index), which, int(rep)

    runs = [p for p in glob.glob(os.path.join(raw, "*.json")) if os.path.basename(p) != "pair.json"]
    for path in sorted(runs, key=run_of):
        which = run_of(path)[1]
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except ValueError as e:  # a run still writing, or one that died
            print(f"dispatch_report.py: skipping {path}: {e}", file=sys.stderr)
            continue
        isas[which].add(doc.get("context", {}).get("batchnorm_isa", "?"))
        for b in doc.get("benchmarks", []):
            if b.get("run_type", "iteration") != "iteration":
                continue
            name = b["name"][: -len("/real_time")] if b["name"].endswith("/real_time") else b["name"]
            parts = name.split("/")
            if len(parts) != 6 or parts[0] != "batchnorm":
                print(f"dispatch_report.py: ignoring {b['name']!r}", file=sys.stderr)
                continue
            _, dtype, op, shape, layout, threads = parts
            key = (op, shape, layout, dtype, int(threads.split(":")[1]))
            runs = cells.setdefault(key, {"native": [], "default": [], "native_cpu": [], "default_cpu": []})
            if b.get("error_occurred"):
                print(f"dispatch_report.py: {path}: {b.get('error_message', 'error')}", file=sys.stderr)
                continue
            if "ms_warm" in b:  # measure() of today: warm, back-to-back calls
                runs[which].append(b["ms_warm"])
                timing.add("warm")
            else:  # an older measure(): the kernel interleaved with its baseline
                runs[which].append(b.get("x_triad", b.get("x_memcpy")) * b["baseline_ms"])
                timing.add("interleaved")
            runs[which + "_cpu"].append(b["cpu_time"])  # mean main-thread CPU time, time_unit ms
    return cells, isas, timing


def load_pair(raw):
    """{cell: [ratio of each repetition]} from batchnorm_bench_pair's JSON (raw/pair.json), and
    the labels it reports (each copy's ISA)."""
    path = os.path.join(raw, "pair.json")
    cells, labels = {}, set()
    if not os.path.exists(path):
        return cells, labels
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    for b in doc.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        name = b["name"][: -len("/real_time")] if b["name"].endswith("/real_time") else b["name"]
        parts = name.split("/")
        if len(parts) != 6 or parts[0] != "pair":
            continue
        _, dtype, op, shape, layout, threads = parts
        cells.setdefault((op, shape, layout, dtype, int(threads.split(":")[1])), []).append(b["ratio"])
        labels.add(b.get("label", ""))
    return cells, labels


def read_meta(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if ":" in line:
                k, v = line.split(":", 1)
                rows.append((k.strip(), v.strip()))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--run", default="")
    args = ap.parse_args()

    cells, isas, timing = load(args.raw)
    pair, pair_labels = load_pair(args.raw)
    if not cells:
        sys.exit(f"dispatch_report.py: no results in {args.raw}")
    rows = []
    for key in sorted(cells, key=lambda k: (k[4], k[3], order(k[1], SHAPES), order(k[2], LAYOUTS), order(k[0], OPS))):
        runs = cells[key]
        if not runs["native"] or not runs["default"]:
            rows.append((key, None, None, None, None, runs))
            continue
        n, d = statistics.median(runs["native"]), statistics.median(runs["default"])
        cpu = statistics.median(runs["default_cpu"]) / statistics.median(runs["native_cpu"])
        rows.append((key, n, d, d / n, cpu, runs))
    paired = {k: statistics.median(v) for k, v in pair.items()}
    pair_over = sorted((k for k in paired if paired[k] > LIMIT), key=lambda k: -paired[k])
    pair_worst = max(paired, key=lambda k: paired[k]) if paired else None
    done = [r for r in rows if r[3] is not None]
    worst = max(done, key=lambda r: r[3])
    over = [r for r in done if r[3] > LIMIT]
    geomean = statistics.geometric_mean([r[3] for r in done])
    cpu_t1 = [r for r in done if r[0][4] == 1]
    cpu_over = [r for r in cpu_t1 if r[4] > LIMIT]

    def cell_name(key):
        op, shape, layout, dtype, threads = key
        return f"{shape} {layout} {op} {dtype} threads:{threads}"

    out = ["# Runtime dispatch against -march=native", ""]
    out += ["| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in read_meta(args.meta)]
    out.append(f"| ISA in the runs' JSON | native {', '.join(sorted(isas['native']))}; "
               f"default {', '.join(sorted(isas['default']))} |")
    if args.run:
        out.append(f"| run | `{args.run}` |")
    out += [
        "",
        "`batchnorm_bench` is built with -march=native (only the avx512 copy of the kernels is",
        "compiled); `batchnorm_bench_default` from the same source with the compiler's default flags",
        "(sse2, avx2 and avx512 copies, the widest the CPU supports chosen at run time). Every cell",
        "of our suite ran in both, one process per run, the two binaries alternating. ms: measure()'s",
        ("median warm kernel time (back-to-back calls, see bench/harness.hpp), then the median over the runs;"
         if timing == {"warm"} else
         "median kernel time, each call after its baseline over other buffers (bench/harness.hpp of\n"
         "the run's revision), then the median over the runs;"),
        "ratio = default ms / native ms; runs: each run's default / native, in the order taken.",
        "cpu ratio: the same with Google Benchmark's cpu_time (the main thread's CPU time, mean per",
        "iteration), which time spent preempted by other processes does not inflate: on a busy",
        "machine the better guide for threads:1 cells (with threads:2 it includes OpenMP spinning).",
        "Both binaries run on a shared machine: a ratio within a few percent of 1 is noise, and",
        "threads:2 cells are the noisiest: when the other CPU is busy, a parallel region waits for its",
        "preempted thread's next scheduler time slice.",
        "",
        "same process: `batchnorm_bench_pair` holds both copies of each cell in one process,",
        "pair_native.cpp compiled with -march=native and pair_default.cpp with the default flags, on",
        "the same buffers, called alternately; a repetition's ratio is median(default calls) /",
        "median(native calls), the cell's the median over the repetitions (each listed). Processes",
        "run one after the other see different memory pages and machine states; the pair shares them,",
        "so its ratio isolates the code. Acceptance (the dispatch issue): default / native at most",
        f"{LIMIT:.2f} on every cell, judged on the same-process ratio; the two-binary ratio is reported",
        "beside it.",
        "",
        "## Summary",
        "",
        f"- same process: {len(paired)} cells" + (
            f"; worst ratio {paired[pair_worst]:.3f} ({cell_name(pair_worst)}); geometric mean "
            f"{statistics.geometric_mean(list(paired.values())):.3f}; cells over {LIMIT:.2f}: {len(pair_over)}"
            + (": " + "; ".join(f"{cell_name(k)} {paired[k]:.2f}" for k in pair_over) if pair_over else "")
            + f"; copies: {', '.join(sorted(pair_labels))}" if paired else " (not run)"),
        f"- two binaries: {len(done)} of {len(rows)} cells measured in both binaries",
        f"  - worst ratio: {worst[3]:.3f} ({cell_name(worst[0])})",
        f"  - geometric mean of the ratios: {geomean:.3f}",
        f"  - cells over {LIMIT:.2f}: {len(over)}" + (": " + "; ".join(f"{cell_name(r[0])} {r[3]:.2f}" for r in over) if over else ""),
        f"  - of those at threads:1: {sum(1 for r in over if r[0][4] == 1)}",
        f"  - threads:1 cells whose cpu ratio is over {LIMIT:.2f}: {len(cpu_over)} of {len(cpu_t1)}"
        + (": " + "; ".join(f"{cell_name(r[0])} {r[4]:.2f}" for r in cpu_over) if cpu_over else ""),
        "",
        "## Every cell",
        "",
        "| shape | layout | op | dtype | threads | native ms | default ms | default / native | runs | cpu ratio | same process | its repetitions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, n, d, ratio, cpu, runs in rows:
        op, shape, layout, dtype, threads = key
        shape_cell = f"{shape} ({DIMS[shape]})" if shape in DIMS else shape
        if ratio is None:
            out.append(f"| {shape_cell} | {layout} | {op} | {dtype} | {threads} | - | - | missing | | |")
            continue
        pairs = " ".join(f"{a / b:.2f}" for a, b in zip(runs["default"], runs["native"]))
        mark = f"**{ratio:.3f}**" if ratio > LIMIT else f"{ratio:.3f}"
        if key in paired:
            same = f"**{paired[key]:.3f}**" if paired[key] > LIMIT else f"{paired[key]:.3f}"
            same += " | " + " ".join(f"{r:.2f}" for r in pair[key])
        else:
            same = "- |"
        out.append(f"| {shape_cell} | {layout} | {op} | {dtype} | {threads} | {n:.3f} | {d:.3f} | {mark} | {pairs} | {cpu:.3f} | {same} |")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {args.out}: two binaries: worst ratio {worst[3]:.3f} ({cell_name(worst[0])}), {len(over)} cells over "
          f"{LIMIT:.2f}" + (f"; same process: worst {paired[pair_worst]:.3f} ({cell_name(pair_worst)}), "
                            f"{len(pair_over)} cells over {LIMIT:.2f}" if paired else ""))


if __name__ == "__main__":
    main()
