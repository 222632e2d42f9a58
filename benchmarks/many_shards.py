"""Cost at scale: scalefix's bookkeeping on a layout of DeepSeek-V3's size (160 shards,
44,800 FP8 weights, tiny tensors; ``make_many_shards.py``), each figure in a fresh process.

    python -m benchmarks.many_shards [--layout DIR] [--hf-cache] [--python PY] [--src DIR]
                                     [--only load,inspect,import] [--load-timeout 900]

(a) ``mx.load`` of every shard, plain and under ``import scalefix.auto``: total, first call,
    median and slowest call. Only the calls are timed (MLX's arrays are lazy; ``--eval``
    also times ``mx.eval`` of each result). Each result is checked: under scalefix no FP8
    weight may come back as raw uint8 codes and no ``weight_scale_inv`` may remain, otherwise
    the row says "NOT FIXED". A run that passes ``--load-timeout`` is stopped and reported
    with the shards it finished.
(b) ``python -m scalefix inspect DIR``: wall time of the whole command, median of
    ``--repeat-inspect``.
(c) ``python -X importtime -c "import scalefix.auto"``: the cumulative microseconds of the
    ``scalefix.auto`` line, median of ``--repeat-import`` (and whether wrapt was imported).

Targets (issue 10): (a) at most 5 s more than plain ``mx.load`` in total; (b) at most 5 s;
(c) at most 25 ms. Prints a markdown table and the JSON (also written to the work
directory). The layout is generated on first use and cached under ``--workdir``. Children
run from the work directory with ``--python`` (default: this interpreter); ``--src DIR``
puts a scalefix checkout first on their PYTHONPATH, to measure another revision (e.g.
``git archive HEAD | tar -x -C /tmp/head``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import make_many_shards, report


TARGETS = {"load_added_s": 5.0, "inspect_s": 5.0, "import_ms": 25.0}
HF_REPO = "bench-org/DeepSeek-V3-many-shards"

LOAD_CHILD = r"""
import json, sys, time
mode, do_eval, files = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
if mode == "scalefix":
    import scalefix.auto
import mlx.core as mx
print(json.dumps({"ready": True}), flush=True)
for f in files:
    t = time.perf_counter()
    arrays = mx.load(f)
    call = time.perf_counter() - t
    ev = None
    if do_eval:
        t = time.perf_counter()
        mx.eval(list(arrays.values()))
        ev = time.perf_counter() - t
    raw = sum(1 for a in arrays.values() if a.dtype == mx.uint8)
    scales = sum(1 for k in arrays if k.endswith("_scale_inv"))
    print(json.dumps({"file": f, "s": call, "eval_s": ev, "raw_fp8": raw, "scales": scales,
                      "tensors": len(arrays)}), flush=True)
"""


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "python": platform.python_version(), "loadavg_at_start": os.getloadavg(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def layout(workdir: Path, hf: bool, shards: int, weights: int) -> tuple[Path, dict]:
    """The generated layout (cached): its model directory and generator info."""
    root = workdir / f"many-shards-{shards}x{weights}{'-hf' if hf else ''}"
    marker = root / "layout.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if Path(info["model_dir"]).is_dir():
            return Path(info["model_dir"]), info
    print(f"generating {root} ...", file=sys.stderr, flush=True)
    info = make_many_shards.generate(root, shards, weights, hf_repo=HF_REPO if hf else None,
                                     verbose=False)
    marker.write_text(json.dumps(info, indent=2))
    return Path(info["model_dir"]), info


class Runner:
    def __init__(self, python: str, src: Path | None, cwd: Path):
        self.python, self.cwd = python, cwd
        self.env = dict(os.environ)
        for key in ("SCALEFIX_DISABLE", "SCALEFIX_DISABLE_PATCHES", "SCALEFIX_DEBUG"):
            self.env.pop(key, None)
        if src is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(
                [str(src)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen([self.python, *args], cwd=self.cwd, env=self.env, text=True, **kw)

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([self.python, *args], cwd=self.cwd, env=self.env, text=True,
                              capture_output=True)


def measure_load(runner: Runner, files: list[Path], mode: str, timeout: float,
                 do_eval: bool) -> dict:
    err = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty child never blocks
    proc = runner.popen(["-c", LOAD_CHILD, mode, "1" if do_eval else "0", *map(str, files)],
                        stdout=subprocess.PIPE, stderr=err)
    calls, timer = [], threading.Timer(timeout, proc.kill)
    try:
        for line in proc.stdout:  # EOF when the child ends or the timer kills it
            row = json.loads(line)
            if row.get("ready"):
                timer.start()  # the clock starts after the imports
            else:
                calls.append(row)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        err.seek(0)
        stderr = err.read()
        err.close()
    finished = len(calls) == len(files)
    times = [c["s"] for c in calls]
    out = {"mode": mode, "finished": finished, "shards_loaded": len(calls), "shards": len(files),
           "total_s": sum(times), "first_s": times[0] if times else None,
           "median_s": statistics.median(times) if times else None,
           "max_s": max(times) if times else None,
           "raw_fp8_returned": sum(c["raw_fp8"] for c in calls),
           "scales_returned": sum(c["scales"] for c in calls),
           "stderr_lines": len(stderr.splitlines()), "stderr_head": stderr[:2000]}
    if do_eval:
        out["eval_total_s"] = sum(c["eval_s"] for c in calls)
    if not finished and proc.returncode != -9:
        out["error"] = f"exit {proc.returncode}"
    return out


def measure_inspect(runner: Runner, model_dir: Path, repeat: int) -> dict:
    walls = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = runner.run(["-m", "scalefix", "inspect", str(model_dir)])
        walls.append(time.perf_counter() - t)
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}",
                    "walls_s": walls}
    verdict = next((ln for ln in proc.stdout.splitlines() if ln.startswith("verdict:")), "")
    return {"median_s": statistics.median(walls), "walls_s": walls, "verdict": verdict}


def measure_import(runner: Runner, repeat: int, module: str = "scalefix.auto") -> dict:
    cumulative, wrapt_seen = [], []
    for _ in range(repeat):
        proc = runner.run(["-X", "importtime", "-c", f"import {module}"])
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
        lines = [ln.split("|") for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
        names = [parts[2].strip() for parts in lines]
        row = next(parts for parts in lines if parts[2].strip() == module)
        cumulative.append(int(row[1]) / 1000)
        wrapt_seen.append(any(n == "wrapt" for n in names))
    return {"median_ms": statistics.median(cumulative), "runs_ms": cumulative,
            "imports_wrapt": any(wrapt_seen)}


def _judged(label: str, target: str, unit: str, measured: float | None, shown: str | None,
            extra_ok: bool = True, partial: bool = False) -> str:
    ok = measured is not None and measured <= TARGETS[target] and extra_ok
    verdict = "not judged (a subset)" if partial else "ok" if ok else "MISSED"
    return f"| {label} | {shown or 'did not finish'} | <= {TARGETS[target]:g} {unit} | {verdict} |"


def table(results: dict) -> str:
    rows = ["| measurement | value | target | |", "|---|---|---|---|"]
    load = results.get("load")
    if load:
        plain, fixed = load["plain"], load["scalefix"]
        for r in (plain, fixed):
            done = "" if r["finished"] else \
                f" (stopped: {r['shards_loaded']} of {r['shards']} shards)"
            check = ""
            if r["mode"] == "scalefix" and (r["raw_fp8_returned"] or r["scales_returned"]):
                check = f" NOT FIXED: {r['raw_fp8_returned']} raw FP8 weights returned"
            per = (f"first {r['first_s']:.3f} s, median {r['median_s'] * 1000:.1f} ms, "
                   f"max {r['max_s']:.3f} s" if r["shards_loaded"] else "no call finished")
            what = "every shard" if r["shards"] == results["layout"].get("shards") else \
                f"{r['shards']} shards"
            rows.append(f"| mx.load of {what}, {r['mode']} | {r['total_s']:.2f} s total; "
                        f"{per}{done}{check} | | |")
        added = fixed["total_s"] - plain["total_s"] if plain["finished"] and \
            fixed["finished"] else None
        rows.append(_judged("mx.load added by scalefix", "load_added_s", "s", added,
                            None if added is None else f"{added:.2f} s",
                            extra_ok=not fixed["raw_fp8_returned"],
                            partial=fixed["shards"] != results["layout"].get("shards")))
    inspect = results.get("inspect")
    if inspect:
        rows.append(_judged(f"scalefix inspect (wall, median of {len(inspect['walls_s'])})",
                            "inspect_s", "s", inspect.get("median_s"),
                            inspect.get("error") or f"{inspect['median_s']:.2f} s"))
    imp = results.get("import")
    if imp:
        value = imp.get("error") or (f"{imp['median_ms']:.1f} ms"
                                     + (" (imports wrapt)" if imp["imports_wrapt"] else ""))
        rows.append(_judged(f"import scalefix.auto (-X importtime, median of "
                            f"{len(imp.get('runs_ms', []))})", "import_ms", "ms",
                            imp.get("median_ms"), value))
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path,
                    default=Path(os.environ.get("SCALEFIX_BENCH_WORK",
                                                Path.home() / ".cache/scalefix/bench-work")))
    ap.add_argument("--layout", type=Path, default=None,
                    help="an existing checkpoint directory (default: generate and cache one)")
    ap.add_argument("--hf-cache", action="store_true",
                    help="generate the layout as the Hugging Face cache and use the snapshot")
    ap.add_argument("--shards", type=int, default=160)
    ap.add_argument("--fp8-weights", type=int, default=44800)
    ap.add_argument("--python", default=sys.executable, help="interpreter of the children")
    ap.add_argument("--src", type=Path, default=None, help="scalefix checkout to measure")
    ap.add_argument("--only", default="load,inspect,import")
    ap.add_argument("--load-timeout", type=float, default=900.0,
                    help="seconds after which a load run is stopped and reported as partial")
    ap.add_argument("--max-shards", type=int, default=None,
                    help="load only the first N shards (a quick look at the per-call cost)")
    ap.add_argument("--eval", action="store_true", help="also time mx.eval of every result")
    ap.add_argument("--repeat-inspect", type=int, default=3)
    ap.add_argument("--repeat-import", type=int, default=5)
    report.add_argument(ap)
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.layout is not None:
        model_dir = a.layout.resolve()
        info = {"model_dir": str(model_dir), "shards": len(list(model_dir.glob("*.safetensors")))}
    else:
        model_dir, info = layout(a.workdir, a.hf_cache, a.shards, a.fp8_weights)
    runner = Runner(a.python, a.src.resolve() if a.src else None, a.workdir)
    results: dict = {"machine": machine(), "layout": info, "python": a.python,
                     "src": str(a.src) if a.src else None, "targets": TARGETS}
    if "import" in only:
        results["import"] = measure_import(runner, a.repeat_import)
    if "inspect" in only:
        results["inspect"] = measure_inspect(runner, model_dir, a.repeat_inspect)
    if "load" in only:
        files = sorted(model_dir.glob("*.safetensors"))[: a.max_shards]
        results["load"] = {mode: measure_load(runner, files, mode, a.load_timeout, a.eval)
                           for mode in ("plain", "scalefix")}
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["table"] = table(results)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = a.workdir / f"many-shards-results-{stamp}.json"
    out.write_text(json.dumps(results, indent=2))
    print(results["table"])
    print(json.dumps({k: v for k, v in results.items() if k != "table"}, indent=2))
    print(f"written: {out}", file=sys.stderr)
    if a.write_docs:
        doc = report.write_figures("many_shards.py", results["table"],
                                   command=report.command_line("many_shards", argv))
        print(f"written: the figures into {doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
