"""Every format variant of docs/formats.md (§5-§7): inspect classifies it, dequantize is
bit-exact."""

import numpy as np
import pytest
import torch

from scalefix.formats import classify, open_bundle
from scalefix.formats.dequant import dequantize

from tests.support.fixtures import VARIANTS


@pytest.fixture(params=sorted(VARIANTS))
def variant(request, tmp_path):
    return request.param, VARIANTS[request.param](tmp_path / request.param)


def test_inspect_classifies(variant, inspect_json):
    name, fx = variant
    code, report = inspect_json(fx.path)
    assert code == 0
    pairs = {q["weight"]: q for q in report["quantized"]}
    assert set(pairs) == set(fx.quantized), name
    for weight, want in fx.quantized.items():
        got = pairs[weight]
        assert (got["scheme"], got["naming"], got["block"], got["scale"], got["scale_dtype"]) == \
            (want.scheme, want.naming, want.block, want.scale, want.scale_dtype), weight
        assert got["shape"] == list(want.oracle.shape)
        assert got["output_name"] == (want.output_name or weight)
    assert report["activation_scales"] == sorted(fx.activation_scales)
    assert report["markers"] == sorted(fx.markers)
    assert [o["scale"] for o in report["orphan_scales"]] == sorted(fx.orphans)
    assert report["fp8_without_scale"] == []
    assert sorted(p["weight"] for p in report["cross_shard_pairs"]) == sorted(fx.cross_shard)
    roles = classify(open_bundle(fx.path)).roles
    assert all(roles[p] == "plain" for p in fx.plain)
    assert report["verdict"]["status"] == "quantized"
    assert report["verdict"]["fix"].startswith("scalefix rewrite ")
    assert sum(g["count"] for g in report["groups"]) == len(fx.quantized)


def test_dequantize_bit_exact(variant):
    _, fx = variant
    result = classify(open_bundle(fx.path))
    for weight, want in fx.quantized.items():
        got = dequantize(result.quantized[weight], "bf16")
        oracle = want.oracle.view(torch.int16).numpy().view(np.uint16)
        assert got.shape == oracle.shape
        assert np.array_equal(got, oracle), weight


@pytest.mark.parametrize("out, torch_dtype", [("f16", torch.float16), ("f32", torch.float32)])
def test_other_output_dtypes_match_torch(tmp_path, out, torch_dtype):
    fx = VARIANTS["dsv3"](tmp_path / "m")
    result = classify(open_bundle(fx.path))
    from safetensors.torch import load_file
    tensors = {}
    for f in sorted(fx.path.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    for weight, want in fx.quantized.items():
        q, s = tensors[weight], tensors[want.scale]
        from tests.support.fixtures import expand
        ref = (q.to(torch.float32) * expand(s, q.shape, want.block)).to(torch_dtype)
        got = dequantize(result.quantized[weight], out)
        assert np.array_equal(got, ref.numpy()), weight


@pytest.mark.parametrize("chunk_rows", [1, 7, 128, 1000])
def test_streamed_row_chunks_equal_reference_path(variant, chunk_rows):
    """Row chunks that cut blocks anywhere, through the lookup path, equal the plain path."""
    from scalefix.formats.dequant import (decode_rows, dequantize_reference, load_scale,
                                          row_bytes)
    from scalefix.formats.tensor_data import read_raw
    _, fx = variant
    result = classify(open_bundle(fx.path))
    for weight in fx.quantized:
        qw = result.quantized[weight]
        scale, per_row = load_scale(qw), row_bytes(qw)
        parts = []
        for start in range(0, qw.geometry.rows, chunk_rows):
            n = min(chunk_rows, qw.geometry.rows - start)
            raw = read_raw(qw.weight, start * per_row, n * per_row)
            parts.append(decode_rows(qw, raw, scale, start, "bf16"))
        streamed = np.concatenate(parts).reshape(qw.shape)
        assert np.array_equal(streamed, dequantize_reference(qw, "bf16")), weight
