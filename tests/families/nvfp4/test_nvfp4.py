"""NVFP4 (ModelOpt and compressed-tensors flavours): decoded bit for bit against a torch
oracle, rewritten and verified, the same bits at load time under ``scalefix.auto``; and the
real compressed-tensors NVFP4 writers' checkpoints (peer tier, tests/support/int_checks.py).
Routed NVFP4 experts into MLX: test_nvfp4_experts_to_mlx.py."""

import numpy as np
import pytest
import torch

from scalefix.cli import main

from tests.support.int_checks import family_tests
from tests.support.int_layouts import decoded, save

E2M1 = torch.tensor([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6])


@pytest.mark.parametrize("flavour", ["modelopt", "compressed-tensors"])
def test_nvfp4(tmp_path, flavour):
    rng = np.random.default_rng(5)
    out, cols = 32, 128
    codes = torch.from_numpy(rng.integers(0, 16, (out, cols)).astype(np.uint8))
    packed = (codes[:, 1::2] << 4) | codes[:, 0::2]
    block = torch.from_numpy(rng.uniform(0.01, 448, (out, cols // 16)).astype(np.float32))
    block = block.to(torch.float8_e4m3fn)
    if flavour == "modelopt":
        g = torch.tensor(3.7e-4, dtype=torch.float32)
        tensors = {"l.weight": packed, "l.weight_scale": block, "l.weight_scale_2": g,
                   "l.input_scale": torch.tensor(1.0)}
        eff = block.float() * g
    else:
        g = torch.tensor([2718.5], dtype=torch.float32)
        tensors = {"l.weight_packed": packed, "l.weight_scale": block,
                   "l.weight_global_scale": g}
        eff = block.float() / g
    root = save(tmp_path / "m", tensors)
    name = "l.weight" if flavour == "modelopt" else "l.weight_packed"
    qw, got = decoded(root, name)
    want = (E2M1[codes.long()].view(out, -1, 16) * eff[:, :, None]).view(out, cols).bfloat16()
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert qw.scheme == "nvfp4"
    assert main(["rewrite", str(root), "--out", str(tmp_path / "o")]) == 0
    assert main(["verify", str(root), str(tmp_path / "o")]) == 0
    from safetensors import safe_open
    with safe_open(str(tmp_path / "o" / "model.safetensors"), "pt") as fh:
        assert set(fh.keys()) == {"l.weight"}
        assert torch.equal(fh.get_tensor("l.weight").view(torch.int16), want.view(torch.int16))


@pytest.mark.parametrize("flavour", ["modelopt", "compressed-tensors"])
def test_nvfp4_at_load_time_is_the_rewrite_bit_for_bit(tmp_path, flavour):
    """Under scalefix.auto, mx.load of an NVFP4 file gives the lazy exact BF16 decode, global
    scale applied, every side tensor consumed."""
    import subprocess
    import sys
    pytest.importorskip("mlx.core")
    rng = np.random.default_rng(8)
    codes = torch.from_numpy(rng.integers(0, 16, (32, 64)).astype(np.uint8))
    packed = (codes[:, 1::2] << 4) | codes[:, 0::2]
    block = torch.from_numpy(rng.uniform(0.01, 448, (32, 4)).astype(np.float32))
    block = block.to(torch.float8_e4m3fn)
    if flavour == "modelopt":
        tensors = {"l.weight": packed, "l.weight_scale": block,
                   "l.weight_scale_2": torch.tensor(3.1e-4), "l.input_scale": torch.tensor(1.)}
    else:
        tensors = {"l.weight_packed": packed, "l.weight_scale": block,
                   "l.weight_global_scale": torch.tensor([1234.5])}
    root = save(tmp_path / "m", tensors)
    name = "l.weight" if flavour == "modelopt" else "l.weight_packed"
    _, want = decoded(root, name)
    code = ("import scalefix.auto, mlx.core as mx, numpy as np, sys\n"
            f"a = mx.load({str(root / 'model.safetensors')!r})\n"
            "print(sorted(a)); w = a['l.weight']\n"
            "print(w.dtype); np.save(sys.argv[1], np.array(w.view(mx.uint16)))\n")
    out = tmp_path / "w.npy"
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["['l.weight']", "mlx.core.bfloat16"]
    got = np.load(out)
    assert np.array_equal(got, want.view(torch.int16).numpy().view(np.uint16))


# ---------------------------------------------------------------- real writers

# the checks every integer / NVFP4 family runs, on this family's kinds (int_checks.family_tests)
globals().update(family_tests("nvfp4", "real", "cross_shard"))
