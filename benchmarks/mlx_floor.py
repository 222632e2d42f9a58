"""``rewrite --to mlx`` against the I/O floor, measured in the same run.

    python -m benchmarks.mlx_floor [--case NAME ...] [--repeat 3] [--workdir DIR]

Cases (``CASES``): ``make_formats`` Llama-layout checkpoints (TinyLlama widths) of the
compressed-tensors W4A16, GPTQ, AWQ and DeepSeek-V4 (FP8 + E8M0 attention, MXFP4 MLP)
families at about 0.8 and 1.6 GB, the issue-18 acceptance checkpoint (compressed-tensors
W4A16, 32 layers, codes in 2 shards, about 1.3 GB), and the FP8-with-float-scales family
with ``--requantize 4`` (the ``mx.quantize`` path). Per case, alternating, ``--repeat``
times each: the I/O floor (``io_floor.py``: every input byte read, as many bytes written as
the output holds; buffered and O_DIRECT, the faster median counts) and
``python -m scalefix rewrite SRC --to mlx`` in a fresh process (``measure.measure``: wall time,
peak RSS of the process tree). Page cache dropped before each step when root. Reports the
medians (with their spread), ratio = scalefix / floor, and the load average seen. Results:
``mlx-floor-latest.json`` in the workdir. Sources are cached under the workdir (``src/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from benchmarks import make_formats, report
from benchmarks import measure

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# name: (family, layers, vocab, layers per shard, extra rewrite arguments)
CASES = {
    "ct-w4a16-0.8": ("ct-w4a16", 22, 32000, 11, []),
    "ct-w4a16-1.3": ("ct-w4a16", 32, 64000, 16, []),
    "ct-w4a16-1.6": ("ct-w4a16", 48, 64000, 24, []),
    "gptq-0.8": ("gptq", 22, 32000, 11, []),
    "gptq-1.0": ("gptq", 32, 32000, 16, []),
    "gptq-1.6": ("gptq", 48, 64000, 24, []),
    "awq-0.8": ("awq", 22, 32000, 11, []),
    "awq-1.0": ("awq", 32, 32000, 16, []),
    "awq-1.6": ("awq", 48, 64000, 24, []),
    "dsv4-0.8": ("dsv4", 18, 32000, 9, []),
    "dsv4-1.6": ("dsv4", 38, 64000, 19, []),
    "fp8-rq4-0.8": ("fp8", 14, 32000, 7, ["--requantize", "4", "--group-size", "64"]),
}


def source(workdir: Path, family: str, layers: int, vocab: int, per_shard: int) -> Path:
    d = workdir / "src" / f"{family}-L{layers}-V{vocab}-s{per_shard}-g{make_formats.GEN_VERSION}"
    if (d / ".complete").exists():
        return d
    tmp = d.with_name("." + d.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[floor] generating {d.name}", file=sys.stderr, flush=True)
    make_formats.generate(tmp, family, layers, vocab, layers_per_shard=per_shard, verbose=False)
    (tmp / ".complete").write_text("")
    shutil.rmtree(d, ignore_errors=True)
    os.replace(tmp, d)
    return d


def timed(cmd: list[str], log: Path, drop: bool) -> dict:
    cold = drop and measure.drop_caches()
    m = measure.measure(cmd, log, 1800)
    if m["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{measure.error_tail(log)}")
    return {"wall_s": m["wall_s"], "peak_rss_mb": m.get("peak_rss_mb"), "cold": cold}


def run_case(name: str, workdir: Path, repeat: int, drop: bool) -> dict:
    family, layers, vocab, per_shard, extra = CASES[name]
    src = source(workdir, family, layers, vocab, per_shard)
    out, logs = workdir / "out" / name, workdir / "logs" / name
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    scalefix = [sys.executable, "-m", "scalefix", "rewrite", str(src), "--to", "mlx", *extra,
                "--quiet", "--out", str(out)]
    # a first run gives the output size for the floor (and warms nothing: caches dropped)
    first = timed(scalefix, logs / "first.log", drop)
    out_bytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    runs: dict[str, list] = {"floor": [], "floor_direct": [], "scalefix": []}
    floor_cmd = [sys.executable, str(BENCH / "io_floor.py"), str(src), str(workdir / "floor"),
                 str(out_bytes)]
    for i in range(repeat):
        for label, cmd in (("floor", floor_cmd), ("floor_direct", floor_cmd + ["--direct"]),
                           ("scalefix", scalefix)):
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(workdir / "floor", ignore_errors=True)
            runs[label].append(timed(cmd, logs / f"{label}-{i}.log", drop))
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(workdir / "floor", ignore_errors=True)
    med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    floor = min(med["floor"], med["floor_direct"])
    in_bytes = measure.dir_bytes(src)
    return {"case": name, "family": family, "args": extra, "in_bytes": in_bytes,
            "out_bytes": out_bytes, "floor_s": round(med["floor"], 2),
            "floor_direct_s": round(med["floor_direct"], 2),
            "scalefix_s": round(med["scalefix"], 2), "ratio": round(med["scalefix"] / floor, 2),
            "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in runs["scalefix"]),
            "cold": all(r["cold"] for v in runs.values() for r in v), "first": first,
            "runs": runs, "loadavg_after": os.getloadavg()}


def table(results: dict) -> str:
    """The markdown table of a run: one row per case, the faster floor's median counts."""
    repeat = len(results["cases"][0]["runs"]["scalefix"]) if results["cases"] else 0
    lines = [f"{results['machine']['cpus']} cores, load average "
             f"{results['machine']['loadavg_before'][0]:.1f} at the start; medians of "
             f"{repeat} repetitions (min-max in brackets), the three steps alternating, page "
             "cache dropped before every step when root. ratio: `--to mlx` over the faster "
             "floor.", "",
             "| case | in GB | out GB | floor s (buffered) | floor s (O_DIRECT) | `--to mlx` s "
             "| ratio | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(r, key, label):
        walls = [x["wall_s"] for x in r["runs"][label]]
        return f"{r[key]:.2f} [{min(walls):.2f}-{max(walls):.2f}]"
    for r in results["cases"]:
        lines.append(f"| {r['case']} | {r['in_bytes'] / 1e9:.2f} | {r['out_bytes'] / 1e9:.2f} "
                     f"| {cell(r, 'floor_s', 'floor')} "
                     f"| {cell(r, 'floor_direct_s', 'floor_direct')} "
                     f"| {cell(r, 'scalefix_s', 'scalefix')} "
                     f"| {r['ratio']:.2f}x | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=list(CASES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path,
                    default=Path.home() / ".cache/scalefix/bench-work/mlx-floor")
    ap.add_argument("--no-drop", action="store_true", help="keep the page cache")
    report.add_argument(ap)
    a = ap.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    results = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "loadavg_before": os.getloadavg()}, "cases": []}
    for name in a.case or list(CASES):
        r = run_case(name, a.workdir, a.repeat, not a.no_drop)
        results["cases"].append(r)
        print(f"{name}: {r['in_bytes'] / 1e9:.2f} GB -> {r['out_bytes'] / 1e9:.2f} GB  "
              f"floor {min(r['floor_s'], r['floor_direct_s']):.2f} s  scalefix "
              f"{r['scalefix_s']:.2f} s  ratio {r['ratio']:.2f}  peak {r['peak_rss_mb']:.0f} MB  "
              f"load {r['loadavg_after'][0]:.2f}", flush=True)
        (a.workdir / "mlx-floor-latest.json").write_text(json.dumps(results, indent=1))
    if a.write_docs:
        doc = report.write_figures("mlx_floor.py", table(results),
                                   command=report.command_line("mlx_floor", argv))
        print(f"[floor] wrote the figures into {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
