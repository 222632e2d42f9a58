"""Bad input: ``scalefix inspect`` exits 2 with one line naming the file (and the tensor where
there is one), never a traceback, never unpickles anything."""

import subprocess
import sys

import pytest

from tests.support.malformed import CASES, SENTINEL


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_2_with_one_clear_line(case, tmp_path):
    path, expected = CASES[case](tmp_path)
    proc = subprocess.run([sys.executable, "-m", "scalefix", "inspect", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("scalefix: error: ")
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in proc.stderr and SENTINEL not in proc.stdout + proc.stderr
