"""benchmarks/report.py: a script's figures replace exactly its marked block of
docs/benchmarks.md; every other byte stays; a missing marker is an error."""

import datetime
import re

import pytest

from benchmarks import report

DOC = ("# Benchmarks\n\nintro, with trailing spaces   \r\n"
       "<!-- figures: a.py (begin) -->\nold a\n<!-- figures: a.py (end) -->\n"
       "between\n\n"
       "<!-- figures: b.py (begin) -->\nold b\n| x |\n<!-- figures: b.py (end) -->\ntail")


def test_replacing_a_block_leaves_the_rest_byte_for_byte(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(DOC.encode())
    when = datetime.datetime(2026, 12, 4, 19, 30, tzinfo=datetime.timezone.utc)
    report.write_figures("b.py", "| new |\n|---|\n", doc=doc, command="python -m benchmarks.b",
                         when=when, where="2 cores")
    got = doc.read_bytes().decode()
    begin, end = report.markers("b.py")
    head, rest = got.split(begin)
    block, tail = rest.split(end)
    assert head == DOC.split(begin)[0] and tail == DOC.split(end)[1]
    assert block == ("\n`python -m benchmarks.b`. Measured 2026-12-04 19:30 UTC on 2 cores.\n"
                     "\n| new |\n|---|\n")
    again = report.replace_block(got, "b.py", "| newer |")
    assert again.split(begin)[0] == head and again.split(end)[1] == tail


def test_a_missing_or_repeated_marker_is_an_error(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(DOC.encode())
    with pytest.raises(report.MarkerError, match="c.py"):
        report.write_figures("c.py", "x", doc=doc)
    with pytest.raises(report.MarkerError, match="end"):
        report.replace_block(DOC.replace("<!-- figures: a.py (end) -->", ""), "a.py", "x")
    with pytest.raises(report.MarkerError, match="2 times"):
        report.replace_block(DOC + "\n<!-- figures: a.py (begin) -->", "a.py", "x")
    with pytest.raises(report.MarkerError, match="before"):
        report.replace_block("<!-- figures: a.py (end) -->\n<!-- figures: a.py (begin) -->",
                             "a.py", "x")
    assert doc.read_bytes() == DOC.encode()


def _writers() -> set[str]:
    """The block names the scripts pass to ``report.write_figures``, read from their source."""
    found = set()
    for script in sorted(report.DOC.parent.parent.joinpath("benchmarks").glob("*.py")):
        found |= set(re.findall(r'write_figures\(\s*"([^"]+)"', script.read_text()))
    return found


def test_every_script_that_writes_figures_has_its_markers_in_the_docs():
    text = report.DOC.read_text(encoding="utf-8")
    writers = _writers()
    assert {"run.py", "mlx_floor.py", "runtime_memory.py", "many_shards.py", "formats.py",
            "hooked_load"} <= writers
    for name in writers:
        report.replace_block(text, name, "x")


def test_every_figures_block_in_the_docs_is_written_by_a_script():
    """Figures are regenerated, never edited by hand: a marked block no script writes would
    be hand-kept numbers dressed as a script's output."""
    text = report.DOC.read_text(encoding="utf-8")
    marked = set(re.findall(r"<!-- figures: (.+?) \(begin\) -->", text))
    assert marked == _writers()
