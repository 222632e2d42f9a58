"""``jang_quant_config``: the guard against the old upstream function (reproduced in
tests/old_jang), and status against the real current ``jang`` package."""

import json
import os
import subprocess
import sys

import pytest

from tests.support.paths import OLD_JANG

POST_SANITIZE = {"group_size": 64, "bits": 8,
                 "model.layers.0.mlp.switch_mlp.gate_proj": {"group_size": 32, "bits": 4}}


def bundle(tmp_path):
    root = tmp_path / "bundle"
    root.mkdir()
    keys = {f"layers.0.ffn.experts.{e}.w1.scales": "model.safetensors" for e in range(2)}
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": keys}))
    return root


def call(tmp_path, config, prelude, **env):
    code = (prelude + "\nimport json, sys\nfrom jang_tools import load_jangtq as l\n"
            "cfg = json.loads(sys.argv[2])\nstats = l._patch_quant_config_inplace(sys.argv[1], cfg)\n"
            "import scalefix\nprint(json.dumps([cfg, stats, {s['name']: s for s in scalefix.status()}"
            "['jang_quant_config']]))")
    proc = subprocess.run([sys.executable, "-c", code, str(bundle(tmp_path)), json.dumps(config)],
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(OLD_JANG), **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_old_function_corrupts_post_sanitize_overrides(tmp_path):
    cfg, stats, _ = call(tmp_path, {"quantization": dict(POST_SANITIZE)}, "")
    assert "model.layers.0.mlp.switch_mlp.gate_proj" not in cfg["quantization"]
    assert "model.layers.0.ffn.experts.1.w1" in cfg["quantization"] and stats["patched"]


@pytest.mark.parametrize("order", ["import scalefix.auto", "import jang_tools.load_jangtq\n"
                                                           "import scalefix.auto"])
def test_guard_leaves_a_correct_config_untouched(tmp_path, order):
    cfg, stats, status = call(tmp_path, {"quantization": dict(POST_SANITIZE)}, order)
    assert cfg["quantization"] == POST_SANITIZE
    assert stats["patched"] is False and stats["per_module_overrides"] == {"quantization": 1}
    assert status["state"] == "applied"


def test_guard_keeps_the_original_work_without_overrides(tmp_path):
    cfg, stats, _ = call(tmp_path, {"quantization": {"group_size": 64, "bits": 8}},
                         "import scalefix.auto")
    assert stats == {"patched": True, "overrides": 2}
    assert cfg["quantization"]["model.layers.0.ffn.experts.0.w1"] == {"group_size": 32, "bits": 4}


def test_real_jang_has_nothing_to_patch():
    pytest.importorskip("jang_tools.load_jangtq")
    code = ("import scalefix.auto, json, scalefix\nimport jang_tools.load_jangtq as l\n"
            "print(json.dumps([hasattr(l, '_patch_quant_config_inplace'), "
            "{s['name']: s for s in scalefix.status()}['jang_quant_config']]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    present, status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not present and status["state"] == "skipped"
    assert status["reason"] == (f"_patch_quant_config_inplace not present in jang "
                                f"{status['version']}: nothing to patch")


@pytest.mark.peers
@pytest.mark.parametrize("armed", [False, True])
def test_real_load_jangtq_model_on_fp8(real_writer, tmp_path, armed):
    pytest.importorskip("jang_tools.load_jangtq")
    from scalefix.cli import main
    src = real_writer("llama-hf-fp8")
    offline = tmp_path / "bf16"
    assert main(["rewrite", str(src), "--out", str(offline), "--quiet"]) == 0
    code = ("import sys, numpy as np\n" + ("import scalefix.auto\n" if armed else "") +
            "import mlx.core as mx\nfrom jang_tools.load_jangtq import load_jangtq_model\n"
            "model = load_jangtq_model(sys.argv[1])[0]\n"
            "w = model.model.layers[0].self_attn.q_proj.weight\n"
            "ref = mx.load(sys.argv[2] + '/model.safetensors')['model.layers.0.self_attn.q_proj.weight']\n"
            "print(w.dtype, np.array_equal(np.array(w.view(mx.uint8)), np.array(ref.view(mx.uint8))))")
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(offline)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    dtype, same = proc.stdout.strip().splitlines()[-1].split()
    assert (dtype, same) == (("mlx.core.bfloat16", "True") if armed else ("mlx.core.uint8", "False"))
