"""The one interface between ``rewrite``'s machinery and what it writes.

``rewrite`` owns the pipeline every output format shares: a plan made from headers before a
byte is written, shards streamed through ``shard_writer`` (reader and writer threads,
O_DIRECT, bounded memory), fsync, ``.done`` markers, ``--resume`` and the final atomic
rename (``staging``). A target (the BF16 rewrite in ``plan.py``, the MLX bundle in
``scalefix.mlx.bundle_plan``) supplies a ``TargetSpec`` (what the user asked for) that builds
a ``TargetPlan``: the planned shards, and for each planned tensor the ``Job`` s that produce
its bytes. Nothing in ``rewrite`` knows any target's format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..formats.classify import Classification
from ..formats.header import TensorInfo
from ..formats.writer import header_bytes
from .config_edit import rewritten_config  # noqa: F401  (config.json less its quantization)

DROP_REASONS = {"scale": "scale (applied)", "quant_param": "quantization parameter (applied)",
                "activation_scale": "activation scale",
                "orphan_scale": "orphan scale", "marker": "quantization marker"}
COPY_CHUNK = 4 << 20               # source bytes per job when copying


@dataclass
class OutShard:
    filename: str
    tensors: list                    # anything with an ``entry`` (formats.writer.Entry)
    metadata: dict[str, str]

    @property
    def nbytes(self) -> int:
        return sum(t.entry.nbytes for t in self.tensors)

    def header(self) -> bytes:
        return header_bytes([t.entry for t in self.tensors], self.metadata)


def pack_shards(outputs, max_bytes, base, single_file, metadata) -> list[OutShard]:
    """Output tensors (anything with an ``entry``) in order, cut into shards of at most
    ``max_bytes`` (a tensor larger than that gets a shard of its own)."""
    groups: list[list] = [[]]
    size = 0
    for out in outputs:
        if groups[-1] and not single_file and size + out.entry.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(out)
        size += out.entry.nbytes
    if len(groups) == 1:
        return [OutShard(f"{base}.safetensors", groups[0], metadata)]
    n = len(groups)
    return [OutShard(f"{base}-{i + 1:05d}-of-{n:05d}.safetensors", g, metadata)
            for i, g in enumerate(groups)]


@dataclass(frozen=True)
class Job:
    """One chunk of a shard: read ``src_len`` bytes at ``src_offset`` of ``src_file`` (None:
    nothing to read), then ``fill`` ``out_len`` output bytes from them on a worker thread.
    ``prepare``, when given, runs on the writing thread, in output order, before the job is
    queued (work that must not run on a worker, e.g. evaluating an MLX graph that itself uses
    the workers). ``counts_for``: source bytes it accounts for on the progress bar (default
``src_len``)."""

    src_file: Path | None
    src_offset: int
    src_len: int
    out_len: int
    fill: Callable[[np.ndarray, np.ndarray], None]   # (source bytes, output bytes)
    prepare: Callable[[], None] | None = None
    counts_for: int | None = None

    @property
    def consumed(self) -> int:
        return self.src_len if self.counts_for is None else self.counts_for


def copy_bytes(raw: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, raw)


def copy_jobs(info: TensorInfo, fill=copy_bytes, chunk: int = COPY_CHUNK):
    """A tensor's stored bytes in chunks, each through ``fill`` (default: copied as is)."""
    for start in range(0, info.nbytes, chunk):
        n = min(chunk, info.nbytes - start)
        yield Job(info.file, info.offset + start, n, n, fill)


class TargetPlan(ABC):
    """A plan ``rewrite`` can write: ``shards`` (each an ``OutShard`` whose tensors have an
    ``entry``), what is dropped and why, and the config changes it will make."""

    classification: Classification
    shards: list[OutShard]
    dropped: dict[str, str]
    config_changes: list[str]

    @property
    @abstractmethod
    def nothing_to_do(self) -> bool: ...

    @property
    @abstractmethod
    def source_bytes(self) -> int:
        """Source bytes the write reads (what the progress bar counts)."""

    @abstractmethod
    def counts(self) -> dict: ...

    @abstractmethod
    def shard_fingerprint(self, shard: OutShard) -> str:
        """What a finished shard must match to be reused by ``--resume``."""

    @abstractmethod
    def shard_source_bytes(self, shard: OutShard) -> int:
        """Source bytes ``shard``'s jobs account for (skipped on the bar when reused)."""

    @abstractmethod
    def validate(self) -> None:
        """Fail before writing anything (every scale decodes, every weight has its bytes)."""

    @abstractmethod
    def jobs(self, tensor) -> Iterable[Job]:
        """The jobs that produce ``tensor``'s bytes, in output order."""

    @abstractmethod
    def output_config(self) -> dict | None:
        """The output's config.json (None: none is written); the other files beside the
        checkpoint are copied (quantization side files only if ``keeps_quantization_files``)."""

    keeps_quantization_files: bool = False  # quantization side files copied (disk estimate)

    def begin(self, pool) -> None:
        """Before the first shard is written (``pool``: the decode workers)."""

    def end(self, summary) -> None:
        """After the last shard: fill what the target reports in ``summary``
        (``quality_notes``, ``requantization_sqnr``)."""

    def count_lines(self) -> list[str]:
        """The target's own lines of the summary's counts (``Summary.notes``)."""
        return []


class TargetSpec(ABC):
    """What the user asked for (``--to ...``): names the output and builds the plan."""

    single_file_ok: bool = True

    @property
    @abstractmethod
    def suffix(self) -> str:
        """The default destination's suffix (``SRC-<suffix>``)."""

    @abstractmethod
    def build_plan(self, result: Classification, max_shard_bytes: int, base: str,
                   single_file: bool) -> TargetPlan: ...

    def single_file_refusal(self) -> str:
        return "this target needs the bundle's directory"


def bf16_jobs(entry, info: TensorInfo, qw=None):
    """The BF16 rewrite's jobs for one tensor: ``qw`` decoded exactly (row blocks), or FP8
    codes without a scale (``qw`` None) cast; ``entry`` is the planned BF16 output."""
    from .plan import OutTensor
    from .shard_writer import tensor_jobs
    return tensor_jobs(OutTensor(entry, "dequant" if qw is not None else "cast", info, qw),
                       "bf16")
