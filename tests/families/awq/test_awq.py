"""AWQ GEMM (scalefix/formats/schemes/awq.py): decode against a torch oracle, the formula
builder (tests/support/int_families.py) against mlx-lm's AutoAWQ transform and
compressed-tensors' AutoAWQ converter, auto-round's real AWQ checkpoint (peer tier)."""

import numpy as np
import pytest
import torch

from tests.support import int_families as fam
from tests.support.int_checks import bits_of, family_tests
from tests.support.int_families import load_bundle
from tests.support.int_layouts import decoded, oracle, save
from tests.support.packing import awq_pack


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


def test_awq_builder_matches_mlx_lm_transform(tmp_path):
    """mlx-lm 0.32.2's own AutoAWQ repack (``_transform_awq_weights``), given float32 scales
    (its F16 biases would round -z*s), then ``mx.dequantize`` in float32: (q - z) * s is
    exact there, so one BF16 rounding gives the oracle."""
    mx = pytest.importorskip("mlx.core")
    utils = pytest.importorskip("mlx_lm.utils")
    b = fam.awq(tmp_path / "awq")
    t = load_bundle(b.path)
    weights = {k: mx.array(v.to(torch.float32).numpy() if v.is_floating_point() else v.numpy())
               for k, v in t.items()}
    out, quant = utils._transform_awq_weights(weights, b.config["quantization_config"])
    assert quant == {"group_size": 64, "bits": 4}
    for name, want in b.oracle.items():
        if not name.endswith(".weight") or name[: -len(".weight")] + ".qweight" not in t:
            continue
        p = name[: -len(".weight")]
        w = mx.dequantize(out[p + ".weight"], out[p + ".scales"], out[p + ".biases"],
                          group_size=64, bits=4)
        got = torch.from_numpy(__import__("numpy").array(w.astype(mx.float32)))
        assert torch.equal(bits_of(got.to(torch.bfloat16)), bits_of(want)), name


# ---------------------------------------------------------------- formula builder, real writers

# the checks every integer / NVFP4 family runs, on this family's kinds (int_checks.family_tests)
globals().update(family_tests("awq", "formula", "cross", "real"))
