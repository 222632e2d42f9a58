"""``rewrite --to mlx-affine``: FP4 (and, asked for, FP8) weights decoded, then re-quantized by
MLX's own ``mx.quantize``; the bundle is laid out by mlx-lm's own sanitize and loads in mlx-lm
with quantized layers of the right bits.

Oracles: torch's decode of the source (``fixtures``), handed to ``mx.quantize`` directly, and
mlx-lm loading the plain BF16 rewrite then quantizing it with ``nn.quantize`` itself."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")
mlx_lm_utils = pytest.importorskip("mlx_lm.utils")

from scalefix.cli import main  # noqa: E402

from tests.support.fixtures import (dsv3, dsv4, dsv4_tiny_model, gpt_oss, gpt_oss_tiny_model,  # noqa: E402
                       mixtral_tiny_fp8)


def rewrite(*args) -> int:
    return main(["rewrite", *map(str, args), "--quiet"])


def mx_from_torch(t: torch.Tensor):
    return mx.array(t.view(torch.uint16).numpy()).view(mx.bfloat16)


def mx_load_bundle(path: Path) -> dict:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(mx.load(str(f)))
    return out


def same_bits(a, b) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == mx.bfloat16:
        a, b = a.view(mx.uint16), b.view(mx.uint16)
    return np.array_equal(np.array(a), np.array(b))


def expected_affine(oracle_bf16: torch.Tensor, group: int, bits: int):
    return mx.quantize(mx_from_torch(oracle_bf16), group_size=group, bits=bits, mode="affine")


@pytest.mark.parametrize("group,bits", [(32, 4), (64, 4), (32, 8)])
def test_dsv4_experts_bit_identical_to_mx_quantize(tmp_path, monkeypatch, group, bits):
    """deepseek_v4 is unknown to mlx-lm: names stay, each FP4 expert gets .weight/.scales/
    .biases equal to mx.quantize of torch's decode; FP8 becomes torch's BF16. scalefix
    quantizes a few rows at a time (tiny chunks here): the bits must not depend on it."""
    monkeypatch.setattr("scalefix.mlx.bundle_write.QUANTIZE_ELEMENTS", 3 * 256)
    fx = dsv4(tmp_path / "src")
    dst = tmp_path / "dst"
    assert rewrite(fx.path, "--to", "mlx-affine", "--bits", bits, "--group-size", group,
                   "--out", dst) == 0
    got = mx_load_bundle(dst)
    config = json.loads((dst / "config.json").read_text())
    modules = set()
    for name, exp in fx.quantized.items():
        if exp.scheme == "fp4-group":
            module = name[: -len(".weight")]
            modules.add(module)
            q, s, b = expected_affine(exp.oracle, group, bits)
            assert same_bits(got[name], q), name
            assert same_bits(got[module + ".scales"], s), name
            assert same_bits(got[module + ".biases"], b), name
            assert got[name].dtype == mx.uint32
        else:
            assert same_bits(got[name], mx_from_torch(exp.oracle)), name
    assert not any(k.endswith(".scale") for k in got)
    quant = config["quantization"]
    assert (quant["bits"], quant["group_size"], quant["mode"]) == (bits, group, "affine")
    assert {k for k in quant if isinstance(quant[k], dict)} == modules
    assert all(quant[m] == {"group_size": group, "bits": bits, "mode": "affine"}
               for m in modules)
    assert config["quantization_config"] == quant and "quant_method" not in quant


def test_summary_reports_requantization_error_and_verify_says_why_not(tmp_path, capsys):
    fx = dsv4(tmp_path / "src")
    dst = tmp_path / "dst"
    assert main(["rewrite", str(fx.path), "--to", "mlx-affine", "--out", str(dst), "--quiet",
                 "--json"]) == 0
    quality = json.loads(capsys.readouterr().out)["requantization_sqnr"]
    # independent: float64 energies of mx.dequantize(mx.quantize(torch's decode)) vs the decode
    sqnr = {}
    for name, exp in fx.quantized.items():
        if exp.scheme == "fp4-group":
            exact = exp.oracle.double().numpy()
            back = mx.dequantize(*expected_affine(exp.oracle, 32, 4), group_size=32, bits=4,
                                 mode="affine").astype(mx.float32)
            noise = ((exact - np.array(back, dtype=np.float64)) ** 2).sum()
            sqnr[name[: -len(".weight")]] = 10 * np.log10((exact * exact).sum() / noise)
    worst = min(sqnr, key=sqnr.get)
    assert quality["modules"] == len(sqnr) == 4 and quality["worst"] == worst
    assert quality["min_db"] == pytest.approx(sqnr[worst], abs=0.006)  # rounded to 0.01 dB
    assert 10 < quality["min_db"] <= quality["median_db"] < 40
    assert main(["verify", str(fx.path), str(dst)]) == 2
    assert "MLX-quantized bundle" in capsys.readouterr().err


def test_requantization_energies_are_exact_on_a_large_tensor():
    """The SQNR's energies over 4M elements equal a float64 sum to 1e-6. MLX's float32
    ``mx.sum`` over a tensor this size is already 0.4% off (3% at 16M, 35% on a 64-expert
    stack, the bug this guards against); even over one 1M-element block it fails here."""
    from concurrent.futures import ThreadPoolExecutor

    from scalefix.mlx.bundle_plan import MlxSpec
    from scalefix.mlx.bundle_write import quantize_rows

    w = (mx.random.normal((4096, 1024), key=mx.random.key(0)) * 0.02).astype(mx.bfloat16)
    mx.eval(w)
    with ThreadPoolExecutor(2) as pool:
        q, s, b, (signal, noise) = quantize_rows(mx, w, MlxSpec(), pool)
    exact = np.array(w.astype(mx.float32), dtype=np.float64)
    back = np.array(mx.dequantize(q, s, b, group_size=32, bits=4, mode="affine")
                    .astype(mx.float32), dtype=np.float64)
    assert signal == pytest.approx((exact * exact).sum(), rel=1e-6)
    assert noise == pytest.approx(((exact - back) ** 2).sum(), rel=1e-6)


def test_include_fp8_requantizes_fp8_too(tmp_path):
    fx = dsv3(tmp_path / "src")
    dst = tmp_path / "dst"
    assert rewrite(fx.path, "--to", "mlx-affine", "--include-fp8", "--group-size", 64,
                   "--out", dst) == 0
    got = mx_load_bundle(dst)
    kept = 0
    for name, exp in fx.quantized.items():
        if exp.oracle.shape[-1] % 64:  # as mlx-lm convert: a group must fit, else BF16
            assert same_bits(got[name], mx_from_torch(exp.oracle)), name
            kept += 1
            continue
        q, s, b = expected_affine(exp.oracle, 64, 4)
        module = name[: -len(".weight")]
        assert same_bits(got[name], q) and same_bits(got[module + ".scales"], s), name
        assert same_bits(got[module + ".biases"], b), name
    assert 0 < kept < len(fx.quantized)


def test_gpt_oss_follows_mlx_lm_layout(tmp_path, inspect_json, capsys):
    """mlx-lm's gpt_oss sanitize splits gate_up_proj into gate/up (even/odd rows): the
    re-quantized modules come out under those names, each mx.quantize of its rows."""
    fx = gpt_oss(tmp_path / "src")
    dst = tmp_path / "dst"
    assert rewrite(fx.path, "--to", "mlx-affine", "--out", dst) == 0
    got = mx_load_bundle(dst)
    base = "model.layers.0.mlp.experts."
    gate_up = fx.quantized[base + "gate_up_proj_blocks"].oracle
    down = fx.quantized[base + "down_proj_blocks"].oracle
    for module, oracle in (("gate_proj", gate_up[:, 0::2]), ("up_proj", gate_up[:, 1::2]),
                           ("down_proj", down)):
        q, s, b = expected_affine(oracle.contiguous(), 32, 4)
        assert same_bits(got[base + module + ".weight"], q), module
        assert same_bits(got[base + module + ".scales"], s), module
        assert same_bits(got[base + module + ".biases"], b), module
    assert base + "gate_proj.bias" in got and base + "up_proj.bias" in got
    quant = json.loads((dst / "config.json").read_text())["quantization"]
    assert {k for k in quant if isinstance(quant[k], dict)} == {
        base + m for m in ("gate_proj", "up_proj", "down_proj")}
    capsys.readouterr()
    code, report = inspect_json(dst)
    assert code == 0 and report["config"]["where"] == "config.json:quantization"
    assert report["verdict"]["ok"]


def _logits(model) -> np.ndarray:
    model.set_dtype(mx.float32)  # MLX's CPU MoE kernels take float32 only
    return np.array(model(mx.array([[1, 5, 9, 13, 2, 7]])))


def test_dsv4_model_loads_in_mlx_lm_with_4bit_experts(tmp_path):
    """A whole DeepSeek-V4 checkpoint (published names, FP4 experts, FP8 + E8M0 elsewhere):
    mlx-lm builds QuantizedSwitchLinear(bits 4, group 32) for every routed expert, keeps the
    FP8 modules as BF16 Linear, and the logits equal mlx-lm's own quantization of the plain
    BF16 rewrite, bit for bit."""
    fx = dsv4_tiny_model(tmp_path / "src")
    dst, bf16 = tmp_path / "mlx", tmp_path / "bf16"
    assert rewrite(fx.path, "--to", "mlx-affine", "--out", dst, "--max-shard-size",
                   "60KB") == 0
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert any(k.endswith("switch_mlp.gate_proj.biases") for k in index["weight_map"])
    assert set(index["weight_map"]) == set(mx_load_bundle(dst))

    model, config = mlx_lm_utils.load_model(dst)
    for layer in model.model.layers:
        for proj in ("gate_proj", "up_proj", "down_proj"):
            module = getattr(layer.mlp.experts.switch_mlp, proj)
            assert type(module).__name__ == "QuantizedSwitchLinear"
            assert (module.bits, module.group_size, module.mode) == (4, 32, "affine")
        assert type(layer.self_attn.q_a_proj) is nn.Linear
        assert type(layer.mlp.shared_experts.gate_proj) is nn.Linear

    assert rewrite(fx.path, "--out", bf16) == 0
    reference, _ = mlx_lm_utils.load_model(bf16)
    nn.quantize(reference, group_size=32, bits=4, mode="affine",
                class_predicate=lambda path, m: ".switch_mlp." in path
                and hasattr(m, "to_quantized"))
    expected = _logits(reference)
    got = _logits(model)
    assert np.isfinite(got).all()
    assert np.array_equal(got, expected)


def test_gpt_oss_model_loads_in_mlx_lm_with_4bit_affine_experts(tmp_path):
    """gpt-oss MXFP4 -> MLX affine: mlx-lm builds affine QuantizedSwitchLinear experts, and
    the logits equal those of mlx-lm's own MXFP4 load of the source with each expert decoded
    by MLX (``mx.dequantize`` mode mxfp4) and re-quantized by mlx-lm's ``to_quantized``."""
    from mlx_lm.models.switch_layers import SwitchLinear

    fx = gpt_oss_tiny_model(tmp_path / "src")
    dst = tmp_path / "mlx"
    assert rewrite(fx.path, "--to", "mlx-affine", "--group-size", 64, "--out", dst) == 0
    model, _ = mlx_lm_utils.load_model(dst)
    reference, _ = mlx_lm_utils.load_model(fx.path)   # mlx-lm's own MXFP4 path
    for layer, ref_layer in zip(model.model.layers, reference.model.layers):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            got = getattr(layer.mlp.experts, proj)
            assert (type(got).__name__, got.mode, got.bits, got.group_size) == (
                "QuantizedSwitchLinear", "affine", 4, 64)
            mxfp4 = getattr(ref_layer.mlp.experts, proj)
            assert mxfp4.mode == "mxfp4"
            decoded = mx.dequantize(mxfp4.weight, mxfp4.scales, group_size=32, bits=4,
                                    mode="mxfp4").astype(mx.bfloat16)
            plain = SwitchLinear(decoded.shape[-1], decoded.shape[-2], decoded.shape[0])
            plain.weight, plain.bias = decoded, mxfp4.bias
            requantized = plain.to_quantized(group_size=64, bits=4, mode="affine")
            assert same_bits(got.weight, requantized.weight), proj
            assert same_bits(got.scales, requantized.scales), proj
            assert same_bits(got.biases, requantized.biases), proj
            setattr(ref_layer.mlp.experts, proj, requantized)
        assert type(layer.self_attn.q_proj) is nn.Linear
    got, expected = _logits(model), _logits(reference)
    assert np.isfinite(got).all() and np.array_equal(got, expected)


def test_whole_checkpoint_sanitizer_mixtral_fp8_include_fp8(tmp_path):
    """mlx-lm's mixtral sanitize stacks any layer's experts only when layer 0's are in the
    dict: each layer is sanitized beside lazy stand-ins of the others, so layer 1 is stacked
    too. --include-fp8: attention and experts become 4-bit affine, equal (logits, bit for
    bit) to mlx-lm's own nn.quantize of the BF16 rewrite."""
    fx = mixtral_tiny_fp8(tmp_path / "src")
    dst, bf16 = tmp_path / "mlx", tmp_path / "bf16"
    assert rewrite(fx.path, "--to", "mlx-affine", "--include-fp8", "--group-size", 64,
                   "--out", dst) == 0
    names = set(mx_load_bundle(dst))
    for n in (0, 1):
        assert f"model.layers.{n}.block_sparse_moe.switch_mlp.gate_proj.biases" in names
        assert not any(k.startswith(f"model.layers.{n}.block_sparse_moe.experts.") for k in names)
    model, _ = mlx_lm_utils.load_model(dst)
    layer = model.model.layers[1]
    assert type(layer.block_sparse_moe.switch_mlp.up_proj).__name__ == "QuantizedSwitchLinear"
    assert type(layer.self_attn.k_proj) is nn.QuantizedLinear
    assert type(layer.block_sparse_moe.gate) is nn.Linear      # BF16 in the source: kept
    assert rewrite(fx.path, "--out", bf16) == 0
    reference, _ = mlx_lm_utils.load_model(bf16)
    nn.quantize(reference, group_size=64, bits=4, mode="affine",
                class_predicate=lambda path, m: hasattr(m, "to_quantized") and (
                    ".self_attn." in path or ".switch_mlp." in path))
    got, expected = _logits(model), _logits(reference)
    assert np.isfinite(got).all() and np.array_equal(got, expected)


def test_refusals(tmp_path, capsys):
    fx = dsv3(tmp_path / "src")
    assert rewrite(fx.path, "--to", "mlx-affine", "--out", tmp_path / "a") == 2
    assert "no FP4 weights to re-quantize; add --include-fp8" in capsys.readouterr().err
    assert rewrite(fx.path, "--bits", 4, "--out", tmp_path / "b") == 2
    assert "go with --to mlx-affine" in capsys.readouterr().err
    assert rewrite(fx.path, "--to", "mlx-affine", "--bits", 7, "--out", tmp_path / "c") == 2
    assert "--bits must be one of" in capsys.readouterr().err
    v4 = dsv4(tmp_path / "v4")
    assert rewrite(v4.path, "--to", "mlx-affine", "--group-size", 128,
                   "--out", tmp_path / "d") == 2
    err = capsys.readouterr().err
    assert "not a multiple of --group-size 128" in err and "experts" in err
    single = next(fx.path.glob("*.safetensors"))
    assert rewrite(single, "--to", "mlx-affine", "--out", tmp_path / "e") == 2
    assert "give the directory" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_resume_reuses_finished_shards(tmp_path):
    """A finished shard left in staging is reused (its unit is not recomputed) and the
    result equals an uninterrupted run."""
    fx = dsv4_tiny_model(tmp_path / "src")
    ref, dst = tmp_path / "ref", tmp_path / "dst"
    args = ("--to", "mlx-affine", "--max-shard-size", "60KB")
    assert rewrite(fx.path, *args, "--out", ref) == 0
    staging = tmp_path / ".dst.scalefix-partial"
    # an interrupted run: staging with the first shard finished, nothing else
    import shutil
    shutil.copytree(ref, staging)
    from scalefix.rewrite import staging as stage
    from scalefix.mlx.bundle_plan import MlxSpec, build_mlx_plan
    from scalefix.mlx.layout import layout_for
    from scalefix.formats import classify, open_bundle
    bundle = open_bundle(fx.path)
    plan = build_mlx_plan(classify(bundle), MlxSpec(), layout_for(bundle.config),
                             60_000, "model")
    first = plan.shards[0]
    for item in staging.iterdir():
        if item.name != first.filename:
            item.unlink()
    (staging / stage.STAGING_MARK).write_text("{}")
    stage.done_marker(staging, first.filename).write_text(plan.shard_fingerprint(first) + "\n")
    assert rewrite(fx.path, *args, "--out", dst, "--resume") == 0
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in ref.iterdir())
    for p in ref.iterdir():
        assert (dst / p.name).read_bytes() == p.read_bytes(), p.name


def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path):
    """A real SIGKILL once the first shard is finished: no DST; --resume reuses the finished
    shards and the bundle equals an uninterrupted run, byte for byte."""
    import subprocess
    import sys

    from tests.support.killing import kill_after_first_shard
    fx = dsv4_tiny_model(tmp_path / "src", num_hidden_layers=8, hidden_size=256,
                         moe_intermediate_size=512, n_routed_experts=16)
    ref, dst = tmp_path / "ref", tmp_path / "dst"
    args = ["--to", "mlx-affine", "--max-shard-size", "1MB"]
    assert rewrite(fx.path, *args, "--out", ref) == 0
    staging = tmp_path / ".dst.scalefix-partial"
    cmd = [sys.executable, "-m", "scalefix", "rewrite", str(fx.path), *args, "--out", str(dst),
           "--workers", "1", "--quiet"]
    kill_after_first_shard(cmd, staging)
    assert not dst.exists(), "a killed run must not leave a complete-looking DST"
    done = [p for p in staging.iterdir() if p.name.endswith(".done")]
    shards = [p for p in ref.iterdir() if p.suffix == ".safetensors"]
    assert 1 <= len(done) < len(shards), (len(done), len(shards))
    resumed = subprocess.run(cmd[:-1] + ["--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"reused {len(done)} finished shard(s)" in resumed.stdout
    assert "reused shards not re-measured" in resumed.stdout
    assert not staging.exists()
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in ref.iterdir())
    for p in ref.iterdir():
        assert (dst / p.name).read_bytes() == p.read_bytes(), p.name
