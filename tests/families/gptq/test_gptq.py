"""GPTQ v1 (scalefix/formats/schemes/gptq.py): decode against a torch oracle, the formula
builder (tests/support/int_families.py) against auto-round's QuantLinear, auto-round's real
GPTQ checkpoints (peer tier: tests/peers/artifacts.py), a side tensor in another shard,
auto-round's side config dropped; act-order GPTQ left as stored at load time (said once) and
BF16 in ``rewrite --to mlx``."""

import json

import numpy as np
import pytest
import torch

from scalefix.cli import main

from tests.support.int_checks import family_tests
from tests.support.int_layouts import decoded, gptq_tensors, save


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_v1(tmp_path, act_order):
    rng = np.random.default_rng(3)
    tensors, want = gptq_tensors(rng, 64, 256, 64, act_order)
    config = {"model_type": "llama", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": act_order,
        "sym": False, "checkpoint_format": "gptq"}}
    qw, got = decoded(save(tmp_path / "m", tensors, config), "l.qweight")
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert qw.scheme == "gptq-int4-group64" + ("-actorder" if act_order else "")
    assert qw.output_name == "l.weight"


def test_load_hook_says_once_that_integer_weights_are_left_as_stored(tmp_path):
    """No silent fallback: mx.load under scalefix.auto returns an act-order GPTQ file (no
    native MLX form) as stored (what plain MLX returns) and says so once on stderr;
    SCALEFIX_STRICT=1 raises."""
    import subprocess
    import sys
    pytest.importorskip("mlx.core")
    tensors, _ = gptq_tensors(np.random.default_rng(7), 64, 256, 64, True)
    root = save(tmp_path / "m", tensors, {"model_type": "llama", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": True}})
    code = ("import scalefix.auto, mlx.core as mx, scalefix, sys\n"
            f"p = {str(root / 'model.safetensors')!r}\n"
            "a = mx.load(p); b = mx.load(p)\n"
            "print(sorted(a), scalefix.status()[0]['files']['unfixed'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("] ")[1].strip() == "1"
    assert "'l.qweight'" in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if "gptq-int4-group64-actorder" in ln]
    assert len(lines) == 1 and "not decoded at load time" in lines[0]
    strict = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, "SCALEFIX_STRICT": "1"})
    assert strict.returncode != 0 and "UnfixedCheckpointError" in strict.stderr


def test_act_order_gptq_is_bf16(tmp_path, capsys):
    """``rewrite --to mlx``: act-order GPTQ has no native MLX form, it goes BF16 (and a config
    mlx-lm cannot build is one clear line, exit 2)."""
    pytest.importorskip("mlx_lm.utils")
    tensors, _ = gptq_tensors(np.random.default_rng(9), 64, 256, 64, True)
    src = save(tmp_path / "m", tensors, {"model_type": "no-such-model", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": True}})
    assert main(["rewrite", str(src), "--to", "mlx", "--out", str(tmp_path / "mlx")]) == 0
    out = capsys.readouterr().out
    assert "act-order" in out and "dequantized" in out
    # a config mlx-lm cannot build its model from: one clear line, exit 2
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["rewrite", str(src), "--to", "mlx", "--out", str(tmp_path / "mlx2")]) == 2
    assert "mlx-lm cannot build its 'llama' model" in capsys.readouterr().err


# ---------------------------------------------------------------- formula builder, real writers

# the checks every integer / NVFP4 family runs, on this family's kinds (int_checks.family_tests)
globals().update(family_tests("gptq", "formula", "cross", "real", "cross_shard"))


@pytest.mark.peers
def test_rewrite_drops_auto_round_quantization_config_json(real_writer, tmp_path):
    """auto-round writes its quantization config twice: config.json and a side file
    quantization_config.json (quant_method gptq). Like hf_quant_config.json, the side file
    describes tensors the BF16 output no longer has; copied, it tells the next tool the
    checkpoint is GPTQ. (Beyond the issue's list; the same reasoning as ModelOpt's file.)"""
    src = real_writer("llama-ar-gptq")
    assert json.loads((src / "quantization_config.json").read_text())["quant_method"] == "gptq"
    assert main(["rewrite", str(src), "--out", str(tmp_path / "bf16"), "--quiet"]) == 0
    assert not (tmp_path / "bf16" / "quantization_config.json").exists()


