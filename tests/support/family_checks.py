"""Checks shared by the registry families' real-writer tests (bitsandbytes, Quark, ModelOpt):
scalefix's exact decode against the writer's own dequantizer, the BF16 rewrite against it,
what is left in the output, and mlx-lm loads in a fresh interpreter (so ``import
scalefix.auto`` is exactly what a user's program does).

The oracles are float32 (``<ref>/dequantized.safetensors``, written in the writer's venv by
its own code); scalefix's float32 decode must equal them bit for bit, except that ModelOpt
decodes the E2M1 code 8 to +0 where scalefix gives -0 (``zero_sign``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch

from scalefix.cli import main
from scalefix.formats import classify, open_bundle
from scalefix.formats.codecs import f32_to_bf16
from scalefix.formats.dequant import row_reader

# tensor names a dequantized checkpoint must not keep
QUANT_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".SCB",
                  ".weight_format", "_scale", "_scale_2", ".input_scale", ".k_scale",
                  ".v_scale") + tuple(f".quant_state.bitsandbytes__{t}" for t in ("nf4", "fp4"))


def oracle(ref: Path) -> dict[str, np.ndarray]:
    return load_file(str(ref / "dequantized.safetensors"))


def decoded(src: Path) -> dict[str, np.ndarray]:
    """Output name -> scalefix's float32 exact decode of every quantized weight."""
    result = classify(open_bundle(src))
    return {qw.output_name: row_reader(qw)(0, qw.geometry.rows).reshape(qw.shape)
            for qw in result.quantized.values()}


def assert_exact(ours: np.ndarray, theirs: np.ndarray, zero_sign: bool = False) -> int:
    """Bit for bit; with ``zero_sign`` the only differences allowed are -0 for +0. Returns
    how many zeros differ in sign."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.float32
    differ = ours.view(np.uint32) != theirs.view(np.uint32)
    if not zero_sign:
        assert not differ.any(), f"{int(differ.sum())} values differ"
        return 0
    assert np.array_equal(ours, theirs), "values differ"
    assert (ours[differ] == 0).all() and np.signbit(ours[differ]).all()
    return int(differ.sum())


def bf16_tensors(root: Path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint, BF16 as uint16 bits (numpy cannot hold bfloat16)."""
    out = {}
    for path in sorted(root.glob("*.safetensors")):
        for name, t in load_torch(str(path)).items():
            out[name] = (t.view(torch.int16).numpy().view(np.uint16)
                         if t.dtype == torch.bfloat16 else t.numpy())
    return out


def check_rewrite(src: Path, dst: Path, expected: dict[str, np.ndarray]) -> dict:
    """``rewrite`` (BF16) equals ``expected`` (float32) rounded once, nothing quantized is
    left, and the config declares nothing."""
    assert main(["rewrite", str(src), "--out", str(dst), "--quiet"]) == 0
    written = bf16_tensors(dst)
    for name, values in expected.items():
        assert np.array_equal(written[name], f32_to_bf16(values)), name
    left = [n for n in written if n.endswith(QUANT_SUFFIXES)]
    assert left == [], left
    assert {str(v.dtype) for v in written.values()} == {"uint16"}, "not all BF16"
    config = json.loads((dst / "config.json").read_text())
    assert "quantization_config" not in config and not (dst / "hf_quant_config.json").exists()
    return written


CHILD = r"""
import json, sys
if sys.argv[1] == "hook":
    import scalefix.auto  # noqa: F401
import mlx.core as mx
import numpy as np
from pathlib import Path
from mlx_lm.utils import load_model
model, config = load_model(Path(sys.argv[2]))
logits = model(mx.array([[1, 5, 9, 13, 2, 7]]))
mx.eval(logits)
np.save(sys.argv[3], np.array(logits.astype(mx.float32)))
layers = sorted({(type(m).__name__, m.mode, m.bits, m.group_size)
                 for _, m in model.named_modules() if hasattr(m, "scales")})
print(json.dumps({"layers": layers}))
"""


def mlx_lm_load(mode: str, path: Path, out: Path) -> tuple[dict, np.ndarray]:
    """(quantized layer kinds, logits) of ``mlx_lm.utils.load_model(path)``; ``mode`` hook:
    under ``import scalefix.auto`` (nothing may be left unfixed)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scalefix" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(out)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def inspect_status(src: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "scalefix", "inspect", str(src), "--json"],
                          capture_output=True, text=True)
    return json.loads(proc.stdout)["verdict"]["status"]


def assert_refused_everywhere(src: Path, tmp: Path, words) -> None:
    """inspect, rewrite, rewrite --to mlx and verify: exit 2, one line holding ``words``,
    nothing written."""
    for args in (("inspect", src), ("rewrite", src, "--out", tmp / "o"),
                 ("rewrite", src, "--to", "mlx", "--out", tmp / "m"), ("verify", src, src)):
        proc = subprocess.run([sys.executable, "-m", "scalefix", *map(str, args)],
                              capture_output=True, text=True)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and all(w in lines[0] for w in words), lines
    assert not (tmp / "o").exists() and not (tmp / "m").exists()


def writer_fixture(family: str, variants):
    """A fixture giving (variant, checkpoint, oracle dir) of ``llama-<family>-<variant>``."""
    import pytest

    @pytest.fixture(params=variants)
    def written(request, real_writer):
        kind = f"llama-{family}-{request.param}"
        return request.param, real_writer(kind), real_writer(kind + "-ref")
    return written
