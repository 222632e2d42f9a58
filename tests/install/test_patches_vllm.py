"""patches/vllm-0.26-0.28-marlin-block-scale-name.diff on every vLLM release it names, each
from that release's wheel in a peer venv, without scalefix importable: the diff applies
(``git apply --check``), the patched file compiles, and vLLM's Marlin path on CPU
(peers/scripts/vllm_marlin_layer.py, GPU-only steps stubbed) fails with the released
marlin.py and runs with the patched one. Both copies are served in place of the installed
module by peers/scripts/overlay_run.py, so the only difference between the two runs is the
diff and the cached venvs are never modified.

Cost: one peer venv per release, about 5 GB and 1.5 to 3 minutes to build the first time
(0.26.0 pins torch 2.11.0, which exists only as PyPI's CUDA build: a larger venv)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.peers.venvs import peer_python
from tests.support.paths import PEER_SCRIPTS, REPO

pytestmark = [pytest.mark.peers, pytest.mark.slow]
SCRIPTS = PEER_SCRIPTS
DIFF = REPO / "patches" / "vllm-0.26-0.28-marlin-block-scale-name.diff"
REL = Path("vllm/model_executor/kernels/linear/scaled_mm/marlin.py")
MODULE = "vllm.model_executor.kernels.linear.scaled_mm.marlin"
# release -> peer venv (tests/peers/venvs.py PEERS) holding exactly that wheel
RELEASES = {"0.26.0": "vllm-0.26", "0.27.0": "vllm", "0.28.0": "vllm-0.28"}


def _env():
    """Without the source tree on the path: the patched upstream must work on its own."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module", params=sorted(RELEASES))
def release(request):
    version = request.param
    try:
        return version, peer_python(RELEASES[version])
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"vLLM {version} venv unavailable: {exc}")
        pytest.skip(f"vLLM {version} venv unavailable: {str(exc).splitlines()[0]}")


@pytest.fixture(scope="module")
def marlin_copies(release, tmp_path_factory):
    """(released copy, patched copy, git apply --check result) of that release's marlin.py."""
    version, python = release
    work = tmp_path_factory.mktemp(f"marlin-{version}")
    proc = subprocess.run([str(python), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"], capture_output=True,
                          text=True, cwd=work, env=_env(), check=True)
    installed = Path(proc.stdout.strip()) / REL
    copies = {}
    for name in ("released", "patched"):
        (work / name / REL).parent.mkdir(parents=True)
        shutil.copyfile(installed, work / name / REL)
        copies[name] = work / name / REL
    check = subprocess.run(["git", "apply", "--check", str(DIFF)], cwd=work / "patched",
                           capture_output=True, text=True)
    if check.returncode == 0:
        subprocess.run(["git", "apply", str(DIFF)], cwd=work / "patched", check=True)
    return copies["released"], copies["patched"], check


def run_layer(python, marlin_file: Path, artifact: Path, cwd: Path) -> tuple[dict, dict]:
    proc = subprocess.run([str(python), str(SCRIPTS / "overlay_run.py"),
                           f"{MODULE}={marlin_file}", "vllm",
                           str(SCRIPTS / "vllm_marlin_layer.py"), str(artifact)],
                          capture_output=True, text=True, cwd=cwd, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    layer, overlay = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    return layer, overlay


def test_header_names_the_releases_tested_here():
    header = DIFF.read_text().split("\n--- a/", 1)[0]
    assert all(version in header for version in RELEASES), header


def test_diff_applies_and_compiles(release, marlin_copies):
    released, patched, check = marlin_copies
    assert check.returncode == 0, check.stderr
    assert patched.read_bytes() != released.read_bytes()
    compile(patched.read_text(), str(patched), "exec")


def test_patched_marlin_path_runs_without_scalefix(release, marlin_copies, real_writer,
                                                   tmp_path):
    version, python = release
    released, patched, check = marlin_copies
    assert check.returncode == 0, check.stderr
    artifact = real_writer("llama-mfp-fp8-block")
    before, where = run_layer(python, released, artifact, tmp_path)
    assert where == {"module_file": str(released), "version": version,
                     "scalefix_importable": False}
    assert before["kernel"] == "MarlinFP8ScaledMMLinearKernel" and not before["armed"]
    assert "weight_scale" in before["params_before"]
    assert before["ok"] is False and "weight_scale_inv" in before["error"]
    after, where = run_layer(python, patched, artifact, tmp_path)
    assert where == {"module_file": str(patched), "version": version,
                     "scalefix_importable": False}
    assert after["ok"] is True and after["scale_reached_kernel"] is True
    assert "weight_scale_inv" in after["params_after"]
