"""The one dequantize entry point (docs/formats.md §1).

``W = decode(Q) * S`` per block, in float32: the scale is upcast to float32 first, the
product is rounded to the output dtype once, at the end (round to nearest even). Weights are
processed as a [rows, cols] view so a caller can stream any row range of a huge tensor with
the same code that decodes a small one.
"""

from __future__ import annotations

import numpy as np

from ..errors import ScalefixError
from .classify import QuantizedWeight
from .codecs import decode, decode_scale, f32_to_bf16, table, unpack_fp4
from .int_codes import (check_side, check_stored_size, codes_all, codes_rows, decode_codes,
                        load_side)
from .int_weights import IntWeight
from .schemes import DeclaredWeight
from .tensor_data import read_raw, read_raw_many

OUT_DTYPES = {"bf16": "BF16", "f16": "F16", "f32": "F32"}  # CLI name -> safetensors name


def row_bytes(qw: QuantizedWeight | IntWeight) -> int | None:
    """Bytes of the stored weight per logical row; None when stored rows are not logical
    rows (GPTQ / AWQ pack across them: only the whole tensor decodes)."""
    if isinstance(qw, IntWeight):
        return qw.weight.nbytes // max(qw.geometry.rows, 1) if qw.row_major else None
    if isinstance(qw, DeclaredWeight):
        return None
    cols = qw.geometry.cols
    return cols // 2 if qw.codec == "e2m1" else cols


def load_scale(qw: QuantizedWeight, raw: np.ndarray | None = None) -> np.ndarray:
    """The scale as float32 [scale_rows, scale_cols] (or [1, 1] per tensor), validated.
    ``raw``: its stored bytes, when the caller read them already. For an integer weight:
    its ``IntSide`` (scale, zero point, column groups)."""
    if isinstance(qw, IntWeight):
        return load_side(qw)
    if isinstance(qw, DeclaredWeight):
        return declared_sides(qw)
    scale = qw.scale
    raw = read_raw(scale) if raw is None else raw
    values = decode_scale(raw, qw.scale_codec, file=scale.file, tensor=scale.name)
    if qw.global_scale is not None:
        values = _apply_global_scale(qw, values)
    view = qw.geometry.scale_shape
    return values.reshape(-1, view[-1]) if values.size > 1 else values.reshape(1, 1)


def declared_sides(qw: DeclaredWeight) -> dict[str, np.ndarray]:
    """role -> stored array of every side tensor of a registry-decoded weight (its stored
    dtype: BF16 as uint16 bits, F8 as uint8 codes)."""
    raw = read_raw_many(qw.sides.values())
    return {role: stored_view(info, raw[info.name]) for role, info in qw.sides.items()}


def stored_view(info, raw: np.ndarray) -> np.ndarray:
    view = raw.view(STORED_NUMPY.get(info.dtype, np.uint8))
    return view.reshape(info.shape) if info.shape else view.reshape(())


def _declared_values(qw: DeclaredWeight, raw_weight: np.ndarray, sides) -> np.ndarray:
    """float32 [rows, cols] from the scheme's exact decode."""
    values = qw.family.decode(qw, {"weight": stored_view(qw.weight, raw_weight), **sides})
    values = np.asarray(values, dtype=np.float32)
    if values.shape != tuple(qw.shape):
        raise ScalefixError(f"{qw.family.NAME} decoded {list(values.shape)}, expected "
                            f"{list(qw.shape)}", file=qw.weight.file, tensor=qw.name)
    return values.reshape(qw.geometry.rows, qw.geometry.cols)


def _apply_global_scale(qw: QuantizedWeight, values: np.ndarray) -> np.ndarray:
    """NVFP4's effective block scale, in float32 as both writers compute it before the
    product: ModelOpt ``float(weight_scale) * weight_scale_2``, compressed-tensors
    ``weight_scale / weight_global_scale``."""
    info = qw.global_scale
    codec = {"F32": "f32", "BF16": "bf16", "F16": "f16"}[info.dtype]
    g = decode_scale(read_raw(info), codec, file=info.file, tensor=info.name)
    if qw.global_op == "divide" and not g.all():
        raise ScalefixError("NVFP4 global scale is zero (it divides)", file=info.file,
                            tensor=info.name)
    per = values.reshape(g.size, -1)  # one global value per tensor or per stacked expert
    g = g.reshape(-1, 1)
    return (per * g if qw.global_op == "multiply" else per / g).reshape(values.shape)


def dequantize_rows(qw: QuantizedWeight, raw_rows: np.ndarray, scale: np.ndarray,
                    row_start: int) -> np.ndarray:
    """float32 [n, cols] for logical rows ``row_start ..`` given their stored bytes (the
    whole tensor's, for a weight whose ``row_bytes`` is None)."""
    if isinstance(qw, IntWeight):
        codes = codes_rows(qw, raw_rows) if qw.row_major else codes_all(qw, raw_rows)
        return decode_codes(qw, codes, scale, row_start)
    if isinstance(qw, DeclaredWeight):
        return _declared_values(qw, raw_rows, scale)
    geo = qw.geometry
    cols = geo.cols
    n = raw_rows.size // row_bytes(qw)
    raw_rows = raw_rows.reshape(n, row_bytes(qw))
    if qw.codec == "e2m1":
        values = unpack_fp4(raw_rows, qw.packing or "low-first")
    else:
        values = decode(raw_rows, qw.codec)
    if scale.size == 1:
        return values * scale.reshape(())
    bo, bi = geo.block
    rows = np.arange(row_start, row_start + n)
    scale_rows = (rows // geo.out_dim) * geo.scale_shape[-2] + (rows % geo.out_dim) // bo
    per_row = scale[scale_rows]                        # [n, scale_cols]
    if cols % bi == 0:
        return (values.reshape(n, cols // bi, bi) * per_row[:, :, None]).reshape(n, cols)
    return values * np.repeat(per_row, bi, axis=1)[:, :cols]


def encode(values: np.ndarray, out_dtype: str) -> np.ndarray:
    """float32 -> the output dtype's storage (bf16 as uint16 bits), rounded once."""
    if out_dtype == "bf16":
        return f32_to_bf16(values)
    if out_dtype == "f16":
        return values.astype(np.float16)
    if out_dtype == "f32":
        return values.astype(np.float32, copy=False)
    raise ValueError(f"unknown output dtype {out_dtype!r}")


def decode_rows(qw: QuantizedWeight, raw_rows: np.ndarray, scale: np.ndarray, row_start: int,
                out_dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """Encoded output [n, cols] for logical rows ``row_start ..``: the streaming entry point.

    ``out``, if given, is filled in place (the pipeline decodes straight into its output
    buffer). FP8 with block or tensor scales takes a lookup path: per scale value, the 256
    possible products ``float32(code) * scale`` are computed and rounded once, then each
    element is one gather. Every output is the same float32 product rounded the same way as
    in ``dequantize_rows``, so the two paths agree bit for bit (a test holds them together).
    """
    geo = qw.geometry
    if isinstance(qw, IntWeight):
        return _decode_int_rows(qw, raw_rows, scale, row_start, out_dtype, out)
    if isinstance(qw, DeclaredWeight):
        values = _declared_values(qw, raw_rows, scale)
        if out is None:
            return encode(values, out_dtype)
        out[...] = encode(values, out_dtype)
        return out
    n = raw_rows.size // row_bytes(qw)
    if out is None:
        out = np.empty((n, geo.cols), dtype=STORAGE[out_dtype])
    if qw.codec not in ("e4m3", "e5m2") or (scale.size > 1 and not _lookup_fits(geo, scale)):
        out[...] = encode(dequantize_rows(qw, raw_rows, scale, row_start), out_dtype)
        return out
    codes = raw_rows.reshape(n, geo.cols)
    values = table(qw.codec)
    if scale.size == 1:
        np.take(encode(values * scale.reshape(()), out_dtype), codes, out=out, mode="clip")
        return out
    bo, bi = geo.block
    out_dim = geo.out_dim
    # index = code + 256 * (column's block): one gather per element for any width, ragged
    # last block included. uint16 when it fits: np.take widens it to intp internally, in
    # cache, which measured faster than a uint8 + intp add.
    index_dtype = np.uint16 if scale.shape[1] <= 256 else np.intp
    col_offsets = (np.arange(geo.cols) // bi * 256).astype(index_dtype)
    step = max(1, GATHER_ELEMENTS // geo.cols)
    index = np.empty((min(step, n), geo.cols), dtype=index_dtype)
    r, end = row_start, row_start + n
    while r < end:  # rows that share one row of scales
        local = r % out_dim
        seg_end = min(end, r - local + min(out_dim, (local // bo + 1) * bo))
        scale_row = (r // out_dim) * geo.scale_shape[-2] + local // bo
        luts = encode(values[None, :] * scale[scale_row][:, None], out_dtype).ravel()
        for a in range(r - row_start, seg_end - row_start, step):  # cache-sized passes
            b = min(a + step, seg_end - row_start)
            idx = index[: b - a]
            np.add(codes[a:b], col_offsets, out=idx)
            np.take(luts, idx, out=out[a:b], mode="clip")
        r = seg_end
    return out


def _decode_int_rows(qw: IntWeight, raw: np.ndarray, side, row_start: int, out_dtype: str,
                     out: np.ndarray | None) -> np.ndarray:
    """Integer codes: unpacked once, decoded in cache-sized row blocks (a whole GPTQ / AWQ
    tensor arrives at once; its float32 never exists whole)."""
    codes = codes_rows(qw, raw) if qw.row_major else codes_all(qw, raw)
    n, cols = codes.shape
    if out is None:
        out = np.empty((n, cols), dtype=STORAGE[out_dtype])
    step = max(1, GATHER_ELEMENTS * 4 // max(cols, 1))
    for a in range(0, n, step):
        b = min(n, a + step)
        out[a:b] = encode(decode_codes(qw, codes[a:b], side, row_start + a), out_dtype)
    return out


def row_reader(qw: QuantizedWeight | IntWeight):
    """``read(start, n) -> float32 [n, cols]``: the exact decode of any row range, reading
    only those rows' bytes where the layout allows it (verify's reference)."""
    side, per_row = load_scale(qw), row_bytes(qw)
    if isinstance(qw, DeclaredWeight):
        values = _declared_values(qw, read_raw(qw.weight), side)
        return lambda start, n: values[start:start + n]
    if per_row is None:
        codes = codes_all(qw, read_raw(qw.weight))
        return lambda start, n: decode_codes(qw, codes[start:start + n], side, start)
    return lambda start, n: dequantize_rows(
        qw, read_raw(qw.weight, start * per_row, n * per_row), side, start)


def validate(qw: QuantizedWeight | IntWeight) -> None:
    """Before writing anything: the stored size fits the shape, every side tensor decodes."""
    if isinstance(qw, IntWeight):
        check_stored_size(qw)
        check_side(qw)
        return
    if isinstance(qw, DeclaredWeight):
        check = getattr(qw.family, "validate", None)
        if check is not None:
            check(qw)
    elif qw.weight.nbytes != row_bytes(qw) * qw.geometry.rows:
        raise ScalefixError(f"stored size {qw.weight.nbytes} bytes does not match "
                            f"logical shape {list(qw.shape)}", file=qw.weight.file,
                            tensor=qw.name)
    load_scale(qw)


def _lookup_fits(geo, scale: np.ndarray) -> bool:
    """Block scales suit the lookup path: blocks wide enough to pay for their tables, and a
    scale column for every block of columns."""
    return geo.block[1] >= 16 and scale.shape[1] >= -(-geo.cols // geo.block[1])


# the numpy dtype that holds each output dtype (BF16 as its uint16 bits)
STORAGE = {"bf16": np.uint16, "f16": np.float16, "f32": np.float32}
# the numpy view of each stored safetensors dtype handed to a scheme's decode (BF16 as its
# uint16 bits, every 8-bit float as its uint8 codes)
STORED_NUMPY = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
                "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
                "U8": np.uint8, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8, "F8_E8M0": np.uint8,
                "BOOL": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64}
GATHER_ELEMENTS = 1 << 16  # elements per gather pass: index and output stay in L2


def dequantize(qw: QuantizedWeight, out_dtype: str = "bf16") -> np.ndarray:
    """The whole weight, dequantized, in its logical shape (bf16 returned as uint16 bits)."""
    validate(qw)
    return decode_rows(qw, read_raw(qw.weight), load_scale(qw), 0, out_dtype).reshape(qw.shape)


def dequantize_reference(qw: QuantizedWeight, out_dtype: str = "bf16") -> np.ndarray:
    """The plain float32 path (no lookup tables), kept to check ``decode_rows`` against."""
    values = dequantize_rows(qw, read_raw(qw.weight), load_scale(qw), 0)
    return encode(values, out_dtype).reshape(qw.shape)
