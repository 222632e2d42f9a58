"""Atomic output: everything is written into a hidden sibling directory, each shard renamed
into place only after fsync and recorded with a ``.done`` marker; the index goes in last and
the directory is renamed to DST at the very end. A killed run leaves no DST; ``--resume``
reuses every shard whose marker, size and header match the plan."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

from ..errors import ScalefixError
from ..formats.bundle import INDEX_SUFFIX
from .config_edit import write_json
from .progress import human_bytes
from .space import tree_bytes

STAGING_MARK = ".scalefix-partial"


def staging_path(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.scalefix-partial"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ours(staging: Path) -> bool:
    """Whether ``staging`` exists; one scalefix did not make (no mark) is refused."""
    if staging.exists() and not (staging / STAGING_MARK).is_file():
        raise ScalefixError("exists and was not made by scalefix: remove it", file=staging)
    return staging.exists()


def _kept(staging: Path, reused: set[str]) -> set[str]:
    """The names in ``staging`` a resumed run keeps: its mark and the reused shards, each with
    its ``.done`` marker. Everything else is rewritten, so it goes first (freeing its space)."""
    return {STAGING_MARK} | reused | {done_marker(staging, name).name for name in reused}


def prepare(dst: Path, resume: bool, note, reused: set[str] = frozenset()) -> Path:
    """Create (or, with resume, keep) the staging directory for ``dst``. Resuming, only the
    ``reused`` shards survive: the rest of an interrupted run (an unfinished shard, copied
    files, a config) is removed, so it cannot get in the way or hold the space it needs."""
    staging = staging_path(dst)
    if _ours(staging):
        if not resume:
            note(f"removing the leftovers of an interrupted run ({staging.name}); "
                 "--resume would reuse them")
            shutil.rmtree(staging)
        else:
            keep = _kept(staging, reused)
            for item in staging.iterdir():
                if item.name in keep:
                    continue
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink()
    if not staging.exists():
        staging.mkdir(parents=True)
        try:
            (staging / STAGING_MARK).write_text(json.dumps({"dst": str(dst)}))
        except BaseException:  # no room even for the mark: leave nothing unmarked behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return staging


def reusable_shards(dst: Path, plan) -> set[str]:
    """The shards of ``plan`` an interrupted run into ``dst``'s staging finished (marker,
    size and header checked against the plan). Reads only."""
    staging = staging_path(dst)
    if not _ours(staging):
        return set()
    reused = set()
    for shard in plan.shards:
        header = shard.header()
        if shard_reusable(staging, shard.filename, plan.shard_fingerprint(shard), header,
                          len(header) + shard.nbytes):
            reused.add(shard.filename)
    return reused


def leftover_bytes(dst: Path, reused: set[str] | None) -> int:
    """Bytes :func:`prepare` will delete before writing (``reused``: None without resume,
    when the whole staging directory goes)."""
    staging = staging_path(dst)
    if not _ours(staging):
        return 0
    keep = _kept(staging, reused) if reused is not None else set()
    return sum(tree_bytes(item) for item in staging.iterdir() if item.name not in keep)


def left_behind(dst: Path, then: str) -> str:
    """After a run stopped (signal, full disk): drop the shard it was writing (``.tmp``:
    useless, and its space may be what is missing), and describe what stays for ``--resume``
    in one line: where, how much, ``then`` (how to go on) and the command that removes it."""
    staging = staging_path(dst)
    if not staging.is_dir():
        return "nothing was written"
    for item in staging.iterdir():
        if item.name.startswith(".") and item.name.endswith(".tmp"):
            item.unlink(missing_ok=True)
    finished = sum(1 for p in staging.iterdir() if p.name.endswith(".done"))
    if not finished:  # nothing a resumed run could use
        shutil.rmtree(staging, ignore_errors=True)
        return "nothing kept (no shard was finished)"
    return (f"{finished} finished shard(s), {human_bytes(tree_bytes(staging))} in all, kept in "
            f"{staging} ({then}, or remove it: rm -rf {shlex.quote(str(staging))})")


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
