"""Checkpoint fixtures for every format variant of docs/formats.md (§5-§7), written with torch +
``safetensors.torch.save_file`` (the real writer, independent of scalefix's), each with
what ``inspect`` must say about it and torch's own dequantization as the oracle.

The oracle is docs/formats.md §1 in torch: ``(q.to(float32) * scale_expanded).to(bfloat16)``,
the scale upcast to float32 first; FP4 through a LUT and ``torch.ldexp`` (transformers' way).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import save_checkpoint
from .packing import pack_low_first

FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                           -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


@dataclass
class Expected:
    scheme: str
    naming: str
    block: list[int]
    scale: str                 # scale tensor name
    scale_dtype: str
    oracle: torch.Tensor       # bf16, logical shape
    output_name: str | None = None


@dataclass
class Fixture:
    path: Path
    quantized: dict[str, Expected] = field(default_factory=dict)
    activation_scales: list[str] = field(default_factory=list)
    markers: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)
    cross_shard: list[str] = field(default_factory=list)


def fp8_codes(shape, dtype=torch.float8_e4m3fn, gen=None) -> torch.Tensor:
    """Random FP8 codes over the whole finite range (NaN / inf codes avoided)."""
    codes = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
    if dtype == torch.float8_e4m3fn:
        codes[(codes & 0x7F) == 0x7F] = 0x3F
    else:  # e5m2: exponent 31 is inf / NaN
        codes[(codes & 0x7C) == 0x7C] = 0x3C
    return codes.view(dtype)


def expand(scale: torch.Tensor, shape, block) -> torch.Tensor:
    """float32 scale broadcast over the weight: pad, repeat per block, crop."""
    s = scale.to(torch.float32)
    bo, bi = block
    s = s.repeat_interleave(bo, dim=-2).repeat_interleave(bi, dim=-1)
    return s[..., : shape[-2], : shape[-1]]


def fp8_oracle(q: torch.Tensor, scale: torch.Tensor, block) -> torch.Tensor:
    shape = q.shape if q.dim() >= 2 else (1, q.shape[0])
    if scale.numel() == 1:
        out = q.to(torch.float32) * scale.to(torch.float32).reshape(())
    else:
        if scale.dim() == len(shape) - 1:  # per-channel as [out]
            scale = scale.unsqueeze(-1)
        out = q.reshape(shape).to(torch.float32) * expand(scale, shape, block)
    return out.to(torch.bfloat16).reshape(q.shape)


def fp4_oracle(codes: torch.Tensor, e8m0: torch.Tensor, group: int) -> torch.Tensor:
    """codes: uint8 nibbles, logical shape [..., in]; e8m0: uint8 exponents [..., in/group]."""
    values = FP4_VALUES[codes.long()]
    exps = e8m0.to(torch.int32).repeat_interleave(group, dim=-1) - 127
    return torch.ldexp(values, exps.to(torch.float32)).to(torch.bfloat16)


def _fp8_pair(fx: Fixture, tensors: dict, name: str, scale_name: str, shape, scale_shape, block,
              naming: str, scheme: str, scale_dtype=torch.float32, fp8=torch.float8_e4m3fn,
              gen=None, scale_dest: dict | None = None):
    q = fp8_codes(shape, fp8, gen)
    scale = (torch.rand(scale_shape, generator=gen) * 1e-3 + 1e-5).to(scale_dtype)
    tensors[name] = q
    (scale_dest if scale_dest is not None else tensors)[scale_name] = scale
    st_dtype = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[scale_dtype]
    fx.quantized[name] = Expected(scheme, naming, list(block), scale_name, st_dtype,
                                  fp8_oracle(q, scale, block))


def dsv3(root: Path) -> Fixture:
    """DeepSeek-V3: F32 weight_scale_inv, [576, 7168] (ceil division), scale in another shard."""
    gen = torch.Generator().manual_seed(1)
    fx = Fixture(root)
    s1, s2 = {}, {}
    p = "model.layers.0."
    _fp8_pair(fx, s1, p + "self_attn.kv_a_proj_with_mqa.weight",
              p + "self_attn.kv_a_proj_with_mqa.weight_scale_inv", (576, 7168), (5, 56),
              (128, 128), "weight_scale_inv", "fp8-block", gen=gen, scale_dest=s2)
    fx.cross_shard.append(p + "self_attn.kv_a_proj_with_mqa.weight")
    _fp8_pair(fx, s2, p + "mlp.down_proj.weight", p + "mlp.down_proj.weight_scale_inv",
              (256, 300), (2, 3), (128, 128), "weight_scale_inv", "fp8-block", gen=gen)
    s1["model.embed_tokens.weight"] = torch.randn(64, 256, generator=gen).to(torch.bfloat16)
    s2[p + "mlp.gate.e_score_correction_bias"] = torch.randn(8, generator=gen)
    s2[p + "input_layernorm.weight"] = torch.ones(256, dtype=torch.bfloat16)
    fx.plain += ["model.embed_tokens.weight", p + "mlp.gate.e_score_correction_bias",
                 p + "input_layernorm.weight"]
    save_checkpoint(root, {"model-00001-of-00002.safetensors": s1,
                           "model-00002-of-00002.safetensors": s2},
                {"model_type": "deepseek_v3", "quantization_config": {
                    "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                    "weight_block_size": [128, 128]}})
    return fx


def qwen3(root: Path, scale_dtype) -> Fixture:
    """Qwen3-*-FP8: weight_scale_inv stored in BF16 (32B) or F16 (4B-2507), under text_config."""
    gen = torch.Generator().manual_seed(2)
    fx = Fixture(root)
    t = {}
    for proj, shape in (("q_proj", (256, 256)), ("k_proj", (128, 256)), ("o_proj", (256, 200))):
        name = f"model.layers.0.self_attn.{proj}.weight"
        sshape = (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128))
        _fp8_pair(fx, t, name, name + "_scale_inv", shape, sshape, (128, 128),
                  "weight_scale_inv", "fp8-block", scale_dtype=scale_dtype, gen=gen)
    t["lm_head.weight"] = torch.randn(64, 256, generator=gen).to(torch.bfloat16)
    fx.plain.append("lm_head.weight")
    save_checkpoint(root, {"model.safetensors": t}, {"model_type": "qwen3_vl", "text_config": {
        "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                "weight_block_size": [128, 128],
                                "modules_to_not_convert": ["lm_head"]}}})
    return fx


def compressed_tensors(root: Path, strategy: str) -> Fixture:
    """llmcompressor-style FP8: weight_scale (BF16) per block / channel / tensor (+input_scale)."""
    gen = torch.Generator().manual_seed(3)
    fx = Fixture(root)
    t = {}
    for i, shape in enumerate(((384, 256), (200, 330))):
        name = f"model.layers.{i}.mlp.up_proj.weight"
        if strategy == "block":
            sshape, block, scheme = (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128)), \
                (128, 128), "fp8-block"
        elif strategy == "channel":
            sshape, block, scheme = (shape[0], 1), (1, shape[1]), "fp8-channel"
        else:
            sshape, block, scheme = (1,), shape, "fp8-tensor"
        _fp8_pair(fx, t, name, name[: -len("weight")] + "weight_scale", shape, sshape, block,
                  "weight_scale", scheme, scale_dtype=torch.bfloat16, gen=gen)
        if strategy == "tensor":
            t[name[: -len("weight")] + "input_scale"] = torch.tensor([0.02], dtype=torch.bfloat16)
            fx.activation_scales.append(name[: -len("weight")] + "input_scale")
    t["lm_head.weight"] = torch.randn(32, 256, generator=gen).to(torch.bfloat16)
    fx.plain.append("lm_head.weight")
    weights = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False,
               "strategy": strategy}
    if strategy == "block":
        weights["block_structure"] = [128, 128]
    save_checkpoint(root, {"model.safetensors": t}, {"quantization_config": {
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}},
        "ignore": ["lm_head"]}})
    return fx


def flux(root: Path) -> Fixture:
    """BFL FLUX FP8 single file: scalar weight_scale + input_scale; one orphan weight_scale."""
    gen = torch.Generator().manual_seed(4)
    fx = Fixture(root)
    t = {}
    for name in ("double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"):
        _fp8_pair(fx, t, name, name + "_scale",
                  (192, 64), (), (192, 64), "weight_scale", "fp8-tensor", gen=gen)
        t[name[: -len("weight")] + "input_scale"] = torch.tensor(0.5)
        fx.activation_scales.append(name[: -len("weight")] + "input_scale")
    t["final_layer.linear.weight"] = torch.randn(16, 64, generator=gen).to(torch.bfloat16)
    t["final_layer.linear.weight_scale"] = torch.tensor(1.0)
    fx.orphans.append("final_layer.linear.weight_scale")
    fx.plain.append("final_layer.linear.weight")
    root.mkdir(parents=True, exist_ok=True)
    save_file(t, str(root / "flux2-fp8.safetensors"))
    fx.path = root / "flux2-fp8.safetensors"
    return fx


def comfy_scaled_fp8(root: Path) -> Fixture:
    """ComfyUI legacy: scaled_fp8 marker, .scale_weight scalar, .scale_input."""
    gen = torch.Generator().manual_seed(5)
    fx = Fixture(root)
    t = {"model.diffusion_model.scaled_fp8": torch.zeros(2, dtype=torch.float8_e4m3fn)}
    fx.markers.append("model.diffusion_model.scaled_fp8")
    for blk in range(2):
        name = f"model.diffusion_model.blocks.{blk}.attn.proj.weight"
        stem = name[: -len(".weight")]
        _fp8_pair(fx, t, name, stem + ".scale_weight", (128, 96), (), (128, 96), "scale_weight",
                  "fp8-tensor", gen=gen)
        t[stem + ".scale_input"] = torch.tensor(1.0)
        fx.activation_scales.append(stem + ".scale_input")
    root.mkdir(parents=True, exist_ok=True)
    save_file(t, str(root / "comfy.safetensors"))
    fx.path = root / "comfy.safetensors"
    return fx


def mistral(root: Path) -> Fixture:
    """Mistral native FP8: qscale_weight as a scalar and as [out]; qscale_act dropped."""
    gen = torch.Generator().manual_seed(6)
    fx = Fixture(root)
    t = {}
    _fp8_pair(fx, t, "layers.0.attention.wq.weight", "layers.0.attention.wq.qscale_weight",
              (128, 64), (), (128, 64), "qscale_weight", "fp8-tensor", gen=gen)
    _fp8_pair(fx, t, "layers.0.attention.wk.weight", "layers.0.attention.wk.qscale_weight",
              (96, 64), (96,), (1, 64), "qscale_weight", "fp8-channel", gen=gen)
    for m in ("wq", "wk"):
        t[f"layers.0.attention.{m}.qscale_act"] = torch.tensor(0.1)
        fx.activation_scales.append(f"layers.0.attention.{m}.qscale_act")
    save_checkpoint(root, {"consolidated.safetensors": t}, None)
    return fx


def e5m2(root: Path) -> Fixture:
    gen = torch.Generator().manual_seed(7)
    fx = Fixture(root)
    t = {}
    _fp8_pair(fx, t, "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight_scale_inv",
              (300, 256), (3, 2), (128, 128), "weight_scale_inv", "fp8-block",
              fp8=torch.float8_e5m2, gen=gen)
    save_checkpoint(root, {"model.safetensors": t}, {"quantization_config": {
        "quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]}})
    return fx


def dsv4(root: Path) -> Fixture:
    """DeepSeek-V4: FP8 + E8M0 .scale (128x128) and FP4 routed experts (I8 + group-32 E8M0)."""
    gen = torch.Generator().manual_seed(8)
    fx = Fixture(root)
    t = {}
    for name, shape in (("layers.0.attn.wq_a.weight", (200, 256)),
                        ("layers.0.ffn.shared_experts.w1.weight", (256, 384))):
        q = fp8_codes(shape, gen=gen)
        sshape = (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128))
        e = torch.randint(110, 125, sshape, dtype=torch.uint8, generator=gen)
        t[name], t[name[: -len("weight")] + "scale"] = q, e.view(torch.float8_e8m0fnu)
        oracle = fp8_oracle(q, e.view(torch.float8_e8m0fnu), (128, 128))
        fx.quantized[name] = Expected("fp8-block", "scale", [128, 128],
                                      name[: -len("weight")] + "scale", "F8_E8M0", oracle)
    for ex in range(2):
        for w, (out, inn) in (("w1", (64, 256)), ("w2", (256, 64))):
            name = f"layers.0.ffn.experts.{ex}.{w}.weight"
            codes = torch.randint(0, 16, (out, inn), dtype=torch.uint8, generator=gen)
            e = torch.randint(115, 130, (out, inn // 32), dtype=torch.uint8, generator=gen)
            t[name] = pack_low_first(codes).view(torch.int8)
            t[name[: -len("weight")] + "scale"] = e.view(torch.float8_e8m0fnu)
            fx.quantized[name] = Expected("fp4-group", "scale", [1, 32],
                                          name[: -len("weight")] + "scale", "F8_E8M0",
                                          fp4_oracle(codes, e, 32))
    t["layers.0.attn_norm.weight"] = torch.ones(256, dtype=torch.bfloat16)
    t["embed.weight"] = torch.randn(64, 256, generator=gen).to(torch.bfloat16)
    fx.plain += ["layers.0.attn_norm.weight", "embed.weight"]
    save_checkpoint(root, {"model.safetensors": t}, {"model_type": "deepseek_v4", "quantization_config": {
        "quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0", "weight_block_size": [128, 128]}})
    return fx


def gpt_oss(root: Path) -> Fixture:
    """gpt-oss MXFP4: <p>_blocks U8 [E, O, G, 16] + <p>_scales U8 [E, O, G]."""
    gen = torch.Generator().manual_seed(9)
    fx = Fixture(root)
    t = {}
    experts, hidden, inter = 2, 128, 64
    for param, (out, inn) in (("gate_up_proj", (2 * inter, hidden)), ("down_proj", (hidden, inter))):
        base = f"model.layers.0.mlp.experts.{param}"
        codes = torch.randint(0, 16, (experts, out, inn), dtype=torch.uint8, generator=gen)
        e = torch.randint(118, 130, (experts, out, inn // 32), dtype=torch.uint8, generator=gen)
        t[base + "_blocks"] = pack_low_first(codes).reshape(experts, out, inn // 32, 16)
        t[base + "_scales"] = e
        t[base + "_bias"] = torch.randn(experts, out, generator=gen).to(torch.bfloat16)
        fx.plain.append(base + "_bias")
        fx.quantized[base + "_blocks"] = Expected("mxfp4", "_blocks/_scales", [1, 32],
                                                  base + "_scales", "U8",
                                                  fp4_oracle(codes, e, 32), output_name=base)
    t["model.layers.0.mlp.router.weight"] = torch.randn(experts, hidden, generator=gen).to(torch.bfloat16)
    fx.plain.append("model.layers.0.mlp.router.weight")
    save_checkpoint(root, {"model.safetensors": t}, {"model_type": "gpt_oss", "quantization_config": {
        "quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "router"]}})
    return fx


def stacked_experts(root: Path) -> Fixture:
    """transformers v5 fused experts: 3-D [E, out, in] FP8 with <param>_scale_inv [E, ., .]."""
    gen = torch.Generator().manual_seed(10)
    fx = Fixture(root)
    t = {}
    base = "model.layers.0.mlp.experts."
    _fp8_pair(fx, t, base + "gate_up_proj", base + "gate_up_proj_scale_inv", (3, 320, 256),
              (3, 3, 2), (128, 128), "<param>_scale_inv", "fp8-block", gen=gen)
    _fp8_pair(fx, t, base + "down_proj", base + "down_proj_scale_inv", (3, 256, 160),
              (3, 2, 2), (128, 128), "<param>_scale_inv", "fp8-block", gen=gen)
    save_checkpoint(root, {"model.safetensors": t}, {"quantization_config": {
        "quant_method": "fp8", "weight_block_size": [128, 128]}})
    return fx


def modelopt(root: Path) -> Fixture:
    """NVIDIA ModelOpt FP8: scalar weight_scale F32 + input_scale; hf_quant_config.json."""
    gen = torch.Generator().manual_seed(11)
    fx = Fixture(root)
    t = {}
    for proj in ("q_proj", "o_proj"):
        name = f"model.layers.0.self_attn.{proj}.weight"
        _fp8_pair(fx, t, name, name + "_scale", (256, 128), (), (256, 128), "weight_scale",
                  "fp8-tensor", gen=gen)
        t[name[: -len("weight")] + "input_scale"] = torch.tensor(0.01)
        fx.activation_scales.append(name[: -len("weight")] + "input_scale")
    save_checkpoint(root, {"model.safetensors": t}, {"model_type": "llama"})
    (root / "hf_quant_config.json").write_text(json.dumps({"producer": {"name": "modelopt"},
        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": None,
                         "exclude_modules": ["lm_head"]}}))
    return fx


VARIANTS = {
    "dsv3": dsv3,
    "qwen3-bf16-scale": lambda r: qwen3(r, torch.bfloat16),
    "qwen3-f16-scale": lambda r: qwen3(r, torch.float16),
    "ct-block": lambda r: compressed_tensors(r, "block"),
    "ct-channel": lambda r: compressed_tensors(r, "channel"),
    "ct-tensor": lambda r: compressed_tensors(r, "tensor"),
    "flux": flux,
    "comfy-scaled-fp8": comfy_scaled_fp8,
    "mistral": mistral,
    "e5m2": e5m2,
    "dsv4": dsv4,
    "gpt-oss": gpt_oss,
    "stacked-experts": stacked_experts,
    "modelopt": modelopt,
}


DSV4_TINY_CONFIG = {
    "model_type": "deepseek_v41", "vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "head_dim": 32, "q_lora_rank": 32, "qk_rope_head_dim": 16,
    "o_groups": 2, "o_lora_rank": 32, "moe_intermediate_size": 64, "n_routed_experts": 4,
    "num_experts_per_tok": 2, "index_n_heads": 2, "index_head_dim": 16, "index_topk": 8,
    "hc_mult": 2, "sliding_window": 8, "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                            "weight_block_size": [128, 128]}}


def small_randn(gen: torch.Generator):
    """``small(*shape, dtype=bf16)``: N(0, 0.05) tensors from ``gen``."""
    def small(*shape, dtype=torch.bfloat16):
        return (torch.randn(shape, generator=gen) * 0.05).to(dtype)
    return small


def dsv4_layers(cfg: dict, small, tensors_of, fp8, expert) -> None:
    """The layers of a tiny DeepSeek-V4 (mlx-lm ``deepseek_v41`` names, no ``model.`` prefix),
    one body for every quantization: ``fp8(t, name, out, inn)`` writes an attention or
    shared-expert linear, ``expert(t, name, out, inn)`` a routed expert's, into ``t =
    tensors_of(layer)``; norms, sinks, router and hyper-connection tensors come from
    ``small``. Embeddings, head and final norm are the caller's."""
    h, experts = cfg["hidden_size"], cfg["n_routed_experts"]
    heads, hd, inter = cfg["num_attention_heads"], cfg["head_dim"], cfg["moe_intermediate_size"]
    groups = cfg["o_groups"]
    for n in range(cfg["num_hidden_layers"]):
        t, p = tensors_of(n), f"layers.{n}"
        fp8(t, f"{p}.attn.wq_a", cfg["q_lora_rank"], h)
        fp8(t, f"{p}.attn.wq_b", heads * hd, cfg["q_lora_rank"])
        fp8(t, f"{p}.attn.wkv", hd, h)
        fp8(t, f"{p}.attn.wo_a", groups * cfg["o_lora_rank"], heads * hd // groups)
        fp8(t, f"{p}.attn.wo_b", h, groups * cfg["o_lora_rank"])
        t[f"{p}.attn.q_norm.weight"] = torch.ones(cfg["q_lora_rank"], dtype=torch.bfloat16)
        t[f"{p}.attn.kv_norm.weight"] = torch.ones(hd, dtype=torch.bfloat16)
        t[f"{p}.attn.attn_sink"] = small(heads, dtype=torch.float32)
        t[f"{p}.ffn.gate.weight"] = small(experts, h)
        t[f"{p}.ffn.gate.bias"] = small(experts, dtype=torch.float32)
        for e in range(experts):
            expert(t, f"{p}.ffn.experts.{e}.w1", inter, h)
            expert(t, f"{p}.ffn.experts.{e}.w2", h, inter)
            expert(t, f"{p}.ffn.experts.{e}.w3", inter, h)
        for w, (out, inn) in (("w1", (inter, h)), ("w2", (h, inter)), ("w3", (inter, h))):
            fp8(t, f"{p}.ffn.shared_experts.{w}", out, inn)
        t[f"{p}.attn_norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[f"{p}.ffn_norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        mix = cfg["hc_mult"]
        for which in ("attn", "ffn"):
            t[f"{p}.hc_{which}_fn"] = small((2 + mix) * mix, mix * h, dtype=torch.float32)
            t[f"{p}.hc_{which}_base"] = small((2 + mix) * mix, dtype=torch.float32)
            t[f"{p}.hc_{which}_scale"] = small(3, dtype=torch.float32) + 1


def dsv4_tiny_model(root: Path, **config) -> Fixture:
    """A whole (tiny) DeepSeek-V4 checkpoint as published: no ``model.`` prefix, FP8 + E8M0
    128x128 ``.scale`` for attention and shared experts, FP4 routed experts (I8 low nibble
    first + group-32 E8M0), F32 sinks / router bias / hyper-connection tensors; the config is
    one mlx-lm's ``deepseek_v41`` model accepts (``config`` overrides sizes). Two shards, one
    expert scale in the other."""
    gen = torch.Generator().manual_seed(41)
    fx = Fixture(root)
    cfg = {**DSV4_TINY_CONFIG, **config}
    h = cfg["hidden_size"]
    t: dict[str, torch.Tensor] = {}
    small = small_randn(gen)

    def fp8(t, name, out, inn):
        q = fp8_codes((out, inn), gen=gen)
        e = torch.randint(118, 122, (math.ceil(out / 128), math.ceil(inn / 128)),
                          dtype=torch.uint8, generator=gen)
        t[name + ".weight"], t[name + ".scale"] = q, e.view(torch.float8_e8m0fnu)
        fx.quantized[name + ".weight"] = Expected(
            "fp8-block", "scale", [128, 128], name + ".scale", "F8_E8M0",
            fp8_oracle(q, e.view(torch.float8_e8m0fnu), (128, 128)))

    def fp4(t, name, out, inn):
        codes = torch.randint(0, 16, (out, inn), dtype=torch.uint8, generator=gen)
        e = torch.randint(119, 124, (out, inn // 32), dtype=torch.uint8, generator=gen)
        t[name + ".weight"] = pack_low_first(codes).view(torch.int8)
        t[name + ".scale"] = e.view(torch.float8_e8m0fnu)
        fx.quantized[name + ".weight"] = Expected("fp4-group", "scale", [1, 32], name + ".scale",
                                                  "F8_E8M0", fp4_oracle(codes, e, 32))

    dsv4_layers(cfg, small, lambda n: t, fp8, fp4)
    t["embed.weight"] = small(cfg["vocab_size"], h)
    t["head.weight"] = small(cfg["vocab_size"], h)
    t["norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    fx.plain += [k for k in t if k not in fx.quantized and not k.endswith(".scale")]
    names = sorted(t)
    split = names.index("layers.1.ffn.experts.2.w2.scale") + 1  # scale away from weight
    first = {k: t[k] for k in names[:split]}
    second = {k: t[k] for k in names[split:]}
    fx.cross_shard.append("layers.1.ffn.experts.2.w2.weight")
    save_checkpoint(root, {"model-00001-of-00002.safetensors": first,
                           "model-00002-of-00002.safetensors": second}, cfg)
    return fx


GPT_OSS_TINY_CONFIG = {
    "model_type": "gpt_oss", "vocab_size": 64, "hidden_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2,
    "sliding_window": 8, "rope_theta": 10000,
    "layer_types": ["sliding_attention", "full_attention"], "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "mxfp4",
                            "modules_to_not_convert": ["model.layers.*.self_attn",
                                                       "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"]}}


def gpt_oss_tiny_model(root: Path) -> Fixture:
    """A whole (tiny) gpt-oss checkpoint as transformers publishes it: BF16 attention and
    router, MXFP4 experts as <p>_blocks U8 [E, out, in/32, 16] + <p>_scales U8 E8M0 + <p>_bias."""
    gen = torch.Generator().manual_seed(20)
    fx = Fixture(root)
    cfg = GPT_OSS_TINY_CONFIG
    h, experts, inter = cfg["hidden_size"], cfg["num_local_experts"], cfg["intermediate_size"]
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    t: dict[str, torch.Tensor] = {}

    def small(*shape, dtype=torch.bfloat16):
        return (torch.randn(shape, generator=gen) * 0.05).to(dtype)

    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        for proj, out in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)):
            t[f"{p}.self_attn.{proj}.weight"] = small(out, h)
            t[f"{p}.self_attn.{proj}.bias"] = small(out)
        t[f"{p}.self_attn.o_proj.weight"] = small(h, heads * hd)
        t[f"{p}.self_attn.o_proj.bias"] = small(h)
        t[f"{p}.self_attn.sinks"] = small(heads, dtype=torch.float32)
        t[f"{p}.mlp.router.weight"] = small(experts, h)
        t[f"{p}.mlp.router.bias"] = small(experts)
        for param, (out, inn) in (("gate_up_proj", (2 * inter, h)), ("down_proj", (h, inter))):
            base = f"{p}.mlp.experts.{param}"
            codes = torch.randint(0, 16, (experts, out, inn), dtype=torch.uint8, generator=gen)
            e = torch.randint(120, 125, (experts, out, inn // 32), dtype=torch.uint8,
                              generator=gen)
            t[base + "_blocks"] = pack_low_first(codes).reshape(experts, out, inn // 32, 16)
            t[base + "_scales"] = e
            t[base + "_bias"] = small(experts, out)
            fx.quantized[base + "_blocks"] = Expected("mxfp4", "_blocks/_scales", [1, 32],
                                                      base + "_scales", "U8",
                                                      fp4_oracle(codes, e, 32), output_name=base)
        t[f"{p}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[f"{p}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["model.embed_tokens.weight"] = small(cfg["vocab_size"], h)
    t["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["lm_head.weight"] = small(cfg["vocab_size"], h)
    fx.plain += [k for k in t if k not in fx.quantized and not k.endswith("_scales")]
    save_checkpoint(root, {"model.safetensors": t}, cfg)
    return fx


MIXTRAL_TINY_CONFIG = {
    "model_type": "mixtral", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_local_experts": 4, "num_experts_per_tok": 2, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128]}}


def mixtral_tiny_fp8(root: Path) -> Fixture:
    """A whole (tiny) Mixtral in transformers' block FP8 (``weight_scale_inv`` F32 128x128),
    per-expert weights: mlx-lm's mixtral sanitize stacks experts only if layer 0's first
    expert is present, so it cannot be run on one layer alone."""
    gen = torch.Generator().manual_seed(7)
    fx = Fixture(root)
    cfg = MIXTRAL_TINY_CONFIG
    h, inter, experts = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"]
    hd = h // cfg["num_attention_heads"]
    t: dict[str, torch.Tensor] = {}

    def fp8(name, out, inn):
        sshape = (math.ceil(out / 128), math.ceil(inn / 128))
        _fp8_pair(fx, t, name, name + "_scale_inv", (out, inn), sshape, (128, 128),
                  "weight_scale_inv", "fp8-block", gen=gen)

    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}"
        for proj, out in (("q_proj", h), ("k_proj", 2 * hd), ("v_proj", 2 * hd), ("o_proj", h)):
            fp8(f"{p}.self_attn.{proj}.weight", out, h)
        t[f"{p}.block_sparse_moe.gate.weight"] = (torch.randn(experts, h, generator=gen)
                                                  * 0.05).to(torch.bfloat16)
        for e in range(experts):
            for w, (out, inn) in (("w1", (inter, h)), ("w2", (h, inter)), ("w3", (inter, h))):
                fp8(f"{p}.block_sparse_moe.experts.{e}.{w}.weight", out, inn)
        t[f"{p}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[f"{p}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["model.embed_tokens.weight"] = (torch.randn(cfg["vocab_size"], h, generator=gen)
                                      * 0.05).to(torch.bfloat16)
    t["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    t["lm_head.weight"] = (torch.randn(cfg["vocab_size"], h, generator=gen) * 0.05).to(
        torch.bfloat16)
    save_checkpoint(root, {"model.safetensors": t}, cfg)
    return fx


def big_fp8_source(root: Path, shards=6, rows=1024, cols=2048) -> Path:
    """Block-FP8 shards big enough for a rewrite to be killed mid-run (4 weights a shard,
    ``weight_scale_inv`` F32); an index even for one shard."""
    gen = torch.Generator().manual_seed(0)
    root.mkdir(parents=True)
    out = {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors = out[fname] = {}
        for j in range(4):
            name = f"model.layers.{i}.mlp.p{j}.weight"
            codes = torch.randint(0, 126, (rows, cols), dtype=torch.uint8, generator=gen)
            tensors[name] = codes.view(torch.float8_e4m3fn)
            tensors[name + "_scale_inv"] = torch.rand(rows // 128, cols // 128, generator=gen)
    return save_checkpoint(root, out, {"quantization_config": {
        "quant_method": "fp8", "weight_block_size": [128, 128]}}, index=True)
