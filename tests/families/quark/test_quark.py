"""AMD Quark (scalefix/formats/schemes/quark.py).

Real writer (peer venv, amd-quark 0.13: ``ModelQuantizer.quantize_model`` -> ``freeze`` ->
``export_safetensors(custom_mode="quark", weight_format="real_quantized")``): MXFP4 weights
only, ``mxfp4`` (w_mxfp4_a_mxfp4), ``mxfp4_fp8`` and ``fp8``. Oracle: Quark's own importer
(``import_model_from_safetensors``) and each layer's dequantized weight, float32. scalefix's
decode equals it bit for bit; the BF16 rewrite is it rounded once with no scale left;
``--to mlx`` gives ``QuantizedLinear(mode="mxfp4")`` whose ``mx.dequantize`` is the exact
decode; ``inspect`` never says clean. Quark's MXFP6 (a real export) is refused in one line:
without the declaration its U8 codes would pair with their E8M0 scales like FP4's.

Without the peer: a checkpoint laid out here from the documented format, and the
declared-versus-actual corpus (a scheme scalefix does not decode, globally or for one layer
pattern; an excluded layer that holds codes; a declared layer without its scale; scales that
do not tile MXFP4's 32)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scalefix.formats import classify, open_bundle

from tests.support.family_checks import (assert_exact, assert_refused_everywhere, check_rewrite, decoded,
                            inspect_status, mlx_lm_load, oracle,
                            writer_fixture)

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
MXFP4_SPEC = {"dtype": "fp4", "qscheme": "per_group", "group_size": 32, "ch_axis": -1,
              "scale_format": "e8m0", "is_dynamic": False}
VARIANTS = ("mxfp4_weight_only", "mxfp4", "mxfp4_fp8", "fp8")


def tiny_quark(root: Path, layers=("a", "b"), out=64, inn=128):
    """MXFP4 layers as Quark stores them (low nibble first, U8 E8M0 scales) and a float one;
    returns (path, float32 decode by torch)."""
    gen = torch.Generator().manual_seed(2)
    t, expected = {"embed.weight": torch.randn(16, inn, generator=gen).to(torch.bfloat16)}, {}
    for name in layers:
        codes = torch.randint(0, 16, (out, inn), generator=gen)
        scale = torch.randint(118, 132, (out, inn // 32), generator=gen).to(torch.uint8)
        t[f"{name}.weight"] = (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)
        t[f"{name}.weight_scale"] = scale
        t[f"{name}.input_scale"] = torch.tensor(0.5, dtype=torch.bfloat16)
        factor = torch.exp2(scale.float() - 127).repeat_interleave(32, dim=1)
        expected[f"{name}.weight"] = (E2M1[codes] * factor).numpy()
    root.mkdir(parents=True)
    save_file(t, str(root / "model.safetensors"))
    _config(root)
    return root, expected


def _config(root: Path, weight=None, layer_quant_config=None, exclude=("lm_head",)):
    (root / "config.json").write_text(json.dumps({"quantization_config": {
        "quant_method": "quark", "global_quant_config": {"weight": weight or MXFP4_SPEC},
        "layer_quant_config": layer_quant_config or {}, "layer_type_quant_config": {},
        "exclude": list(exclude), "export": {"weight_format": "real_quantized"}}}))


def test_laid_out_here_decodes_exactly(tmp_path):
    src, expected = tiny_quark(tmp_path / "src")
    result = classify(open_bundle(src))
    assert sorted(result.quantized) == ["a.weight", "b.weight"]
    assert result.roles["a.input_scale"] == "activation_scale"
    ours = decoded(src)
    for name, values in expected.items():
        assert_exact(ours[name], values)
    check_rewrite(src, tmp_path / "bf16", expected)


def _drop(root: Path, *names) -> None:
    t = load_file(str(root / "model.safetensors"))
    for name in names:
        t.pop(name)
    save_file(t, str(root / "model.safetensors"))


def _group16(root: Path) -> None:
    t = load_file(str(root / "model.safetensors"))
    t["a.weight_scale"] = t["a.weight_scale"].repeat_interleave(2, dim=1).contiguous()
    save_file(t, str(root / "model.safetensors"))


CORPUS = {
    "per-channel INT4 declared": (
        lambda r: _config(r, weight={"dtype": "int4", "qscheme": "per_channel"}),
        ("dtype int4", "qscheme per_channel", "layer 'a'")),
    "MXFP6 for one layer pattern": (
        lambda r: _config(r, layer_quant_config={"b*": {"weight": {
            "dtype": "fp6_e2m3", "qscheme": "per_group", "group_size": 32}}}),
        ("layer_quant_config['b*']", "fp6_e2m3", "layer 'b'")),
    "excluded layer holds codes": (lambda r: _config(r, exclude=["lm_head", "a"]),
                                   ("exclude 'a'", "not quantized", "fp4 codes")),
    "declared layer without its scale": (lambda r: _drop(r, "b.weight_scale"),
                                         ("layer 'b'", "no weight_scale")),
    "scales that do not tile MXFP4's 32": (_group16, ("layer 'a'", "mxfp4", "fp4 codes")),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_declared_versus_actual_refused_in_one_line(tmp_path, case):
    edit, words = CORPUS[case]
    src, _ = tiny_quark(tmp_path / "src")
    edit(src)
    assert_refused_everywhere(src, tmp_path, words)


# ------------------------------------------------------------------ the real writer

written = writer_fixture("quark", VARIANTS)


@pytest.mark.peers
def test_real_writer_decode_rewrite_and_inspect(written, tmp_path):
    variant, src, ref = written
    theirs = oracle(ref)
    ours = decoded(src)
    assert sorted(ours) == sorted(theirs) and len(ours) == 14
    for name in theirs:
        assert_exact(ours[name], theirs[name])
    result = classify(open_bundle(src))
    assert result.checkpoint_declaration.value == "quark"
    if variant == "mxfp4_fp8":
        assert len(result.named("activation_scale")) == 14      # input_scale, dropped
    assert inspect_status(src) == "quantized"
    check_rewrite(src, tmp_path / "bf16", theirs)


@pytest.mark.peers
def test_real_writer_to_mlx_is_native_mxfp4_and_exact(written, tmp_path):
    import mlx.core as mx
    from safetensors import safe_open

    from scalefix.cli import main
    variant, src, ref = written
    dst = tmp_path / "mlx"
    assert main(["rewrite", str(src), "--to", "mlx", "--out", str(dst), "--quiet"]) == 0
    layers, logits = mlx_lm_load("plain", dst, tmp_path / "l.npy")
    assert np.isfinite(logits).all()
    if variant == "fp8":
        assert layers["layers"] == []
        return
    assert layers["layers"] == [["QuantizedLinear", "mxfp4", 4, 32]]
    expected = oracle(ref)
    wanted = set(expected) | {n[: -len(".weight")] + ".scales" for n in expected}
    stored = {}
    for path in dst.glob("*.safetensors"):
        with safe_open(str(path), "np") as fh:
            stored.update({k: fh.get_tensor(k) for k in fh.keys() if k in wanted})
    for name, values in expected.items():
        module = name[: -len(".weight")]
        got = mx.dequantize(mx.array(stored[name]), mx.array(stored[module + ".scales"]),
                            group_size=32, bits=4, mode="mxfp4", dtype=mx.float32)
        assert_exact(np.array(got), values)


@pytest.mark.peers
def test_real_writer_mxfp6_is_refused(real_writer, tmp_path):
    src = real_writer("llama-quark-mxfp6_e2m3")
    assert_refused_everywhere(src, tmp_path, ("fp6_e2m3", "does not decode", "layer 'model."))
