"""compressed-tensors integer layouts decoded bit for bit against torch oracles:
pack-quantized (dense and per-word, zero points, stacked experts, ``weight_g_idx``) and
int-quantized per channel.

The layouts are built by the packers of tests/support/packing.py (a bit array per row, numpy
``packbits``), independent of scalefix's unpacker; the real writers' own output is checked in
test_ct_int.py. Oracle: ``((q - z) * s)`` in float32 with torch, rounded to BF16 once.
"""

import numpy as np
import pytest
import torch

from tests.support.int_layouts import bf16_scale, decoded, oracle, save
from tests.support.packing import pack_bits


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
