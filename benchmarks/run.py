"""Side-by-side benchmark: FP8 block-scaled (DeepSeek-V3 layout) -> BF16 rewrite.

    python -m benchmarks.run --size-gb 1.7 [--size-gb 3.5] [--workdir DIR] [--skip NAME ...]

For each size: generate (or reuse) a DeepSeek-V3-layout FP8 checkpoint with
make_dsv3_fp8.py, then run every contender as a subprocess on it, one after the
other, measuring wall time, peak RSS and output bytes, hash every output
tensor, delete the output, and finally print a markdown table and write JSON.

Contenders (see README.md): io_floor, io_floor_direct, deepseek_port, ct, ct_contig, mlx,
scalefix.
Needs only the standard library and numpy (for the numpy reference).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import make_dsv3_fp8
from benchmarks import peers
from benchmarks import report
from benchmarks.tensor_hashes import output_hashes, read_header, reference_hashes
from benchmarks.measure import can_drop_caches, dir_bytes, drop_caches, error_tail, measure

BENCH = Path(__file__).resolve().parent

GEN_VERSION = 2  # bump when make_dsv3_fp8's output changes, to invalidate cached checkpoints
CHUNK = 64 << 20
ALL = ["io_floor", "io_floor_direct", "deepseek_port", "ct", "ct_contig", "mlx", "scalefix"]

CT_SCRIPT = r"""
import sys
from compressed_tensors.entrypoints.convert import convert_checkpoint, FP8BlockDequantizer
targets = [r"re:.*\.(q_a_proj|q_b_proj|kv_a_proj_with_mqa|kv_b_proj|o_proj|gate_proj|up_proj|down_proj)$"]
if len(sys.argv) > 3 and sys.argv[3] == "contig":
    # work around compressed-tensors 0.19/0.20: for a weight whose input dim is not a
    # multiple of the block, _create_dequantized_weight returns a non-contiguous slice and
    # safetensors.save_file refuses it; make it contiguous (the values are unchanged)
    _orig = FP8BlockDequantizer._create_dequantized_weight
    FP8BlockDequantizer._create_dequantized_weight = lambda self, w, s: _orig(self, w, s).contiguous()
convert_checkpoint(sys.argv[1], sys.argv[2],
                   converter=FP8BlockDequantizer(ignore=["lm_head"], targets=targets), device="cpu")
"""


# --------------------------------------------------------------------------- contenders

def scalefix_available(py: str) -> tuple[bool, str]:
    if not Path(py).exists():
        return False, f"{py} does not exist"
    r = subprocess.run([py, "-m", "scalefix", "rewrite", "--help"], capture_output=True, text=True,
                       cwd=str(BENCH.parent))
    if r.returncode != 0:
        return False, (r.stderr or r.stdout).strip().splitlines()[-1] if (r.stderr or r.stdout) else f"rc {r.returncode}"
    return True, ""


def build_command(name: str, src: Path, dst: Path, args, info: dict) -> list[str]:
    if name in ("io_floor", "io_floor_direct"):
        return [sys.executable, str(BENCH / "io_floor.py"), str(src), str(dst),
                str(info["expected_out_bytes"])] + (["--direct"] if name == "io_floor_direct" else [])
    if name == "deepseek_port":
        return [str(peers.ensure("torch")), str(BENCH / "deepseek_cpu_port.py"), str(src), str(dst)]
    if name == "ct":
        return [str(peers.ensure("ct")), "-c", CT_SCRIPT, str(src), str(dst)]
    if name == "ct_contig":
        return [str(peers.ensure("ct")), "-c", CT_SCRIPT, str(src), str(dst), "contig"]
    if name == "mlx":
        return [str(peers.ensure("mlx")), "-m", "mlx_lm", "convert", "--hf-path", str(src),
                "--mlx-path", str(dst), "--dtype", "bfloat16"]
    if name == "scalefix":
        tmpl = args.scalefix_cmd or "{python} -m scalefix rewrite {src} --out {dst}"
        fields = {"python": args.scalefix_python, "src": str(src), "dst": str(dst),
                  "bench": str(BENCH)}
        if "{torch_python}" in tmpl:
            fields["torch_python"] = str(peers.ensure("torch"))
        return [part.format(**fields) for part in shlex.split(tmpl)]
    raise ValueError(name)


# --------------------------------------------------------------------------- driver

def ensure_checkpoint(workdir: Path, size_gb: float, seed: int) -> tuple[Path, dict]:
    ck = workdir / f"dsv3-fp8-{size_gb:g}gb-seed{seed}"
    marker = ck / ".bench-done.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("gen_version") == GEN_VERSION:
            print(f"[run] reusing checkpoint {ck}", file=sys.stderr)
            return ck, info
    if ck.exists():
        shutil.rmtree(ck)
    print(f"[run] generating {size_gb} GB checkpoint in {ck}", file=sys.stderr, flush=True)
    info = make_dsv3_fp8.generate(ck, size_gb, seed, verbose=False)
    headers = sum(read_header(p)[1] for p in ck.glob("*.safetensors"))
    # BF16 data + roughly as much header as the input has (scales removed, so a bit less)
    info["expected_out_bytes"] = info["bf16_output_bytes"] + headers
    info["input_bytes_all_files"] = sum(p.stat().st_size for p in ck.iterdir() if p.is_file())
    info["gen_version"] = GEN_VERSION
    t = time.time()
    info["reference"] = reference_hashes(ck)
    info["reference_s"] = round(time.time() - t, 1)
    marker.write_text(json.dumps(info))
    return ck, info


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def run_size(size_gb: float, args, workdir: Path) -> dict:
    src, info = ensure_checkpoint(workdir, size_gb, args.seed)
    cfg = json.loads((src / "config.json").read_text())
    ref = info["reference"]
    free = shutil.disk_usage(workdir).free
    need = info["expected_out_bytes"] * 1.2
    if free < need:
        raise SystemExit(f"not enough disk in {workdir}: {free/1e9:.1f} GB free, need ~{need/1e9:.1f} GB")
    droppable = can_drop_caches() and not args.no_drop_caches
    results: dict[str, dict] = {}
    hashes: dict[str, dict[str, str]] = {"numpy-ref": ref}
    order = [n for n in ALL if n not in args.skip]
    for name in order:
        dst = workdir / f"out-{name}"
        if dst.exists():
            shutil.rmtree(dst)
        r: dict = {"name": name}
        results[name] = r
        if name == "scalefix" and not args.scalefix_cmd:
            ok, why = scalefix_available(args.scalefix_python)
            if not ok:
                r.update(status="skipped", error=f"`python -m scalefix rewrite` not available: {why}")
                print(f"[run] {name}: skipped ({r['error']})", file=sys.stderr)
                continue
        try:
            cmd = build_command(name, src, dst, args, info)
        except Exception as e:  # noqa: BLE001 - a peer venv that cannot be built
            r.update(status="failed", error=f"setup: {type(e).__name__}: {e}")
            print(f"[run] {name}: setup failed: {e}", file=sys.stderr)
            continue
        log = workdir / "logs" / f"{size_gb:g}gb" / f"{name}.log"
        runs = []
        for rep in range(args.repeat):
            if dst.exists():
                shutil.rmtree(dst)
            cache = "cold (dropped)" if droppable and drop_caches() else "warm (not dropped)"
            print(f"[run] {name} #{rep + 1}: {cache}: {' '.join(shlex.quote(c) for c in cmd)[:300]}",
                  file=sys.stderr, flush=True)
            m = measure(cmd, log if rep == 0 else log.with_suffix(f".{rep + 1}.log"), args.timeout)
            m["cache"] = cache
            m["out_bytes"] = (dir_bytes(dst, "*" if name.startswith("io_floor") else "*.safetensors")
                              if dst.exists() else 0)
            runs.append(m)
            if m["rc"] != 0 or m["timed_out"]:
                break
            print(f"[run] {name} #{rep + 1}: {m['wall_s']:.1f} s (+sync {m['sync_s']:.1f} s), "
                  f"{m['out_bytes']/1e9:.2f} GB out, peak RSS {m['peak_rss_mb']:.0f} MB",
                  file=sys.stderr, flush=True)
        m = runs[-1]
        r.update(m)
        r["log"] = str(log)
        if m["rc"] != 0 or m["timed_out"]:
            r.update(status="failed", error=error_tail(log if len(runs) == 1 else
                                                       log.with_suffix(f".{len(runs)}.log")))
            print(f"[run] {name}: FAILED rc={m['rc']}\n{r['error']}", file=sys.stderr)
        else:
            # report the run with the median wall time; keep all of them
            runs_sorted = sorted(runs, key=lambda x: x["wall_s"])
            r.update(runs_sorted[(len(runs) - 1) // 2])
            r["walls_s"] = [x["wall_s"] for x in runs]
            r["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs)
            r["status"] = "ok"
            r["out_gbps"] = r["out_bytes"] / 1e9 / r["wall_s"]
            if not name.startswith("io_floor"):
                t = time.perf_counter()
                try:
                    hashes[name] = output_hashes(dst, cfg)
                except Exception as e:  # noqa: BLE001
                    r["error"] = f"reading output: {type(e).__name__}: {e}"
                r["hash_s"] = time.perf_counter() - t
        if not args.keep_outputs and dst.exists():
            shutil.rmtree(dst)
    # bit-identity, pairwise over the DeepSeek-V3 tensor names
    floor = results.get("io_floor", {})
    floor_s = floor.get("wall_s") if floor.get("status") == "ok" else None
    for name, r in results.items():
        if name.startswith("io_floor"):
            r["identical_to"] = ["n/a"]
            if name != "io_floor" and floor_s and r.get("wall_s"):
                r["x_io_floor"] = r["wall_s"] / floor_s
            continue
        if name not in hashes:
            r["identical_to"] = []
            continue
        mine = hashes[name]
        same, diffs = [], {}
        for other, theirs in hashes.items():
            if other == name:
                continue
            names = set(mine) | set(theirs)
            bad = sorted(n for n in names if mine.get(n) != theirs.get(n))
            if not bad:
                same.append(other)
            else:
                diffs[other] = {"n_differing": len(bad), "of": len(names), "first": bad[:5]}
        r["identical_to"] = same
        r["differs_from"] = diffs
        r["n_tensors"] = len(mine)
        if floor_s:
            r["x_io_floor"] = r["wall_s"] / floor_s if r.get("wall_s") else None
    if floor_s:
        floor["x_io_floor"] = 1.0
    summary = {"size_gb": size_gb, "checkpoint": str(src), "repeat": args.repeat,
               "checkpoint_info": {k: v for k, v in info.items() if k != "reference"},
               "page_cache": "dropped before each contender" if droppable else
               "NOT dropped (not root / disabled): the input was warm after the first reader",
               "machine": {"cpus": os.cpu_count(), "mem_gb": round(os.sysconf("SC_PAGE_SIZE") *
                                                                    os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
               "versions": {p: peers.versions(p) for p in peers.PEERS},
               "results": list(results.values())}
    return summary


def table(summary: dict) -> str:
    ci = summary["checkpoint_info"]
    lines = [f"### {summary['size_gb']:g} GB DeepSeek-V3-layout FP8 checkpoint "
             f"({ci['bytes']/1e9:.2f} GB in, {ci['shards']} shards, {ci['layers']} layers, "
             f"{ci['fp8_weights']} FP8 weights, {ci['scales_in_other_shard']} scales in another shard; "
             f"page cache: {summary['page_cache']}; {summary['repeat']} run(s) each)",
             "",
             "| contender | wall s (median) | x I/O floor | output GB/s | peak RSS MB | +sync s | CPU s | bit-identical to |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in summary["results"]:
        if r.get("status") != "ok":
            err = (r.get("error") or "").splitlines()
            lines.append(f"| {r['name']} | {r.get('status')} | | | | | | {err[-1][:120] if err else ''} |")
            continue
        ident = ", ".join(r.get("identical_to") or []) or "none"
        lines.append(f"| {r['name']} | {fmt(r['wall_s'])} | {fmt(r.get('x_io_floor'))} | "
                     f"{fmt(r.get('out_gbps'))} | {r['peak_rss_mb']:.0f} | {fmt(r['sync_s'])} | "
                     f"{fmt(r['cpu_s'], 1)} | {ident} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description="FP8 -> BF16 rewrite benchmark (see README.md)")
    ap.add_argument("--size-gb", type=float, action="append",
                    help="checkpoint size in decimal GB (repeatable; default 1.7)")
    ap.add_argument("--workdir", type=Path,
                    default=Path.home() / ".cache" / "scalefix" / "bench-work")
    ap.add_argument("--skip", action="append", default=[], choices=ALL,
                    help="contender to leave out (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scalefix-python", default="/work/main/.venv/bin/python")
    ap.add_argument("--scalefix-cmd", default=None,
                    help="override the scalefix command line; placeholders {python} (--scalefix-python), "
                         "{src}, {dst}, {bench} (this folder), {torch_python} (the torch peer venv). "
                         "Default: '{python} -m scalefix rewrite {src} --out {dst}'")
    ap.add_argument("--timeout", type=float, default=3600, help="per contender, seconds")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per contender (cold cache each time); the median wall is reported")
    ap.add_argument("--keep-outputs", action="store_true")
    ap.add_argument("--no-drop-caches", action="store_true")
    report.add_argument(ap)
    args = ap.parse_args(argv)
    sizes = args.size_gb or [1.7]
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    du = shutil.disk_usage(workdir)
    print(f"[run] workdir {workdir}: {du.free/1e9:.1f} GB free of {du.total/1e9:.1f} GB; "
          f"page cache {'will' if can_drop_caches() and not args.no_drop_caches else 'can NOT'} "
          f"be dropped before each contender", file=sys.stderr)
    summaries = []
    for s in sizes:
        summ = run_size(s, args, workdir)
        summaries.append(summ)
        print(table(summ) + "\n", flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"results-{stamp}.json", "results-latest.json"):
        (workdir / name).write_text(json.dumps(summaries, indent=1, default=str))
    (workdir / "results-latest.md").write_text("\n\n".join(table(s) for s in summaries) + "\n")
    print(f"[run] wrote {workdir / ('results-' + stamp + '.json')}", file=sys.stderr)
    if args.write_docs:
        doc = report.write_figures("run.py", "\n\n".join(table(s) for s in summaries),
                                   command=report.command_line("run", argv))
        print(f"[run] wrote the figures into {doc}", file=sys.stderr)
    failed = [r["name"] for s in summaries for r in s["results"] if r.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
