"""NVIDIA ModelOpt (scalefix/formats/schemes/modelopt.py).

Real writer (peer venv, nvidia-modelopt 0.47.0: ``mtq.quantize`` + ``export_hf_checkpoint``):
FP8, NVFP4 and MIXED_PRECISION (NVFP4 attention, FP8 MLP). Oracle: ModelOpt's own
``FP8QTensor.dequantize`` / ``NVFP4QTensor.dequantize``, float32. scalefix's decode equals it
bit for bit, except the E2M1 code 8, which ModelOpt decodes to +0 and scalefix to -0 (the OCP
value MLX also gives; numerically equal). The BF16 rewrite is scalefix's decode rounded once,
with no scale, input scale or hf_quant_config.json left; ``inspect`` never says clean;
``--to mlx`` (exact BF16) loads in mlx-lm. q/k/v (and gate/up) share their weight_scale_2 and
input_scale values, each module storing its own copy.

Without the peer: the formula-built ModelOpt NVFP4 checkpoint (tests/support/int_families.py) and the
declared-versus-actual corpus (an algorithm scalefix does not decode, MIXED_PRECISION naming
the wrong format or a layer without its scale, config.json and hf_quant_config.json that
disagree, an excluded layer holding codes)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from scalefix.formats import classify, open_bundle
from scalefix.formats.codecs import f32_to_bf16

from tests.support.family_checks import (assert_exact, assert_refused_everywhere, check_rewrite, decoded,
                            inspect_status, mlx_lm_load, oracle,
                            writer_fixture)
from tests.support.int_families import modelopt_nvfp4

VARIANTS = ("fp8", "nvfp4", "mixed")
Q_PROJ = "model.layers.0.self_attn.q_proj"


def _declare(root: Path, **quant) -> None:
    """The same settings in config.json and hf_quant_config.json (as ModelOpt writes them)."""
    config = json.loads((root / "config.json").read_text())
    config["quantization_config"].update(quant)
    (root / "config.json").write_text(json.dumps(config))
    hf = json.loads((root / "hf_quant_config.json").read_text())
    hf["quantization"].update(quant)
    (root / "hf_quant_config.json").write_text(json.dumps(hf))


def _mixed(root: Path, **override) -> None:
    layers = {m: {"quant_algo": "NVFP4", "group_size": 16} for m in
              ("model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.o_proj",
               "model.layers.2.mlp.down_proj")}
    layers.update(override)
    _declare(root, quant_algo="MIXED_PRECISION", quantized_layers=layers)


def _drop_scale(root: Path) -> None:
    _mixed(root)
    t = load_file(str(root / "model.safetensors"))
    t.pop("model.layers.2.mlp.down_proj.weight_scale")
    save_file(t, str(root / "model.safetensors"))


def _disagree(root: Path) -> None:
    hf = json.loads((root / "hf_quant_config.json").read_text())
    hf["quantization"]["quant_algo"] = "FP8"
    (root / "hf_quant_config.json").write_text(json.dumps(hf))


CORPUS = {
    "an algorithm scalefix does not decode": (lambda r: _declare(r, quant_algo="W4A16_AWQ"),
                                              ("'W4A16_AWQ'", "does not decode")),
    "MIXED_PRECISION names the wrong format": (
        lambda r: _mixed(r, **{Q_PROJ: {"quant_algo": "FP8"}}),
        (f"layer {Q_PROJ!r} FP8", "nvfp4 codes")),
    "MIXED_PRECISION layer without its scale": (_drop_scale, ("'model.layers.2.mlp.down_proj'",
                                                              "no usable scale")),
    "config.json and hf_quant_config.json disagree": (_disagree, ("disagree", "quant_algo")),
    "excluded layer holds codes": (lambda r: _declare(r, exclude_modules=["lm_head", Q_PROJ]),
                                   (f"excludes layer {Q_PROJ!r}",)),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_declared_versus_actual_refused_in_one_line(tmp_path, case):
    edit, words = CORPUS[case]
    src = modelopt_nvfp4(tmp_path / "src").path
    edit(src)
    assert_refused_everywhere(src, tmp_path, words)


def test_declared_by_hf_quant_config_alone(tmp_path):
    """Older exports: no quantization_config in config.json, the declaration only in
    hf_quant_config.json; MIXED_PRECISION the same way."""
    built = modelopt_nvfp4(tmp_path / "src")
    config = json.loads((built.path / "config.json").read_text())
    config.pop("quantization_config")
    (built.path / "config.json").write_text(json.dumps(config))
    result = classify(open_bundle(built.path))
    assert result.checkpoint_declaration.where == "hf_quant_config.json"
    assert {q.scheme for q in result.quantized.values()} == {"nvfp4"}
    ours = decoded(built.path)
    for name in built.schemes:
        want = built.oracle[name].view(torch.int16).numpy().view(np.uint16)   # BF16 bits
        assert np.array_equal(f32_to_bf16(ours[name]), want)
    hf = json.loads((built.path / "hf_quant_config.json").read_text())
    hf["quantization"]["quant_algo"] = "FP8_PB_WO"
    (built.path / "hf_quant_config.json").write_text(json.dumps(hf))
    assert_refused_everywhere(built.path, tmp_path, ("hf_quant_config.json", "'FP8_PB_WO'"))


# ------------------------------------------------------------------ the real writer

written = writer_fixture("modelopt", VARIANTS)


@pytest.mark.peers
def test_real_writer_decode_rewrite_and_inspect(written, tmp_path):
    variant, src, ref = written
    theirs, ours = oracle(ref), decoded(src)
    assert sorted(ours) == sorted(theirs) and len(ours) == 14
    schemes = {q.output_name: q.scheme for q in classify(open_bundle(src)).quantized.values()}
    plus_zeros = 0
    for name in theirs:
        plus_zeros += assert_exact(ours[name], theirs[name], zero_sign=schemes[name] == "nvfp4")
    assert (plus_zeros > 0) == (variant != "fp8")    # ModelOpt's +0 for code 8, really met
    want = {"fp8": {"fp8-tensor"}, "nvfp4": {"nvfp4"}, "mixed": {"fp8-tensor", "nvfp4"}}
    assert set(schemes.values()) == want[variant]
    if variant == "mixed":
        assert {n for n, s in schemes.items() if s == "nvfp4"} == {
            f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (0, 1) for p in "qkvo"}
    assert inspect_status(src) == "quantized"
    check_rewrite(src, tmp_path / "bf16", ours)


@pytest.mark.peers
def test_real_writer_fused_groups_share_their_scales(real_writer):
    tensors = load_file(str(real_writer("llama-modelopt-nvfp4") / "model.safetensors"))
    for i in (0, 1):
        for group, suffix in ((("q", "k", "v"), "self_attn"), (("gate", "up"), "mlp")):
            for name in ("weight_scale_2", "input_scale"):
                values = {float(tensors[f"model.layers.{i}.{suffix}.{p}_proj.{name}"])
                          for p in group}
                assert len(values) == 1, (i, group, name, values)


@pytest.mark.peers
def test_real_writer_to_mlx_loads_as_exact_bf16(written, tmp_path):
    from scalefix.cli import main
    _, src, _ = written
    dst = tmp_path / "mlx"
    assert main(["rewrite", str(src), "--to", "mlx", "--out", str(dst), "--quiet"]) == 0
    assert not (dst / "hf_quant_config.json").exists()
    layers, logits = mlx_lm_load("plain", dst, tmp_path / "l.npy")
    assert layers["layers"] == [] and np.isfinite(logits).all()
    bf16 = tmp_path / "bf16"
    assert main(["rewrite", str(src), "--out", str(bf16), "--quiet"]) == 0
    _, reference = mlx_lm_load("plain", bf16, tmp_path / "r.npy")
    assert np.array_equal(logits, reference)

