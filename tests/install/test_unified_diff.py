"""The exact unified-diff applier patch-install uses instead of git / patch: checked against
``git apply`` on the same inputs (offsets, several hunks, a file without a final newline),
and its refusals (changed context, a second forward apply, files it does not create)."""

import shutil
import subprocess

import pytest

from scalefix.install.unified_diff import DiffFormatError, Mismatch, apply, parse

ORIGINAL = "".join(f"line {i}\n" for i in range(1, 41))


def edited(text: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[4] = "line 5 changed\n"
    lines.insert(20, "inserted\n")
    del lines[35]
    return "".join(lines)


def git_diff(tmp_path, old: str, new: str, name="pkg/mod.py") -> str:
    for side, text in (("a", old), ("b", new)):
        (tmp_path / side / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / side / name).write_text(text)
    proc = subprocess.run(["git", "diff", "--no-index", "--no-prefix", "a", "b"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    return "a header line, ignored\n\n" + proc.stdout


def git_apply(tmp_path, diff: str, text: str, *options) -> str:
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "pkg").mkdir(parents=True)
    (work / "pkg" / "mod.py").write_text(text)
    (tmp_path / "x.diff").write_text(diff)
    subprocess.run(["git", "apply", *options, str(tmp_path / "x.diff")], cwd=work,
                   check=True, capture_output=True)
    return (work / "pkg" / "mod.py").read_text()


pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git as the oracle")


def test_forward_reverse_and_offsets_match_git_apply(tmp_path):
    diff = git_diff(tmp_path, ORIGINAL, edited(ORIGINAL))
    (part,) = parse(diff)
    assert part.path == "pkg/mod.py"
    assert len(part.hunks) == 3
    assert apply(ORIGINAL, part) == edited(ORIGINAL) == git_apply(tmp_path, diff, ORIGINAL)
    assert apply(edited(ORIGINAL), part, reverse=True) == ORIGINAL
    shifted = "new first line\nanother\n" + ORIGINAL          # every hunk moved by 2 lines
    assert apply(shifted, part) == git_apply(tmp_path, diff, shifted)
    assert apply(shifted, part) == "new first line\nanother\n" + edited(ORIGINAL)


def test_refusals(tmp_path):
    diff = git_diff(tmp_path, ORIGINAL, edited(ORIGINAL))
    (part,) = parse(diff)
    with pytest.raises(Mismatch, match=r"hunk 1 of 3 \(line 2\) not found"):
        apply(ORIGINAL.replace("line 3\n", "line three\n"), part)
    with pytest.raises(Mismatch):
        apply(edited(ORIGINAL), part)                          # already applied
    with pytest.raises(Mismatch):
        apply(ORIGINAL, part, reverse=True)                    # nothing to undo
    new_file = git_diff(tmp_path / "n", "", "x\n").replace("--- a/pkg/mod.py", "--- /dev/null")
    with pytest.raises(DiffFormatError, match="creates, deletes or renames"):
        parse(new_file)
    with pytest.raises(DiffFormatError, match="no file"):
        parse("just text\n")


def test_no_newline_at_end_of_file(tmp_path):
    old, new = ORIGINAL + "last", ORIGINAL + "last changed"
    diff = git_diff(tmp_path, old, new)
    assert "\\ No newline at end of file" in diff
    (part,) = parse(diff)
    assert apply(old, part) == new == git_apply(tmp_path, diff, old)
    assert apply(new, part, reverse=True) == old
