"""The diagnoses that are not plain classification: converted without scales, stale config,
FP8 without scale, ignore lists vs sibling scales, --check exit codes."""

import json

import pytest
import torch
from safetensors.torch import save_file

from scalefix.demo import build_demo_checkpoint, convert_without_scales

from tests.support.fixtures import VARIANTS


def bf16_model(root, weights, config=None):
    root.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(root / "model.safetensors"))
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    return root


def real_looking(gen, *shape):
    return (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)


def test_clean_model_is_clean_and_check_passes(tmp_path, inspect_json):
    gen = torch.Generator().manual_seed(0)
    root = bf16_model(tmp_path / "m", {"a.weight": real_looking(gen, 256, 256),
                                       "norm.weight": torch.ones(256, dtype=torch.bfloat16),
                                       "big.weight": real_looking(gen, 64, 64) * 3000})
    code, report = inspect_json(root, "--check")
    assert code == 0
    assert report["verdict"]["status"] == "clean" and report["converted_without_scales"] == []


def test_quantized_checkpoint_fails_check(tmp_path, inspect_json):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    assert inspect_json(fx.path)[0] == 0
    assert inspect_json(fx.path, "--check")[0] == 1


def test_converted_without_scales_e4m3(tmp_path, inspect_json):
    build_demo_checkpoint(tmp_path / "fp8")
    convert_without_scales(tmp_path / "fp8", tmp_path / "naive")
    code, report = inspect_json(tmp_path / "naive", "--check")
    assert code == 1
    assert report["verdict"]["status"] == "converted-without-scales"
    flagged = {e["tensor"] for e in report["converted_without_scales"]}
    assert len(flagged) == 12 and all("proj" in n for n in flagged)
    assert {e["signature"] for e in report["converted_without_scales"]} == {"raw-fp8-e4m3"}


@pytest.mark.parametrize("kind, signature", [("bytes", "raw-fp8-bytes"),
                                             ("e5m2", "raw-fp8-e5m2")])
def test_converted_without_scales_other_signatures(tmp_path, inspect_json, kind, signature):
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 256, (128, 128), dtype=torch.uint8, generator=gen)
    if kind == "bytes":  # uint8 codes cast straight to float (old loaders)
        weight = codes.to(torch.float16)
    else:
        codes[(codes & 0x7C) == 0x7C] = 0x3C
        weight = codes.view(torch.float8_e5m2).to(torch.bfloat16)
    root = bf16_model(tmp_path / "m", {"x.weight": weight, "ok.weight": real_looking(gen, 64, 64)})
    code, report = inspect_json(root, "--check")
    assert code == 1
    assert [(e["tensor"], e["signature"]) for e in report["converted_without_scales"]] == \
        [("x.weight", signature)]


def test_stale_quantization_config(tmp_path, inspect_json):
    gen = torch.Generator().manual_seed(2)
    root = bf16_model(tmp_path / "m", {"a.weight": real_looking(gen, 64, 64)},
                      {"text_config": {"quantization_config": {"quant_method": "fp8"}}})
    code, report = inspect_json(root, "--check")
    assert code == 1 and report["verdict"]["status"] == "problems"
    assert [f["code"] for f in report["findings"]] == ["stale-quantization-config"]
    assert report["config"]["where"] == "config.json:text_config.quantization_config"


def test_fp8_without_scale(tmp_path, inspect_json):
    root = bf16_model(tmp_path / "m", {"a.weight": torch.zeros(4, 4, dtype=torch.float8_e4m3fn)})
    code, report = inspect_json(root, "--check")
    assert code == 1 and report["fp8_without_scale"] == ["a.weight"]
    assert "fp8-without-scale" in {f["code"] for f in report["findings"]}


def test_int8_is_never_quantized_by_size_alone(tmp_path, inspect_json):
    root = bf16_model(tmp_path / "m", {"ids": torch.zeros(4, 4, dtype=torch.int8),
                                       "mask": torch.zeros(4, 4, dtype=torch.uint8)})
    code, report = inspect_json(root, "--check")
    assert code == 0 and report["quantized"] == [] and report["verdict"]["status"] == "clean"


def test_plain_dot_scale_parameter_is_not_a_scale(tmp_path, inspect_json):
    """``<m>.scale`` is DeepSeek-V4's scale name, but also an ordinary parameter name."""
    root = bf16_model(tmp_path / "m", {"attn.weight": torch.zeros(4, 4, dtype=torch.bfloat16),
                                       "attn.scale": torch.ones(4, dtype=torch.bfloat16)})
    code, report = inspect_json(root, "--check")
    assert code == 0 and report["orphan_scales"] == []


def test_sibling_scales_win_over_ignore_list(tmp_path, inspect_json):
    fx = VARIANTS["qwen3-bf16-scale"](tmp_path / "m")
    config = json.loads((fx.path / "config.json").read_text())
    config["text_config"]["quantization_config"]["modules_to_not_convert"] = ["q_proj"]
    (fx.path / "config.json").write_text(json.dumps(config))
    _, report = inspect_json(fx.path)
    assert "model.layers.0.self_attn.q_proj.weight" in {q["weight"] for q in report["quantized"]}
    assert "ignored-but-scaled" in {f["code"] for f in report["findings"]}


def test_block_size_from_shapes_beats_config(tmp_path, inspect_json):
    root = tmp_path / "m"
    root.mkdir()
    save_file({"w.weight": torch.zeros(64, 96, dtype=torch.float8_e4m3fn),
               "w.weight_scale_inv": torch.ones(2, 3)}, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps(
        {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}))
    _, report = inspect_json(root)
    assert report["quantized"][0]["block"] == [32, 32]
    assert "block-size-mismatch" in {f["code"] for f in report["findings"]}


def test_human_report_names_groups_and_fix(tmp_path, capsys):
    from scalefix.cli import main
    fx = VARIANTS["dsv3"](tmp_path / "m")
    assert main(["inspect", str(fx.path)]) == 0
    out = capsys.readouterr().out
    assert "fp8-block  weight_scale_inv  F8_E4M3  128x128  F32" in out
    assert "cross-shard pairs (scale in another shard): 1" in out
    assert f"fix: scalefix rewrite {fx.path}" in out


def test_sampling_reads_little(tmp_path):
    """The raw-FP8 check samples: a tensor's data is read in a few slices, not whole."""
    from scalefix.diagnosis import raw_fp8_signature as sig
    from scalefix.formats import open_bundle
    gen = torch.Generator().manual_seed(3)
    root = bf16_model(tmp_path / "m", {"a.weight": real_looking(gen, 2048, 2048)})
    info = open_bundle(root).tensors["a.weight"]
    assert sig.sample(info).size == sig.SLICES * sig.SLICE_ELEMENTS < info.numel // 100


def test_hf_quant_config_is_read(tmp_path, inspect_json):
    fx = VARIANTS["modelopt"](tmp_path / "m")
    _, report = inspect_json(fx.path)
    assert report["config"]["where"] == "hf_quant_config.json"
    assert report["config"]["quant_method"] == "modelopt"
    assert report["config"]["summary"]["quant_algo"] == "FP8"
    assert report["config"]["ignore"] == ["lm_head"]


@pytest.mark.parametrize("kind", ["nvfp4-without-global-scale", "gptq-3bit"])
def test_unsupported_schemes_are_reported_and_refused_by_rewrite(tmp_path, inspect_json, kind,
                                                                 capsys):
    from scalefix.cli import main
    if kind == "nvfp4-without-global-scale":  # block scales that mean nothing alone
        tensors = {"l.weight_packed": torch.zeros(64, 32, dtype=torch.uint8),
                   "l.weight_scale": torch.zeros(64, 4, dtype=torch.float8_e4m3fn)}
        flagged, config = "l.weight_packed", None
    else:  # GPTQ packs 3-bit codes across words in its own way: not decoded
        tensors = {"l.qweight": torch.zeros(12, 64, dtype=torch.int32),
                   "l.qzeros": torch.zeros(1, 6, dtype=torch.int32),
                   "l.scales": torch.ones(1, 64, dtype=torch.float16)}
        flagged = "l.qweight"
        config = {"quantization_config": {"quant_method": "gptq", "bits": 3, "group_size": -1}}
    root = bf16_model(tmp_path / "m", tensors, config)
    code, report = inspect_json(root, "--check")
    assert code == 1 and report["verdict"]["status"] == "problems"
    assert {u["tensor"] for u in report["unsupported"]} >= {flagged}
    assert "unsupported-scheme" in {f["code"] for f in report["findings"]}
    capsys.readouterr()
    assert main(["rewrite", str(root), "--out", str(tmp_path / "o")]) == 2
    assert "cannot dequantize" in capsys.readouterr().err and not (tmp_path / "o").exists()
