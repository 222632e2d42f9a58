"""The seed 002 shape end to end (tests/support/seed002.py: a tiny DeepSeek-V4 with compressed-tensors
W4A16 routed experts and FP8 128x128 BF16-block attention / shared experts, both
``weight_scale``): ``inspect`` names both schemes; ``rewrite`` (BF16) is bit-exact against
torch oracles and ``verify`` passes; ``rewrite --to mlx`` makes the experts native affine
4-bit (lossless), the FP8 modules exact BF16 (float block scales have no native MLX form),
and mlx-lm 0.32.2 loads the bundle as ``deepseek_v41``.

Logit tolerance (in check_native_bundle): float32 logits of the quantized model against a
dense model holding the float32 dequantized weights, within 1e-5 of the largest logit; the
reason is stated in test_rewrite_to_mlx.
"""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scalefix.cli import main

from tests.support.seed002 import CONFIG, seed002_model

EXPERTS = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}  # DeepSeek's naming
FP8_MODULES = {"self_attn.q_a_proj": "attn.wq_a", "self_attn.q_b_proj": "attn.wq_b",
               "self_attn.kv_proj": "attn.wkv", "self_attn.o_a_proj": "attn.wo_a",
               "self_attn.o_b_proj": "attn.wo_b",
               **{f"mlp.shared_experts.{k}": f"ffn.shared_experts.{w}" for k, w in EXPERTS.items()}}


def run_json(*args) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*map(str, args), "--json", "--quiet"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def seed(tmp_path_factory):
    """The fixture and its two rewrites, made once: (fixture, bf16 dir, mlx dir, summaries)."""
    root = tmp_path_factory.mktemp("seed002")
    fx = seed002_model(root / "src")
    bf16 = run_json("rewrite", fx.path, "--out", root / "bf16")
    native = run_json("rewrite", fx.path, "--to", "mlx", "--out", root / "mlx")
    return fx, root / "bf16", root / "mlx", bf16, native


def test_inspect_names_both_schemes(seed, inspect_json):
    fx = seed[0]
    code, report = inspect_json(fx.path)
    assert code == 0
    assert report["verdict"]["status"] == "quantized" and not report["verdict"]["ok"]
    got = {q["weight"]: (q["scheme"], q["scale"], q["scale_dtype"]) for q in report["quantized"]}
    assert got == {k: (e.scheme, e.scale, e.scale_dtype) for k, e in fx.quantized.items()}
    assert {g["scheme"] for g in report["groups"]} == {"int4-group128", "fp8-block"}
    summary = report["config"]["summary"]
    assert summary["format"] == "mixed-precision"
    assert [(g["type"], g["strategy"]) for g in summary["config_groups"]] == [
        ("int", "group"), ("float", "block")]
    assert inspect_json(fx.path, "--check")[0] == 1


def test_bf16_rewrite_is_exact_and_verifies(seed, inspect_json, capsys):
    fx, bf16, _, summary, _ = seed
    assert summary["counts"]["dequantized"] == {"int4-group128": 24, "fp8-block": 16}
    got, src = load_file(str(bf16 / "model.safetensors")), {}
    for shard in sorted(fx.path.glob("*.safetensors")):
        src.update(load_file(str(shard)))
    for weight, want in fx.quantized.items():
        out = got[want.output_name or weight]
        assert out.dtype == torch.bfloat16
        assert torch.equal(out.view(torch.int16), want.oracle.view(torch.int16)), weight
    for plain in fx.plain:
        assert got[plain].dtype == src[plain].dtype
        assert torch.equal(got[plain].view(torch.uint8), src[plain].view(torch.uint8)), plain
    assert set(got) == {e.output_name or k for k, e in fx.quantized.items()} | set(fx.plain)
    config = json.loads((bf16 / "config.json").read_text())
    assert "quantization_config" not in config and config["torch_dtype"] == "bfloat16"
    assert main(["verify", str(fx.path), str(bf16)]) == 0
    assert "verdict: PASS" in capsys.readouterr().out
    assert inspect_json(bf16, "--check")[0] == 0


def test_to_mlx_experts_native_attention_bf16_and_mlx_lm_loads(seed):
    mx = pytest.importorskip("mlx.core")
    mlx_lm_utils = pytest.importorskip("mlx_lm.utils")
    from mlx.utils import tree_flatten

    from tests.support.mlx_checks import check_native_bundle, f32_dequantized, quantized_modules

    fx, bf16, native_dir, _, summary = seed
    assert summary["counts"]["native"] == {"int4-group128": 24}
    assert summary["counts"]["dequantized"] == {"fp8-block": 16}
    assert any("16 quantized weight(s) have no lossless MLX form and are exact BF16" in c
               and "float block scales" in c for c in summary["config_changes"])

    model, config = mlx_lm_utils.load_model(native_dir)
    assert config["model_type"] == "deepseek_v41"
    # experts against the torch oracle directly (not only against the BF16 rewrite)
    quantized = quantized_modules(model)
    for n in range(CONFIG["num_hidden_layers"]):
        for proj, w in EXPERTS.items():
            m = quantized[f"model.layers.{n}.mlp.experts.switch_mlp.{proj}"]
            want = torch.stack([fx.quantized[f"layers.{n}.ffn.experts.{e}.{w}.weight_packed"]
                                .oracle for e in range(CONFIG["n_routed_experts"])])
            got = np.array(f32_dequantized(m).astype(mx.bfloat16).view(mx.uint16))
            assert np.array_equal(got, want.view(torch.int16).numpy().view(np.uint16)), (n, proj)
    # FP8 attention and shared experts: plain BF16 weights, the torch oracle bit for bit
    params = dict(tree_flatten(model.parameters()))
    for n in range(CONFIG["num_hidden_layers"]):
        for mlx_name, name in FP8_MODULES.items():
            key = f"model.layers.{n}.{mlx_name}"
            assert key not in quantized and params[key + ".weight"].dtype == mx.bfloat16
            want = fx.quantized[f"layers.{n}.{name}.weight"].oracle.view(torch.int16).numpy()
            got = np.array(params[key + ".weight"].view(mx.uint16)).view(np.int16)
            assert np.array_equal(got.reshape(want.shape), want), key   # o_a: split in groups
    # and every other parameter is what mlx-lm makes of the BF16 rewrite, bit for bit
    dense, _ = mlx_lm_utils.load_model(bf16)
    exact = dict(tree_flatten(dense.parameters()))
    parts = {f"{name}.{p}" for name in quantized for p in ("weight", "scales", "biases")}
    assert set(params) - parts == set(exact) - parts
    for k in set(params) - parts:
        assert params[k].dtype == exact[k].dtype, k
        assert np.array_equal(np.array(params[k].view(mx.uint8)),
                              np.array(exact[k].view(mx.uint8))), k
    check_native_bundle(native_dir, bf16, {
        ("QuantizedSwitchLinear", "affine", 4, 128, "bfloat16"): 2 * 3})
