"""The upstream diffs for jang, proven on the released jang 2.5.50 without scalefix: the files
are the wheel's own (its RECORD hashes), each diff applies cleanly (``git apply``, alone and
together, either order), a check that fails on the release passes on the patched copy, and
the patched ``jang convert`` of every fixture equals plain jang's conversion of its
jang-native twin, bit for bit. The released package is never modified: each check copies it
and runs this venv's Python with ``-S`` and ``PYTHONPATH`` at the copy (scalefix not
importable there, asserted)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.jang_fp8_fixtures import (TRAPS, VARIANTS, build, convert_without_scalefix, differences,
                                venv_site, without_scalefix)

from tests.support.paths import REPO

PATCHES = REPO / "patches"
ANY_NAME = "jang-2.5.50-fp8-scale-any-name.diff"
NAN = "jang-2.5.50-fp8-e4m3-nan.diff"
RELEASED = venv_site()
pytestmark = pytest.mark.skipif(not (RELEASED / "jang-2.5.50.dist-info").is_dir(),
                                reason="jang 2.5.50 is not installed here")


def test_the_release_is_the_wheels_own():
    record = RELEASED / "jang-2.5.50.dist-info" / "RECORD"
    hashes = {row[0]: row[1] for row in csv.reader(record.read_text().splitlines()) if row}
    for name in ("jang_tools/convert.py", "jang_tools/fp8.py"):
        digest = base64.urlsafe_b64encode(hashlib.sha256((RELEASED / name).read_bytes())
                                          .digest()).rstrip(b"=").decode()
        assert hashes[name] == f"sha256={digest}", name


def copy_release(root: Path, *diffs: str) -> Path:
    site = root / "site"
    shutil.copytree(RELEASED / "jang_tools", site / "jang_tools",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for diff in diffs:
        proc = subprocess.run(["git", "apply", "--check", str(PATCHES / diff)], cwd=site,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{diff}: {proc.stderr}"
        subprocess.run(["git", "apply", str(PATCHES / diff)], cwd=site, check=True)
    return site


@pytest.mark.parametrize("diffs", [(ANY_NAME,), (NAN,), (ANY_NAME, NAN), (NAN, ANY_NAME)])
def test_applies_cleanly_to_the_release(diffs, tmp_path):
    site = copy_release(tmp_path, *diffs)
    for name in ("convert.py", "fp8.py"):
        compile((site / "jang_tools" / name).read_text(), name, "exec")


@pytest.mark.parametrize("diff", [ANY_NAME, NAN])
def test_each_header_says_the_bug_the_version_and_the_runtime_patch(diff):
    header = (PATCHES / diff).read_text().split("diff --git", 1)[0]
    for words in ("Bug:", "Fix:", "Applies to: jang 2.5.50", "jang_fp8", "patch-install"):
        assert words in header, (diff, words)
    assert diff in (PATCHES / "README.md").read_text()


DECODE = ("import json, sys, numpy as np\nimport jang_tools.fp8 as fp8\n"
          "v = fp8.fp8_e4m3_to_float32(np.array([0x7F, 0xFF, 0x7E, 0x38], dtype=np.uint8))\n"
          "print(json.dumps([None if x != x else float(x) for x in v]))\n")


@pytest.mark.parametrize("patched", [False, True], ids=["released", "patched"])
def test_nan_codes_decode_as_nan_only_when_patched(patched, tmp_path):
    site = copy_release(tmp_path, *([NAN] if patched else []))
    prefix, env = without_scalefix(site)
    proc = subprocess.run([*prefix, "-c", DECODE], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    values = json.loads(proc.stdout)
    assert values[2:] == [448.0, 1.0]
    assert values[:2] == ([None, None] if patched else [480.0, -480.0])


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """variant -> (source, released jang's conversion of its jang-native twin)."""
    root = tmp_path_factory.mktemp("twins")
    found = {}
    for variant in VARIANTS:
        src, twin = build(variant, root / "models")
        found[variant] = src, convert_without_scalefix(RELEASED, twin, root / variant, root)
    return found


@pytest.mark.parametrize("diffs", [(), (ANY_NAME,), (ANY_NAME, NAN)],
                         ids=["released", "any-name", "both"])
def test_patched_jang_convert_matches_the_twin_bit_for_bit(diffs, twins, tmp_path):
    """Released: the three traps differ from their twins, the controls do not. Patched: all
    five equal their twins (the controls unchanged from the release)."""
    site = copy_release(tmp_path, *diffs)
    for variant in VARIANTS:
        src, want = twins[variant]
        got = convert_without_scalefix(site, src, tmp_path / variant, tmp_path)
        wrong = differences(got, want)
        assert bool(wrong) == (not diffs and variant in TRAPS), (variant, wrong[:5])
