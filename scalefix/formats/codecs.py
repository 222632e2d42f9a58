"""Element codecs as 256/16-entry float32 lookup tables, computed from the bit layouts
(docs/formats.md §2), plus float32 -> bfloat16 round-to-nearest-even.

Tables instead of arithmetic: decoding a byte is one gather, and every code can be
checked against an oracle (tests compare all of them with torch's float8 dtypes).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import ScalefixError


def _minifloat(code: int, exp_bits: int, man_bits: int, bias: int) -> float:
    sign = -1.0 if code >> (exp_bits + man_bits) & 1 else 1.0
    exp = (code >> man_bits) & ((1 << exp_bits) - 1)
    man = code & ((1 << man_bits) - 1)
    if exp == 0:
        return sign * man * 2.0 ** (1 - bias - man_bits)
    return sign * (1 + man / (1 << man_bits)) * 2.0 ** (exp - bias)


@lru_cache(maxsize=None)
def table(codec: str) -> np.ndarray:
    """float32 value of every code of ``codec`` (read-only)."""
    if codec == "e4m3":  # E4M3FN: no inf; S.1111.111 is NaN; max 448
        values = [_minifloat(c, 4, 3, 7) for c in range(256)]
        values[0x7F] = values[0xFF] = float("nan")
    elif codec == "e5m2":  # IEEE-like: exponent 31 is inf (man 0) or NaN
        values = []
        for c in range(256):
            if (c >> 2) & 0x1F == 0x1F:
                values.append(float("nan") if c & 3 else (-1) ** (c >> 7) * float("inf"))
            else:
                values.append(_minifloat(c, 5, 2, 15))
    elif codec == "e8m0":  # 2^(e-127); 255 is NaN and rejected by decode_scale
        values = [2.0 ** (e - 127) for e in range(255)] + [float("nan")]
    elif codec == "e2m1":  # FP4, bit 3 = sign: 0 .5 1 1.5 2 3 4 6, then negatives
        values = [_minifloat(c, 2, 1, 1) for c in range(16)]
    else:
        raise ValueError(f"unknown codec {codec!r}")
    out = np.array(values, dtype=np.float32)
    out.flags.writeable = False
    return out


def decode(codes: np.ndarray, codec: str) -> np.ndarray:
    """Decode uint8 codes (one per element) to float32."""
    return table(codec)[codes.view(np.uint8)]


def unpack_fp4(packed: np.ndarray, order: str = "low-first") -> np.ndarray:
    """Two E2M1 codes per byte -> float32, last dim doubled. ``low-first``: the low nibble is
    the even element (everyone except ComfyUI NVFP4, which is ``high-first``)."""
    packed = packed.view(np.uint8)
    low, high = packed & 0x0F, packed >> 4
    first, second = (low, high) if order == "low-first" else (high, low)
    codes = np.stack([first, second], axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
    return table("e2m1")[codes]


def decode_scale(raw: np.ndarray, scale_codec: str, *, file=None, tensor=None) -> np.ndarray:
    """Scale tensor -> float32; E8M0 = 255 and non-finite scales are rejected."""
    if scale_codec == "f32":
        values = raw.view(np.float32)
    elif scale_codec == "f16":
        values = raw.view(np.float16).astype(np.float32)
    elif scale_codec == "bf16":
        values = bf16_to_f32(raw.view(np.uint16))
    elif scale_codec in ("e8m0", "e4m3"):
        codes = raw.view(np.uint8)
        if scale_codec == "e8m0" and (codes == 255).any():
            raise ScalefixError("E8M0 scale holds code 255 (NaN)", file=file, tensor=tensor)
        values = table(scale_codec)[codes]
    else:
        raise ValueError(f"unknown scale codec {scale_codec!r}")
    if not np.isfinite(values).all():
        raise ScalefixError("scale holds NaN or infinity", file=file, tensor=tensor)
    return values


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest, ties to even; NaN stays NaN."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)  # keep sign, force quiet
    return out


def encode_e4m3(values: np.ndarray) -> np.ndarray:
    """float32 -> E4M3FN codes, nearest (ties to even code), saturating at +-448. Used to build
    demo and benchmark checkpoints; decoding never depends on it."""
    positive = table("e4m3")[:0x7F]            # codes 0..126, increasing, finite
    mag = np.minimum(np.abs(values.astype(np.float32)), np.float32(448.0))
    hi = np.clip(np.searchsorted(positive, mag, side="left"), 1, 0x7E)
    lo = hi - 1
    d_lo, d_hi = mag - positive[lo], positive[hi] - mag
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    codes = np.where(pick_hi, hi, lo).astype(np.uint8)
    codes[mag == 0] = 0
    return codes | (np.signbit(values).astype(np.uint8) << 7)
