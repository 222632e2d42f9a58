"""Integer and NVFP4 families (docs/formats.md §8-§12): exact oracle decoders written from each
writer's documented formula, independent of scalefix, and builders for the layouts that no
CPU writer produces (ModelOpt NVFP4, GPTQ v1, AWQ GEMM, compressed-tensors' legacy per-word
packing, unpacked zero points, ``weight_g_idx``).

Rounding: every code times its (effective) scale, in float32, rounded to BF16 once. Where a
writer first forms an effective scale in float32 (NVFP4: ModelOpt ``fl(ws * ws2)``,
compressed-tensors ``fl(ws / global)``), the oracle does the same, because the writers'
own dequantizers do (ModelOpt ``NVFP4QTensor.dequantize``, compressed-tensors
``_dequantize``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .checkpoint import save_checkpoint
from .packing import AWQ_ORDER, awq_pack, pack_bits

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
SIDE_SUFFIXES = (".qweight", ".qzeros", ".scales", ".g_idx", ".weight_packed", ".weight_scale",
                 ".weight_zero_point", ".weight_shape", ".weight_global_scale",
                 ".weight_scale_2", ".input_scale", ".input_global_scale", ".weight_g_idx")


# ---------------------------------------------------------------- bit packing (int32 words)

def _u32(words: torch.Tensor) -> torch.Tensor:
    return words.to(torch.int64) & 0xFFFFFFFF


def unpack_bits(words: torch.Tensor, bits: int, n: int, dense: bool = True) -> torch.Tensor:
    """Unsigned codes [..., n] from int32 words [..., W], LSB first. ``dense``: one bitstream
    (code i at bit i*bits, crossing word boundaries; compressed-tensors >= PR #715);
    otherwise 32 // bits codes per word, the top bits unused (older compressed-tensors)."""
    w = _u32(words)
    i = torch.arange(n)
    if dense:
        start = i * bits
        word, off = start // 32, start % 32
        w = torch.cat([w, torch.zeros_like(w[..., :1])], dim=-1)  # room for the last spill
        pair = w[..., word] | (w[..., word + 1] << 32)
    else:
        per = 32 // bits
        word, off = i // per, (i % per) * bits
        pair = w[..., word]
    return (pair >> off) & ((1 << bits) - 1)


# ---------------------------------------------------------------- exact oracle decoders

def bf16_once(x: torch.Tensor) -> torch.Tensor:
    assert x.dtype == torch.float32
    return x.to(torch.bfloat16)


def int_decode(codes: torch.Tensor, zero: torch.Tensor | int, scale: torch.Tensor,
               group_of_column: torch.Tensor) -> torch.Tensor:
    """(q_u - z_u) * s[row, group_of_column[col]] in float32, rounded to BF16 once.
    codes [..., out, in] unsigned; zero int or [..., out, G] unsigned; scale [..., out, G]."""
    g = group_of_column.long()
    s = scale.to(torch.float32)[..., g]
    z = zero if isinstance(zero, int) else zero.to(torch.float32)[..., g]
    return bf16_once((codes.to(torch.float32) - z) * s)


def groups(n: int, group: int) -> torch.Tensor:
    return torch.arange(n) // group


def ct_pack_decode(packed, scale, shape, bits, zero_point=None, g_idx=None, dense=True,
                   zp_packed=True) -> torch.Tensor:
    """compressed-tensors pack-quantized: q_u holds q + 2^(b-1); zero points (same offset)
    packed along dim 0 when ``zp_packed`` or stored as signed int8 otherwise."""
    out, inn = shape[-2], shape[-1]
    codes = unpack_bits(packed, bits, inn, dense)
    offset = 1 << (bits - 1)
    if zero_point is None:
        zero = offset
    elif zp_packed:  # [ceil(out*b/32), G]: packed along the output dim
        zero = unpack_bits(zero_point.transpose(-1, -2), bits, out, dense).transpose(-1, -2)
    else:
        zero = zero_point.to(torch.int64) + offset
    per_group = -(-inn // scale.shape[-1])  # channel: one group of all columns
    cols = g_idx if g_idx is not None else groups(inn, per_group)
    return int_decode(codes, zero, scale, cols)


def nvfp4_codes(packed: torch.Tensor) -> torch.Tensor:
    """U8 [..., in/2] -> float32 E2M1 values [..., in]; the even element is the low nibble."""
    nib = torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)
    return E2M1[nib.long()]


def nvfp4_modelopt_decode(packed, weight_scale, weight_scale_2) -> torch.Tensor:
    """ModelOpt NVFP4QTensor.dequantize: effective scale fl32(e4m3 * ws2), then code * it."""
    eff = weight_scale.to(torch.float32) * weight_scale_2.to(torch.float32)
    return bf16_once(nvfp4_codes(packed) * eff.repeat_interleave(16, dim=-1))


def nvfp4_ct_decode(packed, weight_scale, global_scale) -> torch.Tensor:
    """compressed-tensors NVFP4: effective scale fl32(e4m3 / global), then code * it."""
    eff = weight_scale.to(torch.float32) / global_scale.to(torch.float32)
    return bf16_once(nvfp4_codes(packed) * eff.repeat_interleave(16, dim=-1))


def gptq_unpack(qweight: torch.Tensor, qzeros: torch.Tensor, bits: int = 4):
    """GPTQ v1: qweight [in*b/32, out] packed along the input (rows), qzeros [G, out*b/32]
    packed along the output, storing z - 1. Returns q_u [in, out] and z [G, out]."""
    inn = qweight.shape[0] * 32 // bits
    q = unpack_bits(qweight.transpose(0, 1), bits, inn).transpose(0, 1)
    z = unpack_bits(qzeros, bits, qzeros.shape[1] * 32 // bits) + 1
    return q, z


def gptq_decode(qweight, qzeros, scales, g_idx, bits: int = 4) -> torch.Tensor:
    """w[o, i] = s[g_idx[i], o] * (q[i, o] - z[g_idx[i], o]), as [out, in]."""
    q, z = gptq_unpack(qweight, qzeros, bits)
    return int_decode(q.T, z.T, scales.T, g_idx)


def awq_unpack(words: torch.Tensor) -> torch.Tensor:
    """AutoAWQ GEMM 4-bit words [rows, cols/8] -> [rows, cols] unsigned, order undone."""
    nib = unpack_bits(words, 4, words.shape[-1] * 8)   # nibble k of each word, in k order
    nib = nib.reshape(*words.shape, 8)
    out = torch.empty_like(nib)
    out[..., list(AWQ_ORDER)] = nib
    return out.flatten(-2)


def awq_decode(qweight, qzeros, scales, group: int) -> torch.Tensor:
    """AWQ GEMM: qweight [in, out/8], qzeros [in/g, out/8], scales [in/g, out] -> [out, in]."""
    q, z = awq_unpack(qweight), awq_unpack(qzeros)
    return int_decode(q.T, z.T, scales.T, groups(q.shape[0], group))


# ---------------------------------------------------------------- builders

@dataclass
class Built:
    """A formula-built checkpoint: every tensor a BF16 rewrite must produce, by name."""
    path: Path
    schemes: dict[str, str]                       # source weight tensor -> inspect scheme
    oracle: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def _plain(t: dict, oracle: dict, gen, h: int, dtype=torch.bfloat16, vocab: int = 64) -> None:
    """Unquantized tensors: a rewrite copies them byte for byte."""
    for name, shape in (("model.embed_tokens.weight", (vocab, h)), ("lm_head.weight", (vocab, h)),
                        ("model.norm.weight", (h,))):
        t[name] = (torch.randn(shape, generator=gen) * 0.05).to(dtype)
        oracle[name] = t[name]


# [out, in] per module. GPTQ / AWQ pack along the output, so out % 8 == 0; in=384 is three
# groups of 128; o_proj out=96 is not a multiple of 32.
LINEARS = {"self_attn.q_proj": (128, 256), "self_attn.o_proj": (96, 256),
           "mlp.down_proj": (128, 384)}
# compressed-tensors: out=100 leaves a partial zero-point word; in=256 a partial last word
# for 3/5/6-bit codes packed 32 // bits per word.
CT_LINEARS = {"self_attn.q_proj": (100, 256), "mlp.down_proj": (128, 384)}


def _e4m3_scales(shape, gen) -> torch.Tensor:
    """Positive E4M3 block scales over the range writers emit (clamped to [2^-9, 448])."""
    codes = torch.randint(0x08, 0x7E, shape, dtype=torch.uint8, generator=gen)
    return codes.view(torch.float8_e4m3fn)


def modelopt_nvfp4(root: Path) -> Built:
    """NVIDIA ModelOpt NVFP4 (unified HF export): U8 weight [out, in/2], F8_E4M3
    weight_scale [out, in/16], F32 scalar weight_scale_2 = amax / (6 * 448), F32 scalar
    input_scale; hf_quant_config.json quant_algo NVFP4 and config.json quant_method modelopt."""
    gen = torch.Generator().manual_seed(101)
    t, oracle, schemes = {}, {}, {}
    for i, (mod, (out, inn)) in enumerate(LINEARS.items()):
        p = f"model.layers.{i}.{mod}"
        codes = torch.randint(0, 16, (out, inn), dtype=torch.uint8, generator=gen)
        packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)
        ws = _e4m3_scales((out, inn // 16), gen)
        amax = torch.rand((), generator=gen) * 0.5 + 0.05
        ws2 = (amax / (6.0 * 448.0)).to(torch.float32)
        t[p + ".weight"], t[p + ".weight_scale"], t[p + ".weight_scale_2"] = packed, ws, ws2
        t[p + ".input_scale"] = torch.tensor(0.0123, dtype=torch.float32)
        oracle[p + ".weight"] = nvfp4_modelopt_decode(packed, ws, ws2)
        schemes[p + ".weight"] = "nvfp4"
    _plain(t, oracle, gen, 256)
    quant = {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
             "exclude_modules": ["lm_head"]}
    config = {"model_type": "llama", "torch_dtype": "bfloat16",
              "quantization_config": {"quant_method": "modelopt", **quant}}
    producer = {"name": "modelopt", "version": "0.37.0"}
    save_checkpoint(root, {"model.safetensors": t}, config, indent=1, extra_files={
        "hf_quant_config.json": {"producer": producer, "quantization": quant}})
    return Built(root, schemes, oracle, config)


def gptq(root: Path, actorder: bool, group: int = 32, bits: int = 4) -> Built:
    """AutoGPTQ / GPTQModel v1 (``checkpoint_format: gptq``): qweight I32 [in*b/32, out]
    packed along the input, qzeros I32 [G, out*b/32] storing z - 1, scales F16 [G, out],
    g_idx I32 [in]: i // group, or an act-order permutation of it (desc_act). Symmetric
    (stored zero 7, as AutoGPTQ writes sym=True) without act-order, asymmetric with it."""
    gen = torch.Generator().manual_seed(102 + actorder)
    t, oracle, schemes = {}, {}, {}
    for i, (mod, (out, inn)) in enumerate(LINEARS.items()):
        if inn % group or out % (32 // bits):
            raise ValueError("GPTQ needs in % group == 0 and out % (32/bits) == 0")
        p = f"model.layers.{i}.{mod}"
        ngroups = inn // group
        q = torch.randint(0, 1 << bits, (inn, out), generator=gen)
        z = (torch.randint(1, 1 << bits, (ngroups, out), generator=gen) if actorder
             else torch.full((ngroups, out), 1 << (bits - 1)))  # stored z - 1 >= 0
        s = (torch.rand(ngroups, out, generator=gen) * 4e-3 + 1e-4).to(torch.float16)
        g_idx = groups(inn, group).to(torch.int32)
        if actorder:  # desc_act: columns quantized in a permuted order, groups follow it
            g_idx = g_idx[torch.randperm(inn, generator=gen)].contiguous()
        t[p + ".qweight"] = pack_bits(q.T, bits).T.contiguous()
        t[p + ".qzeros"] = pack_bits(z - 1, bits)
        t[p + ".scales"], t[p + ".g_idx"] = s, g_idx
        t[p + ".bias"] = (torch.randn(out, generator=gen) * 0.01).to(torch.float16)
        oracle[p + ".weight"] = gptq_decode(t[p + ".qweight"], t[p + ".qzeros"], s, g_idx, bits)
        oracle[p + ".bias"] = t[p + ".bias"]
        schemes[p + ".qweight"] = f"gptq-int{bits}-group{group}" + ("-actorder" if actorder else "")
    _plain(t, oracle, gen, 256, torch.float16)
    config = {"model_type": "llama", "torch_dtype": "float16", "quantization_config": {
        "quant_method": "gptq", "bits": bits, "group_size": group, "desc_act": actorder,
        "sym": not actorder, "true_sequential": True, "checkpoint_format": "gptq",
        "damp_percent": 0.01, "static_groups": False}}
    save_checkpoint(root, {"model.safetensors": t}, config, indent=1)
    return Built(root, schemes, oracle, config)


def awq(root: Path, group: int = 64) -> Built:
    """AutoAWQ GEMM: qweight I32 [in, out/8] packed along the output in nibble order
    0,2,4,6,1,3,5,7 (unpack order 0,4,1,5,2,6,3,7), qzeros I32 [in/g, out/8] the same way,
    scales F16 [in/g, out]; quant_method awq, version gemm, zero_point true."""
    gen = torch.Generator().manual_seed(104)
    t, oracle, schemes = {}, {}, {}
    for i, (mod, (out, inn)) in enumerate(LINEARS.items()):
        p = f"model.layers.{i}.{mod}"
        ngroups = inn // group
        q = torch.randint(0, 16, (inn, out), generator=gen)
        z = torch.randint(0, 16, (ngroups, out), generator=gen)
        s = (torch.rand(ngroups, out, generator=gen) * 4e-3 + 1e-4).to(torch.float16)
        t[p + ".qweight"], t[p + ".qzeros"] = awq_pack(q), awq_pack(z)
        t[p + ".scales"] = s
        oracle[p + ".weight"] = awq_decode(t[p + ".qweight"], t[p + ".qzeros"], s, group)
        schemes[p + ".qweight"] = f"awq-int4-group{group}"
    _plain(t, oracle, gen, 256, torch.float16)
    config = {"model_type": "llama", "torch_dtype": "float16", "quantization_config": {
        "quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm",
        "zero_point": True, "modules_to_not_convert": None}}
    save_checkpoint(root, {"model.safetensors": t}, config, indent=1)
    return Built(root, schemes, oracle, config)


def ct_legacy(root: Path, bits: int, *, dense: bool, zp: str | None = None,
              actorder: bool = False, group: int = 128, version: str = "0.9.3") -> Built:
    """compressed-tensors pack-quantized in every layout its releases wrote: ``dense`` False
    packs 32 // bits codes per word (every release before 0.18-0.19; dense since PR #715),
    ``zp`` "packed" (along dim 0, since 0.9.4) or "int8" (unpacked, up to 0.9.3),
    ``actorder`` adds ``weight_g_idx`` (actorder="group": llmcompressor 0.14 no longer
    writes it, compressed-tensors 0.19 no longer reads it). BF16 scales [out, G];
    ``weight_shape`` I64 [2]; ``version`` goes into the config as the writer records it."""
    gen = torch.Generator().manual_seed(110 + bits + 7 * dense + 13 * actorder)
    t, oracle, schemes = {}, {}, {}
    offset = 1 << (bits - 1)
    for i, (mod, (out, inn)) in enumerate(CT_LINEARS.items()):
        p = f"model.layers.{i}.{mod}"
        ngroups = -(-inn // group)
        q = torch.randint(0, 1 << bits, (out, inn), generator=gen)
        s = (torch.rand(out, ngroups, generator=gen) * 4e-3 + 1e-4).to(torch.bfloat16)
        t[p + ".weight_packed"] = pack_bits(q, bits, dense)
        t[p + ".weight_scale"] = s
        t[p + ".weight_shape"] = torch.tensor([out, inn], dtype=torch.int64)
        zero = offset
        if zp:
            zero = torch.randint(0, 1 << bits, (out, ngroups), generator=gen)
            t[p + ".weight_zero_point"] = (pack_bits(zero.T, bits, dense).T.contiguous()
                                           if zp == "packed" else (zero - offset).to(torch.int8))
        cols = groups(inn, group)
        if actorder:
            cols = cols[torch.randperm(inn, generator=gen)].contiguous()
            t[p + ".weight_g_idx"] = cols.to(torch.int32)
        oracle[p + ".weight"] = int_decode(q, zero, s, cols)
        schemes[p + ".weight_packed"] = (f"int{bits}-group{group}" + ("-zp" if zp else "")
                                         + ("-actorder" if actorder else ""))
    _plain(t, oracle, gen, 256)
    weights = {"num_bits": bits, "type": "int", "symmetric": zp is None, "strategy": "group",
               "group_size": group, "dynamic": False,
               "actorder": "group" if actorder else None}
    config = {"model_type": "llama", "torch_dtype": "bfloat16", "quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "quantization_status": "compressed", "version": version,
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                      "format": "pack-quantized"}},
        "ignore": ["lm_head"]}}
    save_checkpoint(root, {"model.safetensors": t}, config, indent=1)
    return Built(root, schemes, oracle, config)


# ---------------------------------------------------------------- helpers on real bundles

def load_bundle(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})
    return out


def reshard(src: Path, dst: Path, away: set[str]) -> None:
    """Copy bundle ``src`` to ``dst`` as two shards with an index, the tensors named in
    ``away`` alone in the second shard (e.g. a weight_scale apart from its weight_packed).
    Tensor bytes and every other file are kept."""
    tensors = load_bundle(src)
    missing = away - set(tensors)
    if missing:
        raise KeyError(f"not in {src}: {sorted(missing)}")
    dst.mkdir(parents=True)
    for f in Path(src).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and \
                f.name != "model.safetensors.index.json":
            (dst / f.name).write_bytes(f.read_bytes())
    first = {k: v for k, v in tensors.items() if k not in away}
    second = {k: tensors[k] for k in away}
    shards = {"model-00001-of-00002.safetensors": first,
              "model-00002-of-00002.safetensors": second}
    save_checkpoint(dst, shards, None, indent=1)
