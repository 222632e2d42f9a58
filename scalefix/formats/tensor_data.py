"""Reading tensor bytes: whole, by byte range (row blocks, samples). Never the whole file."""

from __future__ import annotations

import numpy as np

from ..errors import ScalefixError
from .header import TensorInfo


def read_raw(info: TensorInfo, start: int = 0, length: int | None = None) -> np.ndarray:
    """``length`` bytes of the tensor's data from byte ``start`` (relative to the tensor)."""
    length = info.nbytes - start if length is None else length
    if start < 0 or length < 0 or start + length > info.nbytes:
        raise ValueError(f"byte range [{start}, {start + length}) outside {info.name}")
    try:
        with open(info.file, "rb") as fh:
            fh.seek(info.offset + start)
            data = fh.read(length)
    except OSError as exc:
        raise ScalefixError(f"cannot read: {exc.strerror or exc}", file=info.file,
                            tensor=info.name) from None
    if len(data) != length:
        raise ScalefixError("file ends inside the tensor's data (truncated)", file=info.file,
                            tensor=info.name)
    return np.frombuffer(data, dtype=np.uint8)
