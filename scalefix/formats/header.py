"""Read and validate a safetensors header without touching tensor data.

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data section.
Every check here is one an attacker-shaped or truncated file could fail; each failure is a
ScalefixError naming the file and, where there is one, the tensor.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScalefixError
from .dtypes import BITS, nbytes
from .jsonio import parse_json

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own bound (jsonio bounds the depth)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry; ``offset`` is absolute in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Header:
    path: Path
    data_start: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)


def read_header(path: str | os.PathLike) -> Header:
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ScalefixError(
                    f"truncated: {size} bytes, shorter than the 8-byte header length", file=path)
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise ScalefixError(
                    f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit "
                    "(not a safetensors file?)", file=path)
            if 8 + n > size:
                raise ScalefixError(
                    f"header length {n} runs beyond the end of the file ({size} bytes): "
                    "truncated or not a safetensors file", file=path)
            raw = fh.read(n)
    except OSError as exc:
        raise ScalefixError(f"cannot read: {exc.strerror or exc}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScalefixError(f"header is not valid JSON ({exc})", file=path) from None
    doc = parse_json(text, path, "header")
    if not isinstance(doc, dict):
        raise ScalefixError("header JSON is not an object", file=path)
    return _validate(path, doc, 8 + n, size)


def _validate(path: Path, doc: dict, data_start: int, size: int) -> Header:
    metadata = doc.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ScalefixError("__metadata__ must map strings to strings", file=path)
    data_size = size - data_start
    tensors: dict[str, TensorInfo] = {}
    for name, entry in doc.items():
        if not isinstance(entry, dict):
            raise ScalefixError("header entry is not an object", file=path, tensor=name)
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in BITS:
            raise ScalefixError(f"unknown dtype {dtype!r}", file=path, tensor=name)
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            raise ScalefixError(f"invalid shape {shape!r}", file=path, tensor=name)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
                and offsets[0] <= offsets[1]):
            raise ScalefixError(f"invalid data_offsets {offsets!r}", file=path, tensor=name)
        begin, end = offsets
        if end > data_size:
            raise ScalefixError(
                f"data_offsets [{begin}, {end}] run past the end of the data section "
                f"({data_size} bytes): file truncated?", file=path, tensor=name)
        want = nbytes(dtype, math.prod(shape))
        if end - begin != want:
            raise ScalefixError(
                f"data_offsets span {end - begin} bytes but {dtype}{shape} needs {want}",
                file=path, tensor=name)
        tensors[name] = TensorInfo(name, dtype, tuple(shape), path, data_start + begin, end - begin)
    _reject_overlaps(path, tensors.values(), data_start)
    return Header(path, data_start, size, tensors, dict(metadata))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _reject_overlaps(path: Path, tensors, data_start: int) -> None:
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors if t.nbytes)
    for (_, end_a, name_a), (begin_b, _, name_b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise ScalefixError(
                f"data overlaps tensor {name_a!r} (offset {begin_b - data_start} < "
                f"{end_a - data_start})", file=path, tensor=name_b)
