"""Write one output shard: header first (from the plan), then each tensor in order, copied in
chunks or dequantized in row blocks. Memory per call is bounded by CHUNK sizes, whatever the
size of the model, the shard or the tensor."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..formats.codecs import decode
from ..formats.dequant import decode_rows, encode, load_scale, row_bytes
from .plan import OutShard, OutTensor
from .progress import Progress

COPY_CHUNK = 16 << 20          # bytes per read when copying
DEQUANT_CHUNK_ELEMENTS = 2 << 20


class SourceFiles:
    """Open source files, reused across tensors of one shard (read-only)."""

    def __init__(self):
        self._files: dict[Path, object] = {}

    def read(self, path: Path, offset: int, length: int) -> np.ndarray:
        fh = self._files.get(path)
        if fh is None:
            fh = self._files[path] = open(path, "rb")
        fh.seek(offset)
        data = fh.read(length)
        if len(data) != length:
            from ..errors import ScalefixError
            raise ScalefixError("file ends inside a tensor's data (truncated)", file=path)
        return np.frombuffer(data, dtype=np.uint8)

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()


def write_shard(path: Path, shard: OutShard, out_dtype: str, progress: Progress) -> None:
    """Write ``shard`` to ``path`` and fsync it."""
    sources = SourceFiles()
    try:
        with open(path, "wb") as fh:
            fh.write(shard.header())
            for tensor in shard.tensors:
                if tensor.action in ("copy", "rename"):
                    _copy(fh, tensor, sources, progress)
                else:
                    _decode(fh, tensor, out_dtype, sources, progress)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        sources.close()


def _copy(fh, tensor: OutTensor, sources: SourceFiles, progress: Progress) -> None:
    src = tensor.source
    for start in range(0, src.nbytes, COPY_CHUNK):
        n = min(COPY_CHUNK, src.nbytes - start)
        fh.write(sources.read(src.file, src.offset + start, n))
        progress.advance(n)


def _decode(fh, tensor: OutTensor, out_dtype: str, sources: SourceFiles,
            progress: Progress) -> None:
    src, qw = tensor.source, tensor.qw
    if qw is None:  # FP8 without a scale: the codes' own values (scale 1)
        codec = "e4m3" if src.dtype == "F8_E4M3" else "e5m2"
        for start in range(0, src.nbytes, DEQUANT_CHUNK_ELEMENTS):
            n = min(DEQUANT_CHUNK_ELEMENTS, src.nbytes - start)
            values = decode(sources.read(src.file, src.offset + start, n), codec)
            fh.write(np.ascontiguousarray(encode(values, out_dtype)))
            progress.advance(n)
        return
    scale = load_scale(qw)
    per_row, rows = row_bytes(qw), qw.geometry.rows
    step = max(1, DEQUANT_CHUNK_ELEMENTS // max(qw.geometry.cols, 1))
    block_rows = qw.geometry.block[0]
    if step > block_rows:
        step -= step % block_rows  # whole blocks per chunk keep the lookup path's segments long
    for start in range(0, rows, step):
        n = min(step, rows - start)
        raw = sources.read(src.file, src.offset + start * per_row, n * per_row)
        fh.write(np.ascontiguousarray(decode_rows(qw, raw, scale, start, out_dtype)))
        progress.advance(n * per_row)
