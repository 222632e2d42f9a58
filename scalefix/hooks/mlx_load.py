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


def _read_all(header) -> dict:
    """Every tensor of a file MLX cannot read, as MLX would hand them (F8 as uint8)."""
    from ..mlx_arrays import read_array
    return {name: read_array(info) for name, info in header.tensors.items()}


def _fixed(mx, original, path: Path, args, kwargs):
    from ..formats.dequant import dequantize
    from ..formats.header import read_header
    from ..mlx_arrays import bf16_array
    from .load_policy import plan_for_file

    plan = plan_for_file(path)
    if plan.nothing:
        return None
    header = read_header(path)
    if MLX_UNREADABLE & {t.dtype for t in header.tensors.values()}:
        arrays = _read_all(header)
    else:
        arrays = original(str(path), *args, **kwargs)
    for name in plan.drop:
        arrays.pop(name, None)
    for name, qw in plan.dequantize.items():
        arrays.pop(name, None)
        arrays[qw.output_name] = bf16_array(dequantize(qw, "bf16"))
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
