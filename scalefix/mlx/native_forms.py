"""Lossless native MLX forms of block-scaled weights (``rewrite --to mlx``, issue 11).

One module on purpose (~490 lines): every form and the exactness argument it carries share
the same float32 rounding helpers, and reading them side by side is how a reviewer checks
that each "exact" claim holds for every element.

Inputs are canonical, format-neutral numpy arrays (the formats room unpacks GPTQ, AWQ and
compressed-tensors layouts into them); outputs are what mlx-lm loads as ``<m>.weight``,
``<m>.scales``, ``<m>.biases`` (and ``<m>.global_scale``), with the per-module
``quantization`` entry. Each form says whether ``mx.dequantize`` of it, computed in float32,
equals the source's exact decode (its float32 product, rounded to BF16 once) bit for bit, and
it says so only when that is guaranteed, for every element, whichever way MLX evaluates
``q*s + b`` (separate multiply and add, as on the CPU, or fused).

- **Integer codes -> affine.** ``w = q*s + b`` with ``b = -z*s`` (``z = 2^(b-1)`` when
  symmetric). Groups wider than 128 (channel-wise too) repeat their scale over 128/64/32-wide
  groups; MLX has no other group size, so an input width that no such group divides (it is
  not a multiple of 32, or a ragged last group) has no native form. BF16 scales and biases
  are chosen only when they hold the exact values; otherwise float32 (then MLX returns
  float32 from the layer). ``bf16_biases=True`` trades that exactness away and reports the
  SQNR.
- **MXFP4 -> mxfp4**: the bytes are copied. **FP8 E4M3 with power-of-two block scales ->
  mxfp8**: the codes are copied, each scale becomes its E8M0 byte ``log2(s)+127`` per 32
  inputs. Other FP8 scales have no native form.
- **NVFP4 -> nvfp4**: bytes copied; the global scale becomes MLX's ``global_scale`` G (a
  tensor amax: MLX multiplies the block scale by ``fl(G/2688)``). Exact only when some
  float32 G reproduces the source's effective block scales; checked over every (code, scale
  byte) pair the tensor uses, so the check is exhaustive and cheap.

The ``NoNativeForm`` answers are falsy, like ``None``, and carry the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..formats.codecs import f32_to_bf16, table
from .module_form import AFFINE_BITS, AFFINE_GROUPS, quantization_entry
NVFP4_GLOBAL_UNIT = 448.0 * 6.0            # MLX: block scale times G / (E4M3 max * E2M1 max)
_ROWS_PER_CHUNK = 1 << 20                  # elements per chunk of the element-wise checks


@dataclass(frozen=True)
class NativeForm:
    """One module's weight in a native MLX mode, ready to write.

    ``scales`` / ``biases`` are held as stored: BF16 as uint16 bits, F32 as float32, the MX
    modes' scale bytes as uint8 (``scale_dtype`` is the safetensors dtype). ``global_scale``
    (nvfp4 only) is float32, shape ``()`` for a 2-D weight or ``[E]`` for stacked experts,
    mlx-lm's ``QuantizedSwitchLinear`` convention.
    """

    mode: str                       # affine | mxfp4 | mxfp8 | nvfp4
    bits: int
    group_size: int
    weight: np.ndarray              # uint32 [..., out, in*bits/32]
    scales: np.ndarray
    biases: np.ndarray | None
    global_scale: np.ndarray | None
    scale_dtype: str                # "BF16" | "F32" | "U8"
    exact: bool                     # mx.dequantize (float32) -> BF16 == exact decode -> BF16
    note: str = ""                  # what was chosen and why (or why not exact)
    sqnr_db: float | None = None    # vs the exact decode, when a lossy choice was asked for
    details: dict = field(default_factory=dict)

    def config_entry(self) -> dict:
        """The per-module ``config['quantization'][path]`` entry mlx-lm hands ``to_quantized``.
        ``global_scale: True`` matches mlx-lm's switch layers; a dense ``nn.Linear`` of
        mlx-lm 0.32.2 rejects the keyword (TypeError), so plain mlx-lm refuses loudly."""
        return quantization_entry(self.mode, self.bits, self.group_size,
                                  self.global_scale is not None)

    def tensors(self, module: str) -> dict[str, tuple[str, np.ndarray]]:
        """``{name: (safetensors dtype, array as stored)}`` for ``module``."""
        out = {f"{module}.weight": ("U32", self.weight),
               f"{module}.scales": (self.scale_dtype, self.scales)}
        if self.biases is not None:
            out[f"{module}.biases"] = (self.scale_dtype, self.biases)
        if self.global_scale is not None:
            out[f"{module}.global_scale"] = ("F32", self.global_scale)
        return out

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class NoNativeForm:
    """No lossless native MLX form: the module becomes exact BF16 (or is re-quantized)."""

    reason: str

    def __bool__(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------------
# integer codes -> affine


def affine_form(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, bits: int,
                group_size: int, *, bf16_biases: bool = False) -> NativeForm | NoNativeForm:
    """``codes`` uint8 ``[..., out, in]`` unsigned (0 .. 2^bits-1); ``scale`` float32
    ``[..., out, n_groups]`` (``out`` may be 1: one scale row for all); ``zero`` integer,
    same shape as ``scale``, or None for symmetric (``z = 2^(bits-1)``). Column ``j`` belongs
    to group ``j // group_size``. Exact decode: ``bf16(fl32((q - z) * s))``."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim < 2:
        raise ValueError(f"codes must be uint8 [..., out, in], got {codes.dtype} {codes.shape}")
    *lead, out, cols = codes.shape
    if group_size <= 0:
        raise ValueError(f"group size {group_size} must be positive")
    n_groups = -(-cols // group_size)
    scale = _broadcast_groups(np.asarray(scale), "scale", (*lead, out, n_groups))
    if scale.dtype != np.float32:
        raise ValueError(f"scale must be float32, got {scale.dtype}")
    if zero is not None:
        zero = _broadcast_groups(np.asarray(zero), "zero point", (*lead, out, n_groups))
        if zero.dtype.kind not in "iu":
            raise ValueError(f"zero point must be an integer array, got {zero.dtype}")
    if bits not in AFFINE_BITS:
        return NoNativeForm(f"MLX affine has no {bits}-bit mode (it has "
                            f"{', '.join(map(str, AFFINE_BITS))})")
    if codes.size and int(codes.max()) >= 1 << bits:
        raise ValueError(f"a code is {int(codes.max())}, beyond {bits} bits")
    if not np.isfinite(scale).all():
        raise ValueError("scale holds NaN or infinity")
    target = _affine_group(cols, group_size)
    if isinstance(target, NoNativeForm):
        return target
    s, z, bias64 = _affine_params(scale, zero, bits, group_size, target, cols)
    bias32 = bias64.astype(np.float32)
    bf16_ok = (_bf16_exact(s) and bool((bias32.astype(np.float64) == bias64).all())
               and _bf16_exact(bias32))
    weight = pack_bits(codes, bits)
    details = {"source_group_size": group_size, "replicated": target != group_size,
               "symmetric": zero is None}
    if bf16_ok or not bf16_biases:
        store_s, store_b = s, bias32
        dtype = "BF16" if bf16_ok else "F32"
        exact, how = _affine_exact(codes, s, z, store_s, store_b, bits, target)
        note = (f"{'BF16' if bf16_ok else 'float32'} scales and biases "
                f"({'exact in BF16' if bf16_ok else 'the scales or -z*s are not BF16 values'})")
        if not exact:
            note += f"; not exact: {how}"
        sqnr = None
    else:                                                       # asked to trade exactness
        store_s = _bf16_round(s)
        store_b = _bf16_round(bias32)
        dtype = "BF16"
        exact, how = _affine_exact(codes, s, z, store_s, store_b, bits, target)
        sqnr = _affine_sqnr(codes, s, z, store_s, store_b, target)
        note = (f"BF16 scales and biases by request (--bf16-biases): "
                f"{'still exact' if exact else f'SQNR {sqnr:.1f} dB vs the exact decode'}")
    if target != group_size:
        note += f"; group {group_size} repeated over {target}-wide groups"
    scales_out = f32_to_bf16(store_s) if dtype == "BF16" else store_s
    biases_out = f32_to_bf16(store_b) if dtype == "BF16" else np.ascontiguousarray(store_b)
    return NativeForm("affine", bits, target, weight, scales_out, biases_out, None, dtype,
                      exact, note, sqnr, details)


def affine_params(scale: np.ndarray, zero: np.ndarray | None, bits: int, group_size: int,
                  target: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """MLX affine ``(scales, biases)`` float32 over ``target``-wide groups, for source groups
    of ``group_size``: what ``affine_form`` stores and what the load-time hook hands over."""
    s, _, bias64 = _affine_params(scale, zero, bits, group_size, target, cols)
    return s, bias64.astype(np.float32)


def affine_side(scale: np.ndarray, zero: np.ndarray | None, bits: int, group_size: int,
                target: int, cols: int, scale_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored ``(scales, biases)`` of ``affine_form`` without touching the codes (the
    streaming rewrite): BF16 as uint16 bits (only where every value is exact in BF16, else
    ValueError), F32 as float32. ``scale`` / ``zero`` as ``canonical_side`` gives them."""
    shape = tuple(scale.shape[:-1]) + (-(-cols // group_size),)
    scale = _broadcast_groups(np.asarray(scale), "scale", shape)
    if zero is not None:
        zero = _broadcast_groups(np.asarray(zero), "zero point", shape)
    s, _, bias64 = _affine_params(scale, zero, bits, group_size, target, cols)
    bias32 = bias64.astype(np.float32)
    if scale_dtype == "F32":
        return np.ascontiguousarray(s, np.float32), np.ascontiguousarray(bias32)
    if not (_bf16_exact(s) and bool((bias32.astype(np.float64) == bias64).all())
            and _bf16_exact(bias32)):
        raise ValueError("scales or biases are not exact in BF16")
    return f32_to_bf16(s), f32_to_bf16(bias32)


def _affine_params(scale, zero, bits, group_size, target, cols):
    # the scale (and zero point) of each target-wide group: its source group's
    source_group = (np.arange(cols // target) * target) // group_size
    s = np.ascontiguousarray(scale[..., source_group])
    z = (np.full(s.shape, 1 << (bits - 1), np.int64) if zero is None
         else zero[..., source_group].astype(np.int64))
    bias64 = -z.astype(np.float64) * s.astype(np.float64)       # exact: <= 24 + 10 bits
    return s, z, bias64


def _broadcast_groups(a: np.ndarray, what: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"{what} shape {a.shape} does not fit the groups {shape}") from None


def _affine_group(cols: int, group_size: int) -> int | NoNativeForm:
    """The widest MLX group that splits both the source groups and the row."""
    for target in AFFINE_GROUPS:
        if group_size % target == 0 and cols % target == 0:
            return target
    if cols % AFFINE_GROUPS[-1]:
        return NoNativeForm(f"input width {cols} is not a multiple of 32: MLX affine groups are "
                            f"32/64/128 wide (a channel-wise scale or a ragged last group "
                            f"cannot be split into them)")
    return NoNativeForm(f"group size {group_size} is not a multiple of 32, MLX affine's "
                        f"narrowest group (32/64/128)")


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes ``[..., n]`` (n a multiple of 32) -> MLX's dense LSB-first bitstream,
    uint32 ``[..., n*bits/32]``: element i occupies bits ``i*bits ..`` of the stream; 3/5/6-bit
    codes cross word boundaries, built 32 codes (= ``bits`` words) at a time."""
    *lead, n = codes.shape
    if n % 32:
        raise ValueError(f"cannot pack {n} codes per row: not a multiple of 32")
    if bits == 8:
        return np.ascontiguousarray(codes).view("<u4")
    if 32 % bits == 0:                                     # 1/2/4 bits: whole codes per word
        per = 32 // bits
        grouped = codes.reshape(*lead, n // per, per)
        words = np.zeros(grouped.shape[:-1], np.uint32)
        for k in range(per):
            words |= grouped[..., k].astype(np.uint32) << np.uint32(k * bits)
        return words
    blocks = codes.reshape(-1, n // 32, 32)
    acc = np.zeros((blocks.shape[0], n // 32, bits), np.uint64)
    for j in range(32):
        word, shift = divmod(j * bits, 32)
        acc[..., word] |= blocks[..., j].astype(np.uint64) << np.uint64(shift)
    low = acc & np.uint64(0xFFFFFFFF)
    low[..., 1:] |= acc[..., :-1] >> np.uint64(32)         # bits that spilled into the next word
    return low.astype(np.uint32).reshape(*lead, n * bits // 32)


def _bf16_round(values: np.ndarray) -> np.ndarray:
    return (f32_to_bf16(values).astype(np.uint32) << 16).view(np.float32)


def _bf16_exact(values: np.ndarray) -> bool:
    return bool((np.ascontiguousarray(values, np.float32).view(np.uint32) & 0xFFFF == 0).all())


def _products_exact(s: np.ndarray, bits: int) -> bool:
    """Every ``q*s`` (0 <= q < 2^bits) is exact in float32: ``s`` normal (or 0) with at most
    ``24 - bits`` significant bits, and no overflow."""
    raw = np.ascontiguousarray(s, np.float32).view(np.uint32)
    mant = (raw & 0x7FFFFF) | 0x800000
    exp = (raw >> 23) & 0xFF
    sig = 24 - _trailing_zeros(mant)
    zero = (raw & 0x7FFFFFFF) == 0
    ok = zero | ((exp > 0) & (exp.astype(np.int64) + bits < 254) & (sig + bits <= 24))
    return bool(ok.all())


def _trailing_zeros(x: np.ndarray) -> np.ndarray:
    low = (x & (~x + np.uint32(1))).astype(np.float64)         # lowest set bit, as 2^k
    return np.log2(low).astype(np.int64)


def _affine_exact(codes, s, z, store_s, store_b, bits, group) -> tuple[bool, str]:
    """Guaranteed ``bf16(q*S + B) == bf16(fl32((q - z)*s))`` for every element, where MLX
    may round ``q*S`` before the add or fuse it. Cheap sufficient test first (products and
    bias exact: then both sides are the same single rounding), else element by element."""
    same_params = np.array_equal(store_s, s) and np.array_equal(
        store_b.astype(np.float64), -z.astype(np.float64) * s.astype(np.float64))
    if same_params and _products_exact(s, bits):
        return True, ""
    for q, ss, zz, S, B in _chunks(codes, group, s, z, store_s, store_b):
        exact = f32_to_bf16(((q - zz).astype(np.float32) * ss).astype(np.float32))
        separate = f32_to_bf16(q.astype(np.float32) * S + B)
        # fused: q*S has <= 32 significant bits and both terms are multiples of S's ulp
        # (|B| >= |S|, or B = 0), so the float64 sum is exact and rounds once to float32
        fused = f32_to_bf16((q.astype(np.float64) * S + B).astype(np.float32))
        if not (np.array_equal(exact, separate) and np.array_equal(exact, fused)):
            bad = int((exact != separate).sum() + (exact != fused).sum())
            return False, (f"q*s or -z*s round in float32 (scale with more than {24 - bits} "
                           f"significant bits); {bad} element(s) of a chunk differ in BF16")
    return True, ""


def _affine_sqnr(codes, s, z, store_s, store_b, group) -> float:
    signal = noise = 0.0
    for q, ss, zz, S, B in _chunks(codes, group, s, z, store_s, store_b):
        exact = _bf16_round(((q - zz).astype(np.float32) * ss).astype(np.float32))
        approx = _bf16_round(q.astype(np.float32) * S + B)
        signal += float(np.square(exact, dtype=np.float64).sum())
        noise += float(np.square(approx.astype(np.float64) - exact).sum())
    return math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal else -math.inf


def _chunks(codes, group, *per_group):
    """Row chunks of ``codes`` as ``[rows, n_groups, group]`` with the per-group arrays
    broadcast as ``[rows, n_groups, 1]``."""
    cols = codes.shape[-1]
    flat = codes.reshape(-1, cols // group, group)
    params = [np.asarray(p).reshape(-1, cols // group, 1) for p in per_group]
    step = max(1, _ROWS_PER_CHUNK // max(cols, 1))
    for start in range(0, flat.shape[0], step):
        sl = slice(start, start + step)
        yield (flat[sl].astype(np.int64), *(p[sl] for p in params))


# ---------------------------------------------------------------------------------------------
# FP4 / FP8 -> MX modes


def mxfp4_form(packed: np.ndarray, scale_bytes: np.ndarray) -> NativeForm | NoNativeForm:
    """``packed`` uint8 ``[..., out, in/2]`` (low nibble = even element), ``scale_bytes``
    E8M0 uint8 ``[..., out, in/32]``: copied as they are."""
    packed, scale_bytes = _bytes(packed, "packed FP4"), _bytes(scale_bytes, "E8M0 scale")
    cols = packed.shape[-1] * 2
    if cols % 32:
        return NoNativeForm(f"input width {cols} is not a multiple of 32 (MXFP4's group)")
    _expect(scale_bytes, (*packed.shape[:-1], cols // 32), "E8M0 scale")
    return NativeForm("mxfp4", 4, 32, _as_words(packed), np.ascontiguousarray(scale_bytes),
                      None, None, "U8", True, "bytes copied")


def mxfp8_form(codes: np.ndarray, scale: np.ndarray,
               block: tuple[int, int] = (128, 128)) -> NativeForm | NoNativeForm:
    """FP8 E4M3 ``codes`` uint8 ``[..., out, in]`` with float32 ``scale``
    ``[..., ceil(out/bo), ceil(in/bi)]`` over ``block`` (bo, bi): mxfp8 when every scale is a
    power of two E8M0 can hold (2^-127 .. 2^127) and each 32 inputs share one block column."""
    codes = _bytes(codes, "FP8 codes")
    scale = np.asarray(scale)
    if scale.dtype != np.float32:
        raise ValueError(f"FP8 scale must be float32, got {scale.dtype}")
    *lead, out, cols = codes.shape
    bo, bi = block
    _expect(scale, (*lead, -(-out // bo), -(-cols // bi)), "FP8 block scale")
    if cols % 32:
        return NoNativeForm(f"input width {cols} is not a multiple of 32 (MXFP8's group)")
    if bi % 32 and -(-cols // bi) > 1:
        return NoNativeForm(f"block width {bi} splits MXFP8's 32-wide groups")
    scales = mxfp8_scales(scale, out, cols, block)
    if not isinstance(scales, np.ndarray):
        return scales
    return NativeForm("mxfp8", 8, 32, _as_words(codes), scales, None,
                      None, "U8", True, f"codes copied; {bo}x{bi} power-of-two scales as E8M0")


def mxfp8_scales(scale: np.ndarray, out: int, cols: int,
                 block: tuple[int, int]) -> np.ndarray | NoNativeForm:
    """mxfp8's E8M0 bytes ``[..., out, cols/32]`` from power-of-two float32 block scales."""
    bo, bi = block
    mant, exp = np.frexp(scale.astype(np.float64))
    if not (np.isfinite(scale).all() and (mant == 0.5).all()):
        return NoNativeForm("FP8 block scales are not all positive powers of two")
    e8m0 = exp.astype(np.int64) - 1 + 127                      # scale = 2^(exp-1)
    if e8m0.min() < 0 or e8m0.max() > 254:
        return NoNativeForm("an FP8 block scale is outside E8M0's 2^-127 .. 2^127")
    rows = np.arange(out) // bo
    groups = (np.arange(cols // 32) * 32) // bi
    return np.ascontiguousarray(e8m0.astype(np.uint8)[..., rows, :][..., groups])


def nvfp4_form(packed: np.ndarray, scale_bytes: np.ndarray, global_value,
               global_op: str = "multiply") -> NativeForm | NoNativeForm:
    """``packed`` uint8 ``[..., out, in/2]``, E4M3 ``scale_bytes`` uint8 ``[..., out, in/16]``,
    ``global_value`` float32 (a scalar, or one per leading index: per expert). Exact decode:
    ``bf16(e2m1 * fl32(e4m3(s) * ws2))`` (ModelOpt ``weight_scale_2``, ``multiply``) or
    ``bf16(e2m1 * fl32(e4m3(s) / gs))`` (compressed-tensors ``weight_global_scale``,
    ``divide``). MLX computes ``e2m1 * fl32(e4m3(s) * fl32(G/2688))``: G is searched among the
    float32 neighbours of the ideal value, and the form is exact only when one reproduces
    every used (code, scale byte) pair in BF16 (``details['exact_f32']``: in float32 too)."""
    packed, scale_bytes = _bytes(packed, "packed FP4"), _bytes(scale_bytes, "E4M3 scale")
    if global_op not in ("multiply", "divide"):
        raise ValueError(f"global_op must be 'multiply' or 'divide', got {global_op!r}")
    *lead, rows, half = packed.shape
    cols = half * 2
    if cols % 16:
        return NoNativeForm(f"input width {cols} is not a multiple of 16 (NVFP4's group)")
    _expect(scale_bytes, (*lead, rows, cols // 16), "E4M3 scale")
    gv = np.asarray(global_value)
    if gv.dtype != np.float32:
        raise ValueError(f"NVFP4 global scale must be float32, got {gv.dtype}")
    if gv.size == 1:                        # [], [1] (compressed-tensors) or [1, 1]
        gv = np.broadcast_to(gv.reshape(()), tuple(lead))
    elif gv.size == math.prod(lead):        # one per expert: [E] or [E, 1]
        gv = gv.reshape(tuple(lead))
    else:
        raise ValueError(f"NVFP4 global scale shape {gv.shape} does not fit the leading dims "
                         f"{tuple(lead)}")
    if not (np.isfinite(gv).all() and (gv > 0).all()):
        raise ValueError("NVFP4 global scale must be finite and positive")
    by_matrix = scale_bytes.reshape(-1, rows * (cols // 16))
    chosen = np.empty(gv.size, np.float32)
    exact_bf16 = exact_f32 = True
    for i, value in enumerate(gv.reshape(-1)):
        used = np.unique(by_matrix[i])
        g, f32_ok, bf16_ok = _nvfp4_global(np.float32(value), global_op, used)
        chosen[i] = g
        exact_f32 &= f32_ok
        exact_bf16 &= bf16_ok
    note = "bytes copied; G = " + ("ws2*2688" if global_op == "multiply" else "2688/gs")
    if not exact_bf16:
        note += ("; not exact: no float32 G makes MLX's block scale fl(e4m3 * fl(G/2688)) "
                 "give the source's BF16 values for every scale byte used")
    elif not exact_f32:
        note += "; exact in BF16, not in float32"
    return NativeForm("nvfp4", 4, 16, _as_words(packed), np.ascontiguousarray(scale_bytes),
                      None, chosen.reshape(gv.shape), "U8", exact_bf16, note,
                      details={"exact_f32": exact_f32, "global_op": global_op})


E4M3_FINITE_POSITIVE = np.arange(0x7F, dtype=np.uint8)   # 0x00 .. 0x7E (0x7F is NaN)


def nvfp4_global_scales(values: np.ndarray, global_op: str) -> tuple[np.ndarray, bool]:
    """MLX ``global_scale`` G per matrix for the source's global ``values`` (float32, one per
    matrix), chosen so that every finite positive E4M3 block scale byte gives the source's
    own BF16 products (``_nvfp4_global`` over all 127 bytes, not only the ones a tensor
    uses): decided from the global scales alone, before any block scale is read, and the
    same G whichever way the module is written. ``(G, exact)``; not exact: keep BF16."""
    values = np.array(values, np.float32)   # keeps a 0-d shape (ascontiguousarray does not)
    if not (np.isfinite(values).all() and (values > 0).all()):
        return values, False
    chosen = np.empty(values.shape, np.float32)
    exact = True
    for i, value in np.ndenumerate(values):
        g, _, bf16_ok = _nvfp4_global(np.float32(value), global_op, E4M3_FINITE_POSITIVE)
        chosen[i] = g
        exact &= bf16_ok
    return chosen, exact


def nvfp4_block_scales(scale_bytes: np.ndarray, global_value, global_op: str) -> np.ndarray:
    """The source's effective float32 block scale per E4M3 byte (both writers compute it in
    float32 before the product with the code)."""
    e4m3 = table("e4m3")[np.asarray(scale_bytes, np.uint8)]
    g = np.float32(global_value)
    return (e4m3 * g if global_op == "multiply" else e4m3 / g).astype(np.float32)


def mlx_nvfp4_block_scales(scale_bytes: np.ndarray, global_scale) -> np.ndarray:
    """MLX's effective float32 block scale: ``float(e4m3) * fl32(G / 2688)`` (``mlx/ops.cpp``
    fallback and ``fp_quantized.h``; the tests hold this against ``mx.dequantize``)."""
    ratio = np.float32(np.float32(global_scale) / np.float32(NVFP4_GLOBAL_UNIT))
    return (table("e4m3")[np.asarray(scale_bytes, np.uint8)] * ratio).astype(np.float32)


def _nvfp4_global(value: np.float32, op: str, used: np.ndarray):
    """(G, exact in float32, exact in BF16) for one matrix. G must reproduce the source's
    block scale for every used byte; candidates: the rounded ideal G and its 4 neighbours."""
    unit = np.float32(NVFP4_GLOBAL_UNIT)
    ideal = np.float32(value * unit) if op == "multiply" else np.float32(unit / value)
    target = nvfp4_block_scales(used, value, op)
    e2m1 = table("e2m1")
    want = f32_to_bf16((e2m1[None, :] * target[:, None]).astype(np.float32))
    down, up = [ideal], [ideal]
    for _ in range(2):
        down.append(np.nextafter(down[-1], np.float32(0)))
        up.append(np.nextafter(up[-1], np.float32(np.inf)))
    candidates = [ideal, down[1], up[1], down[2], up[2]]      # nearest first
    best = None
    for g in candidates:
        got = mlx_nvfp4_block_scales(used, g)
        if np.array_equal(got.view(np.uint32), target.view(np.uint32)):
            return g, True, True
        if best is None and np.array_equal(
                f32_to_bf16((e2m1[None, :] * got[:, None]).astype(np.float32)), want):
            best = g
    return (best, False, True) if best is not None else (ideal, False, False)


def _bytes(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim < 2:
        raise ValueError(f"{what} must be uint8 [..., out, cols], got {a.dtype} {a.shape}")
    return a


def _expect(a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(a.shape)}, expected {tuple(shape)}")


def _as_words(a: np.ndarray) -> np.ndarray:
    """uint8 ``[..., n]`` -> uint32 ``[..., n/4]``, little-endian as MLX and safetensors."""
    return np.ascontiguousarray(a).view("<u4")
