"""What ``scalefix patch-install`` can patch, one entry per upstream package.

A target finds its files below an install, says per file whether it is already patched, and
hands back the patched source; ``patch_install`` does the rest the same way for every target
(the plan for every file before any write, backup, compile check, atomic replace, record,
byte-for-byte revert).

- ``jang``: the guard in ``jang_tools/load_jangtq.py``, placed by parsing (``jang_guard``).
- ``mlx-lm``: the shipped diffs ``patches/mlx_lm-0.32.2-*.diff``, applied exactly
  (``unified_diff``) to the ``mlx_lm/`` files they name; their ``tests/`` hunks are for
  upstream and are skipped (an installed package has no tests).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import ScalefixError
from . import jang_guard, unified_diff
from .shipped import diff_text


@dataclass(frozen=True)
class Plan:
    state: str                    # "unpatched" | "patched" | "absent"
    new_source: str | None = None
    detail: str = ""


def walk(root: Path, wanted) -> list[Path]:
    """Directories below ``root`` (itself included) for which ``wanted(dir, files)`` holds,
    without following links out of it."""
    found = []
    real_root = root.resolve()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
        if wanted(here, files) and (here.resolve() == real_root
                                    or real_root in here.resolve().parents):
            found.append(here)
    return sorted(found)


class JangGuard:
    name = "jang"
    relative = Path("jang_tools") / "load_jangtq.py"

    def find(self, root: Path) -> list[tuple[Path, str]]:
        dirs = walk(root, lambda here, files: here.name == "jang_tools"
                    and "load_jangtq.py" in files
                    and not (here / "load_jangtq.py").is_symlink())
        return [(d / "load_jangtq.py", str(self.relative)) for d in dirs]

    def plan(self, path: Path, label: str, source: str) -> Plan:
        try:
            verdict = jang_guard.examine(source)
        except jang_guard.Unrecognised as exc:
            raise ScalefixError(f"{exc}: left alone", file=path) from None
        except SyntaxError as exc:
            raise ScalefixError(f"does not parse ({exc.msg}): left alone", file=path) from None
        if verdict.state == "absent":
            return Plan("absent", detail=f"function {jang_guard.FUNCTION} not present: "
                                         "nothing to patch")
        return Plan(verdict.state, verdict.new_source)

    def none_found(self, root: Path) -> str:
        return f"no {self.relative} below {root}: nothing to patch"


class ShippedDiffs:
    """Shipped diffs for one package, applied to its files below an install."""

    def __init__(self, name: str, package: str, diffs: tuple[str, ...], version: str):
        self.name, self.package, self.diffs, self.version = name, package, diffs, version

    @cached_property
    def file_patches(self) -> dict[str, list[tuple[str, unified_diff.FilePatch]]]:
        """Package file -> [(diff name, its part for that file)], in registry order."""
        by_file: dict[str, list] = {}
        for diff in self.diffs:
            try:
                parts = unified_diff.parse(diff_text(diff))
            except unified_diff.DiffFormatError as exc:
                raise ScalefixError(f"shipped diff unreadable: {exc}", file=diff) from None
            for part in parts:
                if part.path.startswith(self.package + "/"):
                    by_file.setdefault(part.path, []).append((diff, part))
        return by_file

    def find(self, root: Path) -> list[tuple[Path, str]]:
        packages = walk(root, lambda here, files: here.name == self.package
                        and "__init__.py" in files)
        return [(package.parent / relative, relative)
                for package in packages for relative in self.file_patches]

    def plan(self, path: Path, label: str, source: str) -> Plan:
        new, applied = source, []
        for diff, part in self.file_patches[label]:
            try:
                unified_diff.apply(new, part, reverse=True)
                continue                   # its changes are there already
            except unified_diff.Mismatch:
                pass
            try:
                new = unified_diff.apply(new, part)
            except unified_diff.Mismatch as exc:
                raise ScalefixError(
                    f"does not match {self.name} {self.version}"
                    f"{self._found_version(path)} ({diff}: {exc}): left alone",
                    file=path) from None
            applied.append(diff)
        if not applied:
            return Plan("patched")
        return Plan("unpatched", new, detail=", ".join(applied))

    def _found_version(self, path: Path) -> str:
        package = next(p for p in path.parents if p.name == self.package)
        try:
            text = (package / "_version.py").read_text(encoding="utf-8")
        except OSError:
            return ""
        match = re.search(r"""__version__\s*=\s*["']([^"']+)""", text)
        return f"; this is {match[1]}" if match and match[1] != self.version else ""

    def none_found(self, root: Path) -> str:
        return f"no {self.package}/ package below {root}: nothing to patch"


TARGETS = {
    "jang": JangGuard(),
    "mlx-lm": ShippedDiffs("mlx-lm", "mlx_lm", (
        "mlx_lm-0.32.2-fp8-weight-scale-name.diff",
        "mlx_lm-0.32.2-load-fp8-any-model.diff",
        "mlx_lm-0.32.2-convert-drop-fp8-quantization-config.diff",
    ), version="0.32.2"),
}
