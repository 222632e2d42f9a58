"""A tiny DeepSeek-V3 in block FP8, made from a BF16 one: mlx-lm's own FP8 path
(``weight_scale_inv``) and the name it misses (``weight_scale``)."""

import json

import torch
from safetensors.torch import load_file

from .checkpoint import save_checkpoint, shard_names

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
    """The BF16 tiny DeepSeek-V3 ``base`` (a real writer's) in 128x128 block FP8 with scales
    named ``<weight>_scale_inv`` or ``<weight>_scale`` (``naming``), two shards by layer,
    the ``CROSS`` scale in the other one."""
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
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                     "activation_scheme": "dynamic",
                                     "weight_block_size": [128, 128]}
    save_checkpoint(root, dict(zip(shard_names(2), shards)), config, metadata={"format": "pt"})
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (root / f).write_bytes((base / f).read_bytes())
    return root
