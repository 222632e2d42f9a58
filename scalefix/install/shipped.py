"""Where the upstream-ready diffs are, installed or not. They live in the top-level
``patches/`` of the source tree (for people to browse and send upstream); the wheel maps that
folder to ``scalefix/patches/`` (pyproject ``package-dir``). An editable install or a
``PYTHONPATH`` checkout has no ``scalefix/patches/``, so the checkout's own folder is used
then. Nothing is imported from there: the folder is data, not a package."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from ..errors import ScalefixError


def patches_dir() -> Traversable:
    """The folder holding the ``*.diff`` files of this scalefix."""
    installed = files("scalefix") / "patches"
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "patches").is_dir():
        return checkout / "patches"
    raise ScalefixError("scalefix is installed without its patches/ folder: reinstall it",
                        file=Path(__file__).resolve().parents[1])


def shipped_diffs() -> dict[str, Traversable]:
    """Every shipped diff, by file name."""
    return {entry.name: entry for entry in patches_dir().iterdir()
            if entry.name.endswith(".diff") and entry.is_file()}


def diff_text(name: str) -> str:
    """The text of one shipped diff (e.g. ``"jang_tools-load_jangtq-guard.diff"``)."""
    diff = shipped_diffs().get(name)
    if diff is None:
        raise ScalefixError(f"no shipped diff named {name!r} (have: "
                            f"{', '.join(sorted(shipped_diffs())) or 'none'})",
                            file=patches_dir())
    return diff.read_text(encoding="utf-8")
