"""What ``scalefix patch-install`` can patch, one entry per upstream package.

A target finds its files below an install, says per file whether it is already patched, and
hands back the patched source; ``patch_install`` does the rest the same way for every target
(the plan for every file before any write, backup, compile check, atomic replace, record,
byte-for-byte revert).

- ``jang``: the guard in ``jang_tools/load_jangtq.py``, placed by parsing (``jang_guard``),
  and the FP8 scale fix appended to ``jang_tools/fp8.py`` and ``convert.py`` after parsing
  them (``jang_fp8``).
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
from . import jang_fp8, jang_guard, unified_diff
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


def _examined(path: Path, examine, source: str, unrecognised) -> Plan:
    """A parsing target's verdict as a Plan; a shape it does not know is left alone."""
    try:
        verdict = examine(source)
    except unrecognised as exc:
        raise ScalefixError(f"{exc}: left alone", file=path) from None
    except SyntaxError as exc:
        raise ScalefixError(f"does not parse ({exc.msg}): left alone", file=path) from None
    if verdict.state == "absent":
        return Plan("absent", detail=getattr(verdict, "detail", "")
                    or f"function {jang_guard.FUNCTION} not present: nothing to patch")
    return Plan(verdict.state, verdict.new_source)


class JangGuard:
    name = "jang"
    relative = Path("jang_tools") / "load_jangtq.py"
    labels = (str(relative),)

    def find(self, root: Path) -> list[tuple[Path, str]]:
        dirs = walk(root, lambda here, files: here.name == "jang_tools"
                    and "load_jangtq.py" in files
                    and not (here / "load_jangtq.py").is_symlink())
        return [(d / "load_jangtq.py", str(self.relative)) for d in dirs]

    def plan(self, path: Path, label: str, source: str) -> Plan:
        return _examined(path, jang_guard.examine, source, jang_guard.Unrecognised)

    def none_found(self, root: Path) -> str:
        return f"no {self.relative} below {root}: nothing to patch"


class JangFP8:
    """jang_tools' FP8 reader: fp8.py and convert.py, found together in one jang_tools/."""

    name = "jang"
    examiners = {"fp8.py": jang_fp8.examine_fp8, "convert.py": jang_fp8.examine_convert}
    labels = tuple(f"jang_tools/{f}" for f in examiners)

    def find(self, root: Path) -> list[tuple[Path, str]]:
        dirs = walk(root, lambda here, files: here.name == "jang_tools"
                    and all(f in files and not (here / f).is_symlink() for f in self.examiners))
        return [(d / f, f"jang_tools/{f}") for d in dirs for f in self.examiners]

    def plan(self, path: Path, label: str, source: str) -> Plan:
        examine = self.examiners[Path(label).name]
        return _examined(path, examine, source, jang_fp8.Unrecognised)

    def none_found(self, root: Path) -> str:
        return f"no jang_tools/fp8.py + convert.py below {root}: nothing to patch"


class Together:
    """Several targets of one package, patched (and reverted) in one run."""

    def __init__(self, *parts):
        self.parts = parts
        self.name = parts[0].name

    def find(self, root: Path) -> list[tuple[Path, str]]:
        return [found for part in self.parts for found in part.find(root)]

    def plan(self, path: Path, label: str, source: str) -> Plan:
        part = next(p for p in self.parts if label in p.labels)
        return part.plan(path, label, source)

    def none_found(self, root: Path) -> str:
        return "; ".join(part.none_found(root) for part in self.parts)


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
    "jang": Together(JangGuard(), JangFP8()),
    "mlx-lm": ShippedDiffs("mlx-lm", "mlx_lm", (
        "mlx_lm-0.32.2-fp8-weight-scale-name.diff",
        "mlx_lm-0.32.2-load-fp8-any-model.diff",
        "mlx_lm-0.32.2-convert-drop-fp8-quantization-config.diff",
    ), version="0.32.2"),
}
