"""ComfyUI-native quantized files (scalefix/formats/schemes/comfy.py).

Real writer (peer venv, comfy-kitchen 0.2.40, tests/peers/scripts/write_comfy_kitchen.py):
every layout quantizes random BF16 weights on CPU and the files are saved as ComfyUI saves
them (``state_dict_tensors`` + ``comfy_quant``, or the header's ``_quantization_metadata``
alone), aligned and padded shapes, formats mixed with plain BF16 tensors in one file. Oracle:
comfy-kitchen's own ``dequantize`` of what was read back, float32, cropped to the true shape.
scalefix's decode equals it bit for bit for float8_e4m3fn, float8_e5m2, nvfp4 and mxfp8
(aligned, tile-padded and weight-padded, the true shape recovered from the bias and the zero
padding) and int8_tensorwise (per tensor and per row). The Hadamard-rotated layouts
(convrot_w4a4, asym_w4a8_int8, int8_tensorwise + convrot) are refused: comfy-kitchen's own
dequantize of one file gives different bits on two MKL code paths of the same torch.

Without the peer: layers laid out here from the documented layouts (high nibble first, the
128x4 tile built by reshapes, not by the offset formula the scheme uses) against an independent
torch decode; int8_blockwise (ComfyUI's QUANTIZATION.md, no comfy-kitchen writer) against
torch's repeat_interleave; and the declared-versus-actual corpus, each case one line.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.torch import load_file, save_file

from scalefix.formats import open_bundle
from scalefix.formats.codecs import f32_to_bf16
from scalefix.formats.dequant import stored_view
from scalefix.formats.schemes import Declaration, Refusal, claimant, comfy
from scalefix.formats.tensor_data import read_raw

KIND = "comfy-kitchen"

P = "model.diffusion_model."
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
ROTATED = ("convrot_w4a4", "asym_w4a8_int8")


# ------------------------------------------------------------------ helpers

def decode_all(path: Path) -> dict:
    """layer -> (DeclaredWeight, float32 decode) or the Refusal its claim raised."""
    bundle = open_bundle(path)
    out = {}
    for layer, declaration in comfy.find_declarations(bundle).items():
        try:
            weight = comfy.claim(layer, bundle.tensors, declaration)
        except Refusal as exc:
            out[layer] = exc
            continue
        arrays = {"weight": stored_view(weight.weight, read_raw(weight.weight))}
        arrays.update({r: stored_view(i, read_raw(i)) for r, i in weight.sides.items()})
        values = comfy.decode(weight, arrays)
        assert values.dtype == np.float32 and values.shape == weight.shape
        out[layer] = (weight, values)
    return out


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def marker(conf: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(conf).encode()), dtype=torch.uint8)


def tile(grid: torch.Tensor) -> torch.Tensor:
    """cuBLAS 128x4 block-scale layout built from its description (128-row x 4-column tiles,
    each stored as 32 rows of [4 row groups x 4 columns]), zero padded."""
    rows, cols = grid.shape
    pr, pc = -(-rows // 128) * 128, -(-cols // 4) * 4
    padded = torch.zeros(pr, pc, dtype=grid.dtype)
    padded[:rows, :cols] = grid
    t = padded.reshape(pr // 128, 128, pc // 4, 4).permute(0, 2, 1, 3)   # [rb, cb, 128, 4]
    t = t.reshape(pr // 128, pc // 4, 4, 32, 4).permute(0, 1, 3, 2, 4)  # [rb, cb, 32, 4, 4]
    return t.reshape(pr, pc)


def nvfp4_layer(gen, rows: int, cols: int, true=None):
    """(tensors, float32 expected) of one NVFP4 layer; ``true`` (r, c) zeroes the padding."""
    codes = torch.randint(0, 16, (rows, cols), generator=gen)
    scales = torch.randint(0x20, 0x58, (rows, cols // 16), generator=gen).to(torch.uint8)
    if true is not None:
        codes[true[0]:], codes[:, true[1]:] = 0, 0
        scales[true[0]:] = 0
    g = torch.tensor(0.0123, dtype=torch.float32)
    packed = ((codes[:, 0::2] << 4) | codes[:, 1::2]).to(torch.uint8)
    block = scales.view(torch.float8_e4m3fn).float()
    value = torch.tensor(E2M1)[codes] * (g * block).repeat_interleave(16, dim=1)
    tensors = {"weight": packed, "weight_scale": tile(scales).view(torch.float8_e4m3fn),
               "weight_scale_2": g}
    if true is not None:
        value = value[:true[0], :true[1]]
    return tensors, value.numpy()


def mxfp8_layer(gen, rows: int, cols: int):
    codes = torch.randint(0, 256, (rows, cols), generator=gen).to(torch.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x11                         # no NaN codes
    exps = torch.randint(100, 140, (rows, cols // 32), generator=gen).to(torch.uint8)
    value = codes.view(torch.float8_e4m3fn).float() * torch.pow(
        2.0, exps.float() - 127).repeat_interleave(32, dim=1)
    return {"weight": codes.view(torch.float8_e4m3fn),
            "weight_scale": tile(exps).view(torch.float8_e8m0fnu)}, value.numpy()


def fp8_layer(gen, rows: int, cols: int, dtype=torch.float8_e4m3fn):
    codes = torch.randint(0, 256, (rows, cols), generator=gen).to(torch.uint8)
    codes[(codes & 0x7F) >= (0x7C if dtype == torch.float8_e5m2 else 0x7F)] = 0x21
    scale = torch.tensor(0.00037, dtype=torch.float32)
    w = codes.view(dtype)
    return {"weight": w, "weight_scale": scale,
            "input_scale": torch.tensor(0.5)}, (w.float() * scale).numpy()


def int8_blockwise_layer(gen, rows: int, cols: int, b: int):
    q = torch.randint(-128, 128, (rows, cols), generator=gen).to(torch.int8)
    grid = torch.rand(rows // b, cols // b, generator=gen) * 0.01 + 1e-4
    full = grid.repeat_interleave(b, dim=0).repeat_interleave(b, dim=1)
    return {"weight": q, "weight_scale": grid}, (q.float() * full).numpy()


def built(root: Path, edit=None, header: bool = False) -> tuple[Path, dict]:
    """One file, laid out here: NVFP4 (tile-padded), NVFP4 with padded rows and columns,
    MXFP8, FP8 E4M3 / E5M2, INT8 tensorwise and blockwise, and plain BF16 tensors."""
    gen = torch.Generator().manual_seed(7)
    layers, expected = {}, {}

    def add(name, fmt, made, **conf):
        tensors, value = made
        layers[P + name] = ({"format": fmt, **conf}, tensors)
        expected[P + name] = value

    add("a", "nvfp4", nvfp4_layer(gen, 48, 80))
    add("b", "nvfp4", nvfp4_layer(gen, 112, 80, true=(100, 72)))
    add("c", "mxfp8", mxfp8_layer(gen, 64, 96))
    add("d", "float8_e4m3fn", fp8_layer(gen, 32, 48))
    add("e", "float8_e5m2", fp8_layer(gen, 16, 32, torch.float8_e5m2))
    add("f", "int8_blockwise", int8_blockwise_layer(gen, 256, 384, 128), group_size=128)
    q = torch.randint(-128, 128, (24, 40), generator=gen).to(torch.int8)
    rowscale = torch.rand(24, 1, generator=gen) * 0.01
    add("g", "int8_tensorwise", ({"weight": q, "weight_scale": rowscale},
                                 (q.float() * rowscale).numpy()))
    layers[P + "b"][1]["bias"] = torch.zeros(100, dtype=torch.bfloat16)
    if edit is not None:
        edit(layers)
    tensors = {P + "norm.weight": torch.ones(64, dtype=torch.bfloat16)}
    for layer, (conf, parts) in layers.items():
        tensors.update({f"{layer}.{k}": v for k, v in parts.items() if v is not None})
        if not header and conf is not None:
            tensors[f"{layer}.comfy_quant"] = marker(conf)
    metadata = None
    if header:
        metadata = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {
            layer: conf for layer, (conf, _) in layers.items() if conf is not None}})}
    root.mkdir(parents=True, exist_ok=True)
    path = root / "model.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path, expected


# ------------------------------------------------------------------ built here, no peer

@pytest.mark.parametrize("header", [False, True], ids=["comfy_quant", "header-metadata"])
def test_laid_out_here_decodes_exactly(tmp_path, header):
    path, expected = built(tmp_path, header=header)
    ours = decode_all(path)
    assert sorted(ours) == sorted(expected)
    for layer, value in expected.items():
        weight, got = ours[layer]
        assert np.array_equal(bits(got), bits(value)), layer
        where = "header _quantization_metadata" if header else f"{layer}.comfy_quant"
        assert weight.declaration.where == where
        assert weight.output_name == layer + ".weight"
        assert comfy.display(weight) == "comfy-" + weight.declaration.value
        assert comfy.mlx_form(weight) is None
    a, b = ours[P + "a"][0], ours[P + "b"][0]
    assert a.params["shape_from"] == "stored" and a.shape == (48, 80)
    assert b.params["shape_from"] == "bias + zero padding" and b.shape == (100, 72)
    assert {t.name.rsplit(".", 1)[1] for t in ours[P + "d"][0].dropped} == (
        {"input_scale"} if header else {"input_scale", "comfy_quant"})


def test_both_declarations_agreeing_are_one(tmp_path):
    path, expected = built(tmp_path)
    tensors = load_file(str(path))
    layers = {P + "d": {"format": "float8_e4m3fn"}}
    save_file(tensors, str(path), metadata={"_quantization_metadata": json.dumps(
        {"format_version": "1.0", "layers": layers})})
    found = comfy.find_declarations(open_bundle(path))
    assert found[P + "d"].where == f"{P}d.comfy_quant + header _quantization_metadata"
    weight, got = decode_all(path)[P + "d"]
    assert np.array_equal(bits(got), bits(expected[P + "d"]))


def test_int8_blockwise_from_quantization_md(tmp_path):
    """ComfyUI's QUANTIZATION.md: int8 [N, K], float32 weight_scale [N/128, K/128]; group_size
    in the layer's metadata, or (left open) the one square block the shapes give."""
    gen = torch.Generator().manual_seed(3)
    tensors, want = {}, {}
    for name, (rows, cols, b) in {"x": (256, 384, 128), "y": (64, 192, 64),
                                  "z": (128, 256, 128)}.items():
        parts, value = int8_blockwise_layer(gen, rows, cols, b)
        tensors.update({f"{name}.{k}": v for k, v in parts.items()})
        want[name] = value
    layers = {"x": {"format": "int8_blockwise", "group_size": 128},
              "y": {"format": "int8_blockwise", "group_size": 64},
              "z": {"format": "int8_blockwise"}}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"_quantization_metadata": json.dumps(
        {"format_version": "1.0", "layers": layers})})
    ours = decode_all(path)
    for name, value in want.items():
        weight, got = ours[name]
        assert np.array_equal(bits(got), bits(value)), name
    assert ours["z"][0].params["group_size"] == 128


def test_zero_padding_as_wide_as_the_alignment_is_kept(tmp_path):
    """16 all-zero trailing columns cannot all be NVFP4 padding: the stored width stands."""
    def edit(layers):
        parts = layers[P + "a"][1]
        parts["weight"][:, -8:] = 0
    path, expected = built(tmp_path, edit)
    weight, got = decode_all(path)[P + "a"]
    assert weight.shape == (48, 80) and weight.params["shape_from"] == "stored"
    assert not got[:, -16:].any()


def _set(layer, **conf):
    def edit(layers):
        layers[P + layer] = (conf, layers[P + layer][1])
    return edit


def _part(layer, **parts):
    def edit(layers):
        layers[P + layer][1].update(parts)
    return edit


def _raw_marker(layers):
    layers[P + "a"] = (None, {**layers[P + "a"][1], "comfy_quant": torch.tensor(
        list(b'{"format": nvfp4'), dtype=torch.uint8)})


def _header_disagrees(path: Path) -> None:
    t = load_file(str(path))
    save_file(t, str(path), metadata={"_quantization_metadata": json.dumps(
        {"format_version": "1.0", "layers": {P + "c": {"format": "nvfp4"}}})})


def _header_names_missing_layer(path: Path) -> None:
    t = load_file(str(path))
    save_file(t, str(path), metadata={"_quantization_metadata": json.dumps(
        {"format_version": "1.0", "layers": {P + "nowhere": {"format": "nvfp4"}}})})


def _header_version(path: Path) -> None:
    t = load_file(str(path))
    save_file(t, str(path), metadata={"_quantization_metadata": json.dumps(
        {"format_version": "2.0", "layers": {}})})


# case -> (edit of the layers, edit of the written file, words in the one line)
CORPUS = {
    "wrong format string (nvfp4 tensors declared mxfp8)": (
        _set("a", format="mxfp8"), None, ("declares mxfp8", "U8, not F8_E4M3")),
    "missing weight_scale_2": (
        _part("a", weight_scale_2=None), None, ("weight_scale_2 is missing",)),
    "swizzled tile with the wrong padding (row-major scales)": (
        _part("a", weight_scale=torch.zeros(48, 5, dtype=torch.float8_e4m3fn)), None,
        ("[48, 5]", "128x4 tiled", "[128, 8]")),
    "weight dtype contradicting the format (E5M2 declared E4M3)": (
        _set("e", format="float8_e4m3fn"), None, ("F8_E5M2, not F8_E4M3",)),
    "int8 codes declared fp8": (
        _set("g", format="float8_e4m3fn"), None, ("I8, not F8_E4M3",)),
    "fp8 codes declared int8": (
        _set("d", format="int8_tensorwise"), None, ("F8_E4M3, not I8",)),
    "mxfp8 scales that are not E8M0": (
        _part("c", weight_scale=torch.zeros(128, 4, dtype=torch.float32)), None,
        ("F32, not F8_E8M0",)),
    "per-column fp8 scale": (
        _part("d", weight_scale=torch.ones(48)), None, ("not one float per tensor",)),
    "blockwise grid that does not tile the weight": (
        _part("f", weight_scale=torch.ones(2, 2)), None, ("blocks of 128 x 128", "[2, 3]")),
    "bias contradicting the padded rows": (
        _part("b", bias=torch.zeros(90, dtype=torch.bfloat16)), None,
        ("bias has 90 entries", "112 rows")),
    "padded rows that hold codes": (
        _part("a", bias=torch.zeros(40, dtype=torch.bfloat16)), None,
        ("rows 40..47 are not the zero padding",)),
    "a tensor of another layout": (
        _part("a", weight_s_rel=torch.ones(48, 5)), None, ("weight_s_rel", "nvfp4 does not")),
    "activation smoothing (pre_quant_scale)": (
        _part("a", pre_quant_scale=torch.ones(80)), None, ("pre_quant_scale",)),
    "no weight at all": (
        _part("d", weight=None), None, ("has no", "d.weight")),
    "malformed comfy_quant": (_raw_marker, None, ("comfy_quant is not JSON",)),
    "comfy_quant without a format": (_set("a", note="x"), None, ("names no format",)),
    "comfy_quant and header disagree": (
        None, _header_disagrees, ("c.comfy_quant says format 'mxfp8'", "'nvfp4'")),
    "header declares a layer the file lacks": (
        None, _header_names_missing_layer, ("nowhere.weight",)),
    "header format_version scalefix does not read": (
        None, _header_version, ("format_version '2.0'",)),
    "Hadamard-rotated convrot_w4a4": (
        _set("g", format="convrot_w4a4", convrot_groupsize=256), None,
        ("convrot_w4a4", "Hadamard", "bit for bit")),
    "Hadamard-rotated asym_w4a8_int8": (
        _set("g", format="asym_w4a8_int8"), None, ("asym_w4a8_int8", "Hadamard")),
    "Hadamard-rotated int8_tensorwise (convrot)": (
        _set("g", format="int8_tensorwise", convrot=True), None,
        ("int8_tensorwise with convrot", "Hadamard")),
}


def _refusal(path: Path) -> str:
    bundle = open_bundle(path)
    try:
        for layer, declaration in comfy.find_declarations(bundle).items():
            comfy.claim(layer, bundle.tensors, declaration)
    except Refusal as exc:
        return str(exc)
    raise AssertionError("not refused")


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_declared_versus_actual_refused_in_one_line(tmp_path, case):
    edit, after, words = CORPUS[case]
    path, _ = built(tmp_path, edit)
    if after is not None:
        after(path)
    line = _refusal(path)
    assert "\n" not in line and "nothing done" in line, line
    assert all(w in line for w in words), line


def test_unknown_format_has_no_claimant(tmp_path):
    path, _ = built(tmp_path, _set("a", format="nvfp8"))
    found = comfy.find_declarations(open_bundle(path))
    assert found[P + "a"].value == "nvfp8" and claimant(found[P + "a"]) is None
    with pytest.raises(Refusal, match="declares nvfp8 .*scalefix does not decode it"):
        comfy.claim(P + "a", open_bundle(path).tensors, found[P + "a"])


def test_e8m0_infinity_is_refused_at_decode(tmp_path):
    def edit(layers):
        scale = layers[P + "c"][1]["weight_scale"].view(torch.uint8).clone()
        scale[0, 0] = 255
        layers[P + "c"][1]["weight_scale"] = scale.view(torch.float8_e8m0fnu)
    path, _ = built(tmp_path, edit)
    with pytest.raises(Refusal, match="E8M0 block scale is 255"):
        decode_all(path)


def test_declarations_cover_every_comfy_format():
    assert {v for s, v in comfy.DECLARATIONS if s == "comfy"} == {
        "float8_e4m3fn", "float8_e5m2", "nvfp4", "mxfp8", "int8_tensorwise", "convrot_w4a4",
        "asym_w4a8_int8", "int8_blockwise"}
    assert claimant(Declaration("comfy", "nvfp4", "t")) in (comfy, None)   # listed by the lead


# ------------------------------------------------------------------ the real writer

@pytest.mark.peers
@pytest.mark.parametrize("stem", ("mixed", "metadata_only", "padded", "rotated"))
def test_real_writer_decodes_bit_for_bit(real_writer, stem):
    root = real_writer(KIND)
    layers = json.loads((root / f"{stem}.layers.json").read_text())
    oracle = load_numpy(str(root / f"{stem}.oracle.safetensors"))
    ours = decode_all(root / f"{stem}.safetensors")
    assert sorted(ours) == sorted(layers)
    exact = []
    for layer, (fmt, _layout, conf, shape) in layers.items():
        result = ours[layer]
        if fmt in ROTATED or conf.get("convrot"):
            assert isinstance(result, Refusal) and "Hadamard" in str(result), result
            continue
        weight, got = result
        assert weight.declaration.value == fmt and weight.shape == tuple(shape), layer
        assert np.array_equal(bits(got), bits(oracle[layer + ".weight"])), layer
        exact.append((fmt, weight.params.get("shape_from")))
    want = {"mixed": [("float8_e4m3fn", None), ("float8_e5m2", None), ("nvfp4", "stored"),
                      ("mxfp8", "stored"), ("int8_tensorwise", None), ("int8_tensorwise", None)],
            "padded": [("nvfp4", "stored"), ("nvfp4", "bias + zero padding"), ("nvfp4", "bias"),
                       ("nvfp4", "zero padding"), ("mxfp8", "stored"),
                       ("mxfp8", "bias + zero padding"), ("mxfp8", "bias")],
            "rotated": []}
    assert sorted(exact, key=str) == sorted(want.get(stem, want["mixed"]), key=str)


@pytest.mark.peers
def test_real_writer_bf16_runtime_rounds_nvfp4_twice(real_writer):
    """comfy-kitchen's dequantize with a BF16 orig_dtype (ComfyUI's runtime) multiplies in
    BF16: the global scale rounded to BF16, then two BF16 products. scalefix rounds the exact
    float32 product once: equal for FP8, MXFP8 and INT8, within 1 BF16 ulp for NVFP4."""
    root = real_writer(KIND)
    for stem in ("mixed", "padded"):
        runtime = {k: v.view(torch.int16).numpy().view(np.uint16) for k, v in
                   load_file(str(root / f"{stem}.oracle_bf16.safetensors")).items()}
        for layer, (weight, got) in decode_all(root / f"{stem}.safetensors").items():
            ours = f32_to_bf16(got).astype(np.int32)
            theirs = runtime[layer + ".weight"].astype(np.int32)
            if weight.declaration.value == "nvfp4":
                assert 0 < np.abs(ours - theirs).max() <= 1
            else:
                assert np.array_equal(ours, theirs), layer


@pytest.mark.peers
def test_real_writer_rotation_is_not_one_function(real_writer):
    """Why the rotated layouts are refused: the same stored bits, dequantized by the same
    comfy-kitchen and torch with MKL's COMPATIBLE code path, differ from the default path's
    result."""
    root = real_writer(KIND)
    native = load_numpy(str(root / "rotated.oracle.safetensors"))
    other = load_numpy(str(root / "rotated.oracle_mkl_compatible.safetensors"))
    assert sorted(native) == sorted(other) and len(native) == 3
    if all(np.array_equal(bits(native[k]), bits(other[k])) for k in native):
        pytest.skip("this torch sums the rotation alike on both MKL code paths")


# ------------------------------------------------------------------ end to end (registry)

LEFT = (".comfy_quant", ".weight_scale", ".weight_scale_2", ".input_scale", ".scale_weight",
        "scaled_fp8")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scalefix", *map(str, args)],
                          capture_output=True, text=True)


def check_rewrite(src: Path, out: Path, oracle: dict) -> None:
    """rewrite SRC --out OUT.safetensors: one BF16 file with ComfyUI's key names, every
    quantized weight its oracle rounded once, nothing quantized left; verify passes."""
    proc = cli("rewrite", src, "--out", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    written = {k: v.view(torch.int16).numpy().view(np.uint16) if v.dtype == torch.bfloat16
               else v for k, v in load_file(str(out)).items()}
    source = load_file(str(src))
    for name, value in oracle.items():
        assert np.array_equal(written[name], f32_to_bf16(value)), name
    assert [n for n in written if n.endswith(LEFT)] == []
    assert {str(v.dtype) for v in written.values()} == {"uint16"}
    kept = {n for n in source if not n.endswith(LEFT)}
    assert set(written) == kept                     # ComfyUI's own names, nothing else
    with safe_open(str(out), "np") as f:
        assert "_quantization_metadata" not in (f.metadata() or {})
    proc = cli("verify", src, out)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.peers
@pytest.mark.parametrize("stem", ("mixed", "metadata_only", "padded"))
def test_real_writer_end_to_end(real_writer, tmp_path, stem):
    root = real_writer(KIND)
    src = root / f"{stem}.safetensors"
    layers = json.loads((root / f"{stem}.layers.json").read_text())
    proc = cli("inspect", src, "--json")
    report = json.loads(proc.stdout)
    counts: dict = {}
    for fmt, *_ in layers.values():
        counts[fmt] = counts.get(fmt, 0) + 1
    assert report["declared"]["layers"] == counts
    assert report["verdict"]["status"] == "quantized"
    text = cli("inspect", src).stdout
    assert all(f"{fmt} x{n}" in text for fmt, n in counts.items()), text
    check_rewrite(src, tmp_path / "out.safetensors",
                  load_numpy(str(root / f"{stem}.oracle.safetensors")))


def test_laid_out_here_end_to_end(tmp_path):
    path, expected = built(tmp_path / "src")
    check_rewrite(path, tmp_path / "out.safetensors", {f"{k}.weight": v
                                                         for k, v in expected.items()})


def assert_refused(src: Path, tmp: Path, words) -> None:
    """inspect, rewrite and verify: exit 2, one line holding ``words``, nothing written."""
    out = tmp / "o.safetensors"
    for args in (("inspect", src), ("rewrite", src, "--out", out), ("verify", src, src)):
        proc = cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and all(w in lines[0] for w in words), lines
    assert not out.exists() and list(tmp.glob("o*")) == []


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_declared_versus_actual_refused_everywhere(tmp_path, case):
    edit, after, words = CORPUS[case]
    path, _ = built(tmp_path / "src", edit)
    if after is not None:
        after(path)
    assert_refused(path, tmp_path, words)


def test_unknown_format_refused_everywhere(tmp_path):
    path, _ = built(tmp_path / "src", _set("a", format="nvfp8"))
    assert_refused(path, tmp_path, ("'nvfp8'", "does not decode"))


@pytest.mark.peers
def test_real_writer_rotated_refused_everywhere(real_writer, tmp_path):
    assert_refused(real_writer(KIND) / "rotated.safetensors", tmp_path, ("Hadamard",))
