"""The command line as users meet it: help, demo, exit codes, and a fresh install without
torch or MLX."""

import os
import subprocess
import sys
import venv

import pytest

from tests.support.fixtures import VARIANTS
from tests.support.paths import REPO



def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "scalefix", *args], capture_output=True,
                          text=True, **kw)


def test_help_teaches():
    proc = run("--help")
    assert proc.returncode == 0
    for word in ("inspect", "demo", "Exit codes"):
        assert word in proc.stdout
    proc = run("inspect", "--help")
    assert proc.returncode == 0 and "--check" in proc.stdout and "examples:" in proc.stdout


def test_no_command_is_usage_error():
    assert run().returncode == 2
    assert run("frobnicate").returncode == 2


def test_demo_shows_trap_and_diagnosis():
    proc = run("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "verdict: QUANTIZED" in out and "verdict: CONVERTED-WITHOUT-SCALES" in out
    assert "cross-shard pairs" in out and "fix: scalefix rewrite" in out
    assert "verdict: PASS" in out and "verdict: FAIL (12 failed" in out


def test_import_scalefix_formats_is_light():
    code = ("import sys, scalefix, scalefix.formats, scalefix.cli; "
            "heavy = [m for m in ('numpy', 'torch', 'mlx', 'safetensors') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out


@pytest.mark.slow
def test_fresh_venv_without_torch_or_mlx(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "-e", str(REPO)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch'), u.find_spec('mlx'))"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "None None", probe
    exe = env_dir / "bin" / "scalefix"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fx = VARIANTS["dsv4"](tmp_path / "dsv4")
    for args, code in ((["--help"], 0), (["inspect", str(fx.path)], 0),
                       (["inspect", str(fx.path), "--json"], 0), (["demo"], 0)):
        proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    assert "FP8 read without its scale" in proc.stdout


def test_readme_test_command_is_what_ci_runs():
    """CI runs the README's fresh-machine test command (the default tier), then the peer
    tier command of its Contributing section, both exactly as the README shows them."""
    readme = (REPO / "README.md").read_text()
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.startswith(("python3 ", ".venv/"))]
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:]]
    assert blocks[0].endswith("scalefix demo")
    assert ci[0] == blocks[1]
    contributing = readme.split("## Contributing", 1)[1]
    shown = [line.split("#", 1)[0].strip() for line in contributing.splitlines()]
    assert len(ci) == 2 and ci[1] in shown and ci[1].endswith("pytest -ra -m peers")
