"""Decoding integer-coded weights (``int_weights.IntWeight``): unpack the codes, subtract the
zero point in integers, multiply by the group scale once in float32.

The bit layouts (docs/formats.md §10):

- dense (compressed-tensors since #715): code i of a row occupies bits ``i*b .. i*b+b-1`` of
  the row's little-endian int32 bitstream, crossing words where it must;
- per word (older compressed-tensors, GPTQ, AWQ): ``32 // b`` codes per word, code i at bit
  ``(i % (32 // b)) * b`` of word ``i // (32 // b)``. For 2, 4 and 8 bits the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ScalefixError
from .codecs import decode_scale
from .int_weights import AWQ_ORDER, IntWeight, validate_g_idx
from .tensor_data import read_raw

AWQ_UNPACK = np.argsort(AWQ_ORDER)   # element e sits in nibble AWQ_UNPACK[e]


def unpack(words: np.ndarray, count: int, bits: int, dense: bool = True) -> np.ndarray:
    """[n, W] int32 words -> [n, count] unsigned codes (uint8)."""
    words = np.ascontiguousarray(words).view(np.uint32)
    n = words.shape[0]
    if bits in (2, 4, 8):  # both packings agree: whole codes per byte, little-endian words
        per_byte = 8 // bits
        data = words.view(np.uint8).reshape(n, -1)
        shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
        codes = (data[:, :, None] >> shifts) & np.uint8((1 << bits) - 1)
        return codes.reshape(n, -1)[:, :count]
    i = np.arange(count)
    if dense:
        word, shift = (i * bits) // 32, (i * bits) % 32
    else:
        per = 32 // bits
        word, shift = i // per, (i % per) * bits
    padded = np.zeros((n, words.shape[1] + 1), dtype=np.uint64)
    padded[:, :-1] = words
    pairs = padded[:, word] | (padded[:, word + 1] << np.uint64(32))
    return ((pairs >> shift.astype(np.uint64)) & np.uint64((1 << bits) - 1)).astype(np.uint8)


@dataclass
class IntSide:
    """Everything but the codes, loaded once per weight: scale float32 [rows, G]; zero
    int32 [rows, G] (or one int for all); each input column's group."""

    scale: np.ndarray
    zero: np.ndarray | int
    col_group: np.ndarray


def _ints(info) -> np.ndarray:
    dtype = {"I8": np.int8, "I32": np.int32, "I64": np.int64}[info.dtype]
    return read_raw(info).view(dtype)


def _scale(w: IntWeight) -> np.ndarray:
    """The stored scale as float32, flat; non-finite values refused (``decode_scale``)."""
    return decode_scale(read_raw(w.scale), w.scale_codec, file=w.scale.file,
                        tensor=w.scale.name)


def _col_group(w: IntWeight) -> np.ndarray:
    """Each input column's scale group: ``g_idx`` (refused outside the groups), or
    ``i // group``."""
    if w.g_idx is not None:
        col_group = _ints(w.g_idx).astype(np.intp)
        validate_g_idx(w, col_group)
        return col_group
    return np.minimum(np.arange(w.shape[-1]) // w.group, w.geometry.scale_shape[-1] - 1)


def load_side(w: IntWeight) -> IntSide:
    scale = _scale(w)
    out = w.shape[-2]
    groups = w.geometry.scale_shape[-1]
    lead = int(np.prod(w.shape[:-2], dtype=np.int64))
    if w.layout in ("gptq", "awq"):
        scale = scale.reshape(groups, out).T.copy()
    scale = scale.reshape(-1, groups) if scale.size > 1 else scale.reshape(1, 1)
    half = 1 << (w.bits - 1)
    zero: np.ndarray | int
    if w.zero is None:
        zero = 0 if w.layout == "int8" else half
    elif w.layout in ("gptq", "awq"):
        stored = unpack(_ints(w.zero).reshape(groups, -1), out, w.bits)
        if w.layout == "awq":
            stored = stored.reshape(groups, -1, 8)[:, :, AWQ_UNPACK].reshape(groups, out)
        zero = stored.T.astype(np.int32) + w.zero_offset
    elif w.zero.dtype == "I32" and w.zero.shape[-2] != out:  # packed along the rows
        words = _ints(w.zero).reshape(lead, -1, groups)
        zero = np.concatenate([unpack(words[e].T, out, w.bits, w.layout == "ct-dense").T
                               for e in range(lead)]).astype(np.int32)
    else:  # unpacked, signed: shift into the codes' unsigned range (none for int8)
        zero = _ints(w.zero).astype(np.int32).reshape(-1, groups)
        if w.layout != "int8":
            zero = zero + half
    return IntSide(scale, zero, _col_group(w))


def check_side(w: IntWeight) -> None:
    """What ``load_side`` can refuse, without building the side: the scale decodes to finite
    values and ``g_idx`` stays within the scale's groups. The zero points' shapes were checked
    when the weight was classified, and every bit pattern of a packed zero point is a code,
    so they are not unpacked here: this runs on every weight before anything is written.
    The same two steps ``load_side`` takes, so the two cannot drift apart."""
    _scale(w)
    _col_group(w)


def codes_rows(w: IntWeight, raw_rows: np.ndarray) -> np.ndarray:
    """Stored rows of a row-major layout -> codes [n, in] (int8 signed for ``int8``)."""
    cols = w.shape[-1]
    if w.layout == "int8":
        return raw_rows.view(np.int8).reshape(-1, cols)
    words = raw_rows.view(np.int32).reshape(-1, w.weight.shape[-1])
    return unpack(words, cols, w.bits, w.layout == "ct-dense")


def codes_all(w: IntWeight, raw: np.ndarray) -> np.ndarray:
    """The whole weight's codes [out, in]: GPTQ and AWQ pack across output rows, so their
    rows only exist once the tensor is transposed."""
    if w.row_major:
        return codes_rows(w, raw)
    out, cols = w.shape
    words = raw.view(np.int32).reshape(w.weight.shape)
    if w.layout == "gptq":                   # [in*b/32, out]: packed along the input
        return unpack(words.T, cols, w.bits)
    codes = unpack(words, out, w.bits)       # AWQ [in, out/8]: packed along the output
    codes = codes.reshape(cols, -1, 8)[:, :, AWQ_UNPACK].reshape(cols, out)
    return np.ascontiguousarray(codes.T)


def decode_codes(w: IntWeight, codes: np.ndarray, side: IntSide, row_start: int) -> np.ndarray:
    """float32 [n, in] = (code - zero) * scale, for logical rows ``row_start ..``."""
    n = codes.shape[0]
    rows = slice(row_start, row_start + n)
    scale = side.scale if side.scale.shape[0] == 1 else side.scale[rows]
    if isinstance(side.zero, np.ndarray):
        zero = side.zero[rows][:, side.col_group]
    else:
        zero = side.zero
    centred = (codes.astype(np.int32) - zero).astype(np.float32)
    return centred * scale[:, side.col_group]


def check_stored_size(w: IntWeight) -> None:
    want = {"int8": 1}.get(w.layout, 4) * int(np.prod(w.weight.shape, dtype=np.int64))
    if w.weight.nbytes != want:
        raise ScalefixError(f"stored size {w.weight.nbytes} bytes does not match "
                            f"{w.weight.dtype} {list(w.weight.shape)}", file=w.weight.file,
                            tensor=w.name)


def canonical_side(w: IntWeight) -> tuple[np.ndarray, np.ndarray | None]:
    """Scale float32 ``[*lead, out, G]`` and zero point int32 of the same shape, or None for
    the symmetric ``2^(b-1)``, in the unsigned code range of ``canonical``: signed int8
    codes are shifted up by 128 together with their zero point, leaving ``q - z`` as is."""
    side = load_side(w)
    groups = w.geometry.scale_shape[-1]
    shape = tuple(w.shape[:-1]) + (groups,)
    rows = int(np.prod(shape[:-1], dtype=np.int64))
    shift = 128 if w.layout == "int8" else 0
    scale = np.ascontiguousarray(np.broadcast_to(side.scale, (rows, groups)).reshape(shape))
    if isinstance(side.zero, np.ndarray):
        zero = (side.zero + shift).astype(np.int32).reshape(shape)
    elif side.zero + shift == 1 << (w.bits - 1):
        zero = None
    else:
        zero = np.full(shape, side.zero + shift, np.int32)
    return scale, zero


def canonical(w: IntWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The weight as format-neutral integers, for re-encoding (``--to mlx``): unsigned codes
    uint8 ``[*lead, out, in]`` plus ``canonical_side``."""
    codes = codes_all(w, read_raw(w.weight))
    if w.layout == "int8":
        codes = (codes.astype(np.int16) + 128).astype(np.uint8)
    scale, zero = canonical_side(w)
    return codes.reshape(w.shape), scale, zero
