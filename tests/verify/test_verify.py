"""``scalefix verify``: passes good conversions from any tool, fails (exit 1, naming the
tensors) on a scale-less conversion, a single corrupted tensor, missing or extra tensors."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from scalefix.cli import main
from scalefix.demo import build_demo_checkpoint, convert_without_scales

from tests.support.fixtures import VARIANTS


def verify(src, dst, *extra):
    return subprocess.run([sys.executable, "-m", "scalefix", "verify", str(src), str(dst),
                           *extra], capture_output=True, text=True)


def torch_bf16_upload(fx, dst):
    """A 'community BF16 upload' made by torch, independent of scalefix."""
    tensors = {}
    for f in sorted(fx.path.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    out = {}
    for name, t in tensors.items():
        if name in fx.quantized:
            out[fx.quantized[name].output_name or name] = fx.quantized[name].oracle
        elif name in fx.plain:
            out[name] = t
    dst.mkdir()
    save_file(out, str(dst / "model.safetensors"))


def test_passes_independent_torch_conversion(tmp_path):
    fx = VARIANTS["dsv3"](tmp_path / "src")
    torch_bf16_upload(fx, tmp_path / "dst")
    proc = verify(fx.path, tmp_path / "dst", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"]
    assert report["bit_exact"] == report["compared"] == len(fx.quantized) + len(fx.plain)


def test_a_bit_exact_conversion_says_its_sqnr_is_only_the_rounding(tmp_path):
    """All bit-exact: the lowest SQNR against the float32 values is the BF16 rounding itself,
    and the line says so instead of quoting the pass bar as if the result were borderline."""
    fx = VARIANTS["dsv3"](tmp_path / "src")
    torch_bf16_upload(fx, tmp_path / "dst")
    proc = verify(fx.path, tmp_path / "dst")
    line = next(x for x in proc.stdout.splitlines() if "lowest SQNR" in x)
    assert proc.returncode == 0
    assert line.endswith("bit-exact: that is only the one rounding to the output dtype"), line
    assert "pass needs" not in line


def test_fails_on_conversion_without_scales(tmp_path):
    build_demo_checkpoint(tmp_path / "fp8")
    convert_without_scales(tmp_path / "fp8", tmp_path / "naive")
    proc = verify(tmp_path / "fp8", tmp_path / "naive")
    assert proc.returncode == 1
    assert "FAIL model.layers.0.self_attn.q_proj.weight: values off by" in proc.stdout
    assert "12 tensor(s) carry the trap signature" in proc.stdout


def test_fails_on_one_corrupted_tensor(tmp_path):
    fx = VARIANTS["dsv3"](tmp_path / "src")
    assert main(["rewrite", str(fx.path), "--out", str(tmp_path / "dst"), "--quiet"]) == 0
    shard = tmp_path / "dst" / "model.safetensors"
    tensors = load_file(str(shard))
    bad = "model.layers.0.mlp.down_proj.weight"
    t = tensors[bad].clone()
    t[:128, :128] *= 3  # one block with a wrong scale
    tensors[bad] = t
    save_file(tensors, str(shard))
    proc = verify(fx.path, tmp_path / "dst", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["failed"] == [bad]


def test_missing_and_extra_tensors(tmp_path):
    fx = VARIANTS["ct-tensor"](tmp_path / "src")
    torch_bf16_upload(fx, tmp_path / "dst")
    tensors = load_file(str(tmp_path / "dst" / "model.safetensors"))
    tensors.pop("lm_head.weight")
    tensors["model.layers.0.mlp.up_proj.input_scale"] = torch.tensor([0.02])
    save_file(tensors, str(tmp_path / "dst" / "model.safetensors"))
    proc = verify(fx.path, tmp_path / "dst", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert report["missing"] == ["lm_head.weight"]
    assert report["extra"] == [{"tensor": "model.layers.0.mlp.up_proj.input_scale",
                                "why": "a scale or activation scale of the source"}]


def test_fails_when_dst_is_still_quantized(tmp_path):
    fx = VARIANTS["qwen3-bf16-scale"](tmp_path / "src")
    proc = verify(fx.path, fx.path)
    assert proc.returncode == 1 and "is not a dequantized float" in proc.stdout


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    fx = VARIANTS["dsv3"](tmp_path / "src")
    torch_bf16_upload(fx, tmp_path / "dst")
    proc = verify(fx.path, tmp_path / "dst", "--plot", str(tmp_path / "p.png"))
    assert proc.returncode == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
