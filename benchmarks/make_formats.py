"""Write one Llama-layout checkpoint per quantization family, from the same random weights.

    python -m benchmarks.make_formats OUT FAMILY [--layers 22] [--vocab 32000] [--seed 0]

FAMILY is one of FAMILIES (below). Dimensions are TinyLlama-1.1B's (hidden 2048, 32 heads
of 64, 4 KV heads, intermediate 5632, 22 layers, vocabulary 32000; ``make_llama_fp8``'s
config), so every family is the same model. Every linear layer of every block starts as the
same float32 matrix, N(0, 0.02) drawn from a generator seeded by (seed, layer, module), and is
then quantized round-to-nearest the way each writer's own quantizer does it (absmax or
min/max scales per group or block): a random model, not trained weights (no outliers, no
GPTQ/AWQ error compensation), but codes spread as a writer's are, so that a re-quantization
error means something. Embeddings, norms and ``lm_head`` are BF16 and identical across
families.

For every quantized module the generator also records the format's own error (SQNR of the
exact decode against the float32 weights it was made from) and the digest of its exact decode,
computed here independently of scalefix (``float32(code - zero) * float32(scale)``, NVFP4's
block scale ``float32(e4m3) * weight_scale_2`` first, rounded to BF16 once, nearest even):
the harness checks the BF16 rewrite against it. numpy only; one module in memory at a time
(the largest, 5632 x 2048, is ~0.5 GB with its temporaries); one shard per few layers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks import make_dsv3_fp8
from benchmarks import make_llama_fp8


GEN_VERSION = 1  # bump when an output changes, to invalidate cached checkpoints
SIGMA = 0.02
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float32)
E4M3 = np.array([(c & 7) / 8 * 2.0 ** -6 if c < 8 else (1 + (c & 7) / 8) * 2.0 ** ((c >> 3) - 7)
                 for c in range(127)], np.float32)  # codes 0x00..0x7E, increasing; 0x7F is NaN

CT_W4 = {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
         "observer": "minmax", "dynamic": False, "actorder": None}


def _ct(symmetric: bool) -> dict:
    return {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "quantization_status": "compressed", "version": "0.19.0", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                          "output_activations": None,
                                          "weights": {**CT_W4, "symmetric": symmetric}}}}


NVFP4_QC = {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
            "exclude_modules": ["lm_head"]}

# family -> (what, quantization_config)
FAMILIES = {
    "ct-w4a16": ("compressed-tensors pack-quantized INT4, symmetric, group 128 (W4A16)", _ct(True)),
    "ct-w4a16-asym": ("compressed-tensors pack-quantized INT4 with zero points, group 128", _ct(False)),
    "gptq": ("GPTQ v1 4-bit, group 128, sym, no act-order (RTN codes)",
             {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
              "checkpoint_format": "gptq", "damp_percent": 0.01, "true_sequential": True}),
    "awq": ("AWQ GEMM 4-bit, group 128, zero point (RTN codes)",
            {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm",
             "zero_point": True}),
    "nvfp4": ("NVIDIA ModelOpt NVFP4 (E4M3 per 16 x F32 weight_scale_2)",
              {"quant_method": "modelopt", **NVFP4_QC}),
    "dsv4": ("DeepSeek-V4 style: attention FP8 + E8M0 128x128 `.scale`, MLP MXFP4 (E8M0 per 32)",
             {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
              "activation_scheme": "dynamic", "weight_block_size": [128, 128]}),
    "fp8": ("FP8 + F32 weight_scale_inv 128x128 (DeepSeek-V3 / Qwen3-FP8)", make_llama_fp8.FP8_QC),
}
MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


# --------------------------------------------------------------------------- codecs

def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> BF16 bit pattern, round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)


def bf16(x: np.ndarray) -> np.ndarray:
    return (bf16_bits(x).astype(np.uint32) << 16).view(np.float32)


def f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def nearest(table: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Index of the nearest value of an increasing table for each |a| (clamped to its ends)."""
    return np.searchsorted((table[1:] + table[:-1]) / 2, np.abs(a)).astype(np.uint8)


def e4m3_encode(x: np.ndarray) -> np.ndarray:
    """Nearest E4M3FN code (ties to even), saturating at 448. Normals: the float32 bits
    rounded to 3 mantissa bits, exponent rebiased (127 -> 7); subnormals: rint(|x| / 2^-9)."""
    a = np.abs(x).astype(np.float32)
    u = a.view(np.uint32)
    normal = ((u + 0x7FFFF + ((u >> 20) & 1)) >> 20).astype(np.int32) - (120 << 3)
    code = np.where(a < 2.0 ** -6, np.rint(a * 512).astype(np.int32), normal)
    return np.clip(code, 0, 126).astype(np.uint8) | (np.signbit(x).astype(np.uint8) << 7)


def e4m3_value(codes: np.ndarray) -> np.ndarray:
    v = E4M3[codes & 0x7F]
    return np.where(codes & 0x80, -v, v)


def e2m1_encode(x: np.ndarray) -> np.ndarray:
    return nearest(E2M1, x) | (np.signbit(x).astype(np.uint8) << 3)


def e2m1_value(codes: np.ndarray) -> np.ndarray:
    v = E2M1[codes & 7]
    return np.where(codes & 8, -v, v)


def pack4(v: np.ndarray, order=range(8)) -> np.ndarray:
    """uint4 values along the last axis -> int32 words, nibble k = value order[k] of 8."""
    v = v.reshape(*v.shape[:-1], -1, 8)[..., list(order)].astype(np.uint32)
    return (v << (4 * np.arange(8, dtype=np.uint32))).sum(-1, dtype=np.uint32).view("<i4")


def nibbles_low_first(codes: np.ndarray) -> np.ndarray:
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def groups(w: np.ndarray, g: int) -> np.ndarray:
    return w.reshape(w.shape[0], -1, g)


def blocks(w: np.ndarray, b: int = 128) -> np.ndarray:
    """[out/b, in/b, b, b] view of a weight whose dims are multiples of b."""
    o, i = w.shape
    return w.reshape(o // b, b, i // b, b).transpose(0, 2, 1, 3)


def unblock(x: np.ndarray) -> np.ndarray:
    ob, ib, b, _ = x.shape
    return x.transpose(0, 2, 1, 3).reshape(ob * b, ib * b)


def decode_digest(w: np.ndarray) -> str:
    """Digest of the exact decode (float32) rounded once to BF16, as the BF16 rewrite stores it."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"BF16{list(w.shape)}".encode())
    h.update(bf16_bits(w).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- quantizers
# each: (w float32 [out, in], module name) -> ({tensor: (dtype, array)}, exact float32 decode)

def int_sym(w, p, g=128):
    """compressed-tensors symmetric: scale = absmax / 7.5 (model dtype), q = clamp(rint(w/s), -8, 7)."""
    s = bf16(np.abs(groups(w, g)).max(-1, keepdims=True) / 7.5)
    q = np.clip(np.rint(groups(w, g) / s), -8, 7).astype(np.int8)
    dec = (q.astype(np.float32) * s).reshape(w.shape)
    return {p + ".weight_packed": ("I32", pack4((q + 8).astype(np.uint8).reshape(w.shape))),
            p + ".weight_scale": ("BF16", bf16_bits(s[..., 0])),
            p + ".weight_shape": ("I64", np.array(w.shape, np.int64))}, dec


def int_asym(w, p, g=128):
    """compressed-tensors zero point: s = (max - min) / 15, zp = clamp(-8 - rint(min/s), -8, 7),
    q = clamp(rint(w/s) + zp, -8, 7); zero points packed along dim 0, offset by 8."""
    x = groups(w, g)
    lo, hi = np.minimum(x.min(-1, keepdims=True), 0), np.maximum(x.max(-1, keepdims=True), 0)
    s = bf16((hi - lo) / 15)
    zp = np.clip(-8 - np.rint(lo / s), -8, 7).astype(np.int8)
    q = np.clip(np.rint(x / s) + zp, -8, 7).astype(np.int8)
    dec = ((q.astype(np.int32) - zp).astype(np.float32) * s).reshape(w.shape)
    zpu = (zp[..., 0] + 8).astype(np.uint8)  # [out, G]
    return {p + ".weight_packed": ("I32", pack4((q + 8).astype(np.uint8).reshape(w.shape))),
            p + ".weight_scale": ("BF16", bf16_bits(s[..., 0])),
            p + ".weight_shape": ("I64", np.array(w.shape, np.int64)),
            p + ".weight_zero_point": ("I32", np.ascontiguousarray(pack4(zpu.T).T))}, dec


def gptq(w, p, g=128):
    """GPTQ sym: s = 2 * absmax / 15 (F16), z = 8 (stored 7), q = clamp(rint(w/s) + 8, 0, 15);
    qweight [in/8, out] packed along the input, qzeros [G, out/8], scales [G, out]."""
    x = groups(w, g)
    s = f16(2 * np.abs(x).max(-1, keepdims=True) / 15)
    q = np.clip(np.rint(x / s) + 8, 0, 15).astype(np.uint8)
    dec = ((q.astype(np.int32) - 8).astype(np.float32) * s).reshape(w.shape)
    q = q.reshape(w.shape)
    G = w.shape[1] // g
    return {p + ".qweight": ("I32", np.ascontiguousarray(pack4(q).T)),
            p + ".qzeros": ("I32", pack4(np.full((G, w.shape[0]), 7, np.uint8))),
            p + ".scales": ("F16", np.ascontiguousarray(s[..., 0].T).astype(np.float16)),
            p + ".g_idx": ("I32", (np.arange(w.shape[1]) // g).astype(np.int32))}, dec


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ's pack order: nibble k holds column ORDER[k]


def awq(w, p, g=128):
    """AWQ GEMM: s = (max - min) / 15 (F16), z = clamp(-rint(min/s), 0, 15),
    q = clamp(rint(w/s) + z, 0, 15); qweight [in, out/8] packed along the output."""
    x = groups(w, g)
    lo, hi = x.min(-1, keepdims=True), x.max(-1, keepdims=True)
    s = f16((hi - lo) / 15)
    z = np.clip(-np.rint(lo / s), 0, 15)
    q = np.clip(np.rint(x / s) + z, 0, 15).astype(np.uint8)
    dec = ((q.astype(np.int32) - z.astype(np.int32)).astype(np.float32) * s).reshape(w.shape)
    q = q.reshape(w.shape)
    return {p + ".qweight": ("I32", pack4(q.T.copy(), AWQ_ORDER)),
            p + ".qzeros": ("I32", pack4(np.ascontiguousarray(z[..., 0].T).astype(np.uint8), AWQ_ORDER)),
            p + ".scales": ("F16", np.ascontiguousarray(s[..., 0].T).astype(np.float16))}, dec


def nvfp4(w, p):
    """ModelOpt NVFP4: weight_scale_2 = amax / (6 * 448); block scale e4m3(amax16 / 6 / ws2),
    clamped to [2^-9, 448]; codes e2m1(w / (e4m3 * ws2)), low nibble = even element."""
    ws2 = np.float32(np.abs(w).max() / np.float32(6 * 448))
    x = groups(w, 16)
    bs = np.clip(np.abs(x).max(-1, keepdims=True) / 6 / ws2, 2.0 ** -9, 448)
    sc = e4m3_encode(bs)
    eff = e4m3_value(sc) * ws2  # float32, as both writers compute it
    codes = e2m1_encode(x / eff).reshape(w.shape)
    dec = (e2m1_value(codes).reshape(x.shape) * eff).reshape(w.shape)
    return {p + ".weight": ("U8", nibbles_low_first(codes)),
            p + ".weight_scale": ("F8_E4M3", sc[..., 0]),
            p + ".weight_scale_2": ("F32", np.array(ws2, np.float32)),
            p + ".input_scale": ("F32", np.array(0.0123, np.float32))}, dec


def fp8_e8m0(w, p):
    """DeepSeek-V4 attention: power-of-two 128x128 block scale 2^ceil(log2(amax/448)) as E8M0."""
    x = blocks(w)
    e = np.ceil(np.log2(np.abs(x).max((-1, -2), keepdims=True) / 448)).astype(np.int32)
    codes = e4m3_encode(x / np.exp2(e).astype(np.float32))
    dec = unblock(e4m3_value(codes) * np.exp2(e).astype(np.float32))
    return {p + ".weight": ("F8_E4M3", unblock(codes)),
            p + ".scale": ("F8_E8M0", (e[:, :, 0, 0] + 127).astype(np.uint8))}, dec


def mxfp4(w, p):
    """OCP MXFP4 (DeepSeek-V4 experts): per 32, scale 2^(floor(log2 amax) - 2), codes e2m1
    (clamped to 6), I8 [out, in/2] low nibble first, E8M0 `.scale` [out, in/32]."""
    x = groups(w, 32)
    e = (np.floor(np.log2(np.abs(x).max(-1, keepdims=True))) - 2).astype(np.int32)
    sc = np.exp2(e).astype(np.float32)
    codes = e2m1_encode(x / sc)
    dec = (e2m1_value(codes) * sc).reshape(w.shape)
    return {p + ".weight": ("I8", nibbles_low_first(codes.reshape(w.shape)).view(np.int8)),
            p + ".scale": ("F8_E8M0", (e[..., 0] + 127).astype(np.uint8))}, dec


def fp8_float(w, p):
    """DeepSeek-V3 / Qwen3-FP8: F32 weight_scale_inv = amax / 448 per 128x128 block."""
    x = blocks(w)
    s = (np.abs(x).max((-1, -2), keepdims=True) / np.float32(448)).astype(np.float32)
    codes = e4m3_encode(x / s)
    dec = unblock(e4m3_value(codes) * s)
    return {p + ".weight": ("F8_E4M3", unblock(codes)),
            p + ".weight_scale_inv": ("F32", s[:, :, 0, 0])}, dec


def quantizer(family: str, module: str):
    if family == "dsv4":
        return mxfp4 if module.startswith("mlp.") else fp8_e8m0
    return {"ct-w4a16": int_sym, "ct-w4a16-asym": int_asym, "gptq": gptq, "awq": awq,
            "nvfp4": nvfp4, "fp8": fp8_float}[family]


# --------------------------------------------------------------------------- the checkpoint

def module_weight(seed: int, layer: int, j: int, shape) -> np.ndarray:
    rng = np.random.default_rng([seed, layer, j])
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(SIGMA)


def plain(name: str, shape, rng) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    x = 1 + 0.05 * x if "norm" in name else SIGMA * x
    return bf16_bits(x.astype(np.float32))


def write_safetensors(path: Path, items) -> None:
    """items: [(name, dtype, array)]; header first (sizes known), data in order; atomic."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, a in items:
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for _, _, a in items:
            f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
    os.replace(tmp, path)


def generate(out: Path, family: str, layers: int = 22, vocab: int = 32000, seed: int = 0,
             layers_per_shard: int = 4, verbose: bool = True) -> dict:
    """Write the checkpoint; return its info (with the exact-decode digest of every module)."""
    out.mkdir(parents=True, exist_ok=True)
    what, qc = FAMILIES[family]
    cfg = make_llama_fp8.base_config()
    cfg.update(num_hidden_layers=layers, vocab_size=vocab, quantization_config=qc)
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    shapes = {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, q), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
              "mlp.down_proj": (h, inter)}
    rng = np.random.default_rng([seed, 1 << 20])
    n_shards = math.ceil(layers / layers_per_shard)
    weight_map, digests, total, quantized_bytes, own_db = {}, {}, 0, 0, []
    for k in range(n_shards):
        fname = f"model-{k + 1:05d}-of-{n_shards:05d}.safetensors"
        items = []
        if k == 0:
            items.append(("model.embed_tokens.weight", "BF16", plain("embed", (vocab, h), rng)))
        for layer in range(k * layers_per_shard, min(layers, (k + 1) * layers_per_shard)):
            p = f"model.layers.{layer}."
            for j, mod in enumerate(MODULES):
                w = module_weight(seed, layer, j, shapes[mod])
                tensors, dec = quantizer(family, mod)(w, p + mod)
                digests[p + mod + ".weight"] = decode_digest(dec)
                own_db.append(float(10 * np.log10(np.sum(np.square(w, dtype=np.float64))
                                                  / np.sum(np.square(dec - w, dtype=np.float64)))))
                del w, dec
                for name, (dtype, a) in tensors.items():
                    items.append((name, dtype, a))
                    quantized_bytes += a.nbytes
            for norm in ("input_layernorm", "post_attention_layernorm"):
                items.append((p + norm + ".weight", "BF16", plain("norm", (h,), rng)))
        if k == n_shards - 1:
            items.append(("model.norm.weight", "BF16", plain("norm", (h,), rng)))
            items.append(("lm_head.weight", "BF16", plain("lm_head", (vocab, h), rng)))
        write_safetensors(out / fname, items)
        total += sum(a.nbytes for _, _, a in items)
        weight_map.update({name: fname for name, _, _ in items})
        if verbose:
            print(f"  {family}: {fname} ({len(items)} tensors)", file=sys.stderr, flush=True)
        del items
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if family == "nvfp4":
        (out / "hf_quant_config.json").write_text(json.dumps(
            {"producer": {"name": "modelopt", "version": "0.37.0"}, "quantization": NVFP4_QC}, indent=2))
    make_dsv3_fp8.write_tokenizer(out, vocab)
    linear_params = layers * sum(math.prod(s) for s in shapes.values())
    return {"family": family, "what": what, "gen_version": GEN_VERSION, "seed": seed,
            "layers": layers, "vocab": vocab, "bytes": total, "quantized_bytes": quantized_bytes,
            "linear_params": linear_params, "modules": len(digests), "shards": n_shards,
            "own_sqnr_db": {"min": min(own_db), "median": sorted(own_db)[len(own_db) // 2]},
            "decode_digests": digests}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("family", choices=list(FAMILIES))
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    info = generate(a.out, a.family, a.layers, a.vocab, a.seed)
    info.pop("decode_digests")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
