"""bitsandbytes (scalefix/formats/schemes/bitsandbytes.py).

Real writer (peer venv, bitsandbytes 0.50.2 through transformers' ``from_pretrained(...,
BitsAndBytesConfig(...), device_map="cpu")`` + ``save_pretrained``): NF4 and FP4, each with
and without double quant, and LLM.int8. Oracle: bitsandbytes' own ``dequantize_4bit`` (float32)
/ ``int8_vectorwise_dequant``. scalefix's decode equals it bit for bit; the BF16 rewrite is it
rounded once, with no absmax / quant_map / quant_state / SCB left; ``inspect`` never says clean;
``--to mlx`` (exact BF16: a codebook has no affine form) loads in mlx-lm.

Without the peer: a checkpoint packed here from the documented layout (high nibble first,
double-quant absmax) against an independent torch decode, and the declared-versus-actual
corpus (missing quant_state, sizes that contradict it, stray side tensors, a tiled int8
layout, a declaration over nothing): exit 2 and one line everywhere, nothing written."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from scalefix.formats import classify, open_bundle
from scalefix.formats.codecs import f32_to_bf16

from tests.support.family_checks import (assert_exact, assert_refused_everywhere, bf16_tensors,
                            check_rewrite, decoded, inspect_status, mlx_lm_load, oracle,
                            writer_fixture)

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
VARIANTS = ("nf4", "fp4", "nf4-dq", "fp4-dq", "int8")


# ------------------------------------------------------------------ built here, no peer

def _pack_high_first(codes: torch.Tensor) -> torch.Tensor:
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, torch.zeros(1, dtype=torch.uint8)])
    return ((flat[0::2] << 4) | flat[1::2]).reshape(-1, 1)


def tiny_bnb(root: Path, shape=(48, 40), nested: bool = True, block: int = 64):
    """One 4-bit layer (odd-sized: the last block and byte are partial) and a plain one, as
    bitsandbytes packs them; returns (path, expected float32 decode by torch)."""
    gen = torch.Generator().manual_seed(1)
    n = shape[0] * shape[1]
    blocks = -(-n // block)
    codes = torch.randint(0, 16, (n,), generator=gen)
    table = torch.tensor(NF4)
    t = {"model.embed.weight": torch.randn(8, 40, generator=gen).to(torch.bfloat16),
         "lin.weight": _pack_high_first(codes), "lin.weight.quant_map": table}
    state = {"quant_type": "nf4", "blocksize": block, "dtype": "bfloat16", "shape": list(shape)}
    if nested:
        nb, offset = 256, 0.0123
        nested_map = torch.linspace(-1, 1, 256)
        nested_absmax = torch.rand(-(-blocks // nb), generator=gen) + 0.5
        u8 = torch.randint(0, 256, (blocks,), generator=gen).to(torch.uint8)
        absmax = nested_map[u8.long()] * nested_absmax[torch.arange(blocks) // nb]
        absmax = absmax + torch.tensor(offset, dtype=torch.float32)
        t.update({"lin.weight.absmax": u8, "lin.weight.nested_absmax": nested_absmax,
                  "lin.weight.nested_quant_map": nested_map})
        state.update(nested_blocksize=nb, nested_dtype="float32", nested_offset=offset)
    else:
        absmax = torch.rand(blocks, generator=gen) + 0.1
        t["lin.weight.absmax"] = absmax
    t["lin.weight.quant_state.bitsandbytes__nf4"] = torch.tensor(
        list(json.dumps(state).encode()), dtype=torch.uint8)
    expected = (table[codes] * absmax[torch.arange(n) // block]).reshape(shape)
    root.mkdir(parents=True)
    save_file(t, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({"quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": nested}}))
    return root, expected.numpy()


@pytest.mark.parametrize("nested", [False, True])
def test_packed_here_decodes_exactly(tmp_path, nested):
    src, expected = tiny_bnb(tmp_path / "src", nested=nested)
    result = classify(open_bundle(src))
    assert list(result.quantized) == ["lin.weight"]
    assert result.quantized["lin.weight"].scheme == "bnb-nf4-block64" + ("-dq" if nested else "")
    assert result.roles["model.embed.weight"] == "plain"
    assert_exact(decoded(src)["lin.weight"], expected.astype(np.float32))
    written = bf16_tensors(_rewrite(src, tmp_path / "bf16"))
    assert sorted(written) == ["lin.weight", "model.embed.weight"]
    assert np.array_equal(written["lin.weight"], f32_to_bf16(expected))


def _rewrite(src: Path, dst: Path) -> Path:
    from scalefix.cli import main
    assert main(["rewrite", str(src), "--out", str(dst), "--quiet"]) == 0
    return dst


def _edit(root: Path, drop=(), replace=None, config=None) -> None:
    from safetensors.torch import load_file
    t = load_file(str(root / "model.safetensors"))
    for name in drop:
        t.pop(name)
    t.update(replace or {})
    save_file(t, str(root / "model.safetensors"))
    if config is not None:
        (root / "config.json").write_text(json.dumps({"quantization_config": config}))


def _state(**changes):
    state = {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [48, 40],
             "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.0123}
    state.update(changes)
    return torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)


CORPUS = {
    "quant_state missing": (dict(drop=["lin.weight.quant_state.bitsandbytes__nf4"]),
                            ("'lin.weight'", "no quant_state")),
    "shape contradicts the packed weight": (
        dict(replace={"lin.weight.quant_state.bitsandbytes__nf4": _state(shape=[48, 80])}),
        ("'lin.weight'", "wants")),
    "blocksize contradicts absmax": (
        dict(replace={"lin.weight.quant_state.bitsandbytes__nf4": _state(blocksize=32)}),
        ("absmax", "blocksize 32")),
    "nested tensors missing": (dict(drop=["lin.weight.nested_absmax"]), ("nested_absmax",)),
    "unknown quant type": (
        dict(drop=["lin.weight.quant_state.bitsandbytes__nf4"],
             replace={"lin.weight.quant_state.bitsandbytes__int4": _state()}), ("'int4'",)),
    "declared over plain weights": (
        dict(drop=[n for n in ("lin.weight", "lin.weight.quant_map", "lin.weight.absmax",
                               "lin.weight.nested_absmax", "lin.weight.nested_quant_map",
                               "lin.weight.quant_state.bitsandbytes__nf4")]),
        ("no layer carries a quant_state",)),
    "int8 in a tiled layout": (
        dict(replace={"l8.weight": torch.ones(4, 8, dtype=torch.int8),
                      "l8.SCB": torch.ones(4), "l8.weight_format": torch.tensor(1, dtype=torch.uint8)}),
        ("weight_format", "tiled")),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_declared_versus_actual_refused_in_one_line(tmp_path, case):
    edit, words = CORPUS[case]
    src, _ = tiny_bnb(tmp_path / "src")
    _edit(src, **edit)
    assert_refused_everywhere(src, tmp_path, words)


# ------------------------------------------------------------------ the real writer

written = writer_fixture("bnb", VARIANTS)


@pytest.mark.peers
def test_real_writer_decode_rewrite_and_inspect(written, tmp_path):
    variant, src, ref = written
    theirs = oracle(ref)
    ours = decoded(src)
    assert sorted(ours) == sorted(theirs) and len(ours) == 14     # every linear but lm_head
    for name in theirs:
        assert_exact(ours[name], theirs[name])
    kinds = {qw.scheme for qw in classify(open_bundle(src)).quantized.values()}
    assert kinds == {"bnb-int8-rowwise" if variant == "int8" else
                     f"bnb-{variant[:3]}-block64" + ("-dq" if variant.endswith("dq") else "")}
    assert inspect_status(src) == "quantized"
    check_rewrite(src, tmp_path / "bf16", theirs)


@pytest.mark.peers
def test_real_writer_to_mlx_loads_as_exact_bf16(written, tmp_path):
    from scalefix.cli import main
    _, src, ref = written
    dst = tmp_path / "mlx"
    assert main(["rewrite", str(src), "--to", "mlx", "--out", str(dst), "--quiet"]) == 0
    written = bf16_tensors(dst)
    for name, values in oracle(ref).items():
        assert np.array_equal(written[name], f32_to_bf16(values)), name
    layers, logits = mlx_lm_load("plain", dst, tmp_path / "l.npy")
    assert layers["layers"] == [] and np.isfinite(logits).all()
