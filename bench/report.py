#!/usr/bin/env python3
"""Turn batchnorm_bench's Google Benchmark JSON into results.md and chart.png.

Standard library only; the chart is drawn by gnuplot (pngcairo, else png) when it is on PATH.

  report.py --json results.json [--meta meta.txt] [--out-dir DIR] [--run "how it was run"]

Benchmark names follow bench/harness.hpp: <impl>/<dtype>/<op>/<shape>/<layout>/threads:<t>
(Google Benchmark appends /real_time). Each benchmark carries x_memcpy (forwards) or x_triad
(backward): median kernel time / median baseline time over the same bytes, timed interleaved,
and baseline_ms, the baseline's median. The kernel's median is therefore x * baseline_ms, the
"ms" of the tables.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys

IMPLS = ["batchnorm", "floor", "onednn", "libtorch", "eigen_naive"]
OPS = ["forward_train", "forward_eval", "backward_train"]
SHAPES = ["resnet_s1", "resnet_s3", "small", "mlp", "mlp_wide"]  # harness order
LAYOUTS = ["nchw", "colmajor", "nhwc", "spanning", "nChw16c", "nChw8c"]
CHART_SERIES = [  # (title, impl, layout or None for the impl's best layout, colour)
    ("batchnorm nchw", "batchnorm", "nchw", "#1b9e77"),
    ("batchnorm best layout", "batchnorm", None, "#97d8c2"),
    ("oneDNN nchw", "onednn", "nchw", "#d95f02"),
    ("oneDNN best layout", "onednn", None, "#f6b88d"),
    ("libtorch nchw", "libtorch", "nchw", "#7570b3"),
    ("libtorch best layout", "libtorch", None, "#c2bfe3"),
    ("eigen naive nchw", "eigen_naive", "nchw", "#a6761d"),
]


def order(value, table):
    return (table.index(value), value) if value in table else (len(table), value)


def load(path):
    """{(impl, dtype, op, shape, layout, threads): result} from the JSON file."""
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
        ratio_name = "x_triad" if "x_triad" in b else "x_memcpy"
        ratio = b.get(ratio_name)
        base = b.get("baseline_ms")
        results[key] = {
            "ratio": ratio,
            "ratio_name": ratio_name[2:],
            "baseline_ms": base,
            "ms": ratio * base if ratio is not None and base is not None else None,
            "label": b.get("label", ""),
        }
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


def cell(r):
    if r is None:
        return ""
    if "error" in r:
        return "error"
    if r["ratio"] is None:
        return "?"
    return f"{r['ratio']:.2f}x · {r['ms']:.3g} ms"


def best(results, impl, dtype, op, shape, threads):
    """(layout, result) of impl's fastest layout for the group, or (None, None)."""
    cands = [(k[4], r) for k, r in results.items()
             if k[0] == impl and k[1] == dtype and k[2] == op and k[3] == shape and k[5] == threads
             and r.get("ratio") is not None]
    if not cands:
        return None, None
    return min(cands, key=lambda c: c[1]["ratio"])


def markdown(context, results, meta, run):
    out = ["# batchnorm benchmark results", ""]
    out += ["| | |", "|---|---|"]
    for k, v in meta:
        out.append(f"| {k} | {v.replace('|', '/')} |")
    if context:
        out.append(f"| Google Benchmark | run {context.get('date', '?')}, {context.get('num_cpus', '?')} CPUs at "
                   f"{context.get('mhz_per_cpu', '?')} MHz, load average {context.get('load_avg', '?')}, "
                   f"library_build_type {context.get('library_build_type', '?')} |")
    if run:
        out.append(f"| run | `{run}` |")
    out += [
        "",
        "Each figure is `ratio · ms`: ratio = median kernel time / median baseline time over the same",
        "bytes (memcpy of the tensor for forwards, a STREAM triad for backward), both timed",
        "interleaved in the same benchmark, so 1.00x is the memory-bandwidth limit and lower is",
        "better; ms = the kernel's median (ratio x baseline median). libtorch allocates its outputs",
        "in every call (it has no CPU out= kernel); oneDNN's nChw16c / nChw8c are its own blocked",
        "formats (a user reorders into them, untimed), and the oneDNN kernel column names the",
        "implementation oneDNN picked (`ref` is its slow reference code).",
        "",
    ]
    groups = sorted({(k[2], k[3], k[1], k[5]) for k in results},
                    key=lambda g: (order(g[0], OPS), order(g[1], SHAPES), g[2], g[3]))
    present = [i for i in IMPLS if any(k[0] == i for k in results)]
    others = sorted({k[0] for k in results} - set(IMPLS))
    impls = present + others

    out += ["## Every layout", ""]
    header = ["op", "shape", "layout", "dtype", "threads"] + impls
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
            row = [op, shape, layout, dtype, str(threads)] + [cell(rs[i]) for i in impls]
            if "onednn" in impls:
                row.append(f"`{rs['onednn']['label']}`" if rs["onednn"] and rs["onednn"].get("label") else "")
            base = next((r["baseline_ms"] for r in rs.values() if r and r.get("baseline_ms") is not None), None)
            row.append(f"{base:.3g}" if base is not None else "")
            out.append("| " + " | ".join(row) + " |")

    out += ["", "## Best layout of each implementation", "",
            "The fastest layout each library offers for the op, shape, dtype and thread count.", ""]
    header = ["op", "shape", "dtype", "threads"] + impls
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    for op, shape, dtype, threads in groups:
        row = [op, shape, dtype, str(threads)]
        for i in impls:
            layout, r = best(results, i, dtype, op, shape, threads)
            row.append(f"{cell(r)} ({layout})" if r else "")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    return "\n".join(out)


def chart(results, out_dir, meta):
    """chart.dat + chart.gp, then chart.png via gnuplot: x ratio per shape, f32, threads:1,
    forward_train and backward_train panels; bars in nchw and in each library's best layout
    (labelled with its name), log scale."""
    panels = [("forward_train", "memcpy"), ("backward_train", "triad")]
    shapes = sorted({k[3] for k in results if k[1] == "f32" and k[5] == 1 and k[2] in OPS},
                    key=lambda s: order(s, SHAPES))
    series = [s for s in CHART_SERIES if any(k[0] == s[1] for k in results)]
    if not shapes or not series:
        print("report.py: nothing to chart", file=sys.stderr)
        return None
    width = 0.84 / len(series)
    values = []
    lines = ["# panel series shape_index x value label"]
    for p, (op, _) in enumerate(panels):
        for s, (title, impl, layout, _) in enumerate(series):
            for j, shape in enumerate(shapes):
                if layout is None:
                    lay, r = best(results, impl, "f32", op, shape, 1)
                else:
                    lay, r = layout, results.get((impl, "f32", op, shape, layout, 1))
                if not r or r.get("ratio") is None:
                    continue
                x = j + (s - (len(series) - 1) / 2) * width
                label = f"{r['ratio']:.2g}" + (f" {lay}" if layout is None else "")
                values.append(r["ratio"])
                lines.append(f'{p} {s} {j} {x:.4f} {r["ratio"]:.6g} "{label}"')
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
    term = ("pngcairo noenhanced size 1500,1100 font 'DejaVu Sans,10'" if have_pngcairo()
            else "png noenhanced size 1500,1100")
    gp = [
        f"set terminal {term}",
        f"set output '{os.path.join(out_dir, 'chart.png')}'",
        "set multiplot layout 2,1 title " + gp_str(f"batchnorm vs competitors, f32, 1 thread, {machine}"),
        "set logscale y", f"set yrange [{ymin}:{ymax}]", f"set xrange [-0.6:{len(shapes) - 0.4}]",
        f"set xtics ({xtics})", "set grid ytics", "set key outside right top vertical",
        "set style fill solid 0.85 border -1",
    ]
    for p, (op, base) in enumerate(panels):
        gp.append("set title " + gp_str(f"{op}: median time / median {base} over the same bytes "
                                         "(1 = memory-bandwidth limit, lower is better, log scale)"))
        gp.append(f"set ylabel 'x {base}'")
        plots = []
        for s, (title, _, _, colour) in enumerate(series):
            cond = f"(($1=={p} && $2=={s}) ? $4 : NaN)"
            plots.append(f"'{dat}' using {cond}:5:($4-{width / 2:.4f}):($4+{width / 2:.4f}):({ymin}):5 "
                         f"with boxxyerror lc rgb '{colour}' title {gp_str(title)}")
            plots.append(f"'{dat}' using {cond}:5:6 with labels rotate by 90 left offset 0,0.4 font ',8' notitle")
        plots.append(f"1 with lines lc rgb 'black' dt 2 title 'memory limit'")
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
    print(f"report.py: wrote {md}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
