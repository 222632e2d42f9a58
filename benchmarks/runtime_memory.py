"""Runtime memory benchmark: mlx-lm under ``import scalefix.auto`` against plain mlx-lm.

    python -m benchmarks.runtime_memory [--llama-size-gb 1.4 --llama-size-gb 2.8] [--dsv3-size-gb 1.2]
                                        [--load-repeat 3] [--workdir DIR] [--skip llama|dsv3|dsv3-load]

A shim installed in every interpreter must never make a working load worse (issue 10).
Every contender is a fresh ``mlx_lm_child.py`` process (same interpreter, same mlx /
mlx-lm; the only difference is ``import scalefix.auto``), measured by ``measure.measure``
(wall, CPU, peak RSS from ``/usr/bin/time`` and a process-tree poll), with the page cache
dropped before each one when running as root:

* Llama layout, at each ``--llama-size-gb``: mlx-lm's 4-bit conversion of the FP8
  checkpoint under scalefix vs plain mlx-lm converting its exact BF16 twin (plain mlx-lm
  refuses the FP8 one). The twin is ``scalefix rewrite`` of the FP8 checkpoint, checked
  tensor by tensor against tensor_hashes.py's numpy oracle before use. The two 4-bit outputs are
  compared tensor by tensor (blake2b of dtype, shape, bytes).
* DeepSeek-V3 layout (dense, make_dsv3_fp8.py): the same conversion, plain mlx-lm (its
  ``deepseek_v3`` sanitize dequantizes ``weight_scale_inv`` lazily) vs under scalefix, on
  the same FP8 checkpoint; then ``mlx_lm.load`` + a first forward of 8 tokens,
  ``--load-repeat`` times each, interleaved, median reported, logits compared bit for bit.

Prints a markdown table with the ratios scalefix / plain and the acceptance bars (peak
<= 1.2x at every Llama size and on DeepSeek-V3, DeepSeek-V3 load + forward <= 1.1x) and
writes ``runtime-<time>.json``, ``runtime-latest.json`` and ``runtime-latest.md`` to the
workdir. Exit 1 when a contender failed or outputs differ, 3 when only a bar is missed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import make_llama_fp8, report
from benchmarks import measure, tensor_hashes
from benchmarks import run  # (the DeepSeek-V3 FP8 checkpoint cache)
from benchmarks.runtime_memory_tables import bars, tables

BENCH = Path(__file__).resolve().parent

GEN_VERSION = 1  # bump when make_llama_fp8's output or the twin's recipe changes
CHILD = BENCH / "mlx_lm_child.py"


# --------------------------------------------------------------------------- inputs

def tensor_digests(d: Path) -> dict[str, str]:
    """{name: blake2b(dtype, shape, bytes)} of every tensor in d's *.safetensors."""
    return {name: tensor_hashes.digest(dtype, shape, data)
            for name, dtype, shape, data in tensor_hashes.iter_tensors(d)}


def compare(a: dict[str, str], b: dict[str, str]) -> dict:
    names = set(a) | set(b)
    bad = sorted(n for n in names if a.get(n) != b.get(n))
    return {"identical": not bad and bool(names), "tensors": len(names),
            "n_differing": len(bad), "first_differing": bad[:5]}


def ensure_llama(workdir: Path, size_gb: float, seed: int, python: str) -> tuple[Path, Path, dict]:
    """The FP8 Llama checkpoint and its exact BF16 twin, generated once and cached."""
    fp8 = workdir / f"llama-fp8-{size_gb:g}gb-seed{seed}"
    twin = workdir / f"llama-bf16-{size_gb:g}gb-seed{seed}"
    marker = twin / ".bench-twin.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("gen_version") == GEN_VERSION:
            print(f"[rt] reusing {fp8.name} and its twin", file=sys.stderr)
            return fp8, twin, info
    for d in (fp8, twin):
        if d.exists():
            shutil.rmtree(d)
    print(f"[rt] generating {size_gb:g} GB Llama-layout FP8 checkpoint in {fp8}", file=sys.stderr, flush=True)
    info = make_llama_fp8.generate(fp8, size_gb, seed, verbose=False)
    t = time.time()
    cmd = [python, "-m", "scalefix", "rewrite", str(fp8), "--out", str(twin), "--quiet"]
    print(f"[rt] BF16 twin: {' '.join(cmd)}", file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(BENCH.parent))
    if r.returncode != 0:
        raise SystemExit(f"[rt] making the BF16 twin failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
    info["twin_s"] = round(time.time() - t, 1)
    t = time.time()
    check = compare(tensor_hashes.reference_hashes(fp8), tensor_digests(twin))
    info["twin_check_s"] = round(time.time() - t, 1)
    if not check["identical"]:
        raise SystemExit(f"[rt] {twin} is not the exact decode of {fp8} (numpy oracle): {check}")
    info.update(twin_vs_oracle=check, twin_bytes=measure.dir_bytes(twin), gen_version=GEN_VERSION)
    marker.write_text(json.dumps(info, indent=1))
    return fp8, twin, info


# --------------------------------------------------------------------------- contenders

def export_rev(rev: str, workdir: Path) -> Path:
    """Commit ``rev``'s scalefix/ package, extracted with ``git archive`` (the repository and
    its working tree are only read) into a folder put first on that contender's PYTHONPATH."""
    root = BENCH.parent
    sha = subprocess.run(["git", "rev-parse", "--short", rev], capture_output=True, text=True,
                         cwd=str(root), check=True).stdout.strip()
    dest = workdir / f"scalefix-{sha}"
    if not (dest / "scalefix" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        arch = subprocess.run(["git", "archive", sha, "scalefix"], capture_output=True, cwd=str(root), check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch.stdout, check=True)
    return dest


def snapshot_worktree(workdir: Path) -> tuple[Path, str]:
    """A copy of the working tree's scalefix/ taken at start, so that every contender of one
    run measures the same code even while the tree is being edited; with its content digest."""
    src = BENCH.parent / "scalefix"
    h = hashlib.blake2b(digest_size=6)
    for f in sorted(src.rglob("*.py")) + sorted(src.rglob("*.diff")):
        h.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes())
    dest = workdir / f"scalefix-tree-{h.hexdigest()}"
    if not (dest / "scalefix" / "__init__.py").exists():
        shutil.copytree(src, dest / "scalefix", ignore=shutil.ignore_patterns("__pycache__"))
    return dest, h.hexdigest()


def contenders(args, workdir: Path) -> list[dict]:
    """plain mlx-lm, mlx-lm under the working tree's scalefix (a snapshot), one per --compare-rev."""
    tree, digest = snapshot_worktree(workdir)
    out = [{"name": "plain", "scalefix": False, "path": None},
           {"name": "scalefix", "scalefix": True, "path": tree, "tree_digest": digest}]
    for rev in args.compare_rev:
        d = export_rev(rev, workdir)
        out.append({"name": f"scalefix@{d.name.split('-', 1)[1]}", "scalefix": True, "path": d})
    return out


def child_env(path: Path | None) -> dict:
    """The caller's environment without SCALEFIX_* switches (each contender is exactly 'with'
    or 'without' the shim); ``path`` first on PYTHONPATH for a --compare-rev contender."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALEFIX_")}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run_child(label: str, mode: str, src: Path, args, logdir: Path, who: dict, *,
              dst: Path | None = None, logits: Path | None = None) -> dict:
    report = logdir / f"{label}.report.json"
    report.unlink(missing_ok=True)
    cmd = [args.python, str(CHILD), mode, str(src)] + ([str(dst)] if dst else [])
    cmd += ["--report", str(report), "--q-bits", str(args.q_bits), "--q-group-size", str(args.q_group_size)]
    cmd += ["--scalefix"] if who["scalefix"] else []
    cmd += ["--logits", str(logits)] if logits else []
    if dst is not None and dst.exists():
        shutil.rmtree(dst)
    cache = "cold (dropped)" if args.drop and measure.drop_caches() else "warm (not dropped)"
    print(f"[rt] {label}: {cache}", file=sys.stderr, flush=True)
    m = measure.measure(cmd, logdir / f"{label}.log", args.timeout, env=child_env(who["path"]))
    m.update(label=label, contender=who["name"], cache=cache, src=str(src),
             pythonpath=None if who["path"] is None else str(who["path"]))
    if m["rc"] != 0 or m["timed_out"] or not report.exists():
        m.update(status="failed", error=measure.error_tail(logdir / f"{label}.log"))
        print(f"[rt] {label}: FAILED rc={m['rc']}\n{m['error']}", file=sys.stderr, flush=True)
        return m
    rep = json.loads(report.read_text())
    m["child"] = rep
    m["load_s"] = rep.get("load_forward_s", rep.get("load_s"))
    want = str(who["path"] / "scalefix") if who["path"] else ""
    if who["scalefix"] and rep.get("patches", {}).get("mlx_load") != "applied":
        m.update(status="invalid", error=f"scalefix mlx_load not applied: {rep.get('patches')}")
    elif who["scalefix"] and not rep.get("scalefix_file", "").startswith(want):
        m.update(status="invalid", error=f"imported {rep.get('scalefix_file')}, not {want}")
    elif not who["scalefix"] and rep["scalefix_imported"]:
        m.update(status="invalid", error="scalefix was imported in the plain contender")
    else:
        m["status"] = "ok"
    if dst is not None and dst.exists():
        m["out_bytes"] = measure.dir_bytes(dst)
    print(f"[rt] {label}: {m['status']}: wall {m['wall_s']:.1f} s, load {m['load_s']:.2f} s, "
          f"peak RSS {m['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    return m


def convert_all(tag: str, plain_src: Path, fix_src: Path, args, workdir: Path, whos: list[dict]) -> dict:
    """mlx-lm's 4-bit conversion: plain on plain_src, each scalefix contender on fix_src;
    outputs hashed and compared with plain's, then deleted."""
    logdir = workdir / "logs-runtime" / tag
    logdir.mkdir(parents=True, exist_ok=True)
    res, digests = {}, {}
    for who in whos:
        dst = workdir / f"out-rt-{tag}-{who['name']}"
        src = fix_src if who["scalefix"] else plain_src
        res[who["name"]] = r = run_child(f"convert-{who['name']}", "convert", src, args, logdir, who, dst=dst)
        if r["status"] == "ok":
            digests[who["name"]] = tensor_digests(dst)
        if dst.exists() and not args.keep_outputs:
            shutil.rmtree(dst)
    p = res["plain"]
    for name, r in res.items():
        if name == "plain" or r["status"] != "ok" or p["status"] != "ok":
            continue
        r["outputs_vs_plain"] = compare(digests["plain"], digests[name])
        r["ratio"] = {k: r[k] / p[k] for k in ("peak_rss_mb", "wall_s", "load_s") if p.get(k)}
    return {"results": res}


def load_all(src: Path, args, workdir: Path, whos: list[dict]) -> dict:
    """mlx_lm.load + first forward, --load-repeat times per contender, interleaved."""
    import numpy as np
    logdir = workdir / "logs-runtime" / "dsv3-load"
    logdir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list] = {w["name"]: [] for w in whos}
    for i in range(args.load_repeat):
        for who in whos:
            runs[who["name"]].append(run_child(f"load-{who['name']}-{i + 1}", "load", src, args, logdir, who,
                                               logits=logdir / f"{who['name']}-{i + 1}.npy"))
    summary: dict = {}
    for name, rs in runs.items():
        ok = [r for r in rs if r["status"] == "ok"]
        if len(ok) != len(rs):
            summary[name] = {"status": "failed"}
            continue
        med = lambda f: statistics.median(f(r) for r in ok)  # noqa: E731
        summary[name] = {
            "status": "ok", "n": len(ok), "load_forward_s_median": med(lambda r: r["load_s"]),
            "load_forward_s_all": [r["load_s"] for r in ok],
            "load_s_median": med(lambda r: r["child"]["load_s"]),
            "forward_s_median": med(lambda r: r["child"]["forward_s"]),
            "cpu_s_median": med(lambda r: r["child"].get("load_forward_cpu_s", 0.0)),
            "wall_s_median": med(lambda r: r["wall_s"]), "peak_rss_mb": max(r["peak_rss_mb"] for r in ok)}
    p = summary["plain"]
    if p["status"] == "ok":
        ref = np.load(logdir / "plain-1.npy")
        for name, m in summary.items():
            if m["status"] != "ok":
                continue
            m["logits_identical_to_plain"] = all(
                np.array_equal(np.load(logdir / f"{name}-{i + 1}.npy"), ref) for i in range(args.load_repeat))
            if name != "plain":
                m["ratio"] = {"load_forward_s": m["load_forward_s_median"] / p["load_forward_s_median"],
                              "cpu_s": m["cpu_s_median"] / p["cpu_s_median"] if p["cpu_s_median"] else None,
                              "peak_rss_mb": m["peak_rss_mb"] / p["peak_rss_mb"]}
    return {"runs": runs, "summary": summary}


# --------------------------------------------------------------------------- report

def versions(python: str) -> dict:
    r = subprocess.run([python, "-c", "import sys, mlx.core, mlx_lm; print(mlx.core.__version__, "
                        "mlx_lm.__version__, sys.version.split()[0])"], capture_output=True, text=True)
    mlx, mlx_lm, py = (r.stdout.split() + ["?"] * 3)[:3]
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True,  # noqa: E731
                                    cwd=str(BENCH.parent)).stdout.strip()
    return {"mlx": mlx, "mlx-lm": mlx_lm, "python": py, "scalefix_commit": git("rev-parse", "--short", "HEAD"),
            "scalefix_uncommitted": git("status", "--porcelain", "--", "scalefix").splitlines()}


# --------------------------------------------------------------------------- driver

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="mlx-lm runtime memory with and without scalefix (see README.md)")
    ap.add_argument("--llama-size-gb", type=float, action="append",
                    help="Llama-layout FP8 size, decimal GB (repeatable; default 1.4 and 2.8)")
    ap.add_argument("--dsv3-size-gb", type=float, default=1.2)
    ap.add_argument("--load-repeat", type=int, default=3, help="load + forward runs per contender")
    ap.add_argument("--skip", action="append", default=[], choices=["llama", "dsv3", "dsv3-load"])
    ap.add_argument("--compare-rev", action="append", default=[], metavar="REV",
                    help="also run the scalefix of git commit REV (e.g. the eager hook), side by side")
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "scalefix" / "bench-work")
    ap.add_argument("--python", default=str(BENCH.parent / ".venv" / "bin" / "python"),
                    help="interpreter with mlx, mlx-lm and scalefix (the same for every contender)")
    ap.add_argument("--q-bits", type=int, default=4)
    ap.add_argument("--q-group-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600, help="per contender, seconds")
    ap.add_argument("--label", default="", help="free text recorded with the results")
    ap.add_argument("--keep-outputs", action="store_true")
    ap.add_argument("--no-drop-caches", action="store_true")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only print the tables of a saved result")
    report.add_argument(ap)
    args = ap.parse_args(argv)
    if args.render:
        print(tables(json.loads(args.render.read_text())))
        return 0
    args.drop = measure.can_drop_caches() and not args.no_drop_caches
    sizes = args.llama_size_gb or [1.4, 2.8]
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    need = 4.5e9 * (0 if "llama" in args.skip else max(sizes))
    if shutil.disk_usage(workdir).free < need:
        raise SystemExit(f"[rt] not enough disk in {workdir} (need ~{need / 1e9:.0f} GB)")
    whos = contenders(args, workdir)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    s: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "label": args.label,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs {mem:.0f} GiB",
        "versions": versions(args.python), "contenders": [{**w, "path": w["path"] and str(w["path"])} for w in whos],
        "load_repeat": args.load_repeat, "q_bits": args.q_bits, "q_group_size": args.q_group_size,
        "page_cache": "dropped before each contender" if args.drop else
        "NOT dropped (not root or --no-drop-caches)", "llama": [], "dsv3": None}
    print(f"[rt] {s['machine']}, page cache {s['page_cache']}", file=sys.stderr)
    if "llama" not in args.skip:
        for size in sizes:
            fp8, twin, info = ensure_llama(workdir, size, args.seed, args.python)
            c = convert_all(f"llama-{size:g}gb", twin, fp8, args, workdir, whos)
            c.update(size_gb=size, checkpoint=str(fp8), twin=str(twin), info=info)
            s["llama"].append(c)
    if "dsv3" not in args.skip:
        src, info = run.ensure_checkpoint(workdir, args.dsv3_size_gb, args.seed)
        s["dsv3"] = {"size_gb": args.dsv3_size_gb, "checkpoint": str(src),
                     "info": {k: v for k, v in info.items() if k != "reference"},
                     "convert": convert_all(f"dsv3-{args.dsv3_size_gb:g}gb", src, src, args, workdir, whos),
                     "load": None if "dsv3-load" in args.skip else load_all(src, args, workdir, whos)}
    s["bars"] = bars(s)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"runtime-{stamp}.json", "runtime-latest.json"):
        (workdir / name).write_text(json.dumps(s, indent=1, default=str))
    md = tables(s)
    print(md, flush=True)
    (workdir / "runtime-latest.md").write_text(md + "\n")
    print(f"[rt] wrote {workdir / f'runtime-{stamp}.json'} and runtime-latest.md", file=sys.stderr)
    if args.write_docs:
        doc = report.write_figures("runtime_memory.py", md,
                                   command=report.command_line("runtime_memory", argv))
        print(f"[rt] wrote the figures into {doc}", file=sys.stderr)
    pairs = s["llama"] + ([s["dsv3"]["convert"]] if s["dsv3"] else [])
    rs = [r for c in pairs for r in c["results"].values()]
    bad = any(r["status"] != "ok" for r in rs)
    bad |= any(not r["outputs_vs_plain"]["identical"] for r in rs if "outputs_vs_plain" in r)
    ld = (s["dsv3"] or {}).get("load")
    if ld:
        bad |= any(m.get("status") != "ok" or m.get("logits_identical_to_plain") is False
                   for m in ld["summary"].values())
    if bad:
        return 1
    return 0 if all(b["ok"] for b in s["bars"] if b["contender"] == "scalefix") else 3


if __name__ == "__main__":
    sys.exit(main())
