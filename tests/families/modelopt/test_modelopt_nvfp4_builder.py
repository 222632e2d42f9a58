"""The formula-built ModelOpt NVFP4 checkpoint (tests/support/int_families.py): inspect,
exact rewrite, read the same by MLX's nvfp4 mode, and by compressed-tensors'
ModelOptNvfp4Converter (peer tier). The real ModelOpt writer: test_modelopt.py."""

import pytest
import torch

from tests.support import int_families as fam
from tests.support.int_checks import bits_of, cross, family_tests
from tests.support.int_families import load_bundle

# the checks every integer / NVFP4 family runs, on this family's kinds (int_checks.family_tests)
globals().update(family_tests("modelopt", "formula"))


def test_modelopt_builder_matches_mlx_nvfp4(tmp_path):
    """MLX 0.32's nvfp4 mode reads ModelOpt's bytes as they are (codes as uint32 words, the
    E4M3 scale bytes) with global_scale G = weight_scale_2 * 448 * 6 (MLX divides G by 2688)."""
    mx = pytest.importorskip("mlx.core")
    import numpy as np
    b = fam.modelopt_nvfp4(tmp_path / "mo")
    t = load_bundle(b.path)
    for p in [k[: -len(".weight_scale_2")] for k in t if k.endswith(".weight_scale_2")]:
        packed = t[p + ".weight"].contiguous()
        words = mx.array(packed.view(torch.int32).numpy().view(np.uint32))
        scales = mx.array(t[p + ".weight_scale"].view(torch.uint8).numpy())
        g = mx.array((t[p + ".weight_scale_2"] * 2688.0).reshape(1).numpy())
        w = mx.dequantize(words, scales, mode="nvfp4", group_size=16, bits=4, global_scale=g,
                          dtype=mx.float32)
        got = torch.from_numpy(np.array(w)).to(torch.bfloat16)
        assert torch.equal(bits_of(got), bits_of(b.oracle[p + ".weight"])), p


@pytest.mark.peers
def test_modelopt_builder_matches_compressed_tensors_converter(cross_decoded):
    """compressed-tensors 0.19's ModelOptNvfp4Converter reads the formula-built ModelOpt
    tensors the same way (nibble order, scale layout, weight_scale_2 inverted), but it is no
    exact oracle for ModelOpt: weight_scale_2 is a 0-d tensor, so its 1/x global scale is
    one too, and PyTorch's promotion then forms the effective scale weight_scale / global in
    BF16 (a [1]-shaped global scale, as compressed-tensors writes its own, gives float32).
    Here: its output equals that BF16 arithmetic bit for bit, and differs from ModelOpt's own
    float32 formula on some elements (counted, not tolerated)."""
    b, got = cross(cross_decoded, "modelopt-nvfp4")
    t = load_bundle(b.path)
    differ = 0
    for p in [k[: -len(".weight_scale_2")] for k in t if k.endswith(".weight_scale_2")]:
        ws2 = t[p + ".weight_scale_2"]
        assert ws2.dim() == 0
        effective = t[p + ".weight_scale"].to(torch.bfloat16) / (1 / ws2)
        assert effective.dtype == torch.bfloat16  # 0-d float32 does not promote
        codes = fam.nvfp4_codes(t[p + ".weight"]).to(torch.bfloat16)
        want = codes * effective.repeat_interleave(16, dim=-1)
        assert torch.equal(bits_of(got[p + ".weight"]), bits_of(want)), p
        differ += int((got[p + ".weight"].view(torch.int16)
                       != b.oracle[p + ".weight"].view(torch.int16)).sum())
    assert differ > 0
