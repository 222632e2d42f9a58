"""Integer-coded and NVFP4 weights decoded bit for bit against torch oracles.

The layouts are built by the packers of tests/support/packing.py (a bit array per row, numpy
``packbits``), independent of scalefix's unpacker; the real writers' own output is checked in
test_int_families.py. Oracle: ``((q - z) * s)`` in float32 with torch, rounded to BF16 once.
"""

import json

import numpy as np
import pytest
import torch

from scalefix.cli import main

from tests.support.int_layouts import bf16_scale, decoded, gptq_tensors, oracle, save
from tests.support.packing import awq_pack, pack_bits



@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("group,zp,dense", [(32, False, True), (128, False, True),
                                            (32, True, True), (0, True, True),
                                            (32, False, False), (32, True, False)])
def test_compressed_tensors_pack_quantized(tmp_path, bits, group, zp, dense):
    rng = np.random.default_rng(bits * 100 + group)
    out, cols = 48, 200                      # 200: a ragged last group of 8 (or 72)
    groups = 1 if group == 0 else -(-cols // group)
    codes = rng.integers(0, 1 << bits, (out, cols)).astype(np.uint8)
    scale = bf16_scale(rng, out, groups)
    tensors = {"l.weight_packed": torch.from_numpy(pack_bits(codes, bits, dense)),
               "l.weight_scale": scale, "l.weight_shape": torch.tensor([out, cols])}
    zero = 1 << (bits - 1)
    if zp:
        zero = rng.integers(0, 1 << bits, (out, groups)).astype(np.uint8)
        tensors["l.weight_zero_point"] = torch.from_numpy(
            pack_bits(zero.T.copy(), bits, dense).T.copy())   # packed along dim 0
    config = {"model_type": "llama", "quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
            "num_bits": bits, "type": "int", "symmetric": not zp,
            "strategy": "channel" if group == 0 else "group",
            "group_size": group or None}}}}}
    qw, got = decoded(save(tmp_path / "m", tensors, config), "l.weight_packed")
    col_group = np.minimum(np.arange(cols) // (group or cols), groups - 1)
    want = oracle(codes, zero, scale.float().numpy(), col_group)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    gran = "channel" if group == 0 else f"group{group}"
    assert qw.scheme == f"int{bits}-{gran}" + ("-zp" if zp else "")
    if bits in (3, 5, 6):
        assert qw.layout == ("ct-dense" if dense else "ct-per-word")


def test_pack_quantized_stacked_experts_unpacked_zero_and_g_idx(tmp_path):
    rng = np.random.default_rng(1)
    experts, out, cols, bits, group = 3, 16, 64, 4, 32
    codes = rng.integers(0, 16, (experts, out, cols)).astype(np.uint8)
    scale = bf16_scale(rng, experts, out, 2)
    zero_signed = rng.integers(-8, 8, (experts, out, 2)).astype(np.int8)
    g_idx = rng.permutation(np.arange(cols) // group).astype(np.int32)
    packed = np.stack([pack_bits(c, bits, True) for c in codes])
    root = save(tmp_path / "m", {
        "e.weight_packed": torch.from_numpy(packed), "e.weight_scale": scale,
        "e.weight_shape": torch.tensor([experts, out, cols]),
        "e.weight_zero_point": torch.from_numpy(zero_signed),
        "e.weight_g_idx": torch.from_numpy(g_idx)})
    qw, got = decoded(root, "e.weight_packed")
    assert qw.scheme == "int4-group32-zp-actorder" and qw.shape == (experts, out, cols)
    flat = oracle(codes.reshape(-1, cols), zero_signed.reshape(-1, 2).astype(np.int64) + 8,
                  scale.float().numpy().reshape(-1, 2), g_idx)
    assert torch.equal(got.reshape(-1, cols).view(torch.int16), flat.view(torch.int16))


@pytest.mark.parametrize("zp", [False, True])
def test_int8_channel(tmp_path, zp):
    rng = np.random.default_rng(2)
    q = rng.integers(-128, 128, (32, 96)).astype(np.int8)
    scale = torch.from_numpy(rng.uniform(1e-3, 1e-2, (32, 1)).astype(np.float32))
    tensors = {"l.weight": torch.from_numpy(q), "l.weight_scale": scale}
    zero = np.zeros((32, 1), np.int64)
    if zp:
        zero = rng.integers(-20, 20, (32, 1))
        tensors["l.weight_zero_point"] = torch.from_numpy(zero.astype(np.int8))
    qw, got = decoded(save(tmp_path / "m", tensors), "l.weight")
    want = oracle(q, zero, scale.numpy(), np.zeros(96, np.intp))
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert qw.scheme == "int8-channel" + ("-zp" if zp else "")


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_v1(tmp_path, act_order):
    rng = np.random.default_rng(3)
    tensors, want = gptq_tensors(rng, 64, 256, 64, act_order)
    config = {"model_type": "llama", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": act_order,
        "sym": False, "checkpoint_format": "gptq"}}
    qw, got = decoded(save(tmp_path / "m", tensors, config), "l.qweight")
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert qw.scheme == "gptq-int4-group64" + ("-actorder" if act_order else "")
    assert qw.output_name == "l.weight"


def test_awq_gemm(tmp_path):
    rng = np.random.default_rng(4)
    out, cols, group = 64, 256, 128
    codes = rng.integers(0, 16, (out, cols)).astype(np.uint8)
    zero = rng.integers(0, 16, (out, cols // group)).astype(np.uint8)
    scales = rng.uniform(1e-3, 2e-2, (cols // group, out)).astype(np.float16)

    tensors = {"l.qweight": torch.from_numpy(awq_pack(codes.T.copy())),
               "l.qzeros": torch.from_numpy(awq_pack(zero.T.copy())),
               "l.scales": torch.from_numpy(scales)}
    config = {"model_type": "llama", "quantization_config": {
        "quant_method": "awq", "bits": 4, "group_size": group, "version": "gemm",
        "zero_point": True}}
    qw, got = decoded(save(tmp_path / "m", tensors, config), "l.qweight")
    want = oracle(codes, zero, scales.T.astype(np.float32), np.arange(cols) // group)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    assert qw.scheme == "awq-int4-group128"


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


@pytest.mark.parametrize("kind", ["gptq", "pack"])
def test_rewrite_and_verify_drop_every_side_tensor(tmp_path, kind, capsys):
    rng = np.random.default_rng(6)
    if kind == "gptq":
        tensors, want = gptq_tensors(rng, 64, 256, 64, True)
        config = {"model_type": "llama", "quantization_config": {
            "quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": True}}
    else:
        codes = rng.integers(0, 16, (64, 96)).astype(np.uint8)
        scale = bf16_scale(rng, 64, 3)
        tensors = {"l.weight_packed": torch.from_numpy(pack_bits(codes, 4, True)),
                   "l.weight_scale": scale, "l.weight_shape": torch.tensor([64, 96])}
        want = oracle(codes, 8, scale.float().numpy(), np.arange(96) // 32)
        config = {"model_type": "llama", "quantization_config": {
            "quant_method": "compressed-tensors", "format": "pack-quantized"}}
    tensors["l.bias"] = torch.zeros(64, dtype=torch.bfloat16)
    root = save(tmp_path / "m", tensors, config)
    code, _ = main(["inspect", str(root), "--check"]), capsys.readouterr()
    assert code == 1  # a quantized checkpoint is not "clean"
    assert main(["rewrite", str(root), "--out", str(tmp_path / "o")]) == 0
    assert main(["verify", str(root), str(tmp_path / "o")]) == 0
    from safetensors import safe_open
    with safe_open(str(tmp_path / "o" / "model.safetensors"), "pt") as fh:
        assert set(fh.keys()) == {"l.weight", "l.bias"}
        assert torch.equal(fh.get_tensor("l.weight").view(torch.int16), want.view(torch.int16))
    assert "quantization_config" not in json.loads((tmp_path / "o" / "config.json").read_text())


def test_load_hook_says_once_that_integer_weights_are_left_as_stored(tmp_path):
    """No silent fallback: mx.load under scalefix.auto returns an act-order GPTQ file (no
    native MLX form) as stored (what plain MLX returns) and says so once on stderr;
    SCALEFIX_STRICT=1 raises."""
    import subprocess
    import sys
    pytest.importorskip("mlx.core")
    tensors, _ = gptq_tensors(np.random.default_rng(7), 64, 256, 64, True)
    root = save(tmp_path / "m", tensors, {"model_type": "llama", "quantization_config": {
        "quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": True}})
    code = ("import scalefix.auto, mlx.core as mx, scalefix, sys\n"
            f"p = {str(root / 'model.safetensors')!r}\n"
            "a = mx.load(p); b = mx.load(p)\n"
            "print(sorted(a), scalefix.status()[0]['files']['unfixed'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("] ")[1].strip() == "1"
    assert "'l.qweight'" in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if "gptq-int4-group64-actorder" in ln]
    assert len(lines) == 1 and "not decoded at load time" in lines[0]
    strict = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**__import__("os").environ, "SCALEFIX_STRICT": "1"})
    assert strict.returncode != 0 and "UnfixedCheckpointError" in strict.stderr


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
