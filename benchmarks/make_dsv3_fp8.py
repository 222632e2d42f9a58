"""Write a random DeepSeek-V3-layout FP8 checkpoint of a chosen size.

    python -m benchmarks.make_dsv3_fp8 OUT --size-gb 1.7 [--seed 0] [--shard-mb 400]

Layout (see docs/formats.md §5): every linear layer of the attention
(MLA) and MLP is stored as ``<m>.weight`` F8_E4M3 ``[out, in]`` plus
``<m>.weight_scale_inv`` F32 ``[ceil(out/128), ceil(in/128)]``; embeddings,
``lm_head`` and norms are BF16. Tensor names are exactly DeepSeek-V3's.

Dimensions are reduced so that mlx-lm's ``deepseek_v3`` model loads the
result: hidden 2048, 16 heads, q_lora_rank 768, kv_lora_rank 512 (so
``kv_a_proj_with_mqa`` is ``[576, 2048]``, 576 = 4.5 blocks), intermediate 10944
(= 85.5 blocks, so ``down_proj`` has a ragged input dimension). The model is
dense: ``first_k_dense_replace == num_hidden_layers`` (mlx CPU MoE needs
float32), and it carries no multi-token-prediction layer
(``num_nextn_predict_layers: 0``). The number of layers (kept <= 60 because
mlx-lm drops every key starting with ``model.layers.61``) and the vocabulary
are chosen to hit ``--size-gb`` (decimal GB of safetensors data).

Data is random: FP8 codes are uniform bytes with the NaN codes 0x7F/0xFF
remapped to 0x7E/0xFE, scales are log-uniform in [1e-4, 1e-3], BF16 weights
are N(0, 0.02) truncated to BF16, norms are 1 + small noise. Files are written
by hand (8-byte little-endian header length, JSON header, data), tensor by
tensor, so memory use stays at one chunk. Shards are cut so that, at every
shard boundary, a weight's ``weight_scale_inv`` lands in the next shard.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

BLOCK = 128
CHUNK = 1 << 24  # elements generated per numpy call

FP8_LUT = np.arange(256, dtype=np.uint8)
FP8_LUT[0x7F] = 0x7E  # E4M3FN NaN codes -> largest finite
FP8_LUT[0xFF] = 0xFE

DTYPE_SIZE = {"F8_E4M3": 1, "BF16": 2, "F32": 4}


def base_config() -> dict:
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "ep_size": 1,
        "first_k_dense_replace": 0,  # set below
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 10944,
        "kv_lora_rank": 512,
        "max_position_embeddings": 4096,
        "model_type": "deepseek_v3",
        "moe_intermediate_size": 1408,
        "moe_layer_freq": 1,
        "n_group": 8,
        "n_routed_experts": 64,
        "n_shared_experts": 1,
        "norm_topk_prob": True,
        "num_attention_heads": 16,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 0,  # set below
        "num_key_value_heads": 16,
        "num_nextn_predict_layers": 0,
        "q_lora_rank": 768,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        },
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "beta_fast": 32,
            "beta_slow": 1,
            "factor": 40,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
            "type": "yarn",
        },
        "rope_theta": 10000,
        "routed_scaling_factor": 2.5,
        "scoring_func": "sigmoid",
        "tie_word_embeddings": False,
        "topk_group": 4,
        "topk_method": "noaux_tc",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": True,
        "v_head_dim": 128,
        "vocab_size": 0,  # set below
    }


def layer_tensors(cfg: dict, i: int) -> list[tuple[str, str, list[int]]]:
    """(name, dtype, shape) of layer i, in DeepSeek-V3 naming, sorted like the real shards."""
    h = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    inter = cfg["intermediate_size"]
    p = f"model.layers.{i}."
    linears = {
        "mlp.down_proj": [h, inter],
        "mlp.gate_proj": [inter, h],
        "mlp.up_proj": [inter, h],
        "self_attn.kv_a_proj_with_mqa": [cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"], h],
        "self_attn.kv_b_proj": [nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), cfg["kv_lora_rank"]],
        "self_attn.o_proj": [h, nh * cfg["v_head_dim"]],
        "self_attn.q_a_proj": [cfg["q_lora_rank"], h],
        "self_attn.q_b_proj": [nh * qk, cfg["q_lora_rank"]],
    }
    norms = {
        "input_layernorm": [h],
        "post_attention_layernorm": [h],
        "self_attn.kv_a_layernorm": [cfg["kv_lora_rank"]],
        "self_attn.q_a_layernorm": [cfg["q_lora_rank"]],
    }
    out = []
    for name, shape in linears.items():
        out.append((p + name + ".weight", "F8_E4M3", shape))
        out.append((p + name + ".weight_scale_inv", "F32",
                    [math.ceil(shape[0] / BLOCK), math.ceil(shape[1] / BLOCK)]))
    for name, shape in norms.items():
        out.append((p + name + ".weight", "BF16", shape))
    out.sort(key=lambda t: t[0])
    return out


def nbytes(dtype: str, shape: list[int]) -> int:
    return DTYPE_SIZE[dtype] * math.prod(shape)


def plan(size_gb: float, vocab: int | None) -> tuple[dict, list[tuple[str, str, list[int]]]]:
    cfg = base_config()
    h = cfg["hidden_size"]
    target = size_gb * 1e9
    if vocab is None:
        # embeddings + lm_head take ~15% of the checkpoint, capped at 32000 tokens
        vocab = int(0.15 * target / (2 * h * 2)) // 256 * 256
        vocab = max(1024, min(32000, vocab))
    cfg["vocab_size"] = vocab
    fixed = 2 * nbytes("BF16", [vocab, h]) + nbytes("BF16", [h])
    per_layer = sum(nbytes(d, s) for _, d, s in layer_tensors(cfg, 0))
    layers = max(1, round((target - fixed) / per_layer))
    if layers > 60:  # mlx-lm sanitize drops "model.layers.61*": grow the MLP instead
        layers = 60
        attn = sum(nbytes(d, s) for n, d, s in layer_tensors(cfg, 0) if ".mlp." not in n)
        inter = int(((target - fixed) / layers - attn) / (3 * h)) // 64 * 64
        if inter % BLOCK == 0:
            inter += 64  # keep a ragged block column in down_proj
        cfg["intermediate_size"] = inter
    cfg["num_hidden_layers"] = layers
    cfg["first_k_dense_replace"] = layers  # dense model
    tensors = [("model.embed_tokens.weight", "BF16", [vocab, h])]
    for i in range(layers):
        tensors += layer_tensors(cfg, i)
    tensors += [("model.norm.weight", "BF16", [h]), ("lm_head.weight", "BF16", [vocab, h])]
    return cfg, tensors


def shard(tensors, max_bytes: int) -> list[list[tuple[str, str, list[int]]]]:
    """Greedy shards of <= max_bytes (a single larger tensor gets its own shard);
    each boundary is moved back so that it falls between a weight and its scale."""
    shards, cur, cur_bytes = [], [], 0
    for t in tensors:
        b = nbytes(t[1], t[2])
        if cur and cur_bytes + b > max_bytes:
            # move the cut to just after the last FP8 weight whose scale follows it
            cut = len(cur)
            for j in range(len(cur) - 1, 0, -1):
                if cur[j][0].endswith("weight_scale_inv") and cur[j - 1][1] == "F8_E4M3":
                    cut = j
                    break
            if t[0].endswith("weight_scale_inv"):
                cut = len(cur)  # already split between weight and scale
            shards.append(cur[:cut])
            cur = cur[cut:]
            cur_bytes = sum(nbytes(x[1], x[2]) for x in cur)
        cur.append(t)
        cur_bytes += b
    if cur:
        shards.append(cur)
    return shards


def write_data(f, rng: np.random.Generator, name: str, dtype: str, shape: list[int]) -> None:
    n = math.prod(shape)
    done = 0
    while done < n:
        k = min(CHUNK, n - done)
        if dtype == "F8_E4M3":
            a = np.frombuffer(rng.bytes(k), dtype=np.uint8)
            a = FP8_LUT[a]
        elif dtype == "F32":  # scales, log-uniform in [1e-4, 1e-3]
            a = (10.0 ** rng.uniform(-4.0, -3.0, k)).astype("<f4")
        elif dtype == "BF16":
            if "norm" in name:
                x = (1.0 + 0.05 * rng.standard_normal(k, dtype=np.float32)).astype("<f4")
            else:
                x = (0.02 * rng.standard_normal(k, dtype=np.float32)).astype("<f4")
            a = (x.view("<u4") >> 16).astype("<u2")
        else:
            raise ValueError(dtype)
        f.write(memoryview(a).cast("B"))
        done += k


def write_shard(path: Path, tensors, rng) -> int:
    header: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dtype, shape in tensors:
        b = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + b]}
        off += b
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for name, dtype, shape in tensors:
            write_data(f, rng, name, dtype, shape)
    os.replace(tmp, path)
    return off


def write_tokenizer(out: Path, vocab: int) -> None:
    specials = ["<s>", "</s>", "<unk>"]
    vocab_map = {s: i for i, s in enumerate(specials)}
    for i in range(len(specials), vocab):
        vocab_map[f"t{i}"] = i
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, s in enumerate(specials)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab_map, "unk_token": "<unk>"},
    }
    (out / "tokenizer.json").write_text(json.dumps(tok))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 4096, "clean_up_tokenization_spaces": False,
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2))


def generate(out: Path, size_gb: float, seed: int = 0, shard_mb: float | None = None,
             vocab: int | None = None, verbose: bool = True, plan_fn=None) -> dict:
    """``plan_fn(size_gb, vocab) -> (config, tensors)`` picks the layout (default: this
    module's DeepSeek-V3 one; make_llama_fp8 passes its own)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg, tensors = (plan_fn or plan)(size_gb, vocab)
    total = sum(nbytes(d, s) for _, d, s in tensors)
    if shard_mb is None:
        shard_mb = max(16.0, min(400.0, total / 1e6 / 5))  # >= ~5 shards for small sizes
    shards = shard(tensors, int(shard_mb * 1e6))
    n = len(shards)
    rng = np.random.default_rng(seed)
    weight_map = {}
    t0 = time.time()
    for k, ts in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        write_shard(out / fname, ts, rng)
        for name, _, _ in ts:
            weight_map[name] = fname
        if verbose:
            print(f"  {fname}: {len(ts)} tensors", file=sys.stderr, flush=True)
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 0, "eos_token_id": 1}, indent=2))
    write_tokenizer(out, cfg["vocab_size"])
    split = sum(1 for name, f in weight_map.items()
                if name.endswith("_scale_inv") and weight_map[name[: -len("_scale_inv")]] != f)
    info = {
        "size_gb": size_gb, "seed": seed, "bytes": total, "shards": n,
        "layers": cfg["num_hidden_layers"], "vocab": cfg["vocab_size"],
        "intermediate_size": cfg["intermediate_size"],
        "fp8_weights": sum(1 for _, d, _ in tensors if d == "F8_E4M3"),
        "scales_in_other_shard": split,
        "bf16_output_bytes": sum(nbytes("BF16", s) for _, d, s in tensors if d != "F32"),
        "seconds": round(time.time() - t0, 1),
    }
    return info


def main(argv=None, plan_fn=None, default_gb: float = 1.7, doc: str = __doc__) -> int:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size-gb", type=float, default=default_gb, help="target safetensors data size, decimal GB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-mb", type=float, default=None,
                    help="max shard size in MB (default: min(400, size/5), at least 16)")
    ap.add_argument("--vocab", type=int, default=None, help="vocab size (default: ~15%% of the size, <= 32000)")
    a = ap.parse_args(argv)
    info = generate(a.out, a.size_gb, a.seed, a.shard_mb, a.vocab, plan_fn=plan_fn)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
