"""One step of formats.py, in a fresh process of the scalefix venv (mlx, mlx-lm; no scalefix).

    python benchmarks/formats_child.py convert BF16_DIR DST [--q-bits 4] [--q-group-size 64] --report R.json
    python benchmarks/formats_child.py load DIR [--tokens 8] --report R.json
    python benchmarks/formats_child.py sqnr DIR BF16_DIR --report R.json

``convert``: mlx-lm's own re-quantization, ``mlx_lm.convert.convert(quantize=True)`` of the
exact BF16 rewrite, with a predicate that quantizes the decoder's linear layers only
(``model.layers.*``): embeddings and ``lm_head`` stay BF16 as in the other two outputs, so the
columns compare the same modules. ``load``: ``mlx_lm.utils.load_model`` (weights evaluated)
and one forward pass over a few tokens; stage times in the report. ``sqnr``: for every linear
layer of the decoder, the weight DIR's model holds (``mx.dequantize`` computed in float32,
then rounded to BF16 once, the model's dtype; a dense layer as stored) against the BF16
rewrite's, which is the exact decode: SQNR in dB (inf when bit-identical).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path


def convert(a, rep: dict) -> None:
    import importlib
    mlx_convert = importlib.import_module("mlx_lm.convert")  # mlx_lm.convert is also a function
    t = time.perf_counter()
    mlx_convert.convert(str(a.src), str(a.dst), quantize=True, q_bits=a.q_bits,
                        q_group_size=a.q_group_size,
                        quant_predicate=lambda path, module: path.startswith("model.layers."))
    rep["convert_s"] = time.perf_counter() - t


def load(a, rep: dict) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load_model
    t = time.perf_counter()
    model, _ = load_model(a.src)
    rep["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    logits = model(mx.array([[3 + i for i in range(a.tokens)]]))
    mx.eval(logits)
    rep["forward_s"] = time.perf_counter() - t
    rep["finite"] = bool(mx.all(mx.isfinite(logits)).item())


def dequantized(m):
    """The layer's weight in float32, as MLX's kernels see it (affine scales and biases cast
    to float32 first: the CPU fallback in a narrower dtype would round twice)."""
    import mlx.core as mx
    if not hasattr(m, "scales"):
        return m.weight.astype(mx.float32), "dense", None
    biases = getattr(m, "biases", None)
    if m.mode == "affine":
        w = mx.dequantize(m.weight, m.scales.astype(mx.float32), biases.astype(mx.float32),
                          group_size=m.group_size, bits=m.bits, mode="affine")
    else:
        w = mx.dequantize(m.weight, m.scales, group_size=m.group_size, bits=m.bits, mode=m.mode,
                          dtype=mx.float32)
    return w, f"{m.mode} {m.bits}-bit g{m.group_size}, {str(m.scales.dtype).split('.')[-1]} scales", m


def sqnr(a, rep: dict) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load_model
    model, _ = load_model(a.src, lazy=True)
    ref: dict = {}
    for f in sorted(Path(a.ref).glob("*.safetensors")):
        ref.update(mx.load(str(f)))  # lazy: read when evaluated, module by module
    rows, kinds = [], {}
    for name, m in model.named_modules():
        if not name.startswith("model.layers.") or not hasattr(m, "weight") or m.weight.ndim != 2 \
                or "norm" in name:
            continue
        w, kind, _ = dequantized(m)
        w = w.astype(mx.bfloat16)  # the weight's dtype: rounded once
        r = ref[name + ".weight"]
        exact = mx.array_equal(w.view(mx.uint16), r.view(mx.uint16))
        r32, w32 = r.astype(mx.float32), w.astype(mx.float32)
        sig, err = mx.sum(r32 * r32), mx.sum((w32 - r32) ** 2)
        mx.eval(exact, sig, err)
        db = math.inf if exact.item() or err.item() == 0 else 10 * math.log10(sig.item() / err.item())
        rows.append({"module": name, "kind": kind, "exact": bool(exact.item()), "sqnr_db": db})
        kinds[kind] = kinds.get(kind, 0) + 1
    vals = sorted(r["sqnr_db"] for r in rows)
    rep.update(modules=len(rows), exact=sum(r["exact"] for r in rows), kinds=kinds,
               sqnr_min_db=vals[0] if vals else None,
               sqnr_median_db=vals[len(vals) // 2] if vals else None,
               worst=min(rows, key=lambda r: r["sqnr_db"])["module"] if rows else None, rows=rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["convert", "load", "sqnr"])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", nargs="?", type=Path, help="convert: output dir; sqnr: the BF16 rewrite")
    ap.add_argument("--q-bits", type=int, default=4)
    ap.add_argument("--q-group-size", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--report", type=Path, required=True)
    a = ap.parse_args(argv)
    if a.mode in ("convert", "sqnr") and a.dst is None:
        ap.error(f"{a.mode} needs a second directory")
    a.ref = a.dst
    t0 = time.perf_counter()
    import mlx.core  # noqa: F401
    import mlx_lm.utils  # noqa: F401
    rep: dict = {"mode": a.mode, "import_s": time.perf_counter() - t0}
    {"convert": convert, "load": load, "sqnr": sqnr}[a.mode](a, rep)
    rep["ru_maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rep["scalefix_imported"] = "scalefix" in sys.modules
    a.report.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
