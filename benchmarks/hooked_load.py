"""mlx-lm loading a quantized source under ``import scalefix.auto`` against plain mlx-lm
loading the ``scalefix rewrite --to mlx`` bundle of the same source (issue 18, acceptance 3).

    python -m benchmarks.hooked_load [--case NAME ...] [--repeat 3] [--workdir DIR] [--write-docs]

Cases: ``mlx_floor.CASES`` names (default ``ct-w4a16-1.3``, the issue-18 compressed-tensors
W4A16 Llama, 32 layers, codes in 2 shards; ``gptq-1.0`` and ``awq-1.0`` are the twins).
Sources come from ``mlx_floor.source`` (cached in its workdir). Per case: the bundle is made
once with ``python -m scalefix rewrite SRC --to mlx``; then, ``--repeat`` times, alternating,
each in a fresh process measured by ``measure.measure`` (wall, peak RSS of the process tree),
page cache dropped before each when root:

* plain: ``mlx_lm.load(BUNDLE)`` + one forward of 8 tokens;
* hooked: ``import scalefix.auto``, then ``mlx_lm.load(SRC)`` + the same forward.

The child (this file, ``child`` mode) records the quantized module list (name, class,
bits, group_size, mode), the logits' bytes (float32 of the BF16 output, exact) and the
in-process load + first-forward time. Reported: module lists equal, logits bit-identical,
medians, ratios hooked / plain for peak RSS and load + first forward (in-process and
process wall), PASS/FAIL against 1.2x. Results: ``hooked-load-latest.json`` in the workdir.
Exit 1 when a child failed or the outputs differ, 3 when only a ratio misses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BAR = 1.2


# --------------------------------------------------------------------------- child

def child(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--scalefix", action="store_true")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--logits", type=Path, required=True)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.scalefix:
        import scalefix.auto  # noqa: F401  (the only difference between the contenders)
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm
    rep: dict = {"scalefix": a.scalefix, "import_s": time.perf_counter() - t0}
    t = time.perf_counter()
    model, _tok = mlx_lm.load(a.src)
    rep["load_s"] = time.perf_counter() - t
    t1 = time.perf_counter()
    logits = model(mx.array([[3 + i for i in range(a.tokens)]]))
    mx.eval(logits)
    rep["forward_s"] = time.perf_counter() - t1
    rep["load_forward_s"] = time.perf_counter() - t
    raw = memoryview(logits.astype(mx.float32)).tobytes()  # BF16 -> F32 is exact
    a.logits.write_bytes(raw)
    rep["logits_shape"] = list(logits.shape)
    rep["logits_dtype"] = str(logits.dtype)
    rep["logits_blake2b"] = hashlib.blake2b(raw, digest_size=16).hexdigest()
    mods = []
    for name, m in model.named_modules():
        if hasattr(m, "bits") and hasattr(m, "group_size"):
            mods.append([name, type(m).__name__, m.bits, m.group_size,
                         getattr(m, "mode", "affine")])
    rep["quantized"] = sorted(mods)
    rep["non_quantized_linear"] = sorted(n for n, m in model.named_modules()
                                         if type(m) in (nn.Linear, nn.Embedding))
    rep["scalefix_imported"] = "scalefix" in sys.modules
    a.report.write_text(json.dumps(rep))
    return 0


# --------------------------------------------------------------------------- driver

def run_case(name: str, workdir: Path, srcdir: Path, repeat: int, drop: bool) -> dict:
    from benchmarks import measure, mlx_floor
    family, layers, vocab, per_shard, extra = mlx_floor.CASES[name]
    src = mlx_floor.source(srcdir, family, layers, vocab, per_shard)
    bundle, logs = workdir / "bundle" / name, workdir / "logs" / name
    shutil.rmtree(bundle, ignore_errors=True)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    mk = measure.measure([sys.executable, "-m", "scalefix", "rewrite", str(src), "--to", "mlx", *extra,
                      "--quiet", "--out", str(bundle)], logs / "rewrite.log", 1800)
    if mk["rc"] != 0:
        raise SystemExit(f"rewrite failed:\n{measure.error_tail(logs / 'rewrite.log')}")
    for f in src.iterdir():  # the tokenizer files, when the rewrite leaves them out
        if f.is_file() and f.name.startswith(("tokenizer", "special_tokens")) \
                and not (bundle / f.name).exists():
            shutil.copy2(f, bundle / f.name)
    runs: dict[str, list] = {"plain": [], "hooked": []}
    first: dict[str, dict] = {}
    for i in range(repeat):
        order = ("plain", "hooked") if i % 2 == 0 else ("hooked", "plain")
        for label in order:
            rj, lg = logs / f"{label}-{i}.json", workdir / f"logits-{name}-{label}.bin"
            cmd = [sys.executable, str(Path(__file__)), "child",
                   str(bundle if label == "plain" else src), "--report", str(rj),
                   "--logits", str(lg)] + (["--scalefix"] if label == "hooked" else [])
            cold = drop and measure.drop_caches()
            m = measure.measure(cmd, logs / f"{label}-{i}.log", 1800)
            if m["rc"] != 0:
                raise SystemExit(f"{label} failed:\n{measure.error_tail(logs / f'{label}-{i}.log', 20)}")
            rep = json.loads(rj.read_text())
            if rep["scalefix_imported"] != (label == "hooked"):
                raise SystemExit(f"{label}: scalefix imported = {rep['scalefix_imported']}")
            if label not in first:
                first[label] = dict(rep, logits=lg.read_bytes())
            elif rep["logits_blake2b"] != first[label]["logits_blake2b"]:
                raise SystemExit(f"{label}: logits differ between runs")
            runs[label].append({"wall_s": m["wall_s"], "peak_rss_mb": m["peak_rss_mb"],
                                "load_forward_s": rep["load_forward_s"],
                                "load_s": rep["load_s"], "import_s": rep["import_s"],
                                "cold": cold, "loadavg": os.getloadavg()[0]})
            print(f"[hooked] {name} {label} #{i}: wall {m['wall_s']:.2f} s  load+fwd "
                  f"{rep['load_forward_s']:.2f} s  peak {m['peak_rss_mb']:.0f} MB  "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    p, h = first["plain"], first["hooked"]
    med = {k: {f: statistics.median(r[f] for r in v) for f in
               ("wall_s", "peak_rss_mb", "load_forward_s", "load_s", "import_s")}
           for k, v in runs.items()}
    r = {"case": name, "src": str(src), "in_bytes": measure.dir_bytes(src),
         "bundle_bytes": measure.dir_bytes(bundle), "rewrite_s": round(mk["wall_s"], 2),
         "n_quantized": len(p["quantized"]),
         "modules_equal": p["quantized"] == h["quantized"]
         and p["non_quantized_linear"] == h["non_quantized_linear"],
         "modes": sorted({tuple(q[1:]) for q in p["quantized"]}),
         "logits_identical": p["logits"] == h["logits"]
         and p["logits_shape"] == h["logits_shape"] and p["logits_dtype"] == h["logits_dtype"],
         "logits_blake2b": [p["logits_blake2b"], h["logits_blake2b"]],
         "median": med, "runs": runs,
         "ratio_peak": med["hooked"]["peak_rss_mb"] / med["plain"]["peak_rss_mb"],
         "ratio_load_forward": med["hooked"]["load_forward_s"] / med["plain"]["load_forward_s"],
         "ratio_load": med["hooked"]["load_s"] / med["plain"]["load_s"],
         "ratio_wall": med["hooked"]["wall_s"] / med["plain"]["wall_s"],
         "cold": all(x["cold"] for v in runs.values() for x in v)}
    if not r["modules_equal"]:
        r["module_diff"] = {"plain_only": [q for q in p["quantized"] if q not in h["quantized"]][:5],
                            "hooked_only": [q for q in h["quantized"] if q not in p["quantized"]][:5]}
    r["pass"] = {"modules": r["modules_equal"], "logits": r["logits_identical"],
                 "peak": r["ratio_peak"] <= BAR, "load": r["ratio_load"] <= BAR,
                 "load_forward": r["ratio_load_forward"] <= BAR,
                 "wall": r["ratio_wall"] <= BAR}
    shutil.rmtree(bundle, ignore_errors=True)
    for lab in runs:
        (workdir / f"logits-{name}-{lab}.bin").unlink(missing_ok=True)
    return r


def table(res: dict) -> str:
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    lines = [f"{res['machine']['cpus']} cores, load average "
             f"{res['machine']['loadavg_before'][0]:.1f} at the start and "
             f"{res['machine']['loadavg_after'][0]:.1f} at the end; medians of "
             f"{res['repeat']} fresh processes each, alternating, page cache "
             f"{'dropped before each' if res['cold'] else 'NOT dropped'}. plain: "
             "`mlx_lm.load(BUNDLE)` of the `--to mlx` bundle; hooked: `import scalefix.auto`, "
             "`mlx_lm.load(SRC)`; both + one forward of 8 tokens. Bar: hooked / plain <= "
             f"{BAR}x.", "",
             "| case | in GB | quantized modules (equal) | logits bit-identical "
             "| plain load s | hooked load s | ratio "
             "| plain load+fwd s | hooked load+fwd s | ratio | plain wall s | hooked wall s "
             "| ratio | plain peak MB | hooked peak MB | ratio |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["cases"]:
        m, pa = r["median"], r["pass"]
        modes = ", ".join(f"{c} {b}b g{g} {mo}" for c, b, g, mo in r["modes"])
        lines.append(
            f"| {r['case']} | {r['in_bytes'] / 1e9:.2f} | {r['n_quantized']} {modes} "
            f"({ok(pa['modules'])}) | {ok(pa['logits'])} "
            f"| {m['plain']['load_s']:.2f} | {m['hooked']['load_s']:.2f} "
            f"| {r['ratio_load']:.2f}x {ok(pa['load'])} "
            f"| {m['plain']['load_forward_s']:.2f} | {m['hooked']['load_forward_s']:.2f} "
            f"| {r['ratio_load_forward']:.2f}x {ok(pa['load_forward'])} "
            f"| {m['plain']['wall_s']:.2f} | {m['hooked']['wall_s']:.2f} "
            f"| {r['ratio_wall']:.2f}x {ok(pa['wall'])} "
            f"| {m['plain']['peak_rss_mb']:.0f} | {m['hooked']['peak_rss_mb']:.0f} "
            f"| {r['ratio_peak']:.2f}x {ok(pa['peak'])} |")
    lines += ["", "load: `mlx_lm.load` alone (it evaluates every parameter, so the hooked "
              "repack is paid here); load+fwd: `mlx_lm.load` through the first forward's "
              "`mx.eval`, timed inside the child (MLX's CPU quantized matmul dominates it); wall: the whole process (interpreter start, imports, load, forward, "
              "writing the report); peak: the process tree's RSS."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child(argv[1:])
    from benchmarks import measure, mlx_floor, report
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=list(mlx_floor.CASES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path,
                    default=Path.home() / ".cache/scalefix/bench-work/hooked-load")
    ap.add_argument("--srcdir", type=Path,
                    default=Path.home() / ".cache/scalefix/bench-work/mlx-floor",
                    help="mlx_floor's workdir, where the sources are cached")
    ap.add_argument("--no-drop", action="store_true", help="keep the page cache")
    report.add_argument(ap)
    a = ap.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    drop = not a.no_drop and measure.can_drop_caches()
    res = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "repeat": a.repeat, "cold": drop,
           "machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}, "cases": []}
    for name in a.case or ["ct-w4a16-1.3"]:
        res["cases"].append(run_case(name, a.workdir, a.srcdir, a.repeat, drop))
        res["machine"]["loadavg_after"] = os.getloadavg()
        (a.workdir / "hooked-load-latest.json").write_text(json.dumps(res, indent=1))
    print(table(res), flush=True)
    if a.write_docs:
        doc = report.write_figures("hooked_load", table(res),
                                   command=report.command_line("hooked_load", argv))
        print(f"[hooked] wrote the figures into {doc}", file=sys.stderr)
    if not all(r["modules_equal"] and r["logits_identical"] for r in res["cases"]):
        return 1
    return 0 if all(r["pass"]["peak"] and r["pass"]["load_forward"]
                    for r in res["cases"]) else 3


if __name__ == "__main__":
    sys.exit(main())
