"""safetensors tensors <-> MLX arrays, for the two places that hand data to MLX (the
``mx.load`` hook and ``rewrite --to mlx`` / ``--to mlx-affine``). MLX is imported on first
use only."""

from __future__ import annotations

import numpy as np

from ..formats.header import TensorInfo
from ..formats.tensor_data import read_raw

NUMPY_VIEWS = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
               "U8": np.uint8, "I16": np.int16, "U16": np.uint16, "I32": np.int32,
               "U32": np.uint32, "I64": np.int64, "U64": np.uint64, "BOOL": np.bool_}


def _mx():
    import mlx.core as mx
    return mx


def bf16_array(bits: np.ndarray):
    """BF16 stored as uint16 bits -> an mx.bfloat16 array (no rounding, the same bits)."""
    mx = _mx()
    return mx.array(np.ascontiguousarray(bits, dtype=np.uint16)).view(mx.bfloat16)


def read_array(info: TensorInfo):
    """A tensor as MLX would hand it; FP8 and other byte-sized codes stay raw uint8."""
    return array_from_raw(read_raw(info), info)


def array_from_raw(raw: np.ndarray, info: TensorInfo):
    """The tensor's stored bytes as an MLX array (a copy): FP8 and other byte-sized codes as
    uint8 in the tensor's shape, sub-byte codes (F4, F6) as their packed bytes, flat."""
    mx = _mx()
    if info.dtype == "BF16":
        return bf16_array(raw.view(np.uint16).reshape(info.shape))
    if info.dtype in NUMPY_VIEWS:
        return mx.array(raw.view(NUMPY_VIEWS[info.dtype]).reshape(info.shape))
    if raw.size == info.numel:
        return mx.array(raw.reshape(info.shape))
    return mx.array(raw)


MX_DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64",
                  "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32",
                  "U32": "uint32", "I64": "int64", "U64": "uint64", "BOOL": "bool_"}


def mx_dtype(dtype: str):
    """The MLX dtype a safetensors dtype is handed as (FP8 and other codes: uint8)."""
    return getattr(_mx(), MX_DTYPE_NAMES.get(dtype, "uint8"))


def safetensors_dtype(array) -> str:
    mx = _mx()
    for name, mx_name in MX_DTYPE_NAMES.items():
        if array.dtype == getattr(mx, mx_name):
            return name
    raise ValueError(f"no safetensors dtype for MLX {array.dtype}")


def array_bytes(array) -> memoryview:
    """The array's data as stored in safetensors (little-endian, C order)."""
    mx = _mx()
    if array.dtype == mx.bfloat16:
        array = array.view(mx.uint16)
    return memoryview(np.ascontiguousarray(np.array(array, copy=False))).cast("B")
