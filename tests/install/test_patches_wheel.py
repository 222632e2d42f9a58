"""The top-level patches/ ships in the wheel, and an installed (non-editable) scalefix finds
it through ``scalefix.install.shipped.diff_text``, the lookup patch-install uses. The wheel
is built from a clean copy of the tree (the files git tracks or would track), so a stale
build/ cannot hide a missing mapping; every ``patches/*.diff`` is compared, so a new diff is
covered as it lands."""

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from scalefix.install import shipped

from tests.support.paths import REPO

DIFFS = {p.name: p.read_bytes() for p in (REPO / "patches").glob("*.diff")}


def _clean_copy(dst: Path) -> Path:
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for rel in filter(None, listing.stdout.decode().split("\0")):
        src = REPO / rel
        if src.is_file():  # a tracked file deleted in the work tree is not in the copy
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    tree = _clean_copy(tmp_path_factory.mktemp("tree"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--no-index", "-q", "-w", str(out),
                           str(tree)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (built,) = out.glob("scalefix-*.whl")
    return built


def test_the_tree_has_the_diffs():
    assert not (REPO / "scalefix" / "patches").exists()
    assert {"jang_tools-load_jangtq-guard.diff",
            "vllm-0.26-0.28-marlin-block-scale-name.diff"} <= set(DIFFS)


def test_wheel_holds_every_diff_and_every_module(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        shipped_diffs = {n.removeprefix("scalefix/patches/"): zf.read(n) for n in names
                         if n.startswith("scalefix/patches/") and n.endswith(".diff")}
    assert shipped_diffs == DIFFS
    assert "scalefix/patches/README.md" in names
    assert not any(n.startswith("patches/") for n in names)  # nothing top-level in site-packages
    # pyproject lists the packages by hand (the patches mapping needs it): none forgotten
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "scalefix").rglob("*.py")}
    assert modules and modules <= names, sorted(modules - names)


def test_source_checkout_finds_the_top_level_folder():
    # this interpreter imports scalefix from the work tree (editable install or PYTHONPATH)
    assert Path(str(shipped.patches_dir())).resolve() == (REPO / "patches").resolve()
    assert {n: d.read_bytes() for n, d in shipped.shipped_diffs().items()} == DIFFS


def test_installed_wheel_finds_its_own_diffs(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                          "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True,
                         text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # diff_text is what patch-install's targets read the diffs with
    code = ("import json, scalefix.install.shipped as s; "
            "print(json.dumps({'dir': str(s.patches_dir()), 'file': s.__file__, "
            "'diffs': {n: s.diff_text(n) for n in s.shipped_diffs()}}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert Path(found["file"]).is_relative_to(env_dir)  # the installed copy, not the tree
    assert Path(found["dir"]).is_relative_to(env_dir) and Path(found["dir"]).name == "patches"
    assert {n: t.encode() for n, t in found["diffs"].items()} == DIFFS


def test_unknown_diff_is_one_clear_error():
    from scalefix.errors import ScalefixError
    with pytest.raises(ScalefixError, match="no shipped diff named 'nope.diff'"):
        shipped.diff_text("nope.diff")
