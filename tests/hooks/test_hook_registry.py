"""The patch contract, in fresh interpreters: lazy arming, both import orders, wrap once,
exact revert, contained failures, kill switches, version gates."""

import json
import os
import subprocess
import sys

import pytest

from tests.support.paths import OLD_JANG

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
    assert "scalefix" in imported
    assert not imported & {"numpy", "mlx", "mlx_lm", "torch", "vllm", "safetensors", "jang_tools",
                           "wrapt"}  # wrapt arrives with the first target (import_watch)


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


HOOK_TARGETS = {  # patch -> (target import, attribute apply() replaces, call after import)
    "mlx_load": ("mlx.core", "load",
                 "mx = target; mx.save_safetensors('/tmp/_sf_t.safetensors', {'a': mx.ones(2)}); "
                 "assert target.load('/tmp/_sf_t.safetensors')['a'].tolist() == [1.0, 1.0]"),
    "mlx_lm_config": ("mlx_lm.utils", "load_config", "assert callable(target.load_config)"),
    "jang_quant_config": ("jang_tools.load_jangtq", "_patch_quant_config_inplace",
                          "assert target._patch_quant_config_inplace('.', {'quantization': {}})"),
}


@pytest.mark.parametrize("name", sorted(HOOK_TARGETS))
def test_a_hook_that_raises_leaves_the_target_working(name):
    target, attr, use = HOOK_TARGETS[name]
    code = (f"import importlib, scalefix.hooks.{name} as m\n"
            f"def boom(module):\n    setattr(module, {attr!r}, None)\n"
            f"    raise RuntimeError('boom')\n"
            "m.apply = boom\n"
            f"import scalefix.auto\ntarget = importlib.import_module({target!r})\n"
            f"assert not hasattr(getattr(target, {attr!r}), '__scalefix_patch__')\n"
            f"{use}\n" + STATUS)
    old_jang = str(OLD_JANG)
    status, _ = run(code, PYTHONPATH=old_jang)
    assert status[name]["state"] == "failed"
    assert status[name]["reason"] == "RuntimeError: boom"


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
    assert status["mlx_load"]["reason"] == "mlx 0.1.0 is outside >=0.21"


def test_debug_goes_to_stderr():
    _, proc = run("import scalefix.auto, mlx.core; " + STATUS, SCALEFIX_DEBUG="1")
    assert "scalefix: mlx_load: applied" in proc.stderr


def test_status_cli():
    proc = subprocess.run([sys.executable, "-m", "scalefix", "status", "--json"],
                          capture_output=True, text=True)
    rows = json.loads(proc.stdout)
    assert {r["name"] for r in rows} == {"mlx_load", "mlx_lm_config", "jang_quant_config",
                                         "jang_fp8", "vllm_marlin"}
    assert all(r["state"] == "armed" for r in rows)


@pytest.mark.parametrize("name", sorted(HOOK_TARGETS))
@pytest.mark.parametrize("order", ["arm-then-import", "import-then-arm"])
def test_each_hook_applies_once_in_both_orders_and_reverts_exactly(name, order):
    target, attr, _ = HOOK_TARGETS[name]
    imp = f"import importlib; target = importlib.import_module({target!r})"
    first, second = ("import scalefix.auto", imp) if order == "arm-then-import" else \
        (imp, "import scalefix.auto")
    code = (f"{first}\n{second}\nimport scalefix\n"
            f"current = getattr(target, {attr!r})\n"
            "assert getattr(current, '__scalefix_patch__', False)\n"
            "original = current.__wrapped__\n"
            "assert not getattr(original, '__scalefix_patch__', False)\n"
            "scalefix.patch_all(); scalefix.patch_all()\n"
            f"assert getattr(target, {attr!r}).__wrapped__ is original\n"
            f"scalefix.unpatch_all(); assert getattr(target, {attr!r}) is original\n" + STATUS)
    status, _ = run(code, PYTHONPATH=str(OLD_JANG))
    assert status[name]["state"] == "reverted"
