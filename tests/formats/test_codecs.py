"""Every code of every codec against independent oracles: torch's float8 dtypes, MLX's
``mx.from_fp8`` and ``mx.dequantize`` (when MLX is installed), and the FP4 table of docs/formats.md §2."""

import numpy as np
import pytest
import torch

from scalefix.errors import ScalefixError
from scalefix.formats.codecs import (decode, decode_scale, encode_e4m3, f32_to_bf16, table,
                                     unpack_fp4)

ALL_CODES = np.arange(256, dtype=np.uint8)


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equal, except that any NaN equals any NaN."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    nan = np.isnan(a)
    return bool((nan == np.isnan(b)).all() and (a.view(np.uint32)[~nan] ==
                                                 b.view(np.uint32)[~nan]).all())


@pytest.mark.parametrize("codec, dtype", [("e4m3", torch.float8_e4m3fn),
                                          ("e5m2", torch.float8_e5m2)])
def test_fp8_all_codes_match_torch(codec, dtype):
    oracle = torch.from_numpy(ALL_CODES.copy()).view(dtype).to(torch.float32).numpy()
    assert same_floats(decode(ALL_CODES, codec), oracle)


def test_e4m3_key_values():
    t = table("e4m3")
    assert t[0x7E] == 448 and np.isnan(t[0x7F]) and np.isnan(t[0xFF]) and t[0x01] == 2.0 ** -9


def test_e5m2_key_values():
    t = table("e5m2")
    assert t[0x7B] == 57344 and np.isinf(t[0x7C]) and np.isnan(t[0x7D])


def test_e8m0_all_codes_match_torch():
    oracle = torch.from_numpy(ALL_CODES.copy()).view(torch.float8_e8m0fnu).to(torch.float32)
    assert same_floats(table("e8m0"), oracle.numpy())
    assert same_floats(decode_scale(ALL_CODES[:255], "e8m0"), oracle.numpy()[:255])


def test_e8m0_255_rejected_with_names():
    with pytest.raises(ScalefixError, match=r"m\.safetensors: tensor 'x.scale': .*255"):
        decode_scale(np.array([127, 255], np.uint8), "e8m0", file="m.safetensors",
                     tensor="x.scale")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("codec", ["f32", "f16", "bf16"])
def test_non_finite_scales_rejected(codec, bad):
    values = np.array([1.0, bad], np.float32)
    raw = {"f32": values, "f16": values.astype(np.float16),
           "bf16": f32_to_bf16(values)}[codec].view(np.uint8)
    with pytest.raises(ScalefixError, match="NaN or infinity"):
        decode_scale(raw, codec, file="f", tensor="t")


def test_fp4_table_is_formats_md():
    assert table("e2m1").tolist() == [0, .5, 1, 1.5, 2, 3, 4, 6, -0.0, -.5, -1, -1.5, -2, -3,
                                      -4, -6]
    assert np.signbit(table("e2m1")[8])


def test_fp4_nibble_order():
    byte = np.array([[0x72]], np.uint8)  # low nibble 2 (1.0), high nibble 7 (6.0)
    assert unpack_fp4(byte).tolist() == [[1.0, 6.0]]
    assert unpack_fp4(byte, "high-first").tolist() == [[6.0, 1.0]]


def test_bf16_rne_matches_torch_on_edge_and_random_bits():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0x7F7F8000, 0x00008000,
                      0x00018000, 0x80008000, 0x7F800000, 0xFF800000, 0, 0x80000000,
                      0x007FFFFF, 0x00000001], np.uint32)
    values = np.concatenate([bits, edges]).view(np.float32)
    values = values[~np.isnan(values)]
    ours = f32_to_bf16(values)
    ref = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy()
    assert np.array_equal(ours, ref.view(np.uint16))


def test_bf16_keeps_nan():
    out = f32_to_bf16(np.array([np.nan, -np.nan], np.float32))
    assert all((o & 0x7F80) == 0x7F80 and (o & 0x7F) for o in out)


def test_encode_e4m3_matches_torch_in_range():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 100, 200_000), rng.uniform(-448, 448, 100_000),
                             table("e4m3")[:0x7F], -table("e4m3")[:0x7F],
                             (table("e4m3")[:0x7E] + table("e4m3")[1:0x7F]) / 2,  # exact ties
                             ]).astype(np.float32)
    values = np.clip(values, -448, 448)
    ref = torch.from_numpy(values).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(encode_e4m3(values), ref)




def _mlx():
    try:
        import mlx.core as mx
    except ImportError:  # pragma: no cover - the test extra installs MLX on Linux and macOS
        pytest.skip("MLX not installed")
    return mx


def test_e4m3_matches_mlx_from_fp8():
    mx = _mlx()
    ours = decode(ALL_CODES, "e4m3")
    theirs = np.array(mx.from_fp8(mx.array(ALL_CODES), dtype=mx.float32))
    finite = ~np.isnan(ours)
    assert same_floats(ours[finite], theirs[finite])


def test_fp4_and_e8m0_match_mlx_mxfp4_dequantize():
    """MLX's own mxfp4 dequantize: low nibble first, scale 2^(e-127), group 32."""
    mx = _mlx()
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 16, (4, 64), dtype=np.uint8)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)
    exps = rng.integers(100, 150, (4, 2), dtype=np.uint8)
    ours = unpack_fp4(packed) * np.repeat(decode(exps, "e8m0"), 32, axis=1)
    w = mx.array(packed.view(np.uint32))
    theirs = mx.dequantize(w, mx.array(exps), None, group_size=32, bits=4, mode="mxfp4",
                           dtype=mx.float32)
    assert same_floats(ours, np.array(theirs))
