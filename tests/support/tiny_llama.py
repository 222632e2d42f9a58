"""A whole (tiny) Llama in block FP8 (``weight_scale_inv`` F32), sharded with a scale in
another shard and ragged 128-blocks: plain mlx-lm cannot load it (no FP8 path for llama),
under ``import scalefix.auto`` it must load with the exact values of the BF16 rewrite."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .checkpoint import save_checkpoint, shard_names
from .fixtures import Fixture, _fp8_pair

CONFIG = {
    "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 1024,
    "hidden_size": 192, "intermediate_size": 320, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128]}}
CROSS = "model.layers.0.self_attn.o_proj.weight"  # its scale lives in the last shard


def llama_tiny_fp8(root: Path) -> Fixture:
    gen = torch.Generator().manual_seed(11)
    fx = Fixture(root)
    h, inter = CONFIG["hidden_size"], CONFIG["intermediate_size"]
    hd = h // CONFIG["num_attention_heads"]
    kv = CONFIG["num_key_value_heads"] * hd
    layers = CONFIG["num_hidden_layers"]
    shards = [{} for _ in range(layers + 1)]
    last = shards[-1]
    for n in range(layers):
        t, p = shards[n], f"model.layers.{n}"
        for name, out, inn in ((f"{p}.self_attn.q_proj.weight", h, h),
                               (f"{p}.self_attn.k_proj.weight", kv, h),
                               (f"{p}.self_attn.v_proj.weight", kv, h),
                               (f"{p}.self_attn.o_proj.weight", h, h),
                               (f"{p}.mlp.gate_proj.weight", inter, h),
                               (f"{p}.mlp.up_proj.weight", inter, h),
                               (f"{p}.mlp.down_proj.weight", h, inter)):
            _fp8_pair(fx, t, name, name + "_scale_inv", (out, inn),
                      (math.ceil(out / 128), math.ceil(inn / 128)), (128, 128),
                      "weight_scale_inv", "fp8-block", gen=gen,
                      scale_dest=last if name == CROSS else None)
        t[f"{p}.input_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
        t[f"{p}.post_attention_layernorm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    last["model.embed_tokens.weight"] = (torch.randn(CONFIG["vocab_size"], h, generator=gen)
                                         * 0.05).to(torch.bfloat16)
    last["model.norm.weight"] = torch.ones(h, dtype=torch.bfloat16)
    last["lm_head.weight"] = (torch.randn(CONFIG["vocab_size"], h, generator=gen)
                              * 0.05).to(torch.bfloat16)
    save_checkpoint(root, dict(zip(shard_names(len(shards)), shards)), CONFIG)
    write_tokenizer(root)
    fx.cross_shard.append(CROSS)
    return fx


def write_tokenizer(root: Path) -> None:
    """A word-level tokenizer, enough for ``mlx_lm.load`` (it always loads one)."""
    import json

    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(61)}}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
         "unk_token": "<unk>"}))
