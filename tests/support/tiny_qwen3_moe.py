"""A tiny Qwen3-MoE (mlx-lm ``qwen3_moe``: per-expert weights, stacked by its sanitize into
``QuantizedSwitchLinear``) with every linear quantized: NVFP4 in both flavours, ModelOpt
(``weight_scale_2`` multiplies the E4M3 block scales; ``hf_quant_config.json`` beside) and
compressed-tensors (``weight_global_scale`` divides them) (``tiny_nvfp4_moe``), or integer
codes in any ``tiny_int_llama`` kind (``tiny_int_moe``). The router and lm_head stay BF16."""

from __future__ import annotations

from pathlib import Path

import torch

import numpy as np

from .checkpoint import save_checkpoint
from .tiny_int_llama import QUANT_CONFIGS, int_module
from .tiny_llama import write_tokenizer

MODELOPT_NVFP4 = {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                  "exclude_modules": ["lm_head", "*mlp.gate"]}
CT_NVFP4 = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
            "quantization_status": "compressed", "ignore": ["lm_head", "re:.*mlp.gate$"],
            "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                          "output_activations": None,
                                          "weights": {"num_bits": 4, "type": "float",
                                                      "strategy": "tensor_group",
                                                      "group_size": 16, "symmetric": True,
                                                      "dynamic": False}}}}


def qwen3_moe_config(hidden: int = 64, moe: int = 64, experts: int = 4, layers: int = 2) -> dict:
    return {"model_type": "qwen3_moe", "hidden_size": hidden, "num_hidden_layers": layers,
            "intermediate_size": 2 * moe, "num_attention_heads": 2, "num_key_value_heads": 1,
            "head_dim": hidden // 2, "num_experts": experts, "num_experts_per_tok": 2,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "moe_intermediate_size": moe,
            "rms_norm_eps": 1e-6, "vocab_size": 64, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "max_position_embeddings": 128,
            "norm_topk_prob": True, "torch_dtype": "bfloat16"}


def nvfp4_linear(gen, out: int, cols: int, flavour: str, prefix: str) -> dict:
    """One NVFP4 linear ``prefix`` [out, cols]: random codes, E4M3 block scales, a global
    scale from a random amax, in ``flavour`` "modelopt" or "compressed-tensors"."""
    codes = torch.randint(0, 16, (out, cols), dtype=torch.uint8, generator=gen)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)
    scales = torch.randint(0x08, 0x7E, (out, cols // 16), dtype=torch.uint8,
                           generator=gen).view(torch.float8_e4m3fn)
    amax = float(torch.rand((), generator=gen)) * 0.5 + 0.05
    if flavour == "modelopt":
        return {f"{prefix}.weight": packed, f"{prefix}.weight_scale": scales,
                f"{prefix}.weight_scale_2": torch.tensor(amax / 2688.0, dtype=torch.float32),
                f"{prefix}.input_scale": torch.tensor(0.0123, dtype=torch.float32)}
    return {f"{prefix}.weight_packed": packed, f"{prefix}.weight_scale": scales,
            f"{prefix}.weight_global_scale": torch.tensor([2688.0 / amax], dtype=torch.float32)}


def tiny_nvfp4_moe(root: Path, flavour: str, hidden: int = 64, moe: int = 64, experts: int = 4,
                   layers: int = 2, seed: int | None = None, tokenizer: bool = True) -> Path:
    """The model under ``root`` (one shard); ``seed`` defaults to 7 (ModelOpt) / 8."""
    cfg = qwen3_moe_config(hidden, moe, experts, layers)
    gen = torch.Generator().manual_seed(seed if seed is not None else
                                        7 if flavour == "modelopt" else 8)
    h, hd = cfg["hidden_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    t = {}
    bf16 = lambda *shape: (torch.randn(*shape, generator=gen) * 0.05).bfloat16()  # noqa: E731
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        for name, (out, cols) in {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h),
                                  "o_proj": (h, q)}.items():
            t.update(nvfp4_linear(gen, out, cols, flavour, f"{p}.self_attn.{name}"))
        t[f"{p}.self_attn.q_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
        t[f"{p}.self_attn.k_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
        t[f"{p}.mlp.gate.weight"] = bf16(experts, h)
        for x in range(experts):
            for name, (out, cols) in {"gate_proj": (moe, h), "up_proj": (moe, h),
                                      "down_proj": (h, moe)}.items():
                t.update(nvfp4_linear(gen, out, cols, flavour, f"{p}.mlp.experts.{x}.{name}"))
        t[f"{p}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[f"{p}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["model.embed_tokens.weight"] = bf16(cfg["vocab_size"], h)
    t["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["lm_head.weight"] = bf16(cfg["vocab_size"], h)
    root.mkdir(parents=True)
    modelopt = flavour == "modelopt"
    qc = {"quant_method": "modelopt", **MODELOPT_NVFP4} if modelopt else CT_NVFP4
    extra = {"hf_quant_config.json": {"producer": {"name": "modelopt", "version": "0.37.0"},
                                      "quantization": MODELOPT_NVFP4}} if modelopt else None
    save_checkpoint(root, {"model.safetensors": t}, {**cfg, "quantization_config": qc},
                    extra_files=extra, metadata={"format": "pt"})
    if tokenizer:
        write_tokenizer(root)
    return root


def tiny_int_moe(root: Path, kind: str, seed: int = 5) -> Path:
    """Every attention and expert linear integer-coded as ``kind`` (``tiny_int_llama.KINDS``),
    per expert, under the names GPTQ / AWQ / compressed-tensors writers give them; one shard."""
    cfg = qwen3_moe_config()
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    h, hd, moe = cfg["hidden_size"], cfg["head_dim"], cfg["moe_intermediate_size"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    bf16 = lambda *shape: (torch.randn(*shape, generator=gen) * 0.05).bfloat16()  # noqa: E731
    t = {}
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        for name, (out, cols) in {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h),
                                  "o_proj": (h, q)}.items():
            t.update(int_module(kind, rng, f"{p}.self_attn.{name}", out, cols))
        t[f"{p}.self_attn.q_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
        t[f"{p}.self_attn.k_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
        t[f"{p}.mlp.gate.weight"] = bf16(cfg["num_experts"], h)
        for x in range(cfg["num_experts"]):
            for name, (out, cols) in {"gate_proj": (moe, h), "up_proj": (moe, h),
                                      "down_proj": (h, moe)}.items():
                t.update(int_module(kind, rng, f"{p}.mlp.experts.{x}.{name}", out, cols))
        t[f"{p}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[f"{p}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["model.embed_tokens.weight"] = bf16(cfg["vocab_size"], h)
    t["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["lm_head.weight"] = bf16(cfg["vocab_size"], h)
    qc = dict(QUANT_CONFIGS[kind])
    if "ignore" in qc:  # compressed-tensors: the router stays BF16, as llmcompressor leaves it
        qc["ignore"] = ["lm_head", "re:.*mlp.gate$"]
    root.mkdir(parents=True)
    save_checkpoint(root, {"model.safetensors": t}, {**cfg, "quantization_config": qc},
                    metadata={"format": "pt"})
    write_tokenizer(root)
    return root
