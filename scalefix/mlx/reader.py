"""Safetensors files this MLX's own reader refuses, read by scalefix instead.

Which F8 dtypes ``mx.load`` accepts depends on the release (0.21 refuses F8_E4M3, 0.25-0.30
upcast it to BF16, 0.31 hands uint8 codes, 0.32 also reads F8_E8M0; F8_E5M2: none), so it is
probed, once per dtype and process, by loading an 8-element file from memory. A refused file
is read eagerly, tensor by tensor, from a memory map (no intermediate bytes copy): MLX has no
lazy reader for it. F8 codes come back as uint8, as current MLX hands them.
"""

from __future__ import annotations

import io
import json
import mmap
import struct
from functools import lru_cache

import numpy as np

from ..errors import ScalefixError
from ..formats.dtypes import BITS, nbytes
from ..formats.header import Header

# read by every MLX release the hook supports: never probed
ALWAYS_READ = frozenset({"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64",
                         "F16", "BF16", "F32"})


def refused_dtypes(load, dtypes) -> frozenset:
    """The subset of ``dtypes`` that ``load`` (the original ``mx.load``) cannot read."""
    return frozenset(d for d in dtypes if d not in ALWAYS_READ and _refuses(load, d))


@lru_cache(maxsize=None)
def _refuses(load, dtype: str) -> bool:
    if dtype not in BITS:
        return True
    size = nbytes(dtype, 8)
    head = json.dumps({"t": {"dtype": dtype, "shape": [8], "data_offsets": [0, size]}}).encode()
    head += b" " * (-len(head) % 8)
    try:
        load(io.BytesIO(struct.pack("<Q", len(head)) + head + bytes(size)), format="safetensors")
    except Exception:
        return True
    return False


def read_mapped(header: Header) -> dict:
    """Every tensor of the file as an MLX array, each copied straight from a memory map."""
    from .arrays import array_from_raw

    with _mapped(header.path) as mm:
        return {name: array_from_raw(_view(mm, info), info)
                for name, info in header.tensors.items()}


def _mapped(path):
    try:
        with open(path, "rb") as fh:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:  # ValueError: an empty file cannot be mapped
        raise ScalefixError(f"cannot read: {getattr(exc, 'strerror', None) or exc}",
                            file=path) from None


def _view(mm, info) -> np.ndarray:
    if info.offset + info.nbytes > len(mm):
        raise ScalefixError("file ends inside the tensor's data (truncated)", file=info.file,
                            tensor=info.name)
    return np.frombuffer(mm, np.uint8, count=info.nbytes, offset=info.offset)
