"""``rewrite --to mlx``: NVFP4 routed experts go to MLX ``nvfp4`` with a ``global_scale``; dense
NVFP4 layers stay exact BF16.

A tiny Qwen3-MoE (tests/support/tiny_qwen3_moe.py: mlx-lm ``qwen3_moe``, per-expert weights
stacked by its sanitize into ``QuantizedSwitchLinear``), every linear NVFP4, in both
flavours: ModelOpt (``weight_scale_2`` multiplies the E4M3 block scales) and
compressed-tensors (``weight_global_scale`` divides them). Checked with plain mlx-lm 0.32.2
(no scalefix hooks): the experts load as ``QuantizedSwitchLinear(mode="nvfp4")`` carrying
``global_scale``; ``mx.dequantize`` with it, in float32 and rounded to BF16 once, equals the
exact decode (the BF16 rewrite) bit for bit; the expert bytes are at most 0.3x their BF16
form. The forward pass (``gather_qmm`` with a global scale) runs on the GPU only in MLX; this
CPU-only suite does not run it.
"""

import json

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
mlx_lm_utils = pytest.importorskip("mlx_lm.utils")

from mlx.utils import tree_flatten  # noqa: E402

from scalefix.cli import main  # noqa: E402
from scalefix.mlx.module_form import mlx_has_nvfp4_global_scale  # noqa: E402

from tests.support.tiny_qwen3_moe import qwen3_moe_config, tiny_nvfp4_moe  # noqa: E402

CONFIG = qwen3_moe_config()


def rewrite(*args) -> int:
    return main(["rewrite", *map(str, args)])


@pytest.mark.skipif(not mlx_has_nvfp4_global_scale(), reason="this MLX has no global_scale")
@pytest.mark.parametrize("flavour", ["modelopt", "compressed-tensors"])
def test_nvfp4_experts_go_native_with_global_scale(tmp_path, flavour, capsys):
    src = tiny_nvfp4_moe(tmp_path / "src", flavour)
    assert rewrite(src, "--to", "mlx", "--out", tmp_path / "mlx") == 0
    out = capsys.readouterr().out
    assert "native        24  nvfp4" in out, out
    assert "dense layers cannot apply the global scale" in out
    assert rewrite(src, "--out", tmp_path / "bf16") == 0
    config = json.loads((tmp_path / "mlx" / "config.json").read_text())
    model, _ = mlx_lm_utils.load_model(tmp_path / "mlx")   # plain mlx-lm: no scalefix hooks
    dense, _ = mlx_lm_utils.load_model(tmp_path / "bf16")
    exact = dict(tree_flatten(dense.parameters()))
    switch = {name: m for name, m in model.named_modules() if hasattr(m, "scales")}
    assert sorted(switch) == sorted(f"model.layers.{n}.mlp.switch_mlp.{p}" for n in range(2)
                                    for p in ("gate_proj", "up_proj", "down_proj"))
    for name, m in switch.items():
        assert type(m).__name__ == "QuantizedSwitchLinear" and m.mode == "nvfp4"
        assert m.global_scale is not None and m.global_scale.shape == (CONFIG["num_experts"],)
        assert config["quantization"][name] == {"group_size": 16, "bits": 4, "mode": "nvfp4",
                                                "global_scale": True}
        want = exact[f"{name}.weight"]   # the BF16 rewrite's experts, stacked by sanitize
        for e in range(CONFIG["num_experts"]):
            got = mx.dequantize(m.weight[e], m.scales[e], group_size=16, bits=4, mode="nvfp4",
                                global_scale=m.global_scale[e], dtype=mx.float32)
            assert mx.array_equal(got.astype(mx.bfloat16).view(mx.uint16),
                                  want[e].view(mx.uint16)), (name, e)
    # dense NVFP4 layers (attention) are exact BF16: plain Linear, the BF16 rewrite's bits
    for n in range(2):
        key = f"model.layers.{n}.self_attn.q_proj.weight"
        got = dict(tree_flatten(model.parameters()))[key]
        assert got.dtype == mx.bfloat16 and mx.array_equal(got.view(mx.uint16),
                                                             exact[key].view(mx.uint16))
    # bytes: experts' codes + E4M3 scales + global scales vs BF16
    from safetensors import safe_open
    with safe_open(str(tmp_path / "mlx" / "model.safetensors"), "np") as fh:
        native = sum(fh.get_tensor(k).nbytes for k in fh.keys() if ".switch_mlp." in k)
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as fh:
        bf16 = sum(fh.get_tensor(k).nbytes for k in fh.keys() if ".experts." in k)
    assert native <= 0.3 * bf16, (native, bf16)


def test_global_scale_is_mlx_own_convention():
    """The global scale written is the one MLX's own ``mx.quantize(..., global_scale=)`` uses
    for the same weight: MLX's nvfp4 multiplies each E4M3 block scale by fl(G / 2688), so
    ModelOpt's weight_scale_2 = amax / 2688 becomes G = amax (its ``_quantize_experts``
    passes the tensor amax)."""
    if not mlx_has_nvfp4_global_scale():
        pytest.skip("this MLX has no global_scale")
    from scalefix.mlx.native_forms import nvfp4_global_scales
    w = mx.random.normal((8, 64), key=mx.random.key(3)) * 0.1
    amax = mx.max(mx.abs(w)).astype(mx.float32)
    q, s = mx.quantize(w, group_size=16, bits=4, mode="nvfp4", global_scale=amax)
    back = mx.dequantize(q, s, group_size=16, bits=4, mode="nvfp4", global_scale=amax,
                         dtype=mx.float32)
    ws2 = np.float32(np.float32(amax.item()) / np.float32(2688.0))
    (g,), exact = nvfp4_global_scales(np.array([ws2], np.float32), "multiply")
    assert exact
    again = mx.dequantize(q, s, group_size=16, bits=4, mode="nvfp4",
                          global_scale=mx.array(g), dtype=mx.float32)
    # the converted G gives MLX's own block scales for every byte this tensor uses
    assert mx.array_equal(again.astype(mx.bfloat16), back.astype(mx.bfloat16))


def test_no_global_scale_in_this_mlx_means_bf16(tmp_path, monkeypatch, capsys):
    """An MLX without nvfp4 global_scale (found by the probe): experts exact BF16 too."""
    import scalefix.mlx.module_form as module_form
    monkeypatch.setattr(module_form, "mlx_has_nvfp4_global_scale", lambda: False)
    src = tiny_nvfp4_moe(tmp_path / "src", "modelopt")
    assert rewrite(src, "--to", "mlx", "--out", tmp_path / "mlx") == 0
    out = capsys.readouterr().out
    assert "no nvfp4 global_scale" in out and "native " not in out
    model, _ = mlx_lm_utils.load_model(tmp_path / "mlx")
    assert not [m for _, m in model.named_modules() if hasattr(m, "scales")]
