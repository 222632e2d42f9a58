"""``vllm_marlin`` against vLLM 0.27.0's real code on CPU, in its own cached venv (it pins
torch and compressed-tensors versions our test venv cannot share). GPU-only steps are
stubbed, and the script says which."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.peers.venvs import peer_python
from tests.support.paths import PEER_SCRIPTS, REPO

pytestmark = pytest.mark.peers
SCRIPT = PEER_SCRIPTS / "vllm_marlin_layer.py"


@pytest.fixture(scope="module")
def vllm_python():
    try:
        return peer_python("vllm")
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"vLLM 0.27 venv unavailable: {exc}")
        pytest.skip(f"vLLM 0.27 venv unavailable: {str(exc).splitlines()[0]}")


def run(python, *args, **env):
    proc = subprocess.run([str(python), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_marlin_block_scale_lookup(vllm_python, real_writer):
    art = real_writer("llama-mfp-fp8-block")
    plain = run(vllm_python, SCRIPT, art)
    assert plain["kernel"] == "MarlinFP8ScaledMMLinearKernel"
    assert "weight_scale" in plain["params_before"]
    assert plain["ok"] is False and "weight_scale_inv" in plain["error"]
    armed = run(vllm_python, SCRIPT, art, "armed")
    assert armed["ok"] is True and armed["scale_reached_kernel"] is True
    assert armed["status"]["vllm_marlin"] == "applied"
    assert "weight_scale_inv" in armed["params_after"]


def test_fixed_versions_are_skipped(vllm_python):
    code = ("import scalefix.hooks.registry as r; r.installed_version = lambda d: '0.29.0'; "
            "import scalefix.auto, json, scalefix; "
            "import vllm.model_executor.kernels.linear.scaled_mm.marlin as m; "
            "print(json.dumps({s['name']: s for s in scalefix.status()}['vllm_marlin']))")
    status = run(vllm_python, "-c", code)
    assert status["state"] == "skipped"
    assert status["reason"] == "fixed upstream in vllm 0.29 (installed 0.29.0)"


def test_hook_order_and_revert_in_vllm(vllm_python):
    code = ("import vllm.model_executor.kernels.linear.scaled_mm.marlin as m; "
            "orig = m.MarlinFP8ScaledMMLinearKernel.__dict__['process_weights_after_loading']; "
            "import scalefix, scalefix.auto, json; scalefix.patch_all(); "
            "cur = m.MarlinFP8ScaledMMLinearKernel.__dict__['process_weights_after_loading']; "
            "once = cur.__wrapped__ is orig; scalefix.unpatch_all(); "
            "back = m.MarlinFP8ScaledMMLinearKernel.__dict__['process_weights_after_loading'] is orig; "
            "print(json.dumps([once, back]))")
    assert run(vllm_python, "-c", code) == [True, True]


def test_upstream_diff_applies_to_vllm_0_27(vllm_python, tmp_path):
    rel = Path("vllm/model_executor/kernels/linear/scaled_mm/marlin.py")
    site = run(vllm_python, "-c", "import json, sysconfig; "
               "print(json.dumps(sysconfig.get_paths()['purelib']))")
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_bytes((Path(site) / rel).read_bytes())
    diff = REPO / "patches" / "vllm-0.26-0.28-marlin-block-scale-name.diff"
    proc = subprocess.run(["git", "apply", str(diff)], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    patched = (tmp_path / rel).read_text()
    compile(patched, str(rel), "exec")
    assert 'layer._parameters.pop("weight_scale")' in patched


def test_a_failing_hook_leaves_vllm_working(vllm_python):
    code = ("import scalefix.hooks.vllm_marlin as p\n"
            "def boom(module):\n    raise RuntimeError('boom')\n"
            "p.apply = boom\nimport scalefix.auto, json, scalefix\n"
            "import vllm.model_executor.kernels.linear.scaled_mm.marlin as m\n"
            "k = m.MarlinFP8ScaledMMLinearKernel.__dict__['process_weights_after_loading']\n"
            "print(json.dumps([hasattr(k, '__scalefix_patch__'), "
            "{s['name']: s for s in scalefix.status()}['vllm_marlin']]))")
    ours, status = run(vllm_python, "-c", code)
    assert ours is False and status["state"] == "failed"
    assert status["reason"] == "RuntimeError: boom"
