"""Checks on what MLX loaded: bits of arrays against torch oracles, and a ``rewrite --to mlx``
bundle's quantized modules against the exact BF16 rewrite (dequantized in float32, BF16
once) and its logits against a dense model of those float32 dequantizations. Import after
``pytest.importorskip("mlx_lm.utils")``."""

from pathlib import Path

import mlx.core as mx
import mlx_lm.utils as mlx_lm_utils
import numpy as np
import torch
from mlx.utils import tree_flatten

IDS = [[1, 5, 9, 13, 2, 7]]  # inside every tiny vocabulary


def quantized_modules(model):
    return {name: m for name, m in model.named_modules() if hasattr(m, "scales")}


def f32_dequantized(m):
    biases = getattr(m, "biases", None)
    if m.mode == "affine":
        return mx.dequantize(m.weight, m.scales.astype(mx.float32), biases.astype(mx.float32),
                             group_size=m.group_size, bits=m.bits, mode="affine")
    return mx.dequantize(m.weight, m.scales, group_size=m.group_size, bits=m.bits,
                         mode=m.mode, dtype=mx.float32)


def check_native_bundle(native_dir: Path, bf16_dir: Path, expect: dict):
    """expect: {(layer type, mode, bits, group, scale dtype): count}."""
    model, config = mlx_lm_utils.load_model(native_dir)
    dense, _ = mlx_lm_utils.load_model(bf16_dir)
    exact = dict(tree_flatten(dense.parameters()))
    found: dict = {}
    for name, m in quantized_modules(model).items():
        key = (type(m).__name__, m.mode, m.bits, m.group_size, str(m.scales.dtype).split(".")[-1])
        found[key] = found.get(key, 0) + 1
        got = f32_dequantized(m).astype(mx.bfloat16)
        assert mx.array_equal(got.view(mx.uint16), exact[name + ".weight"].view(mx.uint16)), name
        entry = config["quantization"].get(name)
        assert entry and (entry["mode"], entry["bits"], entry["group_size"]) == (
            m.mode, m.bits, m.group_size), name
    assert found == expect
    # logits: the quantized model vs a dense one holding its float32 dequantizations
    model.set_dtype(mx.float32)
    dense.set_dtype(mx.float32)
    dense_weights = dict(tree_flatten(dense.parameters()))
    replace = [(name + ".weight", f32_dequantized(m)) for name, m in
               quantized_modules(model).items()]
    # MX modes dequantize to exact BF16 values already; affine ones to unrounded float32
    replace = [(k, w) for k, w in replace if not mx.array_equal(w, dense_weights[k])]
    dense.load_weights(replace, strict=False)
    got, want = np.array(model(mx.array(IDS))), np.array(dense(mx.array(IDS)))
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    return model, config


def bits(array):
    return np.array(array.view(mx.uint16) if array.dtype == mx.bfloat16 else array)


def oracle_bits(tensor):
    return tensor.view(torch.int16).numpy().view(np.uint16)
