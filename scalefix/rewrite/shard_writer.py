"""Write one output shard: header first (from the plan), then each tensor in order, copied in
chunks or dequantized in row blocks.

A small pipeline keeps both the disk and the cores busy: chunks are read (``os.pread``) and
decoded by a pool of worker threads (numpy releases the GIL), while this thread writes the
finished chunks in order. At most WINDOW chunks are in flight, so memory is bounded by the
chunk size, whatever the size of the model, the shard or a tensor.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import ScalefixError
from ..formats.codecs import decode
from ..formats.dequant import decode_rows, encode, load_scale, row_bytes
from .plan import OutShard, OutTensor
from .progress import Progress

COPY_CHUNK = 1 << 20               # bytes per read when copying
DEQUANT_CHUNK_ELEMENTS = 1 << 19   # elements per decoded row block (1 MB of BF16)


class SourceFiles:
    """Read-only descriptors of the source shards; ``pread`` is safe from many threads."""

    def __init__(self):
        self._fds: dict[Path, int] = {}

    def read(self, path: Path, offset: int, length: int) -> np.ndarray:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds.setdefault(path, os.open(path, os.O_RDONLY))
        data = os.pread(fd, length, offset)
        while len(data) < length:  # pread may return short on large reads
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                raise ScalefixError("file ends inside a tensor's data (truncated)", file=path)
            data += more
        return np.frombuffer(data, dtype=np.uint8)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _copy_chunk(sources: SourceFiles, src, start: int, n: int):
    return sources.read(src.file, src.offset + start, n)


def _cast_chunk(sources: SourceFiles, src, codec: str, out_dtype: str, start: int, n: int):
    values = decode(sources.read(src.file, src.offset + start, n), codec)
    return np.ascontiguousarray(encode(values, out_dtype))


def _dequant_chunk(sources: SourceFiles, qw, scale, out_dtype: str, start: int, n: int):
    per_row = row_bytes(qw)
    raw = sources.read(qw.weight.file, qw.weight.offset + start * per_row, n * per_row)
    return np.ascontiguousarray(decode_rows(qw, raw, scale, start, out_dtype))


def _jobs(tensor: OutTensor, out_dtype: str, sources: SourceFiles):
    """(source bytes consumed, job returning the output bytes) for each chunk, in order."""
    src, qw = tensor.source, tensor.qw
    if tensor.action in ("copy", "rename"):
        for start in range(0, src.nbytes, COPY_CHUNK):
            n = min(COPY_CHUNK, src.nbytes - start)
            yield n, partial(_copy_chunk, sources, src, start, n)
    elif qw is None:  # FP8 without a scale: the codes' own values (scale 1)
        codec = "e4m3" if src.dtype == "F8_E4M3" else "e5m2"
        for start in range(0, src.nbytes, DEQUANT_CHUNK_ELEMENTS):
            n = min(DEQUANT_CHUNK_ELEMENTS, src.nbytes - start)
            yield n, partial(_cast_chunk, sources, src, codec, out_dtype, start, n)
    else:
        scale = load_scale(qw)
        rows, per_row = qw.geometry.rows, row_bytes(qw)
        step = max(1, DEQUANT_CHUNK_ELEMENTS // max(qw.geometry.cols, 1))
        block_rows = qw.geometry.block[0]
        if step > block_rows:
            step -= step % block_rows  # whole blocks keep the lookup path's segments long
        for start in range(0, rows, step):
            n = min(step, rows - start)
            yield n * per_row, partial(_dequant_chunk, sources, qw, scale, out_dtype, start, n)


def write_shard(path: Path, shard: OutShard, out_dtype: str, progress: Progress,
                pool: ThreadPoolExecutor | None = None, window: int = 6) -> None:
    """Write ``shard`` to ``path`` and fsync it."""
    sources = SourceFiles()
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=1)
    in_flight: deque = deque()
    try:
        with open(path, "wb") as fh:
            fh.write(shard.header())

            def drain(limit: int) -> None:
                while len(in_flight) > limit:
                    consumed, future = in_flight.popleft()
                    fh.write(future.result())
                    progress.advance(consumed)

            for tensor in shard.tensors:
                for consumed, job in _jobs(tensor, out_dtype, sources):
                    in_flight.append((consumed, pool.submit(job)))
                    drain(window)
            drain(0)
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        for _, future in in_flight:
            future.cancel()
        if own_pool:
            pool.shutdown(wait=True)
        sources.close()
