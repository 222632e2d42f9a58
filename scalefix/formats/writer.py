"""Write safetensors files: header computed up front from names, dtypes and shapes, then
data appended in order, so a writer never needs more than one piece of data in memory."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .dtypes import nbytes


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return nbytes(self.dtype, math.prod(self.shape))


def header_bytes(entries: Iterable[Entry], metadata: dict[str, str] | None = None) -> bytes:
    """8-byte length + JSON header (padded with spaces to a multiple of 8, as safetensors
    does), tensors laid out in the given order."""
    doc: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for entry in entries:
        doc[entry.name] = {"dtype": entry.dtype, "shape": list(entry.shape),
                           "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(path: str | os.PathLike, items: list[tuple[Entry, bytes]],
                      metadata: dict[str, str] | None = None) -> None:
    """Small-file convenience: every item's data given as bytes (or a buffer)."""
    with open(Path(path), "wb") as fh:
        fh.write(header_bytes([e for e, _ in items], metadata))
        for entry, data in items:
            view = memoryview(data).cast("B")
            if len(view) != entry.nbytes:
                raise ValueError(f"{entry.name}: {len(view)} bytes, expected {entry.nbytes}")
            fh.write(view)
