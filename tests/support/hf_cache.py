"""Lay a checkpoint out exactly as ``huggingface_hub`` lays out its cache:
``<cache>/models--org--name/{blobs/<sha256>, snapshots/<rev>/<file> -> ../../blobs/<sha256>,
refs/main}``. Files keep their bytes; only where they live changes."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def into_cache(src: Path, cache: Path, repo_id: str, revision: str = REVISION,
               branch: str = "main") -> Path:
    """Copy the files of directory ``src`` into the cache as repo ``repo_id``; return the
    snapshot directory."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo / "blobs", repo / "snapshots" / revision
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = file.relative_to(src)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(file, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(revision)
    return snapshot


def links_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_symlink()]
