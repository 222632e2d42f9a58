"""At load time: under ``import scalefix.auto``, ``mlx_lm`` loads compressed-tensors
pack-quantized, int-quantized, GPTQ (no act-order) and AWQ checkpoints as they are, with
quantized layers: the ``mx.load`` hook hands over the codes as a lazy MLX graph in MLX's
affine bitstream (a view for compressed-tensors, a transpose for GPTQ, a nibble shuffle for
AWQ) with the scales and biases ``rewrite --to mlx`` computes, and the config hook supplies
the per-module ``quantization`` entries. The logits are bit-identical to loading the
``--to mlx`` bundle, and MLX's peak memory during the load is within 1.2x of that load's.
Each side runs in its own process (the hooks are process-wide)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlx_lm")

from scalefix.cli import main  # noqa: E402

from tests.support.tiny_int_llama import KINDS, tiny_int_llama  # noqa: E402
from tests.support.tiny_qwen3_moe import tiny_int_moe  # noqa: E402

CHILD = r"""
import json, sys
if sys.argv[1] == "hook":
    import scalefix.auto  # noqa: F401
import mlx.core as mx
import numpy as np
from pathlib import Path
from mlx_lm.utils import load_model
mx.reset_peak_memory()
model, config = load_model(Path(sys.argv[2]))
logits = model(mx.array([[1, 5, 9, 13, 2, 7]]))
mx.eval(logits)
layers = sorted({(type(m).__name__, m.mode, m.bits, m.group_size, str(m.scales.dtype))
                 for _, m in model.named_modules() if hasattr(m, "scales")})
np.save(sys.argv[3], np.array(logits.astype(mx.float32)))
print(json.dumps({"peak": mx.get_peak_memory(), "layers": layers,
                  "n": sum(1 for _, m in model.named_modules() if hasattr(m, "scales"))}))
"""


def child(mode: str, path: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "scalefix" not in proc.stderr, proc.stderr  # nothing left unfixed
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(src: Path, tmp_path: Path) -> dict:
    assert main(["rewrite", str(src), "--to", "mlx", "--out", str(tmp_path / "mlx")]) == 0
    hooked = child("hook", src, tmp_path / "hook.npy")
    bundle = child("plain", tmp_path / "mlx", tmp_path / "bundle.npy")
    assert hooked["n"] > 0 and hooked["layers"] == bundle["layers"]
    assert hooked["n"] == bundle["n"]
    assert np.array_equal(np.load(tmp_path / "hook.npy"), np.load(tmp_path / "bundle.npy"))
    assert hooked["peak"] <= 1.2 * bundle["peak"], (hooked["peak"], bundle["peak"])
    return hooked


@pytest.mark.parametrize("kind", KINDS)
def test_integer_llama_loads_natively_under_scalefix_auto(tmp_path, kind):
    check(tiny_int_llama(tmp_path / "src", kind), tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_integer_moe_experts_are_stacked_under_scalefix_auto(tmp_path, kind):
    """Per-expert integer experts: mlx-lm's sanitize stacks only ``<m>.weight``, so the hook
    places each part (codes, scales, biases) as the ``--to mlx`` plan does, and the config
    entries name the stacked ``switch_mlp`` modules (before: unknown ``experts.N.*.scales``)."""
    hooked = check(tiny_int_moe(tmp_path / "src", kind), tmp_path)
    assert {layer[0] for layer in hooked["layers"]} == {"QuantizedLinear",
                                                        "QuantizedSwitchLinear"}


@pytest.mark.parametrize("artifact", ["llama-ct-w4a16", "llama-ct-w4a16-asym", "llama-ct-w8a8",
                                      "llama-ar-gptq", "llama-ar-awq"])
def test_real_writer_checkpoints_load_natively(tmp_path, artifact, real_writer):
    """llmcompressor's W4A16 / W4A16_ASYM / W8A8 and auto-round's GPTQ / AWQ, as written."""
    check(real_writer(artifact), tmp_path)


def test_plain_mlx_lm_cannot_load_them(tmp_path):
    """Why the hook exists: without it mlx-lm 0.32.2 refuses (or mis-shapes) these."""
    src = tiny_int_llama(tmp_path / "src", "gptq")
    proc = subprocess.run([sys.executable, "-c", CHILD, "plain", str(src),
                           str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert proc.returncode != 0


def test_from_a_hugging_face_cache_snapshot(tmp_path):
    """Where users' models live: a snapshot of links into blobs/, loaded by its snapshot
    path (AWQ: the nibble shuffle) and by hub id through mlx_lm.load offline."""
    from tests.support.hf_cache import into_cache
    src = tiny_int_llama(tmp_path / "src", "awq")
    snapshot = into_cache(src, tmp_path / "hub", "org/tiny-awq")
    assert (snapshot / "config.json").is_symlink()
    check(snapshot, tmp_path)
    code = ("import scalefix.auto, json, mlx.core as mx\n"
            "from mlx_lm import load\n"
            "model, _ = load('org/tiny-awq')\n"
            "print(sum(1 for _, m in model.named_modules() if hasattr(m, 'scales')))\n")
    env = {**__import__("os").environ, "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "14"
