"""A tiny Llama whose linear layers are integer-coded (compressed-tensors pack-quantized
symmetric or with zero points, GPTQ v1, AWQ GEMM), built with the independent packers of
``packing``: for ``rewrite --to mlx`` and mlx-lm loads. Embeddings, norms and lm_head
stay BF16, as the writers leave them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import save_checkpoint, shard_names
from .packing import awq_pack, pack_bits
from .tiny_llama import CONFIG as FP8_CONFIG, write_tokenizer

CONFIG = {k: v for k, v in FP8_CONFIG.items() if k != "quantization_config"}
KINDS = ("ct-w4-g32", "ct-w8-channel", "ct-w4-zp", "gptq", "awq")


def _linears(n: int):
    h, inter = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    kv = CONFIG["num_key_value_heads"] * h // CONFIG["num_attention_heads"]
    p = f"model.layers.{n}"
    return [(f"{p}.self_attn.q_proj", h, h), (f"{p}.self_attn.k_proj", kv, h),
            (f"{p}.self_attn.v_proj", kv, h), (f"{p}.self_attn.o_proj", h, h),
            (f"{p}.mlp.gate_proj", inter, h), (f"{p}.mlp.up_proj", inter, h),
            (f"{p}.mlp.down_proj", h, inter)]


def int_module(kind: str, rng, name: str, out: int, cols: int) -> dict:
    """One linear ``name`` [out, cols] in ``kind``'s tensors: random codes, scales, zeros."""
    bits = 8 if kind == "ct-w8-channel" else 4
    group = cols if kind == "ct-w8-channel" else 32 if kind.startswith("ct") else 64
    groups = cols // group
    codes = rng.integers(0, 1 << bits, (out, cols)).astype(np.uint8)
    scale = rng.uniform(2e-3, 2e-2, (out, groups)).astype(np.float32)
    zero = rng.integers(0, 1 << bits, (out, groups)).astype(np.uint8)
    if kind.startswith("ct"):
        t = {f"{name}.weight_packed": torch.from_numpy(pack_bits(codes, bits, True)),
             f"{name}.weight_scale": torch.from_numpy(scale).bfloat16(),
             f"{name}.weight_shape": torch.tensor([out, cols])}
        if kind == "ct-w4-zp":
            t[f"{name}.weight_zero_point"] = torch.from_numpy(
                pack_bits(zero.T.copy(), bits, True).T.copy())
        return t
    f16 = torch.from_numpy(scale.T.copy()).half()
    if kind == "gptq":
        zero = np.maximum(zero, 1)                        # v1 stores z - 1
        return {f"{name}.qweight": torch.from_numpy(
                    np.ascontiguousarray(pack_bits(codes, 4, True).T)),
                f"{name}.qzeros": torch.from_numpy(pack_bits((zero - 1).T.copy(), 4, True)),
                f"{name}.scales": f16,
                f"{name}.g_idx": torch.from_numpy((np.arange(cols) // group).astype(np.int32))}
    return {f"{name}.qweight": torch.from_numpy(awq_pack(codes.T.copy())),
            f"{name}.qzeros": torch.from_numpy(awq_pack(zero.T.copy())), f"{name}.scales": f16}


QUANT_CONFIGS = {
    "ct-w4-g32": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                  "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                      "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
                      "group_size": 32}}}, "ignore": ["lm_head"]},
    "ct-w8-channel": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                      "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                          "num_bits": 8, "type": "int", "symmetric": True,
                          "strategy": "channel"}}}, "ignore": ["lm_head"]},
    "ct-w4-zp": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                 "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                     "num_bits": 4, "type": "int", "symmetric": False, "strategy": "group",
                     "group_size": 32}}}, "ignore": ["lm_head"]},
    "gptq": {"quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": False,
             "sym": False, "checkpoint_format": "gptq"},
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 64, "version": "gemm",
            "zero_point": True},
}


def tiny_int_llama(root: Path, kind: str, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    h = CONFIG["hidden_size"]
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for n in range(CONFIG["num_hidden_layers"]):
        t = {}
        for name, out, cols in _linears(n):
            t.update(int_module(kind, rng, name, out, cols))
        t[f"model.layers.{n}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[f"model.layers.{n}.post_attention_layernorm.weight"] = torch.ones(
            h, dtype=torch.bfloat16)
        shards.append(t)
    shards[-1]["model.embed_tokens.weight"] = (torch.randn(CONFIG["vocab_size"], h,
                                                           generator=gen) * 0.05).bfloat16()
    shards[-1]["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    shards[-1]["lm_head.weight"] = (torch.randn(CONFIG["vocab_size"], h, generator=gen)
                                    * 0.05).bfloat16()
    save_checkpoint(root, dict(zip(shard_names(len(shards)), shards)),
                    {**CONFIG, "quantization_config": QUANT_CONFIGS[kind]}, metadata={"format": "pt"})
    write_tokenizer(root)
    return root
