"""mlx_load: ``mlx.core.load`` returns FP8 weights as raw uint8 codes without their scale.

MLX hands back ``F8_E4M3`` / ``F8_E8M0`` tensors as uint8 (0.31+; 0.25-0.30 upcast F8_E4M3
to BF16, 0.21 refuses it, still without the scale) and refuses ``F8_E5M2`` outright. The
wrapper asks ``scalefix.formats`` which tensors are quantized (scales found in any shard
through the index beside the file), returns them dequantized to BF16 and drops the scales,
activation scales and orphan scales it consumed; ``return_metadata=True`` gets the same
(arrays, metadata). Policy: ``scalefix.hooks.load_policy``.

As lazy as what it wraps: each dequantized weight is an unevaluated MLX graph
(``scalefix.mlx.lazy_dequant``) on the lazy array the original ``mx.load`` returned, so a
host that streams (``mlx_lm.convert``) still holds one tensor at a time; only the scales are
read (and validated) at load. Files this MLX's reader refuses (``F8_E5M2``; ``F8_E4M3`` before
0.25) are read eagerly, tensor by tensor, from a memory map (``scalefix.mlx.reader``).
Files with nothing to fix and non-safetensors formats get the original call, untouched.

Upstream: not fixed (the relation weight <-> scale is a publisher convention MLX does not know).
Off: ``SCALEFIX_DISABLE_PATCHES=mlx_load``. Known limit: ``from mlx.core import load`` done
before scalefix armed keeps the original function.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ScalefixError
from .load_report import REPORT, Unfixable
from .wrapping import unwrap, wrap

TARGET = "mlx.core"
DISTRIBUTION = "mlx"
AFFECTED = ">=0.21"  # tested on 0.21.1 (the oldest Linux wheel), 0.29.4 and current
ATTRIBUTES = ("load",)  # what apply() replaces: restored by the guard if apply fails


def bug_present(module) -> str | None:
    return None if callable(getattr(module, "load", None)) else "mlx.core has no load()"


def _safetensors_path(file, fmt) -> Path | None:
    if not isinstance(file, (str, os.PathLike)):
        return None
    path = Path(file)
    if fmt not in (None, "safetensors") or (fmt is None and path.suffix != ".safetensors"):
        return None
    return path


def _reason(exc: Exception) -> str:
    """Bad input explains itself; anything else is named by its type (a scalefix bug)."""
    if isinstance(exc, (ScalefixError, Unfixable)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _read_all(original, path: Path, args, kwargs, return_metadata: bool):
    """(arrays, metadata) as the original returns them (lazy), or read by scalefix from a
    memory map when this MLX refuses one of the file's dtypes (eager, F8 as uint8)."""
    try:
        loaded = original(str(path), *args, **kwargs)
    except Exception:
        from ..formats.header import read_header
        from ..mlx.reader import read_mapped, refused_dtypes

        header = read_header(path)
        if not refused_dtypes(original, {t.dtype for t in header.tensors.values()}):
            raise
        return read_mapped(header), dict(header.metadata)
    return loaded if return_metadata else (loaded, None)


def _fixed(mx, original, path: Path, args, kwargs, return_metadata: bool = False):
    from ..formats.dequant import load_scale
    from ..formats.schemes import DeclaredWeight
    from ..mlx.lazy_dequant import lazy_dequantize
    from ..formats.tensor_data import read_raw_many
    from .load_policy import plan_for_file

    plan = plan_for_file(path)
    if plan.left:  # said once per file; the rest of the file is still fixed
        REPORT.cannot_fix(path, plan.left_reason)
    if plan.nothing:
        return None
    # small, read and validated now (a registry scheme's sides: every one, by role)
    raw = read_raw_many(qw.scale for qw in plan.dequantize.values()
                        if not isinstance(qw, DeclaredWeight))
    scales = {name: load_scale(qw, raw.get(qw.scale.name))
              for name, qw in plan.dequantize.items()}
    arrays, metadata = _read_all(original, path, args, kwargs, return_metadata)
    held = {qw.scale.name: arrays.get(qw.scale.name) for qw, choice in plan.native.values()
            if choice.mode == "nvfp4"}  # E4M3 block scales, lazy, before the drop
    for name in plan.drop:
        arrays.pop(name, None)
    for name, qw in plan.dequantize.items():
        arrays[qw.output_name] = lazy_dequantize(qw, arrays.pop(name), scales[name])
    if plan.native:
        from ..mlx.lazy_native import native_parts
        for name, (qw, choice) in plan.native.items():
            module = qw.output_name[: -len(".weight")]
            stored = arrays.pop(name)
            parts = native_parts(qw, choice, stored) if choice.mode == "affine" else \
                _mx_parts(mx, qw, choice, stored, held.get(qw.scale.name))
            for part, array in parts.items():
                arrays[f"{module}.{part}"] = array
    return (arrays, metadata) if return_metadata else arrays


def _mx_parts(mx, qw, choice, stored, held_scale=None) -> dict:
    """An MXFP4 or NVFP4 weight whose layout is MLX's own (E2M1 low nibble first; E8M0
    group-32 or E4M3 group-16 bytes): the codes viewed as uint32 words (lazy, no copy), the
    scale bytes as stored (lazy when ``mx.load`` gave them as bytes), the same bits
    ``rewrite --to mlx`` copies; NVFP4 adds MLX's ``global_scale``, converted as the rewrite
    converts it (``native_plan.mlx_global_scale``)."""
    from ..formats.tensor_data import read_raw
    if choice.mode not in ("mxfp4", "nvfp4"):
        raise ScalefixError(f"internal: no load-time {choice.mode} parts", tensor=qw.name)
    lead, cols = tuple(choice.shape[:-1]), choice.shape[-1]
    weight = stored.view(mx.uint8).reshape(lead + (cols // 2,)).view(mx.uint32)
    shape = lead + (cols // choice.group_size,)
    if held_scale is not None and held_scale.dtype in (mx.uint8, mx.int8) and \
            held_scale.size == cols // choice.group_size * (weight.size // (cols // 8)):
        scales = held_scale.view(mx.uint8).reshape(shape)
    else:  # in another file, or upcast by an older MLX: the stored bytes
        scales = mx.array(read_raw(qw.scale).reshape(shape))
    parts = {"weight": weight, "scales": scales}
    if choice.mode == "nvfp4":
        from ..mlx.native_plan import mlx_global_scale
        parts["global_scale"] = mx.array(mlx_global_scale(qw))
    return parts


def apply(module) -> None:
    def make_wrapper(original):
        def load(file, *args, **kwargs):
            fmt = kwargs.get("format", args[0] if args else None)
            return_metadata = kwargs.get("return_metadata", args[1] if len(args) > 1 else False)
            path = _safetensors_path(file, fmt)
            if path is None or not path.is_file():
                return original(file, *args, **kwargs)
            try:
                arrays = _fixed(module, original, path, args, kwargs, return_metadata)
            except Exception as exc:  # cannot fix: behave as upstream, but say so (or raise)
                REPORT.cannot_fix(path, _reason(exc))
                arrays = None
            else:
                REPORT.record(path, "passed" if arrays is None else "fixed")
            return original(file, *args, **kwargs) if arrays is None else arrays
        return load

    wrap(module, "load", make_wrapper)


def files_report() -> dict:
    """Files fixed, passed through (nothing to fix) and left unfixed (with why), this process."""
    return REPORT.summary()


def revert(module) -> None:
    unwrap(module, "load")
