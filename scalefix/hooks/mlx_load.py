"""mlx_load: ``mlx.core.load`` returns FP8 weights as raw uint8 codes without their scale.

MLX hands back ``F8_E4M3`` / ``F8_E8M0`` tensors as uint8 (PR #2985; earlier releases
upcast F8 to BF16, still without the scale) and refuses ``F8_E5M2`` outright. The wrapper
reads the safetensors header (cheap), asks ``scalefix.formats`` which tensors are quantized
(scales found in any shard through the index beside the file), returns them dequantized
(BF16) and drops the scales, activation scales and orphan scales it consumed. Files with
nothing to fix, ``return_metadata=True`` and non-safetensors formats get the original call,
untouched. Policy: ``scalefix.hooks.load_policy``.

Upstream: not fixed (the relation weight <-> scale is a publisher convention MLX does not know).
Off: ``SCALEFIX_DISABLE_PATCHES=mlx_load``. Known limit: ``from mlx.core import load`` done
before scalefix armed keeps the original function.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .wrapping import unwrap, wrap

TARGET = "mlx.core"
DISTRIBUTION = "mlx"
AFFECTED = ">=0.20"
ATTRIBUTES = ("load",)  # what apply() replaces: restored by the guard if apply fails

# dtypes MLX's safetensors reader refuses: such files are read by scalefix instead
MLX_UNREADABLE = frozenset({"F8_E5M2"})


def bug_present(module) -> str | None:
    return None if callable(getattr(module, "load", None)) else "mlx.core has no load()"


def _safetensors_path(file, fmt) -> Path | None:
    if not isinstance(file, (str, os.PathLike)):
        return None
    path = Path(file)
    if fmt not in (None, "safetensors") or (fmt is None and path.suffix != ".safetensors"):
        return None
    return path


def _warn(message: str) -> None:
    print(f"scalefix: mlx_load: {message}", file=sys.stderr)


def _read_all(mx, header) -> dict:
    """Every tensor of a file MLX cannot read, as MLX would hand them (F8 as uint8)."""
    import numpy as np
    from ..formats.tensor_data import read_raw
    views = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64,
             "U32": np.uint32, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "I16": np.int16,
             "U16": np.uint16, "F64": np.float64}
    out = {}
    for name, info in header.tensors.items():
        raw = read_raw(info)
        if info.dtype == "BF16":
            out[name] = mx.array(raw.view(np.uint16).reshape(info.shape)).view(mx.bfloat16)
        elif info.dtype in views:
            out[name] = mx.array(raw.view(views[info.dtype]).reshape(info.shape))
        else:  # F8 family and anything byte-sized: raw codes, as mx.load does for F8_E4M3
            out[name] = mx.array(raw.reshape(info.shape))
    return out


def _fixed(mx, original, path: Path, args, kwargs):
    from ..formats.dequant import dequantize
    from ..formats.header import read_header
    from .load_policy import plan_for_file

    plan = plan_for_file(path)
    if plan.nothing:
        return None
    header = read_header(path)
    if MLX_UNREADABLE & {t.dtype for t in header.tensors.values()}:
        arrays = _read_all(mx, header)
    else:
        arrays = original(str(path), *args, **kwargs)
    for name in plan.drop:
        arrays.pop(name, None)
    for name, qw in plan.dequantize.items():
        bits = dequantize(qw, "bf16")
        arrays.pop(name, None)
        arrays[qw.output_name] = mx.array(bits).view(mx.bfloat16)
    return arrays


def apply(module) -> None:
    def make_wrapper(original):
        def load(file, *args, **kwargs):
            fmt = kwargs.get("format", args[0] if args else None)
            return_metadata = kwargs.get("return_metadata", args[1] if len(args) > 1 else False)
            path = _safetensors_path(file, fmt)
            if path is None or return_metadata or not path.is_file():
                return original(file, *args, **kwargs)
            try:
                arrays = _fixed(module, original, path, args, kwargs)
            except Exception as exc:  # cannot fix: behave as upstream, but say so
                _warn(f"{path}: left as mx.load returns it ({type(exc).__name__}: {exc})")
                arrays = None
            return original(file, *args, **kwargs) if arrays is None else arrays
        return load

    wrap(module, "load", make_wrapper)


def revert(module) -> None:
    unwrap(module, "load")
