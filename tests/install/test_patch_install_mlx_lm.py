"""``scalefix patch-install APP --mlx-lm`` on a copy of an app tree that bundles the released
mlx_lm 0.32.2 (the peer venv's, copied into ``App.app/Contents/Resources/...``): dry run,
apply, "already patched", the app's own Python (no scalefix) loading FP8 Llamas exactly,
byte-for-byte revert, and the refusals."""

import subprocess
import sys

import pytest

from tests.support import mlx_lm_peer as peer_mod
from tests.support.mlx_lm_peer import DIFFS, logits, patched_copy, rename_scales, same_bits, \
    scalefix_rewrite, ct_config
from tests.support.tiny_llama import llama_tiny_fp8

pytestmark = [pytest.mark.peers, pytest.mark.slow]
pytest.importorskip("torch")

SITE = "App.app/Contents/Resources/python/lib/python3.11/site-packages"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "scalefix", "patch-install", *map(str, args),
                           "--mlx-lm"], capture_output=True, text=True)


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def touched_files():
    from scalefix.install.targets import TARGETS
    return list(TARGETS["mlx-lm"].file_patches)


@pytest.fixture(scope="module")
def peer():
    return peer_mod.peer()


@pytest.fixture
def app(peer, tmp_path):
    _, package = peer
    site = peer_mod.copy_package(package, tmp_path / SITE)
    return tmp_path / "App.app", site


@pytest.fixture(scope="module")
def llamas(peer, tmp_path_factory):
    """FP8 tiny Llamas (weight_scale_inv + fp8 config; weight_scale + compressed-tensors) and
    the logits of their scalefix BF16 rewrite through the released, unpatched mlx-lm."""
    python, package = peer
    tmp = tmp_path_factory.mktemp("llama")
    inv = tmp / "inv"
    inv.mkdir()
    llama_tiny_fp8(inv)
    ct = rename_scales(inv, tmp / "ct", "weight_scale", ct_config())
    ref = scalefix_rewrite(inv, tmp / "ref")
    out = logits(python, peer_mod.copy_package(package, tmp / "released"),
                 {"inv": inv, "ct": ct, "ref": ref}, tmp / "logits")
    assert "parameters not in model" in out["inv"]
    assert "unsupported compressed-tensors format" in out["ct"]
    return {"inv": inv, "ct": ct}, out["ref"]


def test_dry_run_apply_already_patched_app_python_revert(peer, app, llamas, tmp_path):
    python, package = peer
    root, site = app
    before = snapshot(site)
    files = touched_files()

    dry = cli(root, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count(": would patch (mlx_lm-0.32.2-") == len(files) == 7
    assert snapshot(site) == before
    shown = peer_mod.copy_package(package, tmp_path / "shown")  # the diff shown is the change
    (tmp_path / "shown.diff").write_text(dry.stdout)
    applied = subprocess.run(["git", "apply", str(tmp_path / "shown.diff")], cwd=shown,
                             capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr

    proc = cli(root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": patched (original kept as ") == len(files)
    by_git = patched_copy(package, tmp_path / "git", *DIFFS.values())
    for name in files:   # what `git apply` of the three shipped diffs gives, byte for byte
        assert (site / name).read_bytes() == (by_git / name).read_bytes(), name
        assert (shown / name).read_bytes() == (by_git / name).read_bytes(), name
        assert (site / (name + ".scalefix-orig")).read_bytes() == before[name]

    again = cli(root)
    assert again.returncode == 0 and again.stdout.count(": already patched") == len(files)

    checkpoints, reference = llamas
    out = logits(python, site, checkpoints, tmp_path / "app-logits")  # the app's own Python
    for name, values in out.items():
        assert same_bits(values, reference), (name, values)

    revert = cli(root, "--revert")
    assert revert.returncode == 0, revert.stderr
    assert revert.stdout.count(": reverted (original restored byte for byte)") == len(files)
    assert snapshot(site) == before                             # nothing left behind either


def test_refuses_a_file_that_does_not_match(app):
    root, site = app
    minimax = site / "mlx_lm" / "models" / "minimax.py"
    minimax.write_text(minimax.read_text().replace('if "weight_scale_inv" in k:',
                                                   'if k.endswith("weight_scale_inv"):'))
    version = site / "mlx_lm" / "_version.py"
    version.write_text(version.read_text().replace("0.32.2", "0.32.3"))
    before = snapshot(site)
    for args in ((), ("--dry-run",)):
        proc = cli(root, *args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1
        assert f"{minimax}: does not match mlx-lm 0.32.2; this is 0.32.3 " \
               f"(mlx_lm-0.32.2-fp8-weight-scale-name.diff: hunk 1 of 1" in proc.stderr
    assert snapshot(site) == before                 # no file patched, no backup written


def test_revert_refuses_an_edited_file_and_reverts_nothing(app):
    root, site = app
    before = snapshot(site)
    assert cli(root).returncode == 0
    patched = snapshot(site)
    utils = site / "mlx_lm" / "utils.py"
    with open(utils, "a") as fh:
        fh.write("# a local edit\n")
    proc = cli(root, "--revert")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert f"{utils}: modified since scalefix patched it" in proc.stderr
    after = snapshot(site)
    assert {k: v for k, v in after.items() if k != "mlx_lm/utils.py"} == \
        {k: v for k, v in patched.items() if k != "mlx_lm/utils.py"}
    utils.write_bytes(patched["mlx_lm/utils.py"])
    assert cli(root, "--revert").returncode == 0 and snapshot(site) == before


def test_nothing_to_patch_without_mlx_lm(tmp_path):
    (tmp_path / "empty.app").mkdir()
    proc = cli(tmp_path / "empty.app")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"no mlx_lm/ package below {tmp_path / 'empty.app'}: " \
                                  "nothing to patch"


def test_a_failed_write_puts_back_the_files_already_patched(app, monkeypatch):
    from scalefix.errors import ScalefixError
    from scalefix.install import patch_install as module

    root, site = app
    before = snapshot(site)
    real = module.py_compile.compile

    def compile_unless_convert(path, *args, **kwargs):  # the last of the seven files
        if path.endswith(".convert.py.scalefix-tmp"):
            raise OSError("disk full")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module.py_compile, "compile", compile_unless_convert)
    with pytest.raises(ScalefixError, match="could not patch .*disk full"):
        module.patch_install(root, package="mlx-lm")
    assert snapshot(site) == before
