"""Formats benchmark: `rewrite --to mlx` (native) vs the BF16 rewrite vs a 4-bit re-quantization.

    python -m benchmarks.formats [--family F ...] [--layers 16] [--vocab 32000] [--workdir DIR]
    python -m benchmarks.formats --render ~/.cache/scalefix/bench-work/formats/formats-latest.json

For each family of make_formats.py (one Llama-layout checkpoint each, the same random model):

* ``native``: ``scalefix rewrite SRC --to mlx``: every module in its lossless native MLX form,
  or exact BF16 where it has none (NVFP4, FP8 with float scales);
* ``bf16``: ``scalefix rewrite SRC``: the exact decode, which the other outputs are measured
  against; checked here, module by module, against make_formats' own independent decode;
* ``mlx-lm q4``: mlx-lm's re-quantization, ``mlx_lm.convert`` of that BF16 rewrite at 4 bits,
  group 64, affine (decoder linears only: embeddings and ``lm_head`` stay BF16 everywhere).
  ``rewrite --to mlx --requantize 4`` re-quantizes only modules *without* a native form, so for
  the integer families it equals ``native``; mlx-lm's convert is the re-quantization a user
  would otherwise run. Its time is on top of the BF16 rewrite it starts from;
* ``--requantize 4``: ``scalefix rewrite SRC --to mlx --requantize 4 --group-size 64``, only for
  the families whose native output has BF16 modules (where it differs from ``native``).

Measured per output, each step a fresh process (``measure.measure``: wall, peak RSS of the process
tree; page cache dropped before each step when root): size on disk (``*.safetensors``),
conversion wall time and peak RSS, ``mlx_lm.utils.load_model`` + one forward of 8 tokens
(``formats_child.py load``; its own load / forward times), and the weight SQNR of every decoder
linear against the BF16 rewrite (``formats_child.py sqnr``: ``mx.dequantize`` in float32, rounded
to BF16 once; min / median, bit-exact count). The scalefix used is a snapshot of the working
tree's ``scalefix/`` taken at start (runtime_memory.snapshot_worktree). Outputs are deleted
after each family unless ``--keep-outputs``; checkpoints are cached under the workdir
(``src/``). Results: ``formats-<time>.json``, ``formats-latest.{json,md}`` in the workdir.
Exit 1 when a step failed or the BF16 rewrite is not the exact decode.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from benchmarks import make_formats, report
from benchmarks import measure, tensor_hashes
from benchmarks import runtime_memory  # (snapshot_worktree, child_env, versions)

BENCH = Path(__file__).resolve().parent

CHILD = BENCH / "formats_child.py"
OUTPUTS = ("native", "bf16", "mlx-lm q4", "--requantize 4")


def ensure_source(workdir: Path, family: str, args) -> tuple[Path, dict]:
    key = f"{family}-L{args.layers}-V{args.vocab}-s{args.seed}-g{make_formats.GEN_VERSION}"
    d = workdir / "src" / key
    marker = d / ".complete"
    if marker.exists():
        return d, json.loads(marker.read_text())
    tmp = d.with_name("." + key + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[fmt] generating {key}", file=sys.stderr, flush=True)
    t = time.perf_counter()
    info = make_formats.generate(tmp, family, args.layers, args.vocab, args.seed, verbose=False)
    info["generate_s"] = round(time.perf_counter() - t, 1)
    (tmp / ".complete").write_text(json.dumps(info))
    shutil.rmtree(d, ignore_errors=True)
    os.replace(tmp, d)
    return d, info


def step(label: str, cmd: list[str], logdir: Path, args, env: dict) -> dict:
    cache = "cold" if args.drop and measure.drop_caches() else "warm"
    print(f"[fmt] {label} ({cache})", file=sys.stderr, flush=True)
    m = measure.measure(cmd, logdir / f"{label}.log", args.timeout, env=env)
    m["cache"] = cache
    m["status"] = "ok" if m["rc"] == 0 and not m["timed_out"] else \
        "timeout" if m["timed_out"] else f"failed: {measure.error_tail(logdir / f'{label}.log')}"
    return m


def child(mode: str, label: str, paths: list[Path], logdir: Path, args, env: dict) -> dict:
    report = logdir / f"{label}.report.json"
    report.unlink(missing_ok=True)
    m = step(label, [args.python, str(CHILD), mode, *map(str, paths), "--report", str(report)],
             logdir, args, env)
    if m["status"] == "ok":
        m["report"] = json.loads(report.read_text())
    return m


def check_bf16(bf16: Path, info: dict) -> dict:
    """Every decoder linear of the BF16 rewrite against make_formats' own exact decode."""
    want, same, differ = info["decode_digests"], 0, []
    for name, dtype, shape, data in tensor_hashes.iter_tensors(bf16):
        if name in want:
            if tensor_hashes.digest(dtype, shape, data) == want[name]:
                same += 1
            else:
                differ.append(name)
    return {"modules": len(want), "identical": same, "differ": differ[:5],
            "missing": len(want) - same - len(differ)}


def run_family(family: str, args, workdir: Path, env: dict) -> dict:
    src, info = ensure_source(workdir, family, args)
    out = workdir / "out" / family
    logdir = workdir / "logs" / family
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dirs = {"native": out / "native", "bf16": out / "bf16", "mlx-lm q4": out / "mlx-lm-q4",
            "--requantize 4": out / "requantize4"}
    py_sf = [args.python, "-P", "-m", "scalefix", "rewrite", str(src), "--quiet", "--json", "--out"]
    res: dict = {"family": family, "what": info["what"], "source": str(src),
                 "info": {k: v for k, v in info.items() if k != "decode_digests"}, "outputs": {}}
    o = res["outputs"]
    o["bf16"] = {"convert": step("bf16.convert", py_sf + [str(dirs["bf16"])], logdir, args, env)}
    o["native"] = {"convert": step("native.convert", py_sf + [str(dirs["native"]), "--to", "mlx"],
                                   logdir, args, env)}
    if o["bf16"]["convert"]["status"] == "ok":
        res["bf16_vs_oracle"] = check_bf16(dirs["bf16"], info)
        o["mlx-lm q4"] = {"convert": child(
            "convert", "mlx-lm-q4.convert", [dirs["bf16"], dirs["mlx-lm q4"]], logdir, args, env),
            "after": "bf16"}
    for name in ("native", "bf16"):
        log = logdir / f"{name}.convert.log"
        if o[name]["convert"]["status"] == "ok":
            o[name]["summary"] = summary_of(log)
    native_dense = sum((o["native"].get("summary") or {}).get("counts", {}).get("dequantized", {}).values())
    if native_dense and not args.skip_scalefix_requantize:
        o["--requantize 4"] = {"convert": step(
            "requantize4.convert", py_sf + [str(dirs["--requantize 4"]), "--to", "mlx",
                                            "--requantize", "4", "--group-size", "64"],
            logdir, args, env)}
        if o["--requantize 4"]["convert"]["status"] == "ok":
            o["--requantize 4"]["summary"] = summary_of(logdir / "requantize4.convert.log")
    for name in OUTPUTS:
        if name not in o or o[name]["convert"]["status"] != "ok":
            continue
        d = dirs[name]
        o[name]["bytes"] = measure.dir_bytes(d)
        o[name]["load"] = child("load", f"{name.strip('-').replace(' ', '-')}.load", [d], logdir, args, env)
        if name != "bf16":
            o[name]["sqnr"] = child("sqnr", f"{name.strip('-').replace(' ', '-')}.sqnr",
                                    [d, dirs["bf16"]], logdir, args, env)
    if all(o.get(k, {}).get("convert", {}).get("status") == "ok" for k in ("mlx-lm q4", "--requantize 4")):
        a, b = (runtime_memory.tensor_digests(dirs[k]) for k in ("mlx-lm q4", "--requantize 4"))
        res["requantize_vs_mlx_lm"] = runtime_memory.compare(a, b)
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return res


def summary_of(log: Path) -> dict | None:
    """scalefix's --json summary: the last JSON object in the log."""
    text = log.read_text(errors="replace")
    start = text.rfind("\n{\n")
    try:
        return json.loads(text[start + 1 if start >= 0 else text.find("{"):])
    except ValueError:
        return None


# --------------------------------------------------------------------------- report

def fmt(x, nd=1):
    return "-" if x is None else "inf" if x == math.inf else f"{x:.{nd}f}"


def forms(rep: dict) -> str:
    kinds = {("BF16 (no native form)" if k == "dense" else k): n for k, n in rep.get("kinds", {}).items()}
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def rows(f: dict) -> list[str]:
    out = []
    bf16_s = f["outputs"].get("bf16", {}).get("convert", {}).get("wall_s")
    for name in OUTPUTS:
        r = f["outputs"].get(name)
        if r is None:
            continue
        c = r["convert"]
        if c["status"] != "ok":
            out.append(f"| {f['family']} | {name} | failed: {c['status'][:120]} | | | | | |")
            continue
        wall = fmt(c["wall_s"])
        if r.get("after") == "bf16" and bf16_s is not None:
            wall = f"{fmt(bf16_s)} + {wall}"
        ld = r.get("load", {})
        lr = ld.get("report", {})
        load = f"{fmt(lr.get('load_s'), 2)} + {fmt(lr.get('forward_s'), 2)}" if lr else ld.get("status", "-")
        if name == "bf16":
            v = f.get("bf16_vs_oracle", {})
            sq = f"exact: {v.get('identical')}/{v.get('modules')} bit-identical to the numpy decode"
            kinds = f"{v.get('modules')} dense BF16"
        else:
            s = r.get("sqnr", {})
            sr = s.get("report")
            if sr:
                sq = f"{fmt(sr['sqnr_min_db'])} / {fmt(sr['sqnr_median_db'])} ({sr['exact']}/{sr['modules']} bit-exact)"
                kinds = forms(sr)
            else:
                sq, kinds = s.get("status", "-"), "-"
        out.append(f"| {f['family']} | {name} | {r['bytes'] / 1e9:.3f} | {wall} | {c['peak_rss_mb']:.0f} "
                   f"| {load} | {ld.get('peak_rss_mb', 0):.0f} | {kinds} | {sq} |")
    return out


def tables(s: dict) -> str:
    v = s["versions"]
    dirty = f", uncommitted changes in {len(v['scalefix_uncommitted'])} scalefix file(s)" \
        if v["scalefix_uncommitted"] else ""
    lines = [f"{s['date']}, {s['machine']}, load average {s['loadavg_start']} at start, "
             f"{s['loadavg_end']} at end, {s.get('total_s', '?')} s in all; mlx {v['mlx']}, mlx-lm "
             f"{v['mlx-lm']}, Python {v['python']}, scalefix {v['scalefix_commit']}{dirty} (tree "
             f"{s['scalefix_tree']}); page cache {s['page_cache']}; {s['layers']} layers, vocabulary "
             f"{s['vocab']}", ""]
    lines += ["| family | source (GB on disk, quantized linears GB, own SQNR min / median dB) |", "|---|---|"]
    for f in s["families"]:
        i = f["info"]
        lines.append(f"| {f['family']} | {f['what']}: {i['bytes'] / 1e9:.3f} GB, {i['quantized_bytes'] / 1e9:.3f} GB, "
                     f"{fmt(i['own_sqnr_db']['min'])} / {fmt(i['own_sqnr_db']['median'])} |")
    lines += ["", "| family | output | GB on disk | convert s | convert peak MB | load + forward s "
              "| load peak MB | decoder linears as | weight SQNR vs exact, min / median dB |",
              "|---|---|---:|---:|---:|---:|---:|---|---|"]
    for f in s["families"]:
        lines += rows(f)
    for f in s["families"]:
        c = f.get("requantize_vs_mlx_lm")
        if c:
            lines.append(f"\n{f['family']}: `--requantize 4` and mlx-lm q4, tensor by tensor: "
                         + (f"identical ({c['tensors']} tensors)" if c["identical"] else
                            f"{c['n_differing']} of {c['tensors']} differ, e.g. {c['first_differing']}"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", action="append", choices=list(make_formats.FAMILIES),
                    help="repeatable (default: all)")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path,
                    default=Path.home() / ".cache" / "scalefix" / "bench-work" / "formats")
    ap.add_argument("--python", default=str(BENCH.parent / ".venv" / "bin" / "python"),
                    help="interpreter with mlx, mlx-lm and scalefix's dependencies")
    ap.add_argument("--timeout", type=float, default=1800, help="per step, seconds")
    ap.add_argument("--skip-scalefix-requantize", action="store_true")
    ap.add_argument("--keep-outputs", action="store_true")
    ap.add_argument("--no-drop-caches", action="store_true")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only print the tables of a saved result")
    report.add_argument(ap)
    args = ap.parse_args(argv)
    if args.render:
        print(tables(json.loads(args.render.read_text())))
        return 0
    args.drop = measure.can_drop_caches() and not args.no_drop_caches
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    tree, tree_digest = runtime_memory.snapshot_worktree(workdir)
    env = runtime_memory.child_env(tree)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    s: dict = {"date": time.strftime("%Y-%m-%d %H:%M %Z"),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {mem:.0f} GiB",
               "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
               "versions": runtime_memory.versions(args.python), "scalefix_tree": tree_digest,
               "page_cache": "dropped before each step" if args.drop else "not dropped",
               "layers": args.layers, "vocab": args.vocab, "families": []}
    t0 = time.perf_counter()
    for family in args.family or list(make_formats.FAMILIES):
        s["families"].append(run_family(family, args, workdir, env))
        print(f"[fmt] {family} done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    s["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    s["total_s"] = round(time.perf_counter() - t0)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"formats-{stamp}.json", "formats-latest.json"):
        (workdir / name).write_text(json.dumps(s, indent=1, default=str))
    md = tables(s)
    print(md, flush=True)
    (workdir / "formats-latest.md").write_text(md + "\n")
    print(f"[fmt] wrote {workdir / f'formats-{stamp}.json'} ({s['total_s']} s)", file=sys.stderr)
    if args.write_docs:
        doc = report.write_figures("formats.py", md, command=report.command_line("formats", argv))
        print(f"[fmt] wrote the figures into {doc}", file=sys.stderr)
    bad = any(r["convert"]["status"] != "ok" or any(
        r.get(k, {}).get("status", "ok") != "ok" for k in ("load", "sqnr"))
        for f in s["families"] for r in f["outputs"].values())
    bad |= any(f.get("bf16_vs_oracle", {}).get("identical") != f["info"]["modules"] for f in s["families"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
