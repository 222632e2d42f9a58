"""Write a random Llama-layout FP8 checkpoint (``weight_scale_inv`` blocks) of a chosen size.

    python -m benchmarks.make_llama_fp8 OUT --size-gb 1.4 [--seed 0] [--shard-mb 400]

The layout a transformers ``FineGrainedFP8Config`` export of a Llama has (Qwen3-FP8 and the
like look the same): every ``q/k/v/o_proj`` and ``gate/up/down_proj`` is ``F8_E4M3 [out, in]``
plus ``weight_scale_inv F32 [ceil(out/128), ceil(in/128)]``; embeddings, ``lm_head`` and norms
are BF16; config.json is ``model_type: llama`` with ``quantization_config {quant_method: fp8,
weight_block_size: [128, 128]}``. Dimensions are TinyLlama's (hidden 2048, 32 heads of 64,
4 KV heads, intermediate 5632), so mlx-lm's ``llama`` model loads it and ``mx.quantize``
groups of 32/64/128 fit every input dimension. Layers and vocabulary (~15% of the bytes,
<= 32000) are chosen to hit ``--size-gb``. Plain mlx-lm refuses this checkpoint
(``parameters not in model: ...weight_scale_inv``): it is what ``import scalefix.auto``
is for. Data, shards (a scale cut off from its weight at every boundary) and tokenizer
come from ``make_dsv3_fp8.generate``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from benchmarks import make_dsv3_fp8
from benchmarks.make_dsv3_fp8 import BLOCK, nbytes


FP8_QC = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
          "weight_block_size": [BLOCK, BLOCK]}


def base_config() -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "head_dim": 64,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 5632,
        "max_position_embeddings": 4096,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_hidden_layers": 0,  # set by plan()
        "num_key_value_heads": 4,
        "quantization_config": dict(FP8_QC),
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": True,
        "vocab_size": 0,  # set by plan()
    }


def layer_tensors(cfg: dict, i: int) -> list[tuple[str, str, list[int]]]:
    """(name, dtype, shape) of layer i in transformers' Llama naming, sorted by name."""
    h, inter, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    p = f"model.layers.{i}."
    linears = {
        "mlp.down_proj": [h, inter], "mlp.gate_proj": [inter, h], "mlp.up_proj": [inter, h],
        "self_attn.k_proj": [kv, h], "self_attn.o_proj": [h, q],
        "self_attn.q_proj": [q, h], "self_attn.v_proj": [kv, h],
    }
    out = []
    for name, shape in linears.items():
        out.append((p + name + ".weight", "F8_E4M3", shape))
        out.append((p + name + ".weight_scale_inv", "F32",
                    [math.ceil(shape[0] / BLOCK), math.ceil(shape[1] / BLOCK)]))
    out += [(p + "input_layernorm.weight", "BF16", [h]),
            (p + "post_attention_layernorm.weight", "BF16", [h])]
    return sorted(out, key=lambda t: t[0])


def plan(size_gb: float, vocab: int | None = None) -> tuple[dict, list[tuple[str, str, list[int]]]]:
    cfg = base_config()
    h = cfg["hidden_size"]
    target = size_gb * 1e9
    if vocab is None:  # embeddings + lm_head ~15% of the bytes, as in make_dsv3_fp8
        vocab = max(1024, min(32000, int(0.15 * target / (2 * h * 2)) // 256 * 256))
    cfg["vocab_size"] = vocab
    fixed = 2 * nbytes("BF16", [vocab, h]) + nbytes("BF16", [h])
    per_layer = sum(nbytes(d, s) for _, d, s in layer_tensors(cfg, 0))
    cfg["num_hidden_layers"] = layers = max(1, round((target - fixed) / per_layer))
    tensors = [("model.embed_tokens.weight", "BF16", [vocab, h])]
    for i in range(layers):
        tensors += layer_tensors(cfg, i)
    tensors += [("model.norm.weight", "BF16", [h]), ("lm_head.weight", "BF16", [vocab, h])]
    return cfg, tensors


def generate(out: Path, size_gb: float, seed: int = 0, shard_mb: float | None = None,
             vocab: int | None = None, verbose: bool = True) -> dict:
    return make_dsv3_fp8.generate(out, size_gb, seed, shard_mb, vocab, verbose, plan_fn=plan)


if __name__ == "__main__":
    sys.exit(make_dsv3_fp8.main(plan_fn=plan, default_gb=1.4, doc=__doc__))
