"""DeepSeek-V3 through real mlx-lm: its sanitize already dequantizes ``weight_scale_inv``
(scalefix must not change a bit of that), and silently loads raw FP8 bytes when the scales
are named ``weight_scale`` (scalefix must fix it). One scale sits in the other shard."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scalefix.cli import main

from .mlx_logits import logits as mlx_logits, same_bits

pytestmark = pytest.mark.peers
pytest.importorskip("mlx_lm")

PROJ = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj",
        "up_proj", "down_proj")
CROSS = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
def quantize_blocks(w: torch.Tensor):
    """FP8 E4M3 codes and float32 multipliers per 128x128 block (torch)."""
    rows, cols = -(-w.shape[0] // 128), -(-w.shape[1] // 128)
    w32 = torch.nn.functional.pad(w.float(), (0, cols * 128 - w.shape[1], 0,
                                              rows * 128 - w.shape[0]))
    blocks = w32.reshape(rows, 128, cols, 128)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448.0
    q = (blocks / scale[:, None, :, None]).reshape(rows * 128, cols * 128)
    return q[: w.shape[0], : w.shape[1]].to(torch.float8_e4m3fn), scale


def fp8_dsv3(base, root, naming):
    tensors = load_file(str(base / "model.safetensors"))
    shards = ({}, {})
    for name, t in tensors.items():
        layer1 = ".layers.1." in name
        if name.endswith(".weight") and name.split(".")[-2] in PROJ:
            q, s = quantize_blocks(t)
            scale_name = name + ("_scale_inv" if naming == "weight_scale_inv" else "_scale")
            shards[layer1][name] = q
            shards[1 if name == CROSS else layer1][scale_name] = s
        else:
            shards[layer1][name] = t
    root.mkdir()
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file(shard, str(root / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                     "activation_scheme": "dynamic",
                                     "weight_block_size": [128, 128]}
    (root / "config.json").write_text(json.dumps(config))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (root / f).write_bytes((base / f).read_bytes())
    return root


def logits(path, out, prelude=""):
    proc, values = mlx_logits(path, out, prelude)
    assert proc.returncode == 0, proc.stderr
    return values


def same(a, b):
    return same_bits(a, b)


@pytest.fixture(scope="module")
def checkpoints(real_writer, tmp_path_factory):
    base = real_writer("tiny-dsv3-bf16")
    tmp = tmp_path_factory.mktemp("dsv3")
    return (fp8_dsv3(base, tmp / "inv", "weight_scale_inv"),
            fp8_dsv3(base, tmp / "plain", "weight_scale"), tmp)


def test_mlx_lm_own_path_is_unchanged(checkpoints, tmp_path):
    inv, _, _ = checkpoints
    without = logits(inv, tmp_path / "a.npy")
    with_scalefix = logits(inv, tmp_path / "b.npy", "import scalefix.auto")
    assert np.isfinite(without).all() and same(without, with_scalefix)


def test_weight_scale_naming_garbage_without_and_fixed_with(checkpoints, tmp_path):
    inv, plain, tmp = checkpoints
    reference = logits(inv, tmp_path / "ref.npy")  # mlx-lm's own dequantization
    garbage = logits(plain, tmp_path / "raw.npy")  # loads silently, raw FP8 bytes
    assert not np.allclose(garbage, reference, atol=1.0)
    fixed = logits(plain, tmp_path / "fixed.npy", "import scalefix.auto")
    assert same(fixed, reference)
    offline = tmp_path / "offline"
    assert main(["rewrite", str(plain), "--out", str(offline), "--quiet"]) == 0
    assert same(logits(offline, tmp_path / "off.npy"), reference)
