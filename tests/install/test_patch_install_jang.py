"""``scalefix patch-install APP`` on a copy of an app tree bundling jang 2.5.50: fp8.py and
convert.py get the FP8 fix (found by parsing), the app's own Python, with no scalefix, then
converts every FP8 fixture to the bytes of plain jang's conversion of its jang-native twin;
plan first, idempotent, ``--revert`` byte for byte, a file of another shape left alone."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scalefix.install import jang_fp8
from scalefix.install.patch_install import patch_install

from tests.support.jang_fp8_fixtures import (TRAPS, VARIANTS, build, convert_without_scalefix, differences,
                                venv_site)

from tests.support.paths import REPO

RELEASED = venv_site()
pytestmark = pytest.mark.skipif(not (RELEASED / "jang_tools" / "fp8.py").is_file(),
                                reason="jang is not installed here")


def app_tree(root: Path) -> Path:
    """A vMLX-like bundle: its own site-packages with jang_tools copied from the release."""
    site = root / "vMLX.app" / "Contents" / "Resources" / "python" / "site-packages"
    shutil.copytree(RELEASED / "jang_tools", site / "jang_tools",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


def digest(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def scalefix_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalefix", "patch-install", *args],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(app root, its site-packages, digests before, variant -> (src, twin's plain bytes))."""
    root = tmp_path_factory.mktemp("app")
    site = app_tree(root)
    before = digest(root / "vMLX.app")
    cases = {}
    for variant in VARIANTS:
        src, twin = build(variant, root / "models")
        cases[variant] = src, convert_without_scalefix(RELEASED, twin, root / "out" / variant,
                                                       root)
    return root / "vMLX.app", site, before, cases


def test_the_released_app_is_a_trap(app, tmp_path):
    root, site, before, cases = app
    src, want = cases["ct-block"]
    assert differences(convert_without_scalefix(site, src, tmp_path / "o", tmp_path), want)


def test_dry_run_plans_and_writes_nothing(app):
    root, _, before, _ = app
    proc = scalefix_cli(str(root), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "jang_tools/fp8.py: would patch" in proc.stdout
    assert "jang_tools/convert.py: would patch" in proc.stdout
    assert "+def find_fp8_scale(" in proc.stdout and "+def safe_open(" in proc.stdout
    assert digest(root) == before


def test_patched_app_converts_every_fixture_like_the_twin_then_reverts(app, tmp_path):
    root, site, before, cases = app
    proc = scalefix_cli(str(root))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": patched (original kept as") == 2
    again = scalefix_cli(str(root))
    assert again.stdout.count("already patched") == 2, again.stdout
    for variant in VARIANTS:
        src, want = cases[variant]
        got = convert_without_scalefix(site, src, tmp_path / variant, tmp_path)
        assert differences(got, want) == [], variant
    proc = scalefix_cli(str(root), "--revert")
    assert proc.returncode == 0 and proc.stdout.count("reverted") == 2, proc.stdout
    assert digest(root) == before


def test_traps_and_controls_are_what_the_fixtures_say(app, tmp_path):
    """Before patching: the traps differ from their twin, the controls do not."""
    root, site, before, cases = app
    for variant in VARIANTS:
        src, want = cases[variant]
        plain = differences(convert_without_scalefix(site, src, tmp_path / variant, tmp_path),
                            want)
        assert bool(plain) == (variant in TRAPS), variant


def test_a_file_of_another_shape_is_left_alone_and_reported(tmp_path):
    site = app_tree(tmp_path)
    fp8 = site / "jang_tools" / "fp8.py"
    fp8.write_text(fp8.read_text().replace("def load_fp8_tensor(\n    sf_path",
                                           "def load_fp8_tensor(\n    path"))
    before = digest(tmp_path)
    proc = scalefix_cli(str(tmp_path))
    assert proc.returncode == 2
    assert "fp8.py" in proc.stderr and "load_fp8_tensor" in proc.stderr
    assert "left alone" in proc.stderr
    assert digest(tmp_path) == before  # convert.py, recognised, is not written either


def test_a_convert_py_already_fixed_upstream_is_nothing_to_patch(tmp_path):
    site = app_tree(tmp_path)
    diffs = REPO / "patches"
    for diff in (jang_fp8.ANY_NAME_DIFF, jang_fp8.NAN_DIFF):
        subprocess.run(["git", "apply", str(diffs / diff)], cwd=site, check=True)
    outcomes, _ = patch_install(tmp_path, dry_run=True)
    states = {o.path.name: o.state for o in outcomes}
    assert states == {"load_jangtq.py": "nothing to patch", "fp8.py": "nothing to patch",
                      "convert.py": "nothing to patch"}


def test_the_block_is_the_upstream_diffs_code():
    """One scale index, not two: the functions appended to fp8.py are the ones the upstream
    diff adds, read from it."""
    text = (REPO / "patches" / jang_fp8.ANY_NAME_DIFF).read_text()
    added = [line[1:] for line in text.splitlines() if line.startswith("+")
             and not line.startswith("+++")]
    block = jang_fp8.index_functions().splitlines()
    assert "def find_fp8_scale(sf_path: Path | str, tensor_name: str) -> np.ndarray | None:" \
        in block
    assert all(line in added for line in block)
