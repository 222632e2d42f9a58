"""Dequantization as a lazy MLX graph: what the ``mx.load`` hook returns instead of an eager
numpy decode, so a host that loads lazily (mlx-lm's convert streams shard by shard) only pays
for a tensor when it evaluates it.

``W = decode(Q) * S`` in float32, rounded to BF16 once, as
``scalefix.formats.dequant.dequantize(qw, "bf16")`` (tests hold the two together bit for bit):

- Codes decode to BF16, which holds every E4M3, E5M2 and E2M1 value exactly: ``mx.from_fp8``
  (E4M3, when this MLX has it and it matches the table) or a 256-entry table (``mx.take``);
  two FP4 codes per byte through a 256 x 2 table. MLX 0.25-0.30 hand F8_E4M3 already upcast
  to BF16: used as is.
- The scale is broadcast by viewing the weight as ``[*lead, rows, bo, cols, bi]``: no
  expanded copy. Ragged edges: the (small) scale is repeated along rows; the codes (one byte
  each) are padded along columns and the result cropped.
- ``float32(value) * float32(scale)`` rounded to BF16 is one compiled function
  (``mx.compile``): MLX fuses it where it can build kernels (Metal; CPU with a C++ compiler),
  so no float32 copy of the weight ever exists. That matters because ``mx.eval`` runs ~20
  independent tensors level by level (``MLX_BFS_MAX_WIDTH``): a float32 stage per tensor
  multiplies the peak of a whole conversion. Without fusion the values are the same, the
  peak is not (Linux CPU without ``g++``: mlx-lm's 4-bit convert of a 1 / 2 GB FP8 Llama
  peaked at 1.18x / 1.26x plain mlx-lm on the BF16 twin, against 1.00x / 1.03x fused). On
  Linux MLX builds the kernels with ``g++`` once (a few seconds) and caches them in $TMPDIR.
- MLX rounds float32 -> BF16 to nearest even like ``codecs.f32_to_bf16`` but writes every NaN
  as 0x7FC0, where scalefix keeps the NaN's sign. The graph's NaNs come from NaN codes (the
  table's positive NaN: 0x7FC0 either way) and from E5M2 +-inf times a zero scale, where the
  CPU makes its default NaN (negative on x86): that case alone is patched, when it can occur.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ScalefixError
from ..formats.classify import QuantizedWeight
from ..formats.schemes import DeclaredWeight
from ..formats.codecs import f32_to_bf16, table
from ..formats.dequant import row_bytes


def _mx():
    import mlx.core as mx
    return mx


def lazy_dequantize(qw: QuantizedWeight, stored, scale: np.ndarray):
    """BF16 ``qw`` as an unevaluated MLX array.

    ``stored``: the weight as ``mx.load`` returned it (uint8 codes, BF16-upcast F8 values, or
    packed FP4 bytes, any shape holding the right number of elements); ``scale``: float32 from
    ``formats.dequant.load_scale(qw)`` (for a registry-decoded weight: its side tensors by
    role, as stored).
    """
    mx = _mx()
    if isinstance(qw, DeclaredWeight):
        return _lazy_declared(mx, qw, stored, scale)
    geo = qw.geometry
    lead, (out, cols) = geo.shape[:-2], geo.shape[-2:]
    codes = _as_rows(mx, qw, stored)                       # [*lead, out, stored columns]
    if scale.size == 1:
        s = _f32(mx, _held_scale(mx, qw, scale.reshape(())))
        return _shaped(_scaled(mx, qw, _decode(mx, qw, codes), s, scale), qw.shape)
    so, si = geo.scale_shape[-2:]
    bo, bi = geo.block
    padded = si * bi
    if padded != cols:                                     # ragged last block of columns
        codes = mx.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, padded - cols)])
    s = _held_scale(mx, qw, scale.reshape(geo.scale_shape))
    if out % bo or out // bo != so:                        # ragged rows: repeat the scale
        s = mx.repeat(s, bo, axis=-2)[..., :out, :]
        so, bo = out, 1
    values = _decode(mx, qw, codes).reshape(*lead, so, bo, si, bi)
    s = _f32(mx, s).reshape(*lead, so, 1, si, 1)
    result = _scaled(mx, qw, values, s, scale).reshape(*lead, out, padded)
    if padded != cols:
        result = result[..., :cols]
    return _shaped(result, qw.shape)


def _lazy_declared(mx, qw: DeclaredWeight, stored, sides: dict):
    """A registry scheme's own lazy graph (``lazy_decode``) on the stored weight and its
    sides (small, handed over as MLX arrays of their stored bits)."""
    arrays = {"weight": stored}
    arrays.update((role, mx.array(np.ascontiguousarray(a))) for role, a in sides.items())
    result = qw.family.lazy_decode(mx, qw, arrays)
    if tuple(result.shape) != tuple(qw.shape) or result.dtype != mx.bfloat16:
        raise ScalefixError(f"internal: {qw.family.NAME} lazy_decode gave {result.dtype} "
                            f"{list(result.shape)}, want bfloat16 {list(qw.shape)}",
                            tensor=qw.name)
    return result


def _f32(mx, a):
    return a if a.dtype == mx.float32 else a.astype(mx.float32)


def _shaped(a, shape):
    return a if tuple(a.shape) == tuple(shape) else a.reshape(shape)


def _as_rows(mx, qw: QuantizedWeight, stored):
    """The stored weight as ``[*lead, out, bytes or elements per row]``."""
    geo = qw.geometry
    if stored.dtype == mx.int8:
        stored = stored.view(mx.uint8)
    width = row_bytes(qw) if stored.dtype == mx.uint8 else geo.cols
    return _shaped(stored, (*geo.shape[:-1], width))


def _decode(mx, qw: QuantizedWeight, codes):
    """BF16 values of the codes, exact (FP4: two per byte, the last dim doubled)."""
    if qw.codec == "e2m1":
        values = mx.take(_fp4_pairs(qw.packing or "low-first"), codes, axis=0)  # [..., n, 2]
        return values.reshape(*codes.shape[:-1], codes.shape[-1] * 2)
    if codes.dtype != mx.uint8:                            # F8 already upcast by mx.load
        return codes if codes.dtype == mx.bfloat16 else codes.astype(mx.bfloat16)
    if qw.codec == "e4m3" and _from_fp8_exact():
        return mx.from_fp8(codes, dtype=mx.bfloat16)
    return mx.take(_table(qw.codec), codes)


def _scaled(mx, qw: QuantizedWeight, values, s, scale: np.ndarray):
    """``float32(values) * s`` rounded to BF16 once."""
    if qw.codec == "e5m2" and not scale.all():
        product = (values.astype(mx.float32) * s).astype(mx.bfloat16)
        hit = mx.isinf(values) & (s == 0)
        return mx.where(hit, mx.array(_inf_times_zero_bits()).view(mx.bfloat16), product)
    return _product()(values, s)


@lru_cache(maxsize=None)
def _product():
    mx = _mx()
    return mx.compile(lambda values, s: (values.astype(mx.float32) * s).astype(mx.bfloat16))


def _held_scale(mx, qw: QuantizedWeight, scale: np.ndarray):
    """The scale held until evaluation, in the narrowest dtype that holds it exactly
    (E8M0 and BF16 scales as BF16, F16 as F16): FP4 group-32 scales are not small."""
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    if qw.scale_codec in ("bf16", "e8m0"):
        bits = scale.view(np.uint32)
        if not (bits & 0xFFFF).any():
            return mx.array((bits >> 16).astype(np.uint16)).view(mx.bfloat16)
    if qw.scale_codec == "f16":
        return mx.array(scale.astype(np.float16))
    return mx.array(scale)


@lru_cache(maxsize=None)
def _inf_times_zero_bits() -> np.ndarray:
    """The BF16 bits scalefix writes for +-inf * 0: this CPU's default NaN, rounded."""
    with np.errstate(invalid="ignore"):
        product = np.array([np.inf], dtype=np.float32) * np.zeros(1, dtype=np.float32)
    return f32_to_bf16(product)


def _bf16(values: np.ndarray):
    return _mx().array(f32_to_bf16(values)).view(_mx().bfloat16)


@lru_cache(maxsize=None)
def _table(codec: str):
    return _bf16(table(codec))


@lru_cache(maxsize=None)
def _fp4_pairs(order: str):
    values = table("e2m1")
    byte = np.arange(256)
    low, high = values[byte & 0x0F], values[byte >> 4]
    return _bf16(np.stack([low, high] if order == "low-first" else [high, low], axis=1))


@lru_cache(maxsize=None)
def _from_fp8_exact() -> bool:
    """``mx.from_fp8`` exists (MLX >= 0.31) and gives the table's BF16 value for every code
    (NaN codes: any NaN; the product's rounding makes them all 0x7FC0)."""
    mx = _mx()
    if not hasattr(mx, "from_fp8"):
        return False
    got = mx.from_fp8(mx.array(np.arange(256, dtype=np.uint8)), dtype=mx.bfloat16)
    got = np.array(got.view(mx.uint16))
    want = f32_to_bf16(table("e4m3"))
    nan = np.isnan(table("e4m3"))
    got_nan = (got & 0x7FFF) > 0x7F80
    return bool((got_nan == nan).all() and (got[~nan] == want[~nan]).all())
