"""The seed 002 shape in miniature: canada-quant/DeepSeek-V4-Flash-W4A16-FP8, a DeepSeek-V4
checkpoint in the published layout (no ``model.`` prefix) that llmcompressor's
``model_free_ptq`` quantized with a mixed recipe:

- routed experts: compressed-tensors W4A16, pack-quantized INT4 symmetric, group 128
  (``weight_packed`` I32 ``[out, in/8]``, codes q+8 low bits first; ``weight_scale`` BF16
  ``[out, in/128]``; ``weight_shape`` I64);
- attention and shared experts: FP8 E4M3 ``weight`` with a BF16 128x128 block
  ``weight_scale`` (float scales, not E8M0), named ``weight_scale`` as llmcompressor writes it.

Group 128, not 32: it is the W4A16 preset the artifact is named after, and here every expert
input width (hidden 256, intermediate 256) is two whole groups, so MLX's affine mode takes
group 128 as is and a group/row mix-up in the scales cannot hide (one group per row could).
Every FP8 weight has at least two scale blocks (one block would read as per-tensor), and
every FP8 input width is a multiple of 128: llmcompressor 0.14's ``model_free_ptq`` fails
to save FP8_BLOCK weights whose input width is not (non-contiguous tensor), so the real
shape never has them. ``wkv`` keeps a ragged output block (32 of 128 rows), as it would.

``quantization_config`` is what llmcompressor 0.14 / compressed-tensors 0.19 write for this
recipe (checked by running ``model_free_ptq`` with these two config groups): one
``pack-quantized`` int group, one ``float-quantized`` block group, ``format``
``mixed-precision``. The oracles are torch, independent of scalefix: ``(q - 8) * s`` and
``q * s`` in float32, rounded to BF16 once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import save_checkpoint
from .fixtures import (DSV4_TINY_CONFIG, Expected, Fixture, dsv4_layers, fp8_codes, fp8_oracle,
                       small_randn)
from .packing import pack_bits

GROUP = 128


def _weights(num_bits, type_, strategy, group_size=None, block_structure=None):
    return {"actorder": None, "block_structure": block_structure, "dynamic": False,
            "group_size": group_size, "num_bits": num_bits, "observer": None,
            "observer_kwargs": {}, "scale_dtype": None, "strategy": strategy,
            "symmetric": True, "type": type_, "zp_dtype": None}


QUANTIZATION_CONFIG = {
    "config_groups": {
        "group_0": {"format": "pack-quantized", "input_activations": None,
                    "output_activations": None,
                    "targets": [r"re:.*ffn\.experts\.\d+\.w[123]$"],
                    "weights": _weights(4, "int", "group", group_size=GROUP)},
        "group_1": {"format": "float-quantized",
                    "input_activations": {**_weights(8, "float", "group", group_size=128),
                                          "dynamic": True},
                    "output_activations": None,
                    "targets": [r"re:.*attn\.w[a-z_]+$", r"re:.*shared_experts\.w[123]$"],
                    "weights": _weights(8, "float", "block", block_structure=[128, 128])}},
    "format": "mixed-precision", "global_compression_ratio": None,
    "ignore": ["head", "re:.*embed$"], "kv_cache_scheme": None,
    "quant_method": "compressed-tensors", "quantization_status": "compressed",
    "transform_config": {}, "version": "0.19.0"}

CONFIG = {**DSV4_TINY_CONFIG, "hidden_size": 256, "num_attention_heads": 8,
          "q_lora_rank": 128, "o_lora_rank": 128, "moe_intermediate_size": 256,
          "quantization_config": QUANTIZATION_CONFIG}


def seed002_model(root: Path) -> Fixture:
    """Two shards split by layer (model_free_ptq keeps each scale with its weight)."""
    gen = torch.Generator().manual_seed(2)
    rng = np.random.default_rng(2)
    fx = Fixture(root)
    cfg = CONFIG
    h = cfg["hidden_size"]
    shards: list[dict[str, torch.Tensor]] = [{}, {}]
    small = small_randn(gen)

    def fp8(t, name, out, inn):
        q = fp8_codes((out, inn), gen=gen)
        sshape = (math.ceil(out / 128), math.ceil(inn / 128))
        s = torch.from_numpy(rng.uniform(2e-4, 1e-3, sshape).astype(np.float32)).bfloat16()
        t[name + ".weight"], t[name + ".weight_scale"] = q, s
        fx.quantized[name + ".weight"] = Expected("fp8-block", "weight_scale", [128, 128],
                                                  name + ".weight_scale", "BF16",
                                                  fp8_oracle(q, s, (128, 128)))

    def w4(t, name, out, inn):
        codes = rng.integers(0, 16, (out, inn)).astype(np.uint8)          # q + 8
        s = torch.from_numpy(rng.uniform(2e-3, 2e-2, (out, inn // GROUP))
                             .astype(np.float32)).bfloat16()
        t[name + ".weight_packed"] = torch.from_numpy(pack_bits(codes, 4, True))
        t[name + ".weight_scale"] = s
        t[name + ".weight_shape"] = torch.tensor([out, inn])
        q = torch.from_numpy(codes.astype(np.int32) - 8).to(torch.float32)
        oracle = (q * s.to(torch.float32).repeat_interleave(GROUP, dim=-1)).to(torch.bfloat16)
        fx.quantized[name + ".weight_packed"] = Expected(
            f"int4-group{GROUP}", "compressed-tensors", [1, GROUP], name + ".weight_scale",
            "BF16", oracle, output_name=name + ".weight")

    dsv4_layers(cfg, small, lambda n: shards[n % 2], fp8, w4)
    shards[0]["embed.weight"] = small(cfg["vocab_size"], h)
    shards[1]["head.weight"] = small(cfg["vocab_size"], h)
    shards[1]["norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    side = {w.scale for w in fx.quantized.values()} | {
        k[: -len("_packed")] + "_shape" for k in fx.quantized if k.endswith("_packed")}
    fx.plain += [k for t in shards for k in t if k not in fx.quantized and k not in side]
    save_checkpoint(root, {"model-00001-of-00002.safetensors": shards[0],
                           "model-00002-of-00002.safetensors": shards[1]}, cfg)
    return fx
