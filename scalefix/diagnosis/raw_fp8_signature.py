"""Recognise a checkpoint that was already converted *without* its scales.

The commonest silent failure in the wild: a float (BF16/F16/F32) weight that holds raw FP8
magnitudes (values on the E4M3 grid up to 448, on the E5M2 grid up to 57344) or raw FP8 byte
codes (integers 0..255), where real weights sit near 1e-2. Only a sample of each tensor is
read: a few evenly spaced slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats.codecs import bf16_to_f32, decode, encode_e4m3
from ..formats.header import TensorInfo
from ..formats.tensor_data import read_raw

FLOAT_VIEWS = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}
E4M3_MAX, E5M2_MAX = 448.0, 57344.0
SLICES, SLICE_ELEMENTS = 8, 2048
MIN_ELEMENTS = 1024


@dataclass(frozen=True)
class RawFp8Evidence:
    tensor: str
    dtype: str
    signature: str        # "raw-fp8-bytes" | "raw-fp8-e4m3" | "raw-fp8-e5m2"
    max_abs: float
    on_grid: float        # fraction of sampled nonzero values exactly on the FP8 grid
    sampled: int


def candidate(info: TensorInfo) -> bool:
    return info.dtype in FLOAT_VIEWS and len(info.shape) >= 2 and info.numel >= MIN_ELEMENTS


def sample(info: TensorInfo) -> np.ndarray:
    """float32 values from SLICES evenly spaced slices of the tensor."""
    item = info.nbytes // info.numel
    take = min(SLICE_ELEMENTS, info.numel // SLICES)
    starts = np.linspace(0, info.numel - take, SLICES).astype(np.int64)
    parts = [read_raw(info, int(s) * item, take * item) for s in starts]
    raw = np.concatenate(parts)
    if info.dtype == "BF16":
        return bf16_to_f32(raw.view(np.uint16))
    return raw.view(FLOAT_VIEWS[info.dtype]).astype(np.float32)


def examine(info: TensorInfo) -> RawFp8Evidence | None:
    """Evidence that ``info`` holds unscaled FP8 values, or None."""
    values = sample(info)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    max_abs = float(np.abs(finite).max())
    nonzero = finite[finite != 0]
    if nonzero.size == 0 or max_abs < 16:
        return None
    if (finite == np.round(finite)).all() and finite.min() >= 0 and max_abs <= 255:
        return RawFp8Evidence(info.name, info.dtype, "raw-fp8-bytes", max_abs, 1.0, values.size)
    if max_abs <= E4M3_MAX:
        on_grid = float((decode(encode_e4m3(nonzero), "e4m3") == nonzero).mean())
        signature = "raw-fp8-e4m3"
    elif max_abs <= E5M2_MAX:
        as_half = nonzero.astype(np.float16)
        exact = (as_half.astype(np.float32) == nonzero) & ((as_half.view(np.uint16) & 0xFF) == 0)
        on_grid = float(exact.mean())
        signature = "raw-fp8-e5m2"
    else:
        return None
    if on_grid < 0.99:
        return None
    return RawFp8Evidence(info.name, info.dtype, signature, max_abs, on_grid, values.size)
