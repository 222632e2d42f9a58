"""Released source distributions (sdists) of peer packages, for the upstream diffs in
``patches/``: a wheel ships no ``tests/``, so a diff's test hunks are proven on the sdist of
the same release. Downloaded once with pip (``--no-binary``, no dependencies), unpacked and
cached like the peer venvs: keyed by name and version, a ``.complete`` marker, built in a
temporary sibling and renamed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from .venvs import cache_root, locked


def released_sdist(name: str, version: str) -> Path:
    """The unpacked sdist ``name==version`` (its top folder: ``pyproject.toml``, ``tests/``...)."""
    root = cache_root() / "sources"
    path = root / f"{name}-{version}"
    if (path / ".complete").is_file():
        return path
    with locked(root / f".{path.name}.lock"):
        if (path / ".complete").is_file():
            return path
        tmp = root / f".{path.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        tmp.mkdir(parents=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                               "--disable-pip-version-check", "--no-deps", "--no-binary",
                               ":all:", "-d", str(tmp / "dl"), f"{name}=={version}"],
                              capture_output=True, text=True)
        archives = list((tmp / "dl").glob("*.tar.gz"))
        if proc.returncode != 0 or len(archives) != 1:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
            raise RuntimeError(f"downloading the {name} {version} sdist failed:\n"
                               + "\n".join(tail))
        with tarfile.open(archives[0]) as tar:
            tar.extractall(tmp / "x", filter="data")
        (top,) = (tmp / "x").iterdir()
        top.rename(path)
        shutil.rmtree(tmp)
        (path / ".complete").write_text(f"{name}=={version}\n")
    return path
