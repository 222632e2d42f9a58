"""Writes a benchmark's figures into ``docs/benchmarks.md``, the only place they live.

Each script's figures sit between two markers of their own::

    <!-- figures: NAME (begin) -->
    ...
    <!-- figures: NAME (end) -->

``write_figures(NAME, text)`` replaces what lies between them with ``text`` under a line giving
the date and the machine, and leaves every other byte of the file as it was. A missing,
repeated or misordered marker is an error (``MarkerError``): figures are never appended
somewhere a reader would not look.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


class MarkerError(ValueError):
    pass


def markers(name: str) -> tuple[str, str]:
    return f"<!-- figures: {name} (begin) -->", f"<!-- figures: {name} (end) -->"


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the block between NAME's markers replaced by ``body`` (markers kept)."""
    begin, end = markers(name)
    for marker in (begin, end):
        count = text.count(marker)
        if count != 1:
            raise MarkerError(f"{marker!r} appears {count} times in the document, not once")
    start = text.index(begin) + len(begin)
    stop = text.index(end)
    if stop < start:
        raise MarkerError(f"{end!r} comes before {begin!r}")
    return text[:start] + "\n" + body.strip("\n") + "\n" + text[stop:]


def machine() -> str:
    """One line: cores, memory, architecture, Python, and the libraries that set the figures."""
    parts = [f"{os.cpu_count()} cores"]
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        parts.append(f"{pages / 2 ** 30:.0f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    parts += [platform.machine(), f"{platform.system()} {platform.release()}",
              f"Python {platform.python_version()}"]
    return ", ".join(parts)


def stamp(when: datetime.datetime | None = None, where: str | None = None) -> str:
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return f"Measured {when:%Y-%m-%d %H:%M} UTC on {where or machine()}."


def write_figures(name: str, body: str, *, doc: Path = DOC, command: str | None = None,
                  when: datetime.datetime | None = None, where: str | None = None) -> Path:
    """Put ``body`` (markdown) between NAME's markers in ``doc``, after the command that made
    it and the date and machine. Returns the document's path."""
    lead = f"`{command}`. " if command else ""
    text = doc.read_bytes().decode("utf-8")          # bytes: no newline translation
    new = replace_block(text, name, f"{lead}{stamp(when, where)}\n\n{body.strip()}\n")
    doc.write_bytes(new.encode("utf-8"))
    return doc


def add_argument(parser) -> None:
    """The ``--write-docs`` flag every figure-producing script takes."""
    parser.add_argument("--write-docs", action="store_true",
                        help="also replace this script's figures in docs/benchmarks.md "
                             "(between its `figures:` markers) with this run's tables")


def command_line(module: str, argv: list[str] | None) -> str:
    """How the figures were made: ``python -m benchmarks.<module> ARGS`` (--write-docs left out)."""
    import shlex
    import sys
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python -m", f"benchmarks.{module}",
                     *(shlex.quote(a) for a in args if a != "--write-docs")])
