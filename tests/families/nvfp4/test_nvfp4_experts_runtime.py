"""NVFP4 routed experts at load time and from the real writer.

- Under ``import scalefix.auto``, mlx-lm 0.32.2 loads an NVFP4-expert checkpoint (ModelOpt
  ``weight_scale_2`` and compressed-tensors ``weight_global_scale``) with
  ``QuantizedSwitchLinear(mode="nvfp4")`` carrying ``global_scale`` for the routed experts
  and exact BF16 for the dense NVFP4 layers: every parameter of the loaded model equals, bit
  for bit, plain mlx-lm's load of the ``rewrite --to mlx`` bundle, and MLX's peak memory
  (all parameters evaluated) is within 1.2x of that load's. The forward pass is NOT run:
  MLX's ``gather_qmm`` with a global scale is GPU-only ("Global scale is only supported on
  the GPU" on this CPU), so equal parameters stand in for equal logits.
- An MLX without nvfp4 ``global_scale`` (the probe) loads everything as exact BF16.
- compressed-tensors' own ``NVFP4PackedCompressor`` output (peer venv), per-expert and
  pre-stacked ``[E, out, in]``: the ``--to mlx`` bundle loads in plain mlx-lm with
  ``QuantizedSwitchLinear(mode="nvfp4")`` + ``global_scale``; ``mx.dequantize`` with it, in
  float32 rounded to BF16, equals the writer's own ``decompress`` bit for bit; expert bytes
  <= 0.3x BF16; the load under ``scalefix.auto`` gives the same parameters.
Each load runs in its own process (the hooks are process-wide).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")
torch = pytest.importorskip("torch")

from scalefix.cli import main  # noqa: E402
from scalefix.mlx.module_form import mlx_has_nvfp4_global_scale  # noqa: E402

from ...support.tiny_qwen3_moe import tiny_nvfp4_moe  # noqa: E402

needs_global_scale = pytest.mark.skipif(not mlx_has_nvfp4_global_scale(),
                                        reason="this MLX has no nvfp4 global_scale")

CHILD = r"""
import json, sys
if sys.argv[1] != "plain":
    import scalefix.auto  # noqa: F401
if sys.argv[1] == "no-global-scale":
    import scalefix.mlx.module_form as module_form
    module_form.mlx_has_nvfp4_global_scale = lambda: False
import mlx.core as mx
import numpy as np
from pathlib import Path
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model
mx.reset_peak_memory()
model, config = load_model(Path(sys.argv[2]))
params = dict(tree_flatten(model.parameters()))
mx.eval(params)
peak = mx.get_peak_memory()
layers = sorted((name, type(m).__name__, m.mode, m.bits, m.group_size,
                 getattr(m, "global_scale", None) is not None)
                for name, m in model.named_modules() if hasattr(m, "scales"))
np.savez(sys.argv[3], **{k: np.array(v.view(mx.uint8)) for k, v in params.items()})
print(json.dumps({"peak": peak, "layers": layers}))
"""


def child(mode: str, path: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scalefix" not in proc.stderr, proc.stderr  # nothing left unfixed
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_parameters(a: Path, b: Path) -> None:
    got, want = np.load(a), np.load(b)
    assert sorted(got.keys()) == sorted(want.keys())
    for k in want.keys():
        assert got[k].shape == want[k].shape and np.array_equal(got[k], want[k]), k


def hooked_equals_bundle(src: Path, tmp_path: Path, peak: bool = True) -> dict:
    """The hooked load of ``src`` equals plain mlx-lm's load of its ``--to mlx`` bundle;
    ``peak``: and MLX's peak memory is within 1.2x (meaningful only where the model is big
    enough that MLX's fixed per-load overhead does not dominate: 8 layers here)."""
    assert main(["rewrite", str(src), "--to", "mlx", "--out", str(tmp_path / "mlx")]) == 0
    hooked = child("hook", src, tmp_path / "hook.npz")
    bundle = child("plain", tmp_path / "mlx", tmp_path / "bundle.npz")
    assert hooked["layers"] == bundle["layers"]
    experts = [x for x in hooked["layers"] if ".switch_mlp." in x[0]]
    assert experts and all(x[1:] == ["QuantizedSwitchLinear", "nvfp4", 4, 16, True]
                           for x in experts), hooked["layers"]
    assert len(experts) == len(hooked["layers"])   # dense NVFP4: exact BF16, not quantized
    same_parameters(tmp_path / "hook.npz", tmp_path / "bundle.npz")
    if peak:
        assert hooked["peak"] <= 1.2 * bundle["peak"], (hooked["peak"], bundle["peak"])
    return hooked


# --- a Qwen3-MoE built by formula: every linear NVFP4, both flavours -------------------------

def nvfp4_moe(root: Path, flavour: str, hidden=256, moe=256, experts=8, layers=2) -> Path:
    """The tiny NVFP4 Qwen3-MoE of tests/support/tiny_qwen3_moe.py (no tokenizer)."""
    return tiny_nvfp4_moe(root, flavour, hidden, moe, experts, layers, seed=5, tokenizer=False)


@needs_global_scale
@pytest.mark.parametrize("flavour", ["modelopt", "compressed-tensors"])
def test_nvfp4_experts_load_natively_under_scalefix_auto(tmp_path, flavour):
    # 8 layers: mlx-lm stacks the experts' parts in sanitize, and MLX evaluates about 20
    # tensors at a time, so per-expert and stacked copies of the tensors in flight coexist:
    # a fixed overhead (1.25x at 2 layers, 1.09x at 8) that a real model's size dilutes
    hooked_equals_bundle(nvfp4_moe(tmp_path / "src", flavour, layers=8), tmp_path)


def test_no_global_scale_in_this_mlx_means_bf16_at_load(tmp_path):
    """The probe says no: the experts arrive as exact BF16 too (no quantized module)."""
    src = nvfp4_moe(tmp_path / "src", "compressed-tensors", 64, 64, 4)
    got = child("no-global-scale", src, tmp_path / "x.npz")
    assert got["layers"] == []
    params = np.load(tmp_path / "x.npz")
    assert params["model.layers.0.mlp.switch_mlp.gate_proj.weight"].shape == (4, 64, 64 * 2)


# --- compressed-tensors' own NVFP4 compressor (peer venv) ------------------------------------

@pytest.mark.peers
@needs_global_scale
@pytest.mark.parametrize("layout", ["per-expert", "stacked"])
def test_real_writer_nvfp4_experts(tmp_path, layout, real_writer):
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model
    from safetensors import safe_open

    src = real_writer(f"qwen3moe-ct-nvfp4-{layout}")
    # the writer's model is tiny (~120 KB of parameters): MLX's peak varies by tens of KB
    # from run to run there, so only the equality is checked (the 8-layer test bounds peak)
    hooked_equals_bundle(src, tmp_path, peak=False)
    model, cfg = load_model(tmp_path / "mlx")             # plain mlx-lm: no hooks here
    with safe_open(str(src / "ref" / "ref.safetensors"), "pt") as fh:
        ref = {k: fh.get_tensor(k) for k in fh.keys()}
    switch = {n: m for n, m in model.named_modules() if hasattr(m, "scales")}
    assert len(switch) == 6
    for name, m in switch.items():
        assert type(m).__name__ == "QuantizedSwitchLinear" and m.mode == "nvfp4"
        assert m.global_scale is not None and m.global_scale.shape == (4,)
        assert cfg["quantization"][name]["global_scale"] is True
        for e in range(4):
            key = (f"{name}.weight" if layout == "stacked" else
                   name.replace("switch_mlp", f"experts.{e}") + ".weight")
            want = ref[key][e] if layout == "stacked" else ref[key]
            got = mx.dequantize(m.weight[e], m.scales[e], group_size=16, bits=4, mode="nvfp4",
                                global_scale=m.global_scale[e], dtype=mx.float32)
            got = np.array(got.astype(mx.bfloat16).view(mx.uint16))
            assert np.array_equal(got, want.view(torch.uint16).numpy()), (name, e)
    dense = dict(tree_flatten(model.parameters()))["model.layers.0.self_attn.q_proj.weight"]
    assert np.array_equal(np.array(dense.view(mx.uint16)),
                          ref["model.layers.0.self_attn.q_proj.weight"].view(torch.uint16).numpy())
    with safe_open(str(tmp_path / "mlx" / "model.safetensors"), "np") as fh:
        native = sum(fh.get_tensor(k).nbytes for k in fh.keys() if ".switch_mlp." in k)
    bf16 = sum(v.numel() * 2 for k, v in ref.items() if "mlp." in k)
    assert native <= 0.3 * bf16, (native, bf16)
