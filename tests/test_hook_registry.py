"""The patch contract, in fresh interpreters: lazy arming, both import orders, wrap once,
exact revert, contained failures, kill switches, version gates."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("mlx.core")

STATUS = "import json, scalefix; print(json.dumps({s['name']: s for s in scalefix.status()}))"


def run(code: str, **env):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    *_, last = proc.stdout.strip().splitlines()
    return json.loads(last), proc


def test_import_scalefix_auto_imports_nothing_heavy():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import scalefix.auto"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if "|" in line}
    assert "scalefix" in imported and "wrapt" in imported
    assert not imported & {"numpy", "mlx", "mlx_lm", "torch", "vllm", "safetensors", "jang_tools"}


@pytest.mark.parametrize("order", ["arm-then-import", "import-then-arm"])
def test_both_import_orders_apply(order):
    imports = "import mlx.core as mx, mlx_lm.utils"
    code = ("import scalefix.auto; " + imports if order == "arm-then-import"
            else imports + "; import scalefix.auto")
    code += ("; assert getattr(mx.load, '__scalefix_patch__', False); "
             "assert getattr(mlx_lm.utils.load_config, '__scalefix_patch__', False); " + STATUS)
    status, _ = run(code)
    assert status["mlx_load"]["state"] == status["mlx_lm_config"]["state"] == "applied"
    assert status["mlx_load"]["version"]


def test_armed_is_not_applied():
    status, _ = run("import scalefix.auto; " + STATUS)
    assert status["mlx_load"]["state"] == "armed"


def test_applied_once_and_exact_revert():
    code = ("import mlx.core as mx, mlx_lm.utils as u, scalefix; orig = mx.load; "
            "orig_cfg = u.load_config; scalefix.patch_all(); scalefix.patch_all(); "
            "import scalefix.auto; "
            "assert mx.load.__wrapped__ is orig and u.load_config.__wrapped__ is orig_cfg; "
            "scalefix.unpatch_all(); assert mx.load is orig and u.load_config is orig_cfg; "
            + STATUS)
    status, _ = run(code)
    assert status["mlx_load"]["state"] == "reverted"


def test_a_hook_that_raises_leaves_the_target_working():
    code = ("import scalefix.hooks.mlx_load as m\n"
            "def boom(module):\n    module.load = None\n    raise RuntimeError('boom')\n"
            "m.apply = boom\n"
            "import scalefix.auto\nimport mlx.core as mx\n"
            "assert callable(mx.load) and not hasattr(mx.load, '__scalefix_patch__')\n"
            "mx.save_safetensors('/tmp/_sf_t.safetensors', {'a': mx.ones(2)})\n"
            "assert mx.load('/tmp/_sf_t.safetensors')['a'].tolist() == [1.0, 1.0]\n" + STATUS)
    status, _ = run(code)
    assert status["mlx_load"]["state"] == "failed"
    assert status["mlx_load"]["reason"] == "RuntimeError: boom"


def test_kill_switches():
    code = "import scalefix.auto, mlx.core as mx, mlx_lm.utils; " + STATUS
    status, _ = run(code, SCALEFIX_DISABLE="1")
    assert {s["state"] for s in status.values()} == {"disabled"}
    status, _ = run(code, SCALEFIX_DISABLE_PATCHES="mlx_load")
    assert status["mlx_load"]["state"] == "disabled"
    assert status["mlx_lm_config"]["state"] == "applied"


def test_version_outside_affected_range_is_skipped_with_reason():
    code = ("import scalefix.hooks.registry as r; r.installed_version = lambda d: '0.1.0'; "
            "import scalefix.auto, mlx.core as mx; "
            "assert not hasattr(mx.load, '__scalefix_patch__'); " + STATUS)
    status, _ = run(code)
    assert status["mlx_load"]["state"] == "skipped"
    assert status["mlx_load"]["reason"] == "mlx 0.1.0 is outside >=0.20"


def test_debug_goes_to_stderr():
    _, proc = run("import scalefix.auto, mlx.core; " + STATUS, SCALEFIX_DEBUG="1")
    assert "scalefix: mlx_load: applied" in proc.stderr


def test_status_cli():
    proc = subprocess.run([sys.executable, "-m", "scalefix", "status", "--json"],
                          capture_output=True, text=True)
    rows = json.loads(proc.stdout)
    assert {r["name"] for r in rows} == {"mlx_load", "mlx_lm_config", "jang_quant_config",
                                         "vllm_marlin"}
    assert all(r["state"] == "armed" for r in rows)
