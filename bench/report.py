#!/usr/bin/env python3
"""Turn batchnorm_bench's Google Benchmark JSON into results.md, chart.png and readme_table.md
(the README's speed table, float32 on one thread).

Standard library only; the chart is drawn by gnuplot (pngcairo, else png) when it is on PATH.

  report.py --json results.json [--meta meta.txt] [--out-dir DIR] [--run "how it was run"]

Benchmark names follow bench/harness.hpp: <impl>/<dtype>/<op>/<shape>/<layout>/threads:<t>
(Google Benchmark appends /real_time). Each benchmark carries, for each condition c in warm
and cold (see measure() in bench/harness.hpp): ms_c, the kernel's median time; baseline_ms_c,
the median of its baseline over the same bytes (a copy for forwards, the STREAM triad for
backward, best of plain and non-temporal stores); x_copy_c or x_triad_c, their ratio.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys

IMPLS = ["batchnorm", "batchnorm_malloc", "floor", "floor_exact", "onednn", "libtorch", "eigen_naive"]
RIVALS = ["onednn", "libtorch"]  # the competitors of the targets
OPS = ["forward_train", "forward_eval", "backward_train"]
SHAPES = ["resnet_s1", "resnet_s3", "small", "mlp", "mlp_wide", "mlp_b16"]  # harness order
LAYOUTS = ["nchw", "colmajor", "nhwc", "blocked", "spanning", "nChw16c", "nChw8c"]
CONDITIONS = ["warm", "cold"]
LIMIT = 1.10  # the targets: eval / copy, training / floor
THREADS_SHARE = 0.9  # the targets: 2-thread speed-up at least this share of the baseline's
CHART_SERIES = [  # (title, impl, layout or None for the impl's best layout, colour)
    ("batchnorm nchw", "batchnorm", "nchw", "#1b9e77"),
    ("batchnorm best layout", "batchnorm", None, "#97d8c2"),
    ("floor (its layout)", "floor", None, "#666666"),
    ("oneDNN nchw", "onednn", "nchw", "#d95f02"),
    ("oneDNN best layout", "onednn", None, "#f6b88d"),
    ("libtorch nchw", "libtorch", "nchw", "#7570b3"),
    ("libtorch best layout", "libtorch", None, "#c2bfe3"),
    ("eigen naive nchw", "eigen_naive", "nchw", "#a6761d"),
]


def order(value, table):
    return (table.index(value), value) if value in table else (len(table), value)


def load(path):
    """{(impl, dtype, op, shape, layout, threads): result} from the JSON file; a result holds, per
    condition, {"ms", "ratio", "baseline_ms"}, and "ratio_name" (copy or triad), "label"."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    results = {}
    for b in doc.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        parts = b["name"].split("/")
        if parts and parts[-1] == "real_time":
            parts = parts[:-1]
        if len(parts) != 6 or not parts[5].startswith("threads:"):
            print(f"report.py: ignoring {b['name']!r} (not impl/dtype/op/shape/layout/threads:t)", file=sys.stderr)
            continue
        impl, dtype, op, shape, layout, threads = parts
        key = (impl, dtype, op, shape, layout, int(threads.split(":")[1]))
        if b.get("error_occurred"):
            results[key] = {"error": b.get("error_message", "error")}
            continue
        ratio_name = "triad" if "x_triad_warm" in b else "copy"
        r = {"ratio_name": ratio_name, "label": b.get("label", "")}
        for c in CONDITIONS:
            ms, base = b.get(f"ms_{c}"), b.get(f"baseline_ms_{c}")
            if ms is None or base is None:
                print(f"report.py: {b['name']!r} has no {c} counters (a binary older than this script?)",
                      file=sys.stderr)
                r = {"error": f"no {c} counters"}
                break
            r[c] = {"ms": ms, "baseline_ms": base, "ratio": ms / base}
        results[key] = r
    return doc.get("context", {}), results


def read_meta(path):
    meta = []
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    meta.append((k.strip(), v.strip()))
    return meta


def ok(r):
    return r is not None and "error" not in r


def cell(r, c):
    if r is None:
        return ""
    if "error" in r:
        return "error"
    return f"{r[c]['ratio']:.2f}x · {r[c]['ms']:.3g} ms"


def best(results, impl, dtype, op, shape, threads, c):
    """(layout, result) of impl's fastest layout for the group in condition c, or (None, None)."""
    cands = [(k[4], r) for k, r in results.items()
             if k[0] == impl and k[1] == dtype and k[2] == op and k[3] == shape and k[5] == threads and ok(r)]
    if not cands:
        return None, None
    return min(cands, key=lambda lr: lr[1][c]["ms"])


def floor_of(results, key, impl="floor"):
    """(floor layout, result) of our training cell key: blocked for RowMajor (N, C, H, W),
    spanning for every layout whose channels span the tensor; (None, None) if not measured.
    impl: "floor", or "floor_exact" (its read pass does the arithmetic of exact statistics)."""
    _, dtype, op, shape, layout, threads = key
    for lay in (["blocked"] if layout == "nchw" else []) + ["spanning"]:
        r = results.get((impl, dtype, op, shape, lay, threads))
        if r is not None:
            return lay, r
    return None, None


def target_ratio(results, key, r, c):
    """(ratio, against): an eval cell's time / the copy's, a training cell's / its floor's."""
    if key[2] == "forward_eval":
        return r[c]["ratio"], "copy"
    lay, f = floor_of(results, key)
    if not ok(f):
        return None, "floor"
    return r[c]["ms"] / f[c]["ms"], f"floor {lay}"


def steadiness(results):
    """Markdown lines: how much the baseline of the same bytes (dtype, op, shape, threads,
    condition), timed inside every benchmark of the group, moved during the run (max / min)."""
    groups = {}
    for k, r in results.items():
        if ok(r):
            for c in CONDITIONS:
                groups.setdefault((k[1], k[2], k[3], k[5], c), []).append(r[c]["baseline_ms"])
    spreads = sorted(((max(v) / min(v), g) for g, v in groups.items() if len(v) > 1), reverse=True)
    if not spreads:
        return []
    median = spreads[len(spreads) // 2][0]
    out = ["## How steady the machine was", "",
           "Each benchmark times its own baseline (the copy or triad of the same bytes), so the",
           "baselines of one op, shape, dtype, thread count and condition measure the machine at the",
           f"times their benchmarks ran. Their spread (largest / smallest) over the {len(spreads)} groups of",
           f"this run: median {median:.2f}, largest {spreads[0][0]:.2f}. Times of two implementations",
           "compare reliably only within that spread; the ratios to each benchmark's own baseline cancel",
           "part of it. The widest five:", "",
           "| op | shape | dtype | threads | condition | baselines | largest / smallest |",
           "|---|---|---|---|---|---|---|"]
    for spread, (dtype, op, shape, threads, c) in spreads[:5]:
        n = len(groups[(dtype, op, shape, threads, c)])
        out.append(f"| {op} | {shape} | {dtype} | {threads} | {c} | {n} | {spread:.2f} |")
    return out + [""]


def markdown(context, results, meta, run):
    out = ["# batchnorm benchmark results", ""]
    out += ["| | |", "|---|---|"]
    for k, v in meta:
        out.append(f"| {k} | {v.replace('|', '/')} |")
    if context:
        out.append(f"| Google Benchmark | run {context.get('date', '?')}, {context.get('num_cpus', '?')} CPUs at "
                   f"{context.get('mhz_per_cpu', '?')} MHz, load average {context.get('load_avg', '?')}, "
                   f"library_build_type {context.get('library_build_type', '?')}, "
                   f"kernels {context.get('batchnorm_isa', '?')} |")
    if run:
        out.append(f"| run | `{run}` |")
    out += [
        "",
        "Every benchmark is timed in two conditions (measure() in bench/harness.hpp): **warm**, a",
        "call right after a call on the same buffers (as when the previous layer just wrote x), and",
        "**cold**, a call right after a pass over other buffers of the same size (tensors larger than",
        "the L2 cache then come from the last-level cache or memory). ms: the median time; the",
        "baseline: a copy of the same bytes for forwards, a STREAM triad for backward, timed in the",
        "same condition, best of plain and non-temporal stores. Targets: forward eval at most",
        f"{LIMIT:.2f}x the copy; forward training and backward at most {LIMIT:.2f}x the floor of their",
        "layout (`floor/.../blocked`: each channel read from memory, re-read from L2, written, for",
        "RowMajor (N, C, H, W); `floor/.../spanning`: a read pass, then the write pass, for",
        "channels-last, ColMajor and (N, C)); faster than every layout of every competitor; two",
        f"threads never slower than one and their speed-up at least {THREADS_SHARE} of the baseline's.",
        "`floor_exact` is the same floor with the arithmetic of this library's accurate statistics in",
        "its read pass (sums of x - mean in double for float data; exact_sums_range in",
        "bench/harness.hpp): where it is well above the floor, that arithmetic, not memory, bounds an",
        "algorithm held to the accuracy bar (float results within 1e-5 of float64's).",
        "libtorch allocates its outputs in every call (no CPU out= kernel); oneDNN's nChw16c / nChw8c",
        "are its blocked formats (a user reorders into them, untimed); oneDNN has no f64.",
        "",
    ]
    out += steadiness(results)
    ours = sorted((k for k, r in results.items() if k[0] == "batchnorm" and ok(r)),
                  key=lambda k: (k[5], k[1], order(k[2], OPS), order(k[3], SHAPES), order(k[4], LAYOUTS)))

    def name(k):
        return f"{k[2]} {k[3]} {k[4]} {k[1]} threads:{k[5]}"

    # --- targets --------------------------------------------------------------------------------
    misses, checked, training_misses, within_exact = [], 0, 0, 0
    for k in ours:
        for c in CONDITIONS:
            ratio, what = target_ratio(results, k, results[k], c)
            if ratio is None:
                continue
            checked += 1
            if ratio > LIMIT:
                exact = ""
                if k[2] != "forward_eval":
                    training_misses += 1
                    _, f = floor_of(results, k, "floor_exact")
                    if ok(f):
                        e = results[k][c]["ms"] / f[c]["ms"]
                        within_exact += e <= LIMIT
                        exact = f"{e:.2f}"
                misses.append(f"| {name(k)} | {c} | {what} | {ratio:.2f} | {exact} |")
    out += ["## Targets: eval against the copy, training against its floor", "",
            f"{len(misses)} of {checked} (cell, condition) pairs above {LIMIT:.2f}; of the {training_misses} "
            f"training ones, {within_exact} are within {LIMIT:.2f}x the floor with exact-statistics "
            "arithmetic (`floor_exact`, last column).", ""]
    if misses:
        out += ["| cell | condition | against | ratio | against floor_exact |", "|---|---|---|---|---|"]
        out += misses + [""]

    wins, compared, below_floor = [], 0, 0
    for k in ours:
        _, dtype, op, shape, layout, threads = k
        for c in CONDITIONS:
            rivals = [(impl,) + best(results, impl, dtype, op, shape, threads, c) for impl in RIVALS]
            rivals = [(impl, lay, r) for impl, lay, r in rivals if r is not None]
            if not rivals:
                continue
            compared += 1
            impl, lay, r = min(rivals, key=lambda x: x[2][c]["ms"])
            mine = results[k][c]["ms"]
            if r[c]["ms"] < mine:
                # the least our layout allows: the copy (eval) or the floor of its layout (training)
                if op == "forward_eval":
                    least = results[k][c]["baseline_ms"]
                else:
                    _, f = floor_of(results, k)
                    least = f[c]["ms"] if ok(f) else None
                under = least is not None and r[c]["ms"] < least
                below_floor += under
                vs = "" if least is None else f"{r[c]['ms'] / least:.2f}"
                wins.append(f"| {name(k)} | {c} | {mine:.3g} | {impl} {lay} {r[c]['ms']:.3g} | {mine / r[c]['ms']:.2f} "
                            f"| {vs} |")
    out += ["## Where a competitor is faster", "",
            f"Each of our cells against the fastest layout of every competitor for the same op, shape, dtype,",
            f"threads and condition: a competitor is faster in {len(wins)} of {compared}. In {below_floor} of them",
            "the competitor's time is below the least our cell's layout allows (the copy for eval, the floor",
            "of the layout for training; last column below 1): out of reach in that layout, whatever the kernel.",
            ""]
    if wins:
        out += ["| our cell | condition | ours ms | fastest rival ms | ours / rival | rival / our layout's least |",
                "|---|---|---|---|---|---|"]
        out += wins + [""]

    slow, pairs = [], 0
    for k in ours:
        if k[5] != 1:
            continue
        k2 = k[:5] + (2,)
        if not ok(results.get(k2)):
            continue
        for c in CONDITIONS:
            one, two = results[k][c], results[k2][c]
            pairs += 1
            speedup, base = one["ms"] / two["ms"], one["baseline_ms"] / two["baseline_ms"]
            if speedup < 1 or speedup < THREADS_SHARE * base:
                slow.append(f"| {name(k)[:-len(' threads:1')]} | {c} | {speedup:.2f} | {base:.2f} |")
    out += ["## Two threads", "",
            f"Speed-up from 1 to 2 threads (time at 1 / time at 2) against the baseline's: {len(slow)} of {pairs}",
            f"(cell, condition) pairs below 1 or below {THREADS_SHARE} of the baseline's.", ""]
    if slow:
        out += ["| cell | condition | speed-up | baseline's |", "|---|---|---|---|"] + slow + [""]

    shifted, worst = [], []
    for k in ours:
        r = results.get(("batchnorm_malloc",) + k[1:])
        if not ok(r):
            continue
        for c in CONDITIONS:
            ratio = r[c]["ms"] / results[k][c]["ms"]
            shifted.append(ratio)
            worst.append((ratio, f"| {name(k)} | {c} | {results[k][c]['ms']:.3g} | {r[c]['ms']:.3g} | {ratio:.2f} |"))
    if shifted:
        over = [w for w in worst if w[0] > LIMIT]
        geomean = math.exp(sum(math.log(x) for x in shifted) / len(shifted))
        out += ["## Buffers 16 bytes past a cache line", "",
                "`batchnorm_malloc`: our f32 cells on x, dy and the output placed 16 bytes past a 64-byte",
                "boundary, where glibc's malloc puts a large block (a TensorMap over a std::vector), against",
                f"the same cells on aligned buffers, same condition: geomean {geomean:.3f}, {len(over)} of",
                f"{len(shifted)} (cell, condition) pairs above {LIMIT:.2f}; the slowest five:", "",
                "| cell | condition | aligned ms | +16 B ms | +16 B / aligned |", "|---|---|---|---|---|"]
        out += [line for _, line in sorted(worst, reverse=True)[:5]] + [""]

    # --- every layout -------------------------------------------------------------------------
    groups = sorted({(k[2], k[3], k[1], k[5]) for k in results},
                    key=lambda g: (order(g[0], OPS), order(g[1], SHAPES), g[2], g[3]))
    present = [i for i in IMPLS if any(k[0] == i for k in results)]
    impls = present + sorted({k[0] for k in results} - set(IMPLS))
    for c in CONDITIONS:
        out += [f"## Every layout, {c}", "",
                "`ratio · ms`: ratio = time / the baseline's in the same condition. target: our time / the",
                "floor of its layout (training) or the ratio to the copy (eval).", ""]
        header = ["op", "shape", "layout", "dtype", "threads"] + impls + ["target"]
        if "onednn" in impls:
            header.append("oneDNN kernel")
        header.append("baseline ms")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for op, shape, dtype, threads in groups:
            layouts = sorted({k[4] for k in results if (k[2], k[3], k[1], k[5]) == (op, shape, dtype, threads)},
                             key=lambda l: order(l, LAYOUTS))
            for layout in layouts:
                rs = {i: results.get((i, dtype, op, shape, layout, threads)) for i in impls}
                row = [op, shape, layout, dtype, str(threads)] + [cell(rs[i], c) for i in impls]
                key = ("batchnorm", dtype, op, shape, layout, threads)
                ratio = target_ratio(results, key, rs["batchnorm"], c)[0] if ok(rs.get("batchnorm")) else None
                row.append("" if ratio is None else (f"**{ratio:.2f}**" if ratio > LIMIT else f"{ratio:.2f}"))
                if "onednn" in impls:
                    row.append(f"`{rs['onednn']['label']}`" if ok(rs["onednn"]) and rs["onednn"].get("label") else "")
                base = next((r[c]["baseline_ms"] for r in rs.values() if ok(r)), None)
                row.append(f"{base:.3g}" if base is not None else "")
                out.append("| " + " | ".join(row) + " |")
        out.append("")

    out += ["## Best layout of each implementation", "",
            "The fastest layout each library offers for the op, shape, dtype and thread count, warm / cold.", ""]
    header = ["op", "shape", "dtype", "threads"] + impls
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    for op, shape, dtype, threads in groups:
        row = [op, shape, dtype, str(threads)]
        for i in impls:
            parts = []
            for c in CONDITIONS:
                layout, r = best(results, i, dtype, op, shape, threads, c)
                if r:
                    parts.append(f"{cell(r, c)} ({layout})")
            row.append(" / ".join(parts))
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    return "\n".join(out)


def chart(results, out_dir, meta):
    """chart.dat + chart.gp, then chart.png via gnuplot: time / baseline per shape, f32,
    threads:1, a panel per op and condition; bars in nchw and in each library's best layout
    (labelled with its name), log scale."""
    panels = [(op, c) for op in OPS for c in CONDITIONS]
    shapes = sorted({k[3] for k in results if k[1] == "f32" and k[5] == 1 and k[2] in OPS},
                    key=lambda s: order(s, SHAPES))
    series = [s for s in CHART_SERIES if any(k[0] == s[1] for k in results)]
    if not shapes or not series:
        print("report.py: nothing to chart", file=sys.stderr)
        return None
    width = 0.84 / len(series)
    values = []
    lines = ["# panel series shape_index x value label"]
    for p, (op, c) in enumerate(panels):
        for s, (title, impl, layout, _) in enumerate(series):
            for j, shape in enumerate(shapes):
                if layout is None:
                    lay, r = best(results, impl, "f32", op, shape, 1, c)
                else:
                    lay, r = layout, results.get((impl, "f32", op, shape, layout, 1))
                if not ok(r):
                    continue
                x = j + (s - (len(series) - 1) / 2) * width
                ratio = r[c]["ratio"]
                label = f"{ratio:.2g}" + (f" {lay}" if layout is None else "")
                values.append(ratio)
                lines.append(f'{p} {s} {j} {x:.4f} {ratio:.6g} "{label}"')
    if not values:
        print("report.py: no f32 threads:1 results to chart", file=sys.stderr)
        return None
    dat = os.path.join(out_dir, "chart.dat")
    with open(dat, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")

    low = min(values) * 0.8  # the bottom keeps the 1x line visible above it
    ymin = 0.5 if low >= 0.5 else 10 ** math.floor(math.log10(low))
    ymax = 10 ** math.ceil(math.log10(max(values) * 4))  # room for the rotated labels
    xtics = ", ".join(f'"{s}" {j}' for j, s in enumerate(shapes))
    machine = next((v for k, v in meta if k == "CPU"), "")
    term = ("pngcairo noenhanced size 2000,1600 font 'DejaVu Sans,10'" if have_pngcairo()
            else "png noenhanced size 2000,1600")
    gp = [
        f"set terminal {term}",
        f"set output '{os.path.join(out_dir, 'chart.png')}'",
        f"set multiplot layout {len(OPS)},{len(CONDITIONS)} title "
        + gp_str(f"batchnorm vs competitors, f32, 1 thread, {machine}"),
        "set logscale y", f"set yrange [{ymin}:{ymax}]", f"set xrange [-0.6:{len(shapes) - 0.4}]",
        f"set xtics ({xtics})", "set grid ytics", "set key outside right top vertical font ',8'",
        "set style fill solid 0.85 border -1",
    ]
    for p, (op, c) in enumerate(panels):
        base = "triad" if op == "backward_train" else "copy"
        gp.append("set title " + gp_str(f"{op}, {c}: time / {base} of the same bytes "
                                         "(1 = memory limit, lower is better, log scale)"))
        gp.append(f"set ylabel 'x {base}'")
        plots = []
        for s, (title, _, _, colour) in enumerate(series):
            cond = f"(($1=={p} && $2=={s}) ? $4 : NaN)"
            plots.append(f"'{dat}' using {cond}:5:($4-{width / 2:.4f}):($4+{width / 2:.4f}):({ymin}):5 "
                         f"with boxxyerror lc rgb '{colour}' title {gp_str(title)}")
            plots.append(f"'{dat}' using {cond}:5:6 with labels rotate by 90 left offset 0,0.4 font ',7' notitle")
        plots.append("1 with lines lc rgb 'black' dt 2 title 'memory limit'")
        gp.append("plot " + ", \\\n     ".join(plots))
    gp.append("unset multiplot")
    script = os.path.join(out_dir, "chart.gp")
    with open(script, "w", encoding="utf-8") as f:
        f.write("\n".join(gp) + "\n")
    if not shutil.which("gnuplot"):
        print("report.py: gnuplot not found; wrote chart.gp and chart.dat only", file=sys.stderr)
        return None
    subprocess.run(["gnuplot", script], check=True)
    return os.path.join(out_dir, "chart.png")


def gp_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def have_pngcairo():
    if not shutil.which("gnuplot"):
        return False
    p = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
    return "pngcairo" in (p.stdout + p.stderr)


SHAPE_DIMS = {"resnet_s1": "32x64x56x56", "resnet_s3": "64x256x14x14", "small": "8x32x32x32", "mlp": "4096x1024",
              "mlp_wide": "256x2048", "mlp_b16": "16x4096"}  # bench/harness.hpp's shapes()


def readme_table(results):
    """The README's speed table: float32, one thread, every op and shape; ms (x baseline), warm /
    cold, for our nchw cell, our best layout, the floors of nchw, and each rival's best layout."""
    def entry(r, layout=None):
        if not ok(r):
            return ""
        return " / ".join(f"{r[c]['ms']:.3g} ({r[c]['ratio']:.2f})" + (f" {layout[c]}" if layout else "")
                          for c in CONDITIONS)

    def best_entry(impl, op, shape):
        picks = {c: best(results, impl, "f32", op, shape, 1, c) for c in CONDITIONS}
        if any(r is None for _, r in picks.values()):
            return ""
        merged = {c: picks[c][1][c] for c in CONDITIONS}
        return entry(merged, {c: picks[c][0] for c in CONDITIONS})

    head = ("| float32, 1 thread, ms (x baseline), warm / cold | batchnorm nchw | batchnorm best layout | "
            "floor of nchw | floor_exact of nchw | oneDNN best layout | libtorch best layout |")
    lines = [head, "|" + "---|" * 7]
    for op in OPS:
        for shape in SHAPES:
            key = ("batchnorm", "f32", op, shape, "nchw", 1)
            if key not in results:
                continue
            if op == "forward_eval":
                floors = ["copy", "copy"]
            else:
                floors = [entry(floor_of(results, key, impl)[1]) for impl in ("floor", "floor_exact")]
            row = [f"{op.replace('_', ' ')} {shape} {SHAPE_DIMS.get(shape, '')}".rstrip(), entry(results[key]),
                   best_entry("batchnorm", op, shape), *floors, best_entry("onednn", op, shape),
                   best_entry("libtorch", op, shape)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="Google Benchmark JSON output of batchnorm_bench")
    ap.add_argument("--meta", help="'key: value' lines describing machine, compiler and flags")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--run", default="", help="the command line of the run, for the record")
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    context, results = load(args.json)
    if not results:
        sys.exit(f"report.py: no benchmark results in {args.json}")
    meta = read_meta(args.meta)
    md = os.path.join(args.out_dir, "results.md")
    png = chart(results, args.out_dir, meta)
    text = markdown(context, results, meta, args.run)
    if png:
        text += f"\n![chart]({os.path.basename(png)})\n"
    with open(md, "w", encoding="utf-8") as f:
        f.write(text)
    table = os.path.join(args.out_dir, "readme_table.md")
    with open(table, "w", encoding="utf-8") as f:
        f.write(readme_table(results))
    print(f"report.py: wrote {md}, {table}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
