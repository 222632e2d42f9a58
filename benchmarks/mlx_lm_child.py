"""One contender of runtime_memory.py, run in a fresh process: mlx-lm, with or without scalefix.

    python benchmarks/mlx_lm_child.py convert SRC DST [--scalefix] [--q-bits 4] [--q-group-size 64] --report R.json
    python benchmarks/mlx_lm_child.py load SRC [--scalefix] [--tokens 8] [--logits L.npy] --report R.json

``convert`` is mlx-lm's own 4-bit conversion (``mlx_lm.convert.convert``: lazy load,
quantize, save shard by shard with donation); ``load`` is ``mlx_lm.load`` (weights
evaluated) followed by one forward pass over a few tokens. ``--scalefix`` imports
``scalefix.auto`` before anything else, as a user's sitecustomize would: that import is the
only difference between two contenders. The report records the stage times, this process's
own ``ru_maxrss`` and, to make a mislabelled run visible, whether scalefix was imported
and the state of its ``mlx_load`` patch.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["convert", "load"])
    ap.add_argument("src")
    ap.add_argument("dst", nargs="?")
    ap.add_argument("--scalefix", action="store_true", help="import scalefix.auto first")
    ap.add_argument("--q-bits", type=int, default=4)
    ap.add_argument("--q-group-size", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=8, help="prompt length of the first forward")
    ap.add_argument("--logits", type=Path, help="save the first forward's logits (float32 .npy)")
    ap.add_argument("--report", type=Path, required=True)
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    if a.scalefix:
        import scalefix.auto  # noqa: F401
    import importlib

    import mlx.core as mx
    mlx_convert = importlib.import_module("mlx_lm.convert")  # mlx_lm.convert is also a function
    mlx_utils = importlib.import_module("mlx_lm.utils")
    rep: dict = {"mode": a.mode, "scalefix": a.scalefix, "import_s": time.perf_counter() - t0}

    if a.mode == "convert":
        if a.dst is None:
            ap.error("convert needs DST")
        original = mlx_convert.load  # the name convert() calls: time its lazy load

        def timed_load(*args, **kwargs):
            t = time.perf_counter()
            out = original(*args, **kwargs)
            rep["load_s"] = time.perf_counter() - t
            return out

        mlx_convert.load = timed_load
        t = time.perf_counter()
        mlx_convert.convert(a.src, a.dst, quantize=True, q_bits=a.q_bits, q_group_size=a.q_group_size)
        rep["convert_s"] = time.perf_counter() - t
    else:
        t, c = time.perf_counter(), time.process_time()
        model, _tokenizer = mlx_utils.load(a.src)
        rep["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        tokens = mx.array([[3 + i for i in range(a.tokens)]])  # past the 3 special tokens
        logits = model(tokens)
        mx.eval(logits)
        rep["forward_s"] = time.perf_counter() - t
        rep["load_forward_s"] = rep["load_s"] + rep["forward_s"]
        rep["load_forward_cpu_s"] = time.process_time() - c  # all threads: less hurt by a busy machine
        if a.logits:
            import numpy as np
            np.save(a.logits, np.array(logits.astype(mx.float32)))  # BF16 -> F32 is exact

    rep["ru_maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rep["scalefix_imported"] = "scalefix" in sys.modules
    if rep["scalefix_imported"]:
        import scalefix
        from scalefix.hooks.registry import status_table
        rep["scalefix_file"] = scalefix.__file__
        rep["patches"] = {s["name"]: s["state"] for s in status_table()}
    a.report.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
