"""Write a checkpoint with DeepSeek-V3's *layout and counts* but tiny tensors.

    python -m benchmarks.make_many_shards OUT [--shards 160] [--fp8-weights 44800]
                                              [--hf-cache org/name] [--seed 0]

What the per-call cost of the runtime hook and ``inspect`` depends on is the number of
shards and tensors, not their size: this layout has DeepSeek-V3's (160 shards, 44,800
F8_E4M3 weights, ~90,000 tensors) in about 100 MB.

Per layer, in DeepSeek-V3 naming (``model.layers.N.``): MLA attention (``q_a_proj``,
``q_b_proj``, ``kv_a_proj_with_mqa``, ``kv_b_proj``, ``o_proj``), its norms; the first
three layers have a dense MLP, the others 256 routed experts (``mlp.experts.E.{gate,up,
down}_proj``), a shared expert, a BF16 router ``mlp.gate.weight`` and an F32
``e_score_correction_bias``. Every linear is F8_E4M3 ``[out, in]`` plus an F32
``weight_scale_inv`` ``[ceil(out/128), ceil(in/128)]``. Dimensions are shrunk so that every
scale still tiles 128x128 blocks and most are ragged (hidden 144 = 1.125 blocks, the dense
MLP 288 = 2.25 blocks); config.json carries them and DeepSeek-V3's
``quantization_config``. Layers are filled in order until ``--fp8-weights`` linears exist,
so the last layer may hold fewer experts. Shards are cut by tensor count; every other cut
falls between a weight and its scale (that scale lives in the next shard, as in the real
model), the others between layers' tensors that are not a pair.

``--hf-cache org/name`` lays the result out as ``huggingface_hub`` does under OUT/hub
(``HF_HUB_CACHE=OUT/hub``): ``models--org--name/blobs/<sha256>``, ``snapshots/<rev>/<file>
-> ../../blobs/<sha256>`` relative links, ``refs/main`` holding ``<rev>``. The snapshot
directory is printed as ``"model_dir"``.

Data and file writing come from ``make_dsv3_fp8`` (random E4M3 codes without NaN, scales
log-uniform in [1e-4, 1e-3], BF16 N(0, 0.02), norms near 1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.make_dsv3_fp8 import BLOCK, base_config, nbytes, write_shard, write_tokenizer


DENSE_LAYERS = 3
MAX_LAYERS = 61

Tensor = tuple[str, str, list[int]]


def tiny_config() -> dict:
    cfg = base_config()
    cfg.update({
        "hidden_size": 144, "intermediate_size": 288, "moe_intermediate_size": 16,
        "n_routed_experts": 256, "num_experts_per_tok": 8, "n_shared_experts": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2, "q_lora_rank": 96,
        "kv_lora_rank": 64, "qk_nope_head_dim": 80, "qk_rope_head_dim": 16, "v_head_dim": 48,
        "first_k_dense_replace": DENSE_LAYERS, "vocab_size": 1024,
    })
    return cfg


def _linear(name: str, out: int, inp: int) -> list[Tensor]:
    return [(name + ".weight", "F8_E4M3", [out, inp]),
            (name + ".weight_scale_inv", "F32", [math.ceil(out / BLOCK), math.ceil(inp / BLOCK)])]


def _mlp(prefix: str, inter: int, h: int) -> list[list[Tensor]]:
    return [_linear(prefix + "down_proj", h, inter), _linear(prefix + "gate_proj", inter, h),
            _linear(prefix + "up_proj", inter, h)]


def layer(cfg: dict, i: int, budget: int) -> tuple[list[Tensor], int]:
    """Layer i's tensors, sorted by name, with at most ``budget`` FP8 linears; (tensors, used)."""
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    p = f"model.layers.{i}."
    linears = [
        _linear(p + "self_attn.q_a_proj", cfg["q_lora_rank"], h),
        _linear(p + "self_attn.q_b_proj",
                nh * (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]), cfg["q_lora_rank"]),
        _linear(p + "self_attn.kv_a_proj_with_mqa",
                cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"], h),
        _linear(p + "self_attn.kv_b_proj",
                nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), cfg["kv_lora_rank"]),
        _linear(p + "self_attn.o_proj", h, nh * cfg["v_head_dim"]),
    ]
    plain: list[Tensor] = [
        (p + "input_layernorm.weight", "BF16", [h]),
        (p + "post_attention_layernorm.weight", "BF16", [h]),
        (p + "self_attn.kv_a_layernorm.weight", "BF16", [cfg["kv_lora_rank"]]),
        (p + "self_attn.q_a_layernorm.weight", "BF16", [cfg["q_lora_rank"]]),
    ]
    if i < DENSE_LAYERS:
        linears += _mlp(p + "mlp.", cfg["intermediate_size"], h)
    else:
        e = cfg["n_routed_experts"]
        plain += [(p + "mlp.gate.weight", "BF16", [e, h]),
                  (p + "mlp.gate.e_score_correction_bias", "F32", [e])]
        linears += _mlp(p + "mlp.shared_experts.", cfg["moe_intermediate_size"], h)
        for j in range(e):
            linears += _mlp(f"{p}mlp.experts.{j}.", cfg["moe_intermediate_size"], h)
    linears = linears[:budget]
    tensors = plain + [t for pair in linears for t in pair]
    tensors.sort(key=lambda t: t[0])
    return tensors, len(linears)


def plan(fp8_weights: int) -> tuple[dict, list[Tensor]]:
    cfg = tiny_config()
    h, vocab = cfg["hidden_size"], cfg["vocab_size"]
    tensors: list[Tensor] = [("model.embed_tokens.weight", "BF16", [vocab, h])]
    left, i = fp8_weights, 0
    while left > 0:
        if i == MAX_LAYERS:
            raise SystemExit(f"--fp8-weights {fp8_weights} needs more than {MAX_LAYERS} layers")
        ts, used = layer(cfg, i, left)
        tensors += ts
        left -= used
        i += 1
    cfg["num_hidden_layers"] = i
    cfg["num_nextn_predict_layers"] = 0
    tensors += [("model.norm.weight", "BF16", [h]), ("lm_head.weight", "BF16", [vocab, h])]
    return cfg, tensors


def cut(tensors: list[Tensor], n: int) -> list[list[Tensor]]:
    """``n`` shards of about equal tensor count. Cut k lands between a weight and its scale
    when k is odd, and never inside a pair when k is even."""
    def splits_pair(pos: int) -> bool:
        return (0 < pos < len(tensors) and tensors[pos - 1][1] == "F8_E4M3"
                and tensors[pos][0].endswith("_scale_inv"))

    bounds = [0]
    for k in range(1, n):
        pos = round(k * len(tensors) / n)
        while pos < len(tensors) - 1 and splits_pair(pos) != (k % 2 == 1):
            pos += 1
        if pos <= bounds[-1]:
            raise SystemExit(f"too few tensors ({len(tensors)}) for {n} shards")
        bounds.append(pos)
    bounds.append(len(tensors))
    return [tensors[a:b] for a, b in zip(bounds, bounds[1:])]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class PlainLayout:
    """Files written straight into one directory."""

    def __init__(self, out: Path):
        self.model_dir = out
        out.mkdir(parents=True, exist_ok=True)

    def path_for(self, name: str) -> Path:
        return self.model_dir / name

    def added(self, name: str) -> None:
        pass

    def finish(self) -> None:
        pass


class HubCacheLayout:
    """Files written as blobs named by their sha256, linked from ``snapshots/<rev>/``."""

    def __init__(self, out: Path, repo_id: str):
        org, name = repo_id.split("/")
        self.repo = out / "hub" / f"models--{org}--{name}"
        self.blobs = self.repo / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, str] = {}  # file name -> sha256
        self.model_dir: Path | None = None

    def path_for(self, name: str) -> Path:
        return self.blobs / f"incoming-{name}"

    def added(self, name: str) -> None:
        staged = self.path_for(name)
        sha = _sha256(staged)
        os.replace(staged, self.blobs / sha)
        self.files[name] = sha

    def finish(self) -> None:
        listing = "".join(f"{n} {s}\n" for n, s in sorted(self.files.items()))
        rev = hashlib.sha1(listing.encode()).hexdigest()
        snap = self.repo / "snapshots" / rev
        snap.mkdir(parents=True, exist_ok=True)
        for name, sha in self.files.items():
            link = snap / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path("..", "..", "blobs", sha))
        (self.repo / "refs").mkdir(exist_ok=True)
        (self.repo / "refs" / "main").write_text(rev)
        self.model_dir = snap


def generate(out: Path, shards: int = 160, fp8_weights: int = 44800, seed: int = 0,
             hf_repo: str | None = None, verbose: bool = True) -> dict:
    t0 = time.time()
    layout = HubCacheLayout(out, hf_repo) if hf_repo else PlainLayout(out)
    cfg, tensors = plan(fp8_weights)
    parts = cut(tensors, shards)
    rng = np.random.default_rng(seed)
    weight_map: dict[str, str] = {}
    for k, ts in enumerate(parts):
        fname = f"model-{k + 1:05d}-of-{len(parts):05d}.safetensors"
        write_shard(layout.path_for(fname), ts, rng)
        layout.added(fname)
        weight_map.update((name, fname) for name, _, _ in ts)
        if verbose and (k + 1) % 20 == 0:
            print(f"  {k + 1}/{len(parts)} shards", file=sys.stderr, flush=True)
    total = sum(nbytes(d, s) for _, d, s in tensors)
    documents = {
        "model.safetensors.index.json": {"metadata": {"total_size": total},
                                         "weight_map": dict(sorted(weight_map.items()))},
        "config.json": cfg,
        "generation_config.json": {"_from_model_config": True, "bos_token_id": 0,
                                   "eos_token_id": 1},
    }
    for name, doc in documents.items():
        layout.path_for(name).write_text(json.dumps(doc, indent=2))
        layout.added(name)
    tok_dir = layout.path_for("tok")
    tok_dir.mkdir(exist_ok=True)
    write_tokenizer(tok_dir, cfg["vocab_size"])
    for f in sorted(tok_dir.iterdir()):
        os.replace(f, layout.path_for(f.name))
        layout.added(f.name)
    tok_dir.rmdir()
    layout.finish()
    cross = sum(1 for name, f in weight_map.items()
                if name.endswith("_scale_inv") and weight_map[name[: -len("_scale_inv")]] != f)
    return {
        "model_dir": str(layout.model_dir), "hf_repo": hf_repo, "shards": len(parts),
        "tensors": len(tensors), "fp8_weights": sum(1 for t in tensors if t[1] == "F8_E4M3"),
        "scales_in_other_shard": cross, "layers": cfg["num_hidden_layers"], "bytes": total,
        "seed": seed, "seconds": round(time.time() - t0, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shards", type=int, default=160)
    ap.add_argument("--fp8-weights", type=int, default=44800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf-cache", metavar="ORG/NAME", default=None,
                    help="lay out as the Hugging Face cache under OUT/hub")
    a = ap.parse_args(argv)
    if a.hf_cache is not None and a.hf_cache.count("/") != 1:
        ap.error("--hf-cache wants ORG/NAME")
    print(json.dumps(generate(a.out, a.shards, a.fp8_weights, a.seed, a.hf_cache)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
