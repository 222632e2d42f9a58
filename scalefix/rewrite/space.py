"""Disk space: refuse up front when DST's filesystem cannot hold the output, and recognise the
disk filling up anyway (ENOSPC, EDQUOT) so the user gets one line instead of a traceback.

The plan knows every output byte before one is written (headers and tensor sizes), so the
check is exact for the shards; the copied files are measured; the index and config are
estimated from the tensor names. ``--resume`` counts only the shards still to write, and what
the run is about to delete (the leftovers of an interrupted run) counts as free.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..errors import ScalefixError
from .progress import human_bytes

OUT_OF_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}

# Filesystem bookkeeping the sizes above do not show: directory blocks and the markers (a
# block or two), and the blocks that map a file's data, at most one 4 KiB block of pointers per
# 4 MiB of data (ext2/3 indirect blocks; ext4 and XFS extents need far less). A fixed MiB plus
# 1/1024 of the output covers both without refusing a destination that really has the room.
MARGIN_FIXED = 1 << 20
MARGIN_FRACTION = 1 / 1024
# Per output tensor, for the index line (name -> shard file) and, for --to mlx-affine, a
# per-module quantization entry in config.json: both a name plus a few dozen bytes.
METADATA_BYTES_PER_TENSOR = 64


def _rounded(size: int, block: int) -> int:
    return -(-size // block) * block


def tree_bytes(path: Path, block: int = 1) -> int:
    """Bytes of ``path`` (a file, or a folder walked with links followed, as it is copied),
    each file rounded up to ``block``."""
    if not path.exists():
        return 0
    if not path.is_dir():
        return _rounded(path.stat().st_size, block)
    total = 0
    for folder, _, files in os.walk(path, followlinks=True):
        total += sum(_rounded(os.stat(os.path.join(folder, f)).st_size, block) for f in files)
    return total


def output_bytes(plan, skip_shards: set[str], copied: list[Path], source_configs: list[Path],
                 block: int) -> int:
    """What the run will write: the shards not in ``skip_shards`` (each with its ``.done``
    marker), the ``copied`` files, config and index (estimated), rounded to ``block``."""
    total = 0
    for shard in plan.shards:
        if shard.filename not in skip_shards:
            total += _rounded(len(shard.header()) + shard.nbytes, block) + block
    total += sum(tree_bytes(item, block) for item in copied)
    total += sum(tree_bytes(cfg, block) for cfg in source_configs)
    names = sum(len(t.entry.name) + len(s.filename) + METADATA_BYTES_PER_TENSOR
                for s in plan.shards for t in s.tensors) if len(plan.shards) > 1 else 0
    return total + _rounded(names, block)


def free_bytes(directory: Path) -> tuple[int, int] | None:
    """(bytes available to this user, block size) on ``directory``'s filesystem, or None when
    the filesystem cannot say (then nothing is checked)."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # no statvfs (Windows), or a filesystem without it
        return None
    return st.f_bavail * st.f_frsize, max(st.f_frsize, 1)


def with_margin(needed: int) -> int:
    return needed + MARGIN_FIXED + int(needed * MARGIN_FRACTION)


def check(dst: Path, needed: int, available: int, reclaimed: int, reused: int) -> None:
    """Refuse (exit 2, one line) when ``needed`` (with the margin) exceeds ``available`` (free
    space plus the ``reclaimed`` leftovers the run deletes first)."""
    if needed <= available:
        return
    still = f"the rest of the output ({reused} finished shard(s) reused) needs" if reused \
        else "the output needs"
    freed = f", counting {human_bytes(reclaimed)} of leftovers it replaces" if reclaimed else ""
    raise ScalefixError(
        f"not enough free space: {still} {human_bytes(needed)}, its filesystem has "
        f"{human_bytes(available)} free{freed}; free some space or choose another --out "
        "(--no-space-check skips this check)", file=dst)


def out_of_space(exc: BaseException) -> int | None:
    """The errno when ``exc`` says the disk or the quota is full, else None. shutil.copytree
    gathers its failures into one shutil.Error of (src, dst, message) strings."""
    if isinstance(exc, shutil.Error):
        for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else ():
            text = str(item[-1]) if isinstance(item, tuple) else str(item)
            for code in OUT_OF_SPACE:
                if f"[Errno {code}]" in text:
                    return code
        return None
    if isinstance(exc, OSError) and exc.errno in OUT_OF_SPACE:
        return exc.errno
    return None
