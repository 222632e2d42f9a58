"""Native MLX forms (``scalefix.mlx.native_forms``) against the exact decode, bit for bit.

The proof for each form: ``mx.dequantize`` of it, computed in float32 and rounded to BF16
once, equals the source's exact decode (its float32 product, BF16 once) on every element.
The exact decode is written here from the formulas (codecs' tables, numpy float32), never
from the module under test. Where a form says it is not exact, MLX must really differ.
Also: why a dense nvfp4 layer with a global scale stays BF16 (plain mlx-lm 0.32.2 refuses or
silently drops it; its switch layers take it: tests/families/nvfp4/test_nvfp4_experts_to_mlx.py).
"""

import json

import numpy as np
import pytest

from scalefix.formats.codecs import encode_e4m3, f32_to_bf16, table

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")
from scalefix.mlx.native_forms import (NativeForm, NoNativeForm, affine_form,  # noqa: E402
                                       mlx_nvfp4_block_scales, mxfp4_form, mxfp8_form,
                                       nvfp4_form, pack_bits)

E2M1, E4M3 = table("e2m1"), table("e4m3")
U = 2.0 ** -24                                   # float32 unit roundoff


def rng(seed):
    return np.random.default_rng(seed)


def bf16_values(a):
    """float32 -> the float32 value of its BF16 rounding."""
    return (f32_to_bf16(np.asarray(a, np.float32)).astype(np.uint32) << 16).view(np.float32)


def mx_param(form: NativeForm, which):
    """A stored scale / bias as MLX float32 (BF16 widened exactly), or the raw bytes."""
    a = getattr(form, which)
    if form.scale_dtype == "BF16":
        return mx.array(a).view(mx.bfloat16).astype(mx.float32)
    return mx.array(a)


def mlx_bf16(form: NativeForm, global_scale=None, weight=None, scales=None):
    """``mx.dequantize`` of the form in float32, rounded to BF16 once: uint16 bits."""
    out = mx.dequantize(mx.array(form.weight if weight is None else weight),
                        mx_param(form, "scales") if scales is None else mx.array(scales),
                        None if form.biases is None else mx_param(form, "biases"),
                        form.group_size, form.bits, mode=form.mode,
                        global_scale=None if global_scale is None else mx.array(global_scale),
                        dtype=mx.float32)
    return np.array(out.astype(mx.bfloat16).view(mx.uint16))


def exact_affine(q, s, z, group):
    """(q - z) * s in float32 per element, BF16 once: uint16 bits."""
    s_el = np.repeat(s, group, axis=-1)[..., :q.shape[-1]]
    z_el = z if np.isscalar(z) else np.repeat(z, group, axis=-1)[..., :q.shape[-1]]
    diff = (q.astype(np.int64) - z_el).astype(np.float32)        # exact: |q - z| < 2^24
    return f32_to_bf16((diff * s_el.astype(np.float32)).astype(np.float32))


# ------------------------------------------------------------------------------ bit packing

@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 8])
def test_pack_bits_is_mlx_layout(bits):
    """Unit scale, zero bias: MLX unpacks exactly the codes packed (3/5/6 cross words)."""
    q = rng(bits).integers(0, 1 << bits, (3, 2, 96), dtype=np.uint8)
    w = pack_bits(q, bits)
    assert w.dtype == np.uint32 and w.shape == (3, 2, 96 * bits // 32)
    ones = mx.ones((3, 2, 3), dtype=mx.float32)
    back = mx.dequantize(mx.array(w), ones, mx.zeros_like(ones), 32, bits, dtype=mx.float32)
    assert np.array_equal(np.array(back), q.astype(np.float32))
    # and it is the bitstream mx.quantize itself writes: give every group both end codes so
    # its quantization is lossless, then pack the codes its scale and bias imply
    q = q.reshape(-1, 96).copy()
    q[:, 0::32], q[:, 1::32] = 0, (1 << bits) - 1
    ref_w, s, b = mx.quantize(mx.array(q.astype(np.float32)), 32, bits)
    implied = (q - np.repeat(np.array(b), 32, -1)) / np.repeat(np.array(s), 32, -1)
    assert np.array_equal(implied, np.round(implied))
    assert np.array_equal(np.array(ref_w), pack_bits(implied.astype(np.uint8), bits))


# ------------------------------------------------------------------------------ affine

@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "zero-point"])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_affine_is_exact(bits, group, symmetric):
    r = rng(bits * 1000 + group + symmetric)
    out, cols = 7, 384                              # odd row count, several groups
    q = r.integers(0, 1 << bits, (out, cols), dtype=np.uint8)
    s = bf16_values(r.uniform(1e-4, 0.05, (out, cols // group)))   # BF16 scales (CT, llmc)
    z = None if symmetric else r.integers(0, 1 << bits, (out, cols // group)).astype(np.int32)
    form = affine_form(q, s, z, bits, group)
    assert form and form.exact and form.mode == "affine" and form.bits == bits
    assert form.group_size == group and form.weight.shape == (out, cols * bits // 32)
    assert form.config_entry() == {"group_size": group, "bits": bits, "mode": "affine"}
    assert np.array_equal(mlx_bf16(form),
                          exact_affine(q, s, 1 << (bits - 1) if symmetric else z, group))
    if symmetric:                                   # -2^(b-1) s is exact in BF16
        assert form.scale_dtype == "BF16" and form.scales.dtype == np.uint16
    else:                                           # -z s is not: float32, and it had to be
        assert form.scale_dtype == "F32" and form.biases.dtype == np.float32
        assert not np.array_equal(bf16_values(form.biases), form.biases)


@pytest.mark.parametrize("cols,group,target", [
    (384, 384, 128),     # channel-wise
    (96, 96, 32),        # channel-wise, narrow
    (160, 160, 32),      # channel-wise, 160 = 5 * 32
    (512, 256, 128),     # group wider than MLX allows
    (192, 96, 32),       # a multiple of 32 only
])
def test_wide_groups_repeat_their_scale(cols, group, target):
    r = rng(cols + group)
    q = r.integers(0, 16, (5, cols), dtype=np.uint8)
    s = bf16_values(r.uniform(1e-3, 0.1, (5, cols // group)))
    z = r.integers(0, 16, (5, cols // group))
    for zero in (None, z):
        form = affine_form(q, s, zero, 4, group)
        assert form.exact and form.group_size == target and form.details["replicated"]
        assert form.scales.shape == (5, cols // target)
        assert np.array_equal(mlx_bf16(form), exact_affine(q, s, 8 if zero is None else z,
                                                            group))


def test_stacked_experts_and_broadcast_scale_row():
    r = rng(7)
    q = r.integers(0, 8, (3, 5, 64), dtype=np.uint8)          # [E, out, in], 3 bits
    s = bf16_values(r.uniform(1e-3, 0.1, (3, 5, 2)))
    z = r.integers(0, 8, (3, 5, 2)).astype(np.uint8)
    form = affine_form(q, s, z, 3, 32)
    assert form.exact and form.weight.shape == (3, 5, 6) and form.scales.shape == (3, 5, 2)
    assert np.array_equal(mlx_bf16(form), exact_affine(q, s, z, 32))
    # one scale row for every output row (tensor strategy): broadcast
    s1 = bf16_values(r.uniform(1e-3, 0.1, (1, 1)))
    form = affine_form(q[0], s1, None, 3, 64)
    assert form.exact and np.array_equal(
        mlx_bf16(form), exact_affine(q[0], np.broadcast_to(s1, (5, 1)), 4, 64))


@pytest.mark.parametrize("cols,group,bits,why", [
    (100, 100, 4, "input width 100 is not a multiple of 32"),     # channel-wise, odd width
    (200, 128, 4, "input width 200"),                               # ragged last group
    (64, 16, 4, "group size 16 is not a multiple of 32"),
    (96, 48, 4, "group size 48 is not a multiple of 32"),
    (64, 32, 7, "no 7-bit mode"),
])
def test_no_native_affine_form(cols, group, bits, why):
    q = np.zeros((4, cols), np.uint8)
    s = np.ones((4, -(-cols // group)), np.float32)
    form = affine_form(q, s, None, bits, group)
    assert isinstance(form, NoNativeForm) and not form and why in form.reason


def test_float16_scales_become_float32_and_stay_exact():
    """GPTQ / AWQ: F16 scales (11 significant bits) are not BF16 values; q*s stays exact in
    float32 (11 + 8 <= 24 bits), so float32 scales and biases are exact, zero point or not."""
    r = rng(11)
    q = r.integers(0, 256, (6, 128), dtype=np.uint8)
    s = r.uniform(1e-3, 0.1, (6, 1)).astype(np.float16).astype(np.float32)
    z = r.integers(0, 256, (6, 1))
    for zero in (None, z):
        form = affine_form(q, s, zero, 8, 128)
        assert form.exact and form.scale_dtype == "F32"
        assert np.array_equal(mlx_bf16(form), exact_affine(q, s, 128 if zero is None else z,
                                                           128))


def test_full_precision_float32_scales_are_checked_element_by_element():
    """Arbitrary float32 scales: q*s and -z*s round in float32, so MLX's q*s + b can differ
    from (q - z)*s after BF16 rounding. The form must then say it is not exact, and MLX
    must really differ somewhere (the check is not a guess)."""
    r = rng(12)
    q = r.integers(0, 256, (256, 1024), dtype=np.uint8)
    s = r.uniform(1e-3, 0.1, (256, 32)).astype(np.float32)
    z = r.integers(0, 256, (256, 32))
    form = affine_form(q, s, z, 8, 32)
    assert not form.exact and "not exact" in form.note
    assert not np.array_equal(mlx_bf16(form), exact_affine(q, s, z, 32))
    # symmetric: -128 s is exact but q*s rounds before the add; 12 of 262144 elements differ
    sym = affine_form(q, s, None, 8, 32)
    assert not sym.exact and not np.array_equal(mlx_bf16(sym), exact_affine(q, s, 128, 32))
    # small enough that no element happens to differ: the element check then says exact
    q2, s2 = q[:2, :64], s[:2, :2]
    small = affine_form(q2, s2, None, 8, 32)
    assert small.exact == np.array_equal(mlx_bf16(small), exact_affine(q2, s2, 128, 32))


def test_bf16_biases_trade_exactness_and_report_sqnr():
    r = rng(13)
    q = r.integers(0, 16, (16, 256), dtype=np.uint8)
    s = r.uniform(1e-3, 0.05, (16, 2)).astype(np.float16).astype(np.float32)   # AWQ-like
    z = r.integers(0, 16, (16, 2))
    form = affine_form(q, s, z, 4, 128, bf16_biases=True)
    assert form.scale_dtype == "BF16" and not form.exact and np.isfinite(form.sqnr_db)
    got = (mlx_bf16(form).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    want = (exact_affine(q, s, z, 128).astype(np.uint32) << 16).view(np.float32)
    want = want.astype(np.float64)
    sqnr = 10 * np.log10((want ** 2).sum() / ((got - want) ** 2).sum())
    # the same sums in another order: float64 rounding only (relative 1e-9 is 1e-8 dB)
    assert abs(sqnr - form.sqnr_db) < 1e-6
    # symmetric BF16 scales were exact anyway: the flag changes nothing
    sb = bf16_values(s)
    assert affine_form(q, sb, None, 4, 128, bf16_biases=True).exact


def test_bad_affine_input_is_refused():
    with pytest.raises(ValueError, match="beyond 4 bits"):
        affine_form(np.full((2, 32), 16, np.uint8), np.ones((2, 1), np.float32), None, 4, 32)
    with pytest.raises(ValueError, match="scale shape"):
        affine_form(np.zeros((2, 64), np.uint8), np.ones((2, 3), np.float32), None, 4, 32)
    with pytest.raises(ValueError, match="codes must be uint8"):
        affine_form(np.zeros((2, 64), np.int32), np.ones((2, 2), np.float32), None, 4, 32)


# ------------------------------------------------------------------------------ MXFP4

def test_mxfp4_every_code_and_exponent_bytes_copied():
    """All 16 codes under all 255 E8M0 exponents (float32 subnormals and inf included)."""
    e = np.arange(255, dtype=np.uint8)
    codes = np.tile(np.arange(16, dtype=np.uint8), (255, 2))          # [255, 32]
    packed = (codes[:, 1::2] << 4) | codes[:, 0::2]
    form = mxfp4_form(np.stack([packed, packed[::-1]]), np.stack([e[:, None], e[::-1, None]]))
    assert form.exact and form.mode == "mxfp4" and form.scale_dtype == "U8"
    assert form.config_entry() == {"group_size": 32, "bits": 4, "mode": "mxfp4"}
    scale = (2.0 ** (e.astype(np.float64) - 127)).astype(np.float32)
    with np.errstate(over="ignore"):                  # 6 * 2^127 is inf, in MLX too
        want = f32_to_bf16((E2M1[codes] * scale[:, None]).astype(np.float32))
    got = mlx_bf16(form)
    assert np.array_equal(got[0], want) and np.array_equal(got[1], want[::-1])
    assert isinstance(mxfp4_form(np.zeros((2, 24), np.uint8), np.zeros((2, 1), np.uint8)),
                      NoNativeForm)


# ------------------------------------------------------------------------------ MXFP8

@pytest.mark.parametrize("lead", [(), (2,)], ids=["2d", "experts"])
def test_fp8_power_of_two_blocks_become_mxfp8(lead):
    r = rng(21)
    out, cols = 200, 288                          # ragged row and column blocks
    codes = r.integers(0, 256, (*lead, out, cols)).astype(np.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0x38           # no NaN codes
    exps = r.integers(-127, 128, (*lead, 2, 3))
    exps.flat[0], exps.flat[1] = -127, 127         # both E8M0 ends
    scale = np.ldexp(np.float32(1), exps).astype(np.float32)
    form = mxfp8_form(codes, scale, (128, 128))
    assert form and form.exact and form.mode == "mxfp8" and form.group_size == 32
    assert form.weight.shape == (*lead, out, cols // 4)
    assert form.scales.shape == (*lead, out, cols // 32)
    s_el = np.repeat(np.repeat(scale, 128, axis=-2), 128, axis=-1)[..., :out, :cols]
    with np.errstate(over="ignore"):                  # 448 * 2^127 is inf, in MLX too
        want = f32_to_bf16((E4M3[codes] * s_el).astype(np.float32))
    assert np.array_equal(mlx_bf16(form), want)


def test_fp8_scales_without_a_native_form():
    codes = np.zeros((128, 128), np.uint8)
    assert not mxfp8_form(codes, np.array([[0.75]], np.float32))             # not 2^k
    assert not mxfp8_form(codes, np.array([[2.0 ** -130]], np.float32))      # below E8M0
    assert not mxfp8_form(codes, np.array([[-1.0]], np.float32))
    assert not mxfp8_form(np.zeros((4, 96), np.uint8), np.ones((1, 2), np.float32), (4, 48))
    assert not mxfp8_form(np.zeros((4, 100), np.uint8), np.ones((1, 1), np.float32), (4, 128))
    # per-tensor and per-channel power-of-two scales do fit
    assert mxfp8_form(np.zeros((4, 96), np.uint8), np.ones((1, 1), np.float32), (4, 96)).exact
    assert mxfp8_form(np.zeros((4, 96), np.uint8), np.ones((4, 1), np.float32), (1, 96)).exact


# ------------------------------------------------------------------------------ NVFP4

ALL_E4M3 = np.array([b for b in range(256) if b not in (0x7F, 0xFF)], np.uint8)


def nvfp4_table(global_scale_bytes=ALL_E4M3):
    """All 16 codes under every scale byte: packed [n, 8], scales [n, 1], codes [n, 16]."""
    codes = np.tile(np.arange(16, dtype=np.uint8), (len(global_scale_bytes), 1))
    return (codes[:, 1::2] << 4) | codes[:, 0::2], global_scale_bytes[:, None], codes


def exact_nvfp4(codes, scale_bytes, value, op, f32=False):
    block = E4M3[scale_bytes] * value if op == "multiply" else E4M3[scale_bytes] / value
    prod = (E2M1[codes] * np.repeat(block.astype(np.float32), 16, axis=-1)).astype(np.float32)
    return prod if f32 else f32_to_bf16(prod)


def test_mlx_block_scale_emulation_is_mx_dequantize():
    """The exactness check models MLX as e2m1 * fl32(e4m3 * fl32(G/2688)): hold it against
    mx.dequantize for every code and scale byte, over many G."""
    packed, sb, codes = nvfp4_table()
    w = mx.array(packed).view(mx.uint32)
    for g in rng(31).uniform(1e-3, 8.0, 40).astype(np.float32):
        got = np.array(mx.dequantize(w, mx.array(sb), None, 16, 4, mode="nvfp4",
                                     global_scale=mx.array(g), dtype=mx.float32))
        want = (E2M1[codes] * mlx_nvfp4_block_scales(sb, g)).astype(np.float32)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def modelopt_like(r, shape, std):
    """A realistic ModelOpt NVFP4 weight: ws2 = amax/2688, E4M3 block scales, E2M1 codes."""
    w = (r.standard_normal(shape) * std).astype(np.float32)
    ws2 = np.float32(np.abs(w).max() / np.float32(2688))
    blocks = w.reshape(*shape[:-1], -1, 16)
    sb = encode_e4m3(np.maximum(np.abs(blocks).max(-1) / (6 * ws2), 2.0 ** -9)
                     .astype(np.float32))
    x = blocks / (E4M3[sb] * ws2)[..., None]
    nearest = np.abs(np.abs(x)[..., None] - E2M1[:8]).argmin(-1).astype(np.uint8)
    codes = (nearest | ((x < 0) << 3).astype(np.uint8)).reshape(shape)
    return (codes[..., 1::2] << 4) | codes[..., 0::2], sb, ws2, codes


def test_nvfp4_modelopt_is_exact_with_global_scale():
    r = rng(32)
    packed, sb, ws2, codes = modelopt_like(r, (24, 96), 0.02)
    form = nvfp4_form(packed, sb, ws2, "multiply")
    assert form.exact and form.details["exact_f32"] and form.global_scale.shape == ()
    assert form.global_scale == np.float32(ws2 * np.float32(2688))
    assert form.config_entry() == {"group_size": 16, "bits": 4, "mode": "nvfp4",
                                   "global_scale": True}
    assert set(form.tensors("m")) == {"m.weight", "m.scales", "m.global_scale"}
    got = mlx_bf16(form, form.global_scale)
    assert np.array_equal(got, exact_nvfp4(codes, sb, ws2, "multiply"))
    # without G (what a loader that drops it runs) every value is off by 1/ws2
    assert not np.array_equal(mlx_bf16(form), got)


def test_nvfp4_stacked_experts_one_global_scale_each():
    r = rng(33)
    parts = [modelopt_like(r, (8, 32), std) for std in (0.1, 0.02, 0.005)]
    packed = np.stack([p[0] for p in parts])
    sb = np.stack([p[1] for p in parts])
    ws2 = np.array([p[2] for p in parts], np.float32)
    form = nvfp4_form(packed, sb, ws2, "multiply")
    assert form.exact and form.global_scale.shape == (3,)
    for e, (_, sbe, w2, codes) in enumerate(parts):         # MLX: a scalar G per call
        got = mlx_bf16(form, form.global_scale[e], form.weight[e], form.scales[e])
        assert np.array_equal(got, exact_nvfp4(codes, sbe, w2, "multiply"))


def test_nvfp4_global_round_trip_caveat():
    """fl(fl(ws2*2688)/2688) != ws2 for some float32 ws2 (not ModelOpt's own, which are
    amax/2688): the form must not claim float32 exactness then, and MLX must differ in
    float32. Over every code and scale byte, what the form claims for BF16 is what MLX does."""
    packed, sb, codes = nvfp4_table()
    seen = {"f32": 0, "not f32": 0}
    for ws2 in rng(34).uniform(1e-6, 1e-2, 60).astype(np.float32):
        trip = np.float32(np.float32(ws2 * np.float32(2688)) / np.float32(2688)) == ws2
        form = nvfp4_form(packed, sb, ws2, "multiply")
        f32 = np.array(mx.dequantize(mx.array(form.weight), mx.array(form.scales), None, 16,
                                     4, mode="nvfp4", global_scale=mx.array(form.global_scale),
                                     dtype=mx.float32))
        same_f32 = np.array_equal(f32.view(np.uint32),
                                  exact_nvfp4(codes, sb, ws2, "multiply", f32=True)
                                  .view(np.uint32))
        assert form.details["exact_f32"] == same_f32
        assert form.exact == np.array_equal(mlx_bf16(form, form.global_scale),
                                            exact_nvfp4(codes, sb, ws2, "multiply"))
        if not trip:
            assert not form.details["exact_f32"] and "not in float32" in form.note
        seen["f32" if same_f32 else "not f32"] += 1
    assert seen["f32"] and seen["not f32"]               # both cases were exercised


def test_nvfp4_divided_global_scale_can_be_inexact():
    """compressed-tensors divides by weight_global_scale = 2688/amax: for about 1-2% of such
    gs no float32 G gives the same BF16 values over every scale byte. The form says so, and
    MLX does differ; where it claims exactness, MLX agrees."""
    packed, sb, codes = nvfp4_table()
    amax = bf16_values(rng(35).uniform(1e-3, 4, 600))
    forms = [(gs, nvfp4_form(packed, sb, gs, "divide"))
             for gs in (np.float32(2688) / amax).astype(np.float32)]
    inexact = [(gs, f) for gs, f in forms if not f.exact]
    assert inexact and len(inexact) < len(forms)
    ideal = lambda gs: np.float32(np.float32(2688) / gs)                  # noqa: E731
    moved = [(gs, f) for gs, f in forms if f.exact and f.global_scale != ideal(gs)]
    assert moved                      # a neighbour of 2688/gs rescued some: MLX must agree
    for gs, form in inexact + moved + [(gs, f) for gs, f in forms if f.exact][:20]:
        same = np.array_equal(mlx_bf16(form, form.global_scale),
                              exact_nvfp4(codes, sb, gs, "divide"))
        assert form.exact == same and (same or "not exact" in form.note)


def test_nvfp4_bad_input():
    assert not nvfp4_form(np.zeros((2, 4), np.uint8), np.zeros((2, 1), np.uint8),
                          np.float32(1), "multiply")                   # width 8
    with pytest.raises(ValueError, match="global scale"):
        nvfp4_form(np.zeros((2, 8), np.uint8), np.zeros((2, 1), np.uint8),
                   np.float32(0), "multiply")
    with pytest.raises(ValueError, match="leading dims"):
        nvfp4_form(np.zeros((2, 8), np.uint8), np.zeros((2, 1), np.uint8),
                   np.ones(3, np.float32), "multiply")


# ----------------------------------------------------------------- dense nvfp4 in mlx-lm

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "vocab_size": 32, "tie_word_embeddings": False,
        "torch_dtype": "float32"}
TARGET = "model.layers.0.mlp.down_proj"


@pytest.fixture
def nvfp4_bundle(tmp_path):
    """A float32 tiny llama whose down_proj is nvfp4 with a global scale (ws2 far from 1),
    and the same model with the exact decode as a dense float32 weight."""
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(TINY))
    weights = dict(tree_flatten(model.parameters()))
    packed, sb, ws2, codes = modelopt_like(rng(42), (64, 128), 0.005)
    form = nvfp4_form(packed, sb, ws2, "multiply")
    del weights[f"{TARGET}.weight"]
    weights.update({k: mx.array(a) for k, (_, a) in form.tensors(TARGET).items()})
    mx.save_safetensors(str(tmp_path / "model.safetensors"), weights)
    config = {**TINY, "quantization": {"group_size": 16, "bits": 4, "mode": "nvfp4",
                                       TARGET: form.config_entry()}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    model.load_weights([(f"{TARGET}.weight",
                         mx.array(exact_nvfp4(codes, sb, ws2, "multiply", f32=True)))],
                       strict=False)
    return tmp_path, model


def test_plain_mlx_lm_refuses_a_global_scale_entry(nvfp4_bundle):
    from mlx_lm.utils import load_model

    path, _ = nvfp4_bundle
    with pytest.raises(TypeError, match="global_scale"):
        load_model(path)
    with pytest.raises(TypeError, match="global_scale"):      # non-strict loads too
        load_model(path, strict=False)
    # without the per-module entry, the strict load still refuses the extra parameter
    config = json.loads((path / "config.json").read_text())
    del config["quantization"][TARGET]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="global_scale"):
        load_model(path)
    # but a non-strict load (mlx-lm's sharded / pipelined loads) then builds a plain
    # QuantizedLinear and drops G: wrong by 1/ws2, silently. Hence the per-module entry.
    model, _ = load_model(path, strict=False)
    assert type(model.model.layers[0].mlp.down_proj) is nn.QuantizedLinear
