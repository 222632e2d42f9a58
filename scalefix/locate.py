"""Where a checkpoint named on the command line lives: a local path, or a Hugging Face hub id
(``org/name`` or ``org/name@revision``) found in the local cache.

Models fetched with ``huggingface_hub`` (``hf download``, ``snapshot_download``,
``mlx_lm.load("org/name")``) live as ``hub/models--org--name/snapshots/<rev>/<file>``
links into ``blobs/``. Users name them by id; scalefix looks them up the way the hub library
itself does (``snapshot_download(..., local_files_only=True)``: offline, honouring
``HF_HUB_CACHE`` / ``HF_HOME``), never by guessing the cache layout, and never downloads.
An existing local path always wins over an id.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ScalefixError

# org/name[@revision]: the hub's own repo-id alphabet; no leading '.', '/', '~'
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")


def locate(arg: str | os.PathLike) -> Path:
    """The local path for a checkpoint argument (a path, or a cached hub id)."""
    path = Path(arg)
    if path.exists() or path.is_symlink():
        return path
    match = HUB_ID.match(str(arg))
    if match is None:
        raise ScalefixError("no such file or directory", file=path)
    return _from_cache(match["repo"], match["rev"])


def _from_cache(repo: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import LocalEntryNotFoundError
    except ImportError:  # a core dependency; only a broken install lands here
        raise ScalefixError("is neither a local path nor resolvable: huggingface_hub is not "
                            "installed (pip install huggingface_hub)", file=repo) from None
    shown = f"{repo}@{revision}" if revision else repo
    download = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
    try:
        found = snapshot_download(repo, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ScalefixError(f"no such local path, and not in the Hugging Face cache "
                            f"({_cache_dir()}); download it first: {download}",
                            file=shown) from None
    except Exception as exc:  # e.g. a malformed id or revision the hub library rejects
        raise ScalefixError(f"cannot look it up in the Hugging Face cache: "
                            f"{type(exc).__name__}: {exc}", file=shown) from None
    return Path(found)


def _cache_dir() -> str:
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except Exception:
        return "the hub cache"


def cached_repo_name(path: Path) -> str | None:
    """``name`` when ``path`` lies in a hub cache snapshot (``models--org--name/snapshots/
    <rev>[/...]``), read lexically; None elsewhere. A rewrite must never write there."""
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            return parts[i].split("--")[-1]
    return None
