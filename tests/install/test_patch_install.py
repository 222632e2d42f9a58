"""``scalefix patch-install`` on a fake vMLX app tree (old upstream function, reproduced in
tests/old_jang), on the real jang 2.5.50 package, ``--hook`` in a venv, the refusals, and
the shipped diffs."""

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.support.paths import OLD_JANG, REPO

OLD = OLD_JANG / "jang_tools"
PATCHES = REPO / "patches"
SITE = "vMLX.app/Contents/Resources/python/lib/python3.11/site-packages"
POST_SANITIZE = {"group_size": 64, "bits": 8,
                 "model.layers.0.mlp.switch_mlp.gate_proj": {"group_size": 32, "bits": 4}}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "scalefix", "patch-install", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture
def app(tmp_path):
    site = tmp_path / SITE
    shutil.copytree(OLD, site / "jang_tools")
    target = site / "jang_tools" / "load_jangtq.py"
    os.chmod(target, 0o640)
    return tmp_path / "vMLX.app", target


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"mod_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bundle(tmp_path):
    root = tmp_path / "bundle"
    root.mkdir(exist_ok=True)
    keys = {f"layers.0.ffn.experts.{e}.w1.scales": "m.safetensors" for e in range(2)}
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": keys}))
    return root


def test_dry_run_apply_reapply_revert(app, tmp_path):
    root, target = app
    original = target.read_bytes()
    proc = cli(root, "--dry-run")
    assert proc.returncode == 0 and "would patch" in proc.stdout
    assert "+    # --- scalefix guard: begin" in proc.stdout and target.read_bytes() == original
    proc = cli(root)
    assert proc.returncode == 0 and ": patched (original kept as" in proc.stdout
    backup = target.with_name("load_jangtq.py.scalefix-orig")
    assert backup.read_bytes() == original
    assert stat.S_IMODE(backup.stat().st_mode) == stat.S_IMODE(target.stat().st_mode) == 0o640
    patched = load(target)
    config = {"quantization": dict(POST_SANITIZE)}
    stats = patched._patch_quant_config_inplace(str(bundle(tmp_path)), config)
    assert config == {"quantization": POST_SANITIZE} and stats["patched"] is False
    config = {"quantization": {"group_size": 64, "bits": 8}}
    assert patched._patch_quant_config_inplace(str(bundle(tmp_path)), config) == \
        {"patched": True, "overrides": 2}
    assert "model.layers.0.ffn.experts.1.w1" in config["quantization"]
    proc = cli(root)
    assert proc.returncode == 0 and ": already patched" in proc.stdout
    proc = cli(root, "--revert")
    assert proc.returncode == 0 and "reverted" in proc.stdout
    assert target.read_bytes() == original and not backup.exists()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_source_guard_and_runtime_patch_agree(app, tmp_path):
    root, target = app
    runtime = load(target)
    from scalefix.hooks import jang_quant_config
    jang_quant_config.apply(runtime)
    assert cli(root).returncode == 0
    on_disk = load(target)
    for quant in (dict(POST_SANITIZE), {"group_size": 64, "bits": 8}):
        a, b = {"quantization": dict(quant)}, {"quantization": dict(quant)}
        assert runtime._patch_quant_config_inplace(str(bundle(tmp_path)), a) == \
            on_disk._patch_quant_config_inplace(str(bundle(tmp_path)), b)
        assert a == b


def test_real_jang_has_nothing_to_patch():
    pytest.importorskip("jang_tools.load_jangtq")
    import jang_tools
    site = Path(jang_tools.__file__).parents[1]
    target = site / "jang_tools" / "load_jangtq.py"
    before = hashlib.sha256(target.read_bytes()).hexdigest()
    proc = cli(sys.executable, "--dry-run")  # dry: its FP8 reader would be patched for real
    assert proc.returncode == 0, proc.stderr
    assert f"{target}: nothing to patch (function _patch_quant_config_inplace not present: " \
           f"nothing to patch)" in proc.stdout
    assert f"{site / 'jang_tools' / 'fp8.py'}: would patch" in proc.stdout
    assert hashlib.sha256(target.read_bytes()).hexdigest() == before
    assert not target.with_name("load_jangtq.py.scalefix-orig").exists()


def test_refusals(app, tmp_path):
    root, target = app
    proc = cli(tmp_path / "missing.app")
    assert proc.returncode == 2 and "no such file or directory" in proc.stderr
    os.chmod(target, 0o444)
    proc = cli(root)
    assert proc.returncode == 2 and "read-only install" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    os.chmod(target, 0o640)
    assert cli(root).returncode == 0
    with open(target, "a") as fh:
        fh.write("# a local edit\n")
    proc = cli(root, "--revert")
    assert proc.returncode == 2 and "modified since scalefix patched it" in proc.stderr
    odd = tmp_path / "odd" / "jang_tools"
    odd.mkdir(parents=True)
    (odd / "load_jangtq.py").write_text("def _patch_quant_config_inplace(*args):\n    pass\n")
    proc = cli(tmp_path / "odd")
    assert proc.returncode == 2 and "does not take (model_path, model_config" in proc.stderr


def test_jang_diff_applies_to_the_fixture_and_equals_patch_install(app, tmp_path):
    root, target = app
    work = tmp_path / "git-apply"
    shutil.copytree(OLD, work / "jang_tools")
    diff = PATCHES / "jang_tools-load_jangtq-guard.diff"
    proc = subprocess.run(["git", "apply", "--check", str(diff)], cwd=work, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["git", "apply", str(diff)], cwd=work, check=True)
    assert cli(root).returncode == 0
    assert (work / "jang_tools" / "load_jangtq.py").read_bytes() == target.read_bytes()


@pytest.mark.slow
def test_hook_arms_a_venv_and_survives_uninstall(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(REPO)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "scalefix", "patch-install", str(py), "--hook"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "scalefix.pth" in proc.stdout, proc.stderr
    check = subprocess.run([str(py), "-c", "import sys; print('scalefix.auto' in sys.modules)"],
                           capture_output=True, text=True, env=env)
    assert check.stdout.strip() == "True"
    status = subprocess.run([str(env_dir / "bin" / "scalefix"), "status", "--no-arm", "--json"],
                            capture_output=True, text=True, env=env)
    assert {r["state"] for r in json.loads(status.stdout)} == {"armed"}
    subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", "scalefix"], check=True,
                   capture_output=True, env=env)
    after = subprocess.run([str(py), "-c", "print('started')"], capture_output=True, text=True,
                           env=env)
    assert after.returncode == 0 and after.stdout.strip() == "started" and after.stderr == ""
