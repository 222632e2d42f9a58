"""A tiny Qwen3-MoE whose every Linear but the router and lm_head is compressed by
compressed-tensors' own NVFP4PackedCompressor (``nvfp4-pack-quantized``): the global scale
by its ``generate_gparam`` (tensor amax), the E4M3 block scales by ``calculate_qparams``
over 16-wide groups, codes by ``quantize`` + ``pack_fp4_to_uint8`` inside ``compress``.
``ref/ref.safetensors`` (a folder inside the checkpoint, so no loader reads it) holds the writer's own ``decompress`` of every
quantized weight (BF16), under the weight's name.

Layouts: ``per-expert`` (``mlp.experts.{e}.{proj}``, as llmcompressor writes Qwen3-MoE) and
``stacked`` (``mlp.switch_mlp.{proj}`` ``[E, out, in]``: each expert's slice compressed by
the compressor, stacked, one global scale per expert ``[E]``).

usage: python write_ct_nvfp4_moe.py DST LAYOUT"""

import json
import sys
from pathlib import Path

import torch
from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig,
                                             QuantizationScheme, QuantizationStatus)
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam
from safetensors.torch import save_file

dst, layout = Path(sys.argv[1]), sys.argv[2]
CONFIG = {"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
          "hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128,
          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
          "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1,
          "mlp_only_layers": [], "moe_intermediate_size": 64, "rms_norm_eps": 1e-6,
          "vocab_size": 64, "rope_theta": 10000.0, "tie_word_embeddings": False,
          "max_position_embeddings": 128, "norm_topk_prob": True, "torch_dtype": "bfloat16"}
args = QuantizationArgs(num_bits=4, type="float", symmetric=True, strategy="tensor_group",
                        group_size=16, dynamic=False)
scheme = QuantizationScheme(targets=["Linear"], weights=args,
                            format="nvfp4-pack-quantized")
gen = torch.Generator().manual_seed(11)
tensors, ref = {}, {}


def compress(w: torch.Tensor) -> dict:
    """One 2-D BF16 weight through the writer: (compressed state, its own decompress)."""
    f = w.to(torch.float32)
    gs = generate_gparam(f.amin(), f.amax())              # [1]
    grouped = f.unflatten(-1, (f.shape[-1] // 16, 16))
    scale, _ = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args, global_scale=gs)
    state = {"weight": w, "weight_scale": scale, "weight_global_scale": gs}
    out = NVFP4PackedCompressor.compress(state, scheme)
    back = NVFP4PackedCompressor.decompress(dict(out), scheme)["weight"]
    return out, back.to(torch.bfloat16)


def linear(prefix: str, out: int, inn: int, std: float = 0.05) -> None:
    w = (torch.randn(out, inn, generator=gen) * std).to(torch.bfloat16)
    state, back = compress(w)
    for k, v in state.items():
        tensors[f"{prefix}.{k}"] = v.contiguous()
    ref[f"{prefix}.weight"] = back.contiguous()


def stacked(prefix: str, experts: int, out: int, inn: int) -> None:
    parts, backs = [], []
    for e in range(experts):
        w = (torch.randn(out, inn, generator=gen) * (0.02 + 0.02 * e)).to(torch.bfloat16)
        state, back = compress(w)
        parts.append(state)
        backs.append(back)
    tensors[f"{prefix}.weight_packed"] = torch.stack([p["weight_packed"] for p in parts])
    tensors[f"{prefix}.weight_scale"] = torch.stack([p["weight_scale"] for p in parts])
    tensors[f"{prefix}.weight_global_scale"] = torch.cat(
        [p["weight_global_scale"].reshape(1) for p in parts])
    ref[f"{prefix}.weight"] = torch.stack(backs).contiguous()


h, hd, e, moe = (CONFIG[k] for k in ("hidden_size", "head_dim", "num_experts",
                                    "moe_intermediate_size"))
q, kv = CONFIG["num_attention_heads"] * hd, CONFIG["num_key_value_heads"] * hd
bf16 = lambda *shape: (torch.randn(*shape, generator=gen) * 0.05).bfloat16()  # noqa: E731
for n in range(CONFIG["num_hidden_layers"]):
    p = f"model.layers.{n}"
    for name, (out, inn) in {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h),
                             "o_proj": (h, q)}.items():
        linear(f"{p}.self_attn.{name}", out, inn)
    tensors[f"{p}.self_attn.q_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
    tensors[f"{p}.self_attn.k_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
    tensors[f"{p}.mlp.gate.weight"] = bf16(e, h)
    for name, (out, inn) in {"gate_proj": (moe, h), "up_proj": (moe, h),
                             "down_proj": (h, moe)}.items():
        if layout == "stacked":
            stacked(f"{p}.mlp.switch_mlp.{name}", e, out, inn)
        else:
            for x in range(e):
                linear(f"{p}.mlp.experts.{x}.{name}", out, inn, 0.02 + 0.02 * x)
    tensors[f"{p}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    tensors[f"{p}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
tensors["model.embed_tokens.weight"] = bf16(CONFIG["vocab_size"], h)
tensors["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
tensors["lm_head.weight"] = bf16(CONFIG["vocab_size"], h)
dst.mkdir(parents=True)
save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
(dst / "ref").mkdir()
save_file(ref, str(dst / "ref" / "ref.safetensors"))
qconfig = QuantizationConfig(config_groups={"group_0": scheme}, format="nvfp4-pack-quantized",
                             quantization_status=QuantizationStatus.COMPRESSED,
                             ignore=["lm_head", "re:.*mlp.gate$"])
(dst / "config.json").write_text(json.dumps(
    {**CONFIG, "quantization_config": qconfig.model_dump(mode="json") | {
        "quant_method": "compressed-tensors"}}, indent=2))
