"""Atomic output: everything is written into a hidden sibling directory, each shard renamed
into place only after fsync and recorded with a ``.done`` marker; the index goes in last and
the directory is renamed to DST at the very end. A killed run leaves no DST; ``--resume``
reuses every shard whose marker, size and header match the plan."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import ScalefixError
from ..formats.bundle import INDEX_SUFFIX
from .config_edit import write_json

STAGING_MARK = ".scalefix-partial"


def staging_path(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.scalefix-partial"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare(dst: Path, resume: bool, note) -> Path:
    """Create (or, with resume, keep) the staging directory for ``dst``."""
    staging = staging_path(dst)
    if staging.exists():
        if not (staging / STAGING_MARK).is_file():
            raise ScalefixError("exists and was not made by scalefix: remove it", file=staging)
        if not resume:
            note(f"removing the leftovers of an interrupted run ({staging.name}); "
                 "--resume would reuse them")
            shutil.rmtree(staging)
    if not staging.exists():
        staging.mkdir(parents=True)
        (staging / STAGING_MARK).write_text(json.dumps({"dst": str(dst)}))
    return staging


def done_marker(staging: Path, filename: str) -> Path:
    return staging / f".{filename}.done"


def shard_reusable(staging: Path, filename: str, fingerprint: str, header: bytes,
                   size: int) -> bool:
    path, marker = staging / filename, done_marker(staging, filename)
    if not (path.is_file() and marker.is_file()):
        return False
    if marker.read_text().strip() != fingerprint or path.stat().st_size != size:
        return False
    with open(path, "rb") as fh:
        return fh.read(len(header)) == header


def commit_shard(staging: Path, filename: str, fingerprint: str) -> None:
    """The shard at ``.<name>.tmp`` is fsynced: give it its name, then record it as done."""
    os.replace(staging / f".{filename}.tmp", staging / filename)
    marker = done_marker(staging, filename)
    marker.write_text(fingerprint + "\n")
    fsync_dir(staging)


def finish(staging: Path, dst: Path) -> None:
    """Drop the bookkeeping files and move the finished bundle to ``dst`` in one rename."""
    for item in staging.iterdir():
        if item.name == STAGING_MARK or (item.name.startswith(".") and
                                         item.name.endswith((".done", ".tmp"))):
            item.unlink()
    fsync_dir(staging)
    if dst.exists():
        raise ScalefixError("appeared while rewriting; the result is left in "
                            f"{staging}", file=dst)
    os.rename(staging, dst)
    fsync_dir(dst.parent)


def write_index(staging: Path, shards) -> None:
    """The index of a multi-shard output (the last file written before the rename)."""
    if len(shards) < 2:
        return
    weight_map = {t.entry.name: s.filename for s in shards for t in s.tensors}
    index = {"metadata": {"total_size": sum(s.nbytes for s in shards)},
             "weight_map": dict(sorted(weight_map.items()))}
    base = shards[0].filename.split("-00001-of-")[0]
    write_json(staging / f"{base}{INDEX_SUFFIX}", index)
