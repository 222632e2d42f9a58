"""DeepSeek-V3 through real mlx-lm: its sanitize already dequantizes ``weight_scale_inv``
(scalefix must not change a bit of that), and silently loads raw FP8 bytes when the scales
are named ``weight_scale`` (scalefix must fix it). One scale sits in the other shard."""

import numpy as np
import pytest

from scalefix.cli import main

from tests.support.dsv3_fp8 import fp8_dsv3
from tests.support.mlx_logits import logits as mlx_logits, same_bits

pytestmark = pytest.mark.peers
pytest.importorskip("mlx_lm")

def logits(path, out, prelude=""):
    proc, values = mlx_logits(path, out, prelude)
    assert proc.returncode == 0, proc.stderr
    return values


def same(a, b):
    return same_bits(a, b)


@pytest.fixture(scope="module")
def checkpoints(real_writer, tmp_path_factory):
    base = real_writer("tiny-dsv3-bf16")
    tmp = tmp_path_factory.mktemp("dsv3")
    return (fp8_dsv3(base, tmp / "inv", "weight_scale_inv"),
            fp8_dsv3(base, tmp / "plain", "weight_scale"), tmp)


def test_mlx_lm_own_path_is_unchanged(checkpoints, tmp_path):
    inv, _, _ = checkpoints
    without = logits(inv, tmp_path / "a.npy")
    with_scalefix = logits(inv, tmp_path / "b.npy", "import scalefix.auto")
    assert np.isfinite(without).all() and same(without, with_scalefix)


def test_weight_scale_naming_garbage_without_and_fixed_with(checkpoints, tmp_path):
    inv, plain, tmp = checkpoints
    reference = logits(inv, tmp_path / "ref.npy")  # mlx-lm's own dequantization
    garbage = logits(plain, tmp_path / "raw.npy")  # loads silently, raw FP8 bytes
    assert not np.allclose(garbage, reference, atol=1.0)
    fixed = logits(plain, tmp_path / "fixed.npy", "import scalefix.auto")
    assert same(fixed, reference)
    offline = tmp_path / "offline"
    assert main(["rewrite", str(plain), "--out", str(offline), "--quiet"]) == 0
    assert same(logits(offline, tmp_path / "off.npy"), reference)
