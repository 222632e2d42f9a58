"""Read a unified diff and apply it exactly, forwards or backwards: how ``scalefix
patch-install`` applies the shipped diffs in ``patches/`` to an installed package on a
machine that may have neither git nor patch.

Exact by design: every context and removed line must be in the file as written (no fuzz, no
whitespace leniency). A hunk may sit at another line than its header says (the nearest exact
match wins, searching after the previous hunk, as ``git apply`` does); anywhere else it is a
``Mismatch``. Text before the first ``---`` line (a diff's header) is ignored. Creating,
deleting or renaming files is not supported: the shipped diffs only edit files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class Mismatch(ValueError):
    """The diff's lines are not in the file (another version, or edited)."""


class DiffFormatError(ValueError):
    """Not a unified diff this reader understands."""


@dataclass(frozen=True)
class Hunk:
    old_start: int
    new_start: int
    old: tuple[str, ...]   # context and removed lines, line endings kept
    new: tuple[str, ...]   # context and added lines


@dataclass(frozen=True)
class FilePatch:
    path: str              # path inside the tree, ``a/`` / ``b/`` stripped (``mlx_lm/utils.py``)
    hunks: tuple[Hunk, ...]


def parse(text: str) -> list[FilePatch]:
    lines = text.splitlines(keepends=True)
    patches: list[FilePatch] = []
    i = 0
    while i < len(lines):
        if not (lines[i].startswith("--- ") and i + 1 < len(lines)
                and lines[i + 1].startswith("+++ ")):
            i += 1
            continue
        old_path, new_path = _path(lines[i]), _path(lines[i + 1])
        if old_path != new_path:
            raise DiffFormatError(f"creates, deletes or renames a file ({old_path} -> "
                                  f"{new_path}): not supported")
        i += 2
        hunks = []
        while i < len(lines) and lines[i].startswith("@@"):
            hunk, i = _hunk(lines, i)
            hunks.append(hunk)
        if not hunks:
            raise DiffFormatError(f"{new_path}: no hunks")
        patches.append(FilePatch(new_path, tuple(hunks)))
    if not patches:
        raise DiffFormatError("no file in this diff")
    return patches


def _path(line: str) -> str:
    name = line[4:].rstrip("\r\n").split("\t")[0]
    if name == "/dev/null":
        return name
    return name[2:] if name[:2] in ("a/", "b/") else name


def _hunk(lines: list[str], i: int) -> tuple[Hunk, int]:
    match = _HUNK.match(lines[i])
    if not match:
        raise DiffFormatError(f"bad hunk header: {lines[i].strip()}")
    old_start, old_count, new_start, new_count = (
        int(match[1]), int(match[2] or 1), int(match[3]), int(match[4] or 1))
    old: list[str] = []
    new: list[str] = []
    i += 1
    while len(old) < old_count or len(new) < new_count:
        if i >= len(lines):
            raise DiffFormatError(f"hunk at line {old_start} ends early")
        line = lines[i]
        tag, body = line[:1], line[1:]
        if line in ("\n", "\r\n"):         # an empty context line whose space was stripped
            tag, body = " ", line
        if tag == " ":
            old.append(body)
            new.append(body)
        elif tag == "-":
            old.append(body)
        elif tag == "+":
            new.append(body)
        elif tag == "\\":                  # "\ No newline at end of file"
            _strip_last_newline(old, new, lines[i - 1][:1])
        else:
            raise DiffFormatError(f"hunk at line {old_start}: unexpected line {line!r}")
        i += 1
    if i < len(lines) and lines[i].startswith("\\"):
        _strip_last_newline(old, new, lines[i - 1][:1])
        i += 1
    return Hunk(old_start, new_start, tuple(old), tuple(new)), i


def _strip_last_newline(old: list[str], new: list[str], tag: str) -> None:
    for side, tags in ((old, " -"), (new, " +")):
        if tag in tags and side:
            side[-1] = side[-1].rstrip("\r\n")


def apply(source: str, patch: FilePatch, *, reverse: bool = False) -> str:
    """``source`` with ``patch`` applied (undone when ``reverse``), or ``Mismatch``."""
    lines = source.splitlines(keepends=True)
    delta, floor = 0, 0
    for number, hunk in enumerate(patch.hunks, 1):
        before, after = (hunk.new, hunk.old) if reverse else (hunk.old, hunk.new)
        start = (hunk.new_start if reverse else hunk.old_start) - (1 if before else 0)
        at = _find(lines, before, start + delta, floor)
        if at is None:
            raise Mismatch(f"hunk {number} of {len(patch.hunks)} (line {start + 1}) not found")
        lines[at:at + len(before)] = after
        delta += len(after) - len(before)
        floor = at + len(after)
    return "".join(lines)


def _find(lines: list[str], block: tuple[str, ...], expected: int, floor: int) -> int | None:
    """The start nearest ``expected`` (not before ``floor``) where ``block`` occurs."""
    size, last = len(block), len(lines) - len(block)
    for distance in range(max(expected - floor, last - expected, 0) + 1):
        for at in (expected - distance, expected + distance):
            if floor <= at <= last and tuple(lines[at:at + size]) == block:
                return at
    return None
