"""``rewrite`` and ``verify`` on integer-coded checkpoints (GPTQ with act-order,
compressed-tensors pack-quantized): every side tensor and the quantization config dropped,
the weight exact, ``inspect --check`` not "clean"."""

import json

import numpy as np
import pytest
import torch

from scalefix.cli import main

from tests.support.int_layouts import bf16_scale, gptq_tensors, oracle, save
from tests.support.packing import pack_bits


@pytest.mark.parametrize("kind", ["gptq", "pack"])
def test_rewrite_and_verify_drop_every_side_tensor(tmp_path, kind, capsys):
    rng = np.random.default_rng(6)
    if kind == "gptq":
        tensors, want = gptq_tensors(rng, 64, 256, 64, True)
        config = {"model_type": "llama", "quantization_config": {
            "quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": True}}
    else:
        codes = rng.integers(0, 16, (64, 96)).astype(np.uint8)
        scale = bf16_scale(rng, 64, 3)
        tensors = {"l.weight_packed": torch.from_numpy(pack_bits(codes, 4, True)),
                   "l.weight_scale": scale, "l.weight_shape": torch.tensor([64, 96])}
        want = oracle(codes, 8, scale.float().numpy(), np.arange(96) // 32)
        config = {"model_type": "llama", "quantization_config": {
            "quant_method": "compressed-tensors", "format": "pack-quantized"}}
    tensors["l.bias"] = torch.zeros(64, dtype=torch.bfloat16)
    root = save(tmp_path / "m", tensors, config)
    code, _ = main(["inspect", str(root), "--check"]), capsys.readouterr()
    assert code == 1  # a quantized checkpoint is not "clean"
    assert main(["rewrite", str(root), "--out", str(tmp_path / "o")]) == 0
    assert main(["verify", str(root), str(tmp_path / "o")]) == 0
    from safetensors import safe_open
    with safe_open(str(tmp_path / "o" / "model.safetensors"), "pt") as fh:
        assert set(fh.keys()) == {"l.weight", "l.bias"}
        assert torch.equal(fh.get_tensor("l.weight").view(torch.int16), want.view(torch.int16))
    assert "quantization_config" not in json.loads((tmp_path / "o" / "config.json").read_text())
