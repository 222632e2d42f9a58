"""``rewrite --rename-scales``: FP8 kept byte for byte, scales renamed, config adapted."""

import json

import numpy as np
import torch
from safetensors.torch import load_file

from scalefix.cli import main
from scalefix.formats import classify, open_bundle
from scalefix.formats.dequant import dequantize

from tests.support.fixtures import VARIANTS


def tensors(path):
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def decoded(path):
    result = classify(open_bundle(path))
    return {k: dequantize(q) for k, q in result.quantized.items()}


def test_compressed_tensors_block_to_weight_scale_inv(tmp_path, capsys):
    fx = VARIANTS["ct-block"](tmp_path / "src")
    dst = tmp_path / "dst"
    assert main(["rewrite", str(fx.path), "--out", str(dst), "--rename-scales",
                 "weight_scale_inv", "--quiet"]) == 0
    src_t, dst_t = tensors(fx.path), tensors(dst)
    for weight in fx.quantized:
        stem = weight[: -len(".weight")]
        assert torch.equal(src_t[weight].view(torch.uint8), dst_t[weight].view(torch.uint8))
        assert torch.equal(src_t[stem + ".weight_scale"].view(torch.int16),
                           dst_t[stem + ".weight_scale_inv"].view(torch.int16))
        assert stem + ".weight_scale" not in dst_t
    qc = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert qc == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                  "weight_block_size": [128, 128], "modules_to_not_convert": ["lm_head"]}
    report = classify(open_bundle(dst))
    assert {q.naming for q in report.quantized.values()} == {"weight_scale_inv"}
    before, after = decoded(fx.path), decoded(dst)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    capsys.readouterr()
    assert main(["rewrite", str(dst), "--rename-scales", "weight_scale_inv"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_fp8_to_weight_scale_gives_compressed_tensors_config(tmp_path):
    fx = VARIANTS["dsv3"](tmp_path / "src")
    dst = tmp_path / "dst"
    assert main(["rewrite", str(fx.path), "--out", str(dst), "--rename-scales", "weight_scale",
                 "--quiet"]) == 0
    qc = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    weights = qc["config_groups"]["group_0"]["weights"]
    assert weights["strategy"] == "block" and weights["block_structure"] == [128, 128]
    names = set(tensors(dst))
    assert "model.layers.0.mlp.down_proj.weight_scale" in names
    assert not any(n.endswith("_scale_inv") for n in names)
    before, after = decoded(fx.path), decoded(dst)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_channel_scales_cannot_become_weight_scale_inv(tmp_path, capsys):
    fx = VARIANTS["ct-channel"](tmp_path / "src")
    assert main(["rewrite", str(fx.path), "--out", str(tmp_path / "dst"), "--rename-scales",
                 "weight_scale_inv"]) == 2
    assert "is for block-scaled FP8" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()
