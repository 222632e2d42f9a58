"""ComfyUI-native quantized files: the formats ComfyUI itself writes and loads through
comfy-kitchen's layouts (comfy-kitchen 0.2.40; ComfyUI ``comfy/quant_ops.py`` ``QUANT_ALGOS``).

Declared per layer, never guessed from names: ``<layer>.comfy_quant`` (U8, UTF-8 JSON
``{"format": ..., ...}``) or the header's ``_quantization_metadata`` (``{"format_version":
"1.0", "layers": {layer: {"format": ...}}}``); both present must agree. The layer's tensors are
``<layer>.weight`` plus the layout's ``state_dict_tensors`` suffixes:

- ``float8_e4m3fn`` / ``float8_e5m2``: ``weight`` F8_E4M3 / F8_E5M2, ``weight_scale`` F32
  per tensor (0-d; ``[out, 1]`` per row also decodes). ``W = float32(code) * scale``.
- ``nvfp4``: ``weight`` U8 ``[R, C/2]``, two E2M1 codes a byte, **high nibble first** (the
  even column in bits 4-7); ``weight_scale`` F8_E4M3 block scales (one per 16 columns) in the
  cuBLAS 128x4 tiled layout, stored ``[roundup(R, 128), roundup(C/16, 4)]``, block ``(r, c)``
  at flat offset ``((r//128) * cols4 + c//4) * 512 + (r%32) * 16 + ((r%128)//32) * 4 + c%4``;
  ``weight_scale_2`` F32 0-d. ``W = e2m1(code) * (weight_scale_2 * e4m3(block))``, the
  product in float32 in that order, as comfy-kitchen's ``dequantize_nvfp4``.
- ``mxfp8``: ``weight`` F8_E4M3 ``[R, C]``, ``weight_scale`` F8_E8M0 (or U8) block scales (one
  per 32 columns), same tiling. comfy-kitchen decodes the E8M0 byte ``e`` as the float32 with
  bits ``e << 23``: ``0`` is 0 (OCP says 2^-127; it writes 0 for all-zero blocks), 255 would
  be infinity (refused here).
- ``int8_tensorwise``: ``weight`` I8, ``weight_scale`` F32 0-d (``[out, 1]`` per row);
  ``W = float32(q) * scale``.
- ``int8_blockwise`` (ComfyUI's QUANTIZATION.md; no comfy-kitchen layout writes it and current
  ComfyUI no longer lists it): ``weight`` I8 ``[N, K]``, ``weight_scale`` float ``[N/b, K/b]``
  with ``b`` = ``group_size`` of the declaration (else the one square block the shapes allow);
  ``W[i, j] = float32(q[i, j]) * scale[i // b, j // b]``.

**Refused**, in one line saying why: ``convrot_w4a4``, ``asym_w4a8_int8`` and
``int8_tensorwise`` with ``convrot``. Their weights are stored Hadamard-rotated and
comfy-kitchen undoes the rotation with a float32 matmul (``torch.matmul`` of the scaled codes
by ``H^T``) whose summation order, hence rounding, belongs to the BLAS kernel: torch 2.13's
MKL gives different bits on its default and its ``MKL_CBWR=COMPATIBLE`` code paths, numpy's
OpenBLAS others again (float32: most values differ in the last bits; a BF16 rounding of the
exactly summed product differs from comfy-kitchen's in about 1 value in 1300). No decode
matches "comfy-kitchen's dequantize" bit for bit because it is not one function; scalefix
does not approximate.
Also refused: ``pre_quant_scale`` (activation smoothing ComfyUI multiplies the input by: a
plain Linear has no place for it).

**Padding.** NVFP4 pads the weight to 16 x 16, MXFP8 to 32 x 32, with zeros, and comfy-kitchen
records the true shape nowhere in the file: ComfyUI takes it from the model (``Linear(in,
out)``). Here the rows come from ``<layer>.bias`` when there is one (the padded rows must hold
+0 codes), otherwise, like the columns, from the padding itself: trailing rows / columns
(fewer than the alignment) whose codes are +0 in every row are cropped; an all-zero tail as
wide as the alignment is kept (``params["shape_from"]`` says which). Values never depend on
it: a wrong width could only be a zero column, which a loader's shape check names.

Rounding: the decode is the float32 product, rounded once by the caller. ComfyUI at run time
(comfy-kitchen's dequantize with a BF16 compute dtype) multiplies NVFP4 in BF16 (the global
scale rounded to BF16, then two BF16 products): up to 1 BF16 ulp from scalefix's value on ~10%
of the weights; FP8, MXFP8 and INT8 agree bit for bit.

``input_scale`` (static activation scales) and ``comfy_quant`` are dropped; the bias stays.
Every output keeps ComfyUI's key ``<layer>.weight``. No MLX native form (exact BF16).
ComfyUI's ``awq_w4a16`` is not declared here: refused as a format scalefix does not decode.

Why one module of ~470 lines: the scheme registry wants one module per family
(``schemes/__init__.py``), and 65 of the lines are this layout reference, which the code
below follows section by section.
"""

from __future__ import annotations

import json
import os
import sys

from ...errors import ScalefixError
from . import Declaration, DeclaredWeight, Refusal

NAME = "comfy"
FP8 = {"float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
ROTATED = ("convrot_w4a4", "asym_w4a8_int8")
FORMATS = ("float8_e4m3fn", "float8_e5m2", "nvfp4", "mxfp8", "int8_tensorwise",
           "convrot_w4a4", "asym_w4a8_int8", "int8_blockwise")
DECLARATIONS = tuple(("comfy", f) for f in FORMATS)

MARKER = ".comfy_quant"
METADATA_KEY = "_quantization_metadata"
METADATA_VERSIONS = ("1.0",)
MAX_JSON_BYTES = 1 << 16
# what each format stores besides ``weight`` (read by decoding) and what it may carry that
# decoding does not read
SIDES = {"float8_e4m3fn": ("weight_scale",), "float8_e5m2": ("weight_scale",),
         "nvfp4": ("weight_scale", "weight_scale_2"), "mxfp8": ("weight_scale",),
         "int8_tensorwise": ("weight_scale",), "int8_blockwise": ("weight_scale",)}
DROPPED = ("input_scale",)
WEIGHT = {"float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "nvfp4": "U8",
          "mxfp8": "F8_E4M3", "int8_tensorwise": "I8", "int8_blockwise": "I8"}
# every tensor name a comfy-kitchen layout adds to a layer
LAYER_SUFFIXES = ("weight_scale", "weight_scale_2", "input_scale", "pre_quant_scale",
                  "weight_s_rel", "weight_s_channel", "weight_codebook", "weight_correction",
                  "weight_zeros")
ALIGN = {"nvfp4": 16, "mxfp8": 32}     # comfy-kitchen pads the weight to these
BLOCK = {"nvfp4": 16, "mxfp8": 32}     # columns per block scale
FLOAT_SCALES = ("F32", "BF16", "F16")


# --- declarations ---------------------------------------------------------------------------

def find_declarations(bundle) -> dict:
    """layer -> Declaration from ``<layer>.comfy_quant`` tensors and every shard's header
    ``_quantization_metadata``; malformed or disagreeing declarations are refused."""
    from ..tensor_data import read_raw_many
    found: dict[str, Declaration] = {}
    markers = [info for name, info in bundle.tensors.items() if name.endswith(MARKER)]
    for info in markers:
        if info.dtype not in ("U8", "I8") or len(info.shape) != 1 or \
                not 0 < info.nbytes <= MAX_JSON_BYTES:
            raise Refusal(f"layer {info.name[:-len(MARKER)]!r}: comfy_quant is {info.dtype} "
                          f"{list(info.shape)}, not U8 JSON; nothing done", file=info.file,
                          tensor=info.name)
    raw = read_raw_many(markers) if markers else {}
    for info in markers:
        layer = info.name[: -len(MARKER)]
        conf = _json(bytes(raw[info.name]), f"layer {layer!r}: comfy_quant", info.file,
                     info.name)
        found[layer] = _declaration(layer, conf, f"{layer}.comfy_quant", info.file)
    in_header: dict[str, tuple] = {}
    for path, header in bundle.headers.items():
        text = header.metadata.get(METADATA_KEY)
        if text is None:
            continue
        doc = _json(text.encode("utf-8", "surrogatepass"), f"header {METADATA_KEY}", path)
        version = doc.get("format_version")
        layers = doc.get("layers")
        if version is not None and version not in METADATA_VERSIONS:
            raise Refusal(f"header {METADATA_KEY} has format_version {version!r}, scalefix "
                          f"reads {', '.join(METADATA_VERSIONS)}; nothing done", file=path)
        if not isinstance(layers, dict):
            raise Refusal(f"header {METADATA_KEY} has no \"layers\" object; nothing done",
                          file=path)
        for layer, conf in layers.items():
            if layer in in_header and in_header[layer][0] != conf:
                raise Refusal(f"layer {layer!r}: the headers of two shards declare it "
                              "differently in _quantization_metadata; nothing done", file=path)
            in_header[layer] = (conf, path)
    for layer, (conf, path) in in_header.items():
        declared = _declaration(layer, conf, f"header {METADATA_KEY}", path)
        mine = found.get(layer)
        if mine is None:
            found[layer] = declared
            continue
        clash = sorted(k for k in set(mine.params) & set(declared.params)
                       if mine.params[k] != declared.params[k])
        if clash:
            key = clash[0]
            raise Refusal(f"layer {layer!r}: {layer}.comfy_quant says {key} "
                          f"{mine.params[key]!r}, header {METADATA_KEY} says "
                          f"{declared.params[key]!r}; nothing done", file=path)
        found[layer] = Declaration("comfy", mine.value, f"{mine.where} + {declared.where}",
                                   {**declared.params, **mine.params})
    return found


def _json(data: bytes, what: str, file, tensor=None) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise Refusal(f"{what} is not JSON ({reason}); nothing done", file=file,
                      tensor=tensor) from None
    if not isinstance(doc, dict):
        raise Refusal(f"{what} is not a JSON object; nothing done", file=file, tensor=tensor)
    return doc


def _declaration(layer: str, conf, where: str, file) -> Declaration:
    if not isinstance(conf, dict):
        raise Refusal(f"layer {layer!r}: {where} is not a JSON object; nothing done", file=file)
    fmt = conf.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise Refusal(f"layer {layer!r}: {where} names no format; nothing done", file=file)
    nested = conf.get("params")
    params = {**(nested if isinstance(nested, dict) else {}), **conf}
    params.pop("params", None)
    return Declaration("comfy", fmt, where, params)


# --- claim ----------------------------------------------------------------------------------

def claim(layer: str, tensors, declaration) -> DeclaredWeight:
    fmt = declaration.value
    said = f"layer {layer!r} declares {fmt} ({declaration.where})"
    weight = tensors.get(layer + ".weight")
    if weight is None:
        raise Refusal(f"{said}, but the file has no {layer}.weight; nothing done",
                      file=_any_file(tensors, layer))

    def refuse(what: str, tensor: str | None = None):
        raise Refusal(f"{said}, but {what}; nothing done", file=weight.file,
                      tensor=tensor or weight.name)

    params = dict(declaration.params)
    if fmt in ROTATED or (fmt == "int8_tensorwise" and params.get("convrot")):
        what = "int8_tensorwise with convrot" if fmt == "int8_tensorwise" else fmt
        raise Refusal(f"{said}: {what} is stored Hadamard-rotated and comfy-kitchen undoes the "
                      "rotation with a float32 matmul whose rounding depends on the CPU/GPU "
                      "kernel, so no decode matches its dequantize bit for bit; scalefix does "
                      "not approximate; nothing done", file=weight.file, tensor=weight.name)
    if fmt not in SIDES:
        raise Refusal(f"{said}: scalefix does not decode it; nothing done", file=weight.file,
                      tensor=weight.name)
    if weight.dtype != WEIGHT[fmt]:
        refuse(f"its weight is {weight.dtype}, not {WEIGHT[fmt]}"
               + (" (two E2M1 codes a byte)" if fmt == "nvfp4" else ""))
    present = {s: tensors[f"{layer}.{s}"] for s in LAYER_SUFFIXES if f"{layer}.{s}" in tensors}
    if "pre_quant_scale" in present:
        refuse("it carries pre_quant_scale (activation smoothing ComfyUI multiplies the input "
               "by), which a plain weight cannot hold")
    stray = [s for s in present if s not in SIDES[fmt] and s not in DROPPED]
    if stray:
        refuse(f"it carries {layer}.{stray[0]}, which {fmt} does not have")
    missing = [s for s in SIDES[fmt] if s not in present]
    if missing:
        refuse(f"{layer}.{missing[0]} is missing")
    sides = {s: present[s] for s in SIDES[fmt]}
    shape, params = _geometry(fmt, layer, tensors, weight, sides, params, refuse)
    dropped = tuple(present[s] for s in DROPPED if s in present)
    marker = tensors.get(layer + MARKER)
    if marker is not None:
        dropped += (marker,)
    params["format"] = fmt
    return DeclaredWeight(weight, sides, shape, sys.modules[__name__], declaration,
                          weight.name, params, dropped)


def _any_file(tensors, layer: str):
    for name, info in tensors.items():
        if name.startswith(layer + "."):
            return info.file
    return None


def _scalar(info, refuse, what: str = "a float32 scalar") -> None:
    if info.dtype not in FLOAT_SCALES or info.numel != 1:
        refuse(f"{info.name.rsplit('.', 1)[1]} is {info.dtype} {list(info.shape)}, not {what}",
               info.name)


def _geometry(fmt, layer, tensors, weight, sides, params, refuse):
    """(logical shape, params) with every stored size checked against the format."""
    shape = tuple(weight.shape)
    if len(shape) != 2 or not all(shape):
        refuse(f"weight is {weight.dtype} {list(shape)}, not a 2-D matrix")
    rows, cols = shape
    scale = sides["weight_scale"]
    if fmt in FP8 or fmt == "int8_tensorwise":
        if scale.dtype not in FLOAT_SCALES or not (
                scale.numel == 1 or tuple(scale.shape) == (rows, 1)):
            refuse(f"weight_scale is {scale.dtype} {list(scale.shape)}, not one float per "
                   f"tensor (or per row, [{rows}, 1])", scale.name)
        params["per_row"] = scale.numel != 1
        return shape, params
    if fmt == "int8_blockwise":
        return _blockwise(weight, scale, params, refuse)
    # nvfp4 / mxfp8: tiled block scales, padded weights
    if fmt == "nvfp4":
        cols *= 2
        if scale.dtype not in ("F8_E4M3", "U8"):
            refuse(f"weight_scale is {scale.dtype}, not F8_E4M3 block scales", scale.name)
        _scalar(sides["weight_scale_2"], refuse, "a float32 global scale")
    else:
        if scale.dtype not in ("F8_E8M0", "U8"):
            refuse(f"weight_scale is {scale.dtype}, not F8_E8M0 block scales", scale.name)
    block = BLOCK[fmt]
    if cols % block:
        refuse(f"its {cols} columns are not whole blocks of {block}")
    tile = (_roundup(rows, 128), _roundup(cols // block, 4))
    if tuple(scale.shape) != tile:
        refuse(f"weight_scale is {list(scale.shape)}: the 128x4 tiled (swizzled) block scales "
               f"of a [{rows}, {cols}] weight are {list(tile)}", scale.name)
    params.update(stored=(rows, cols), block=block)
    true_rows, true_cols, origin = _unpadded(fmt, layer, tensors, weight, rows, cols, refuse)
    params["shape_from"] = origin
    return (true_rows, true_cols), params


def _blockwise(weight, scale, params, refuse):
    rows, cols = weight.shape
    if scale.dtype not in FLOAT_SCALES or len(scale.shape) != 2:
        refuse(f"weight_scale is {scale.dtype} {list(scale.shape)}, not a 2-D float block grid",
               scale.name)
    group = params.get("group_size")
    if group is None:   # the declaration leaves it open: the one square block the shapes give
        sr, sc = scale.shape
        group = rows // sr if sr and rows % sr == 0 and sc and cols == rows // sr * sc else None
        if group is None:
            refuse(f"no group_size is declared and weight_scale {list(scale.shape)} does not "
                   f"tile [{rows}, {cols}] in square blocks")
    if not isinstance(group, int) or isinstance(group, bool) or group <= 0:
        refuse(f"group_size {group!r} is not a positive integer")
    if rows % group or cols % group or tuple(scale.shape) != (rows // group, cols // group):
        refuse(f"weight_scale is {list(scale.shape)}: blocks of {group} x {group} over "
               f"[{rows}, {cols}] want [{rows // group}, {cols // group}] (whole blocks)",
               scale.name)
    params["group_size"] = group
    return (rows, cols), params


def _roundup(n: int, m: int) -> int:
    return -(-n // m) * m


# --- padding ----------------------------------------------------------------------------------

def _unpadded(fmt, layer, tensors, weight, rows, cols, refuse):
    """(rows, cols, how) of the layer before comfy-kitchen padded it (see the module doc)."""
    align = ALIGN[fmt]
    row_bytes = weight.nbytes // rows
    bias = tensors.get(layer + ".bias")
    origin = []
    try:
        fh = open(weight.file, "rb")
    except OSError as exc:
        raise ScalefixError(f"cannot read: {exc.strerror or exc}", file=weight.file,
                            tensor=weight.name) from None
    with fh:
        fd = fh.fileno()

        def row(r: int, start: int = 0) -> bytes:
            return os.pread(fd, row_bytes - start, weight.offset + r * row_bytes + start)

        if bias is not None and len(bias.shape) == 1 and bias.shape[0] != rows:
            n = bias.shape[0]
            if not (n < rows and rows % align == 0 and rows - n < align):
                refuse(f"its bias has {n} entries and the weight stores {rows} rows "
                       f"(padding reaches the next multiple of {align})")
            if any(row(r).strip(b"\0") for r in range(n, rows)):
                refuse(f"its bias has {n} entries, but stored rows {n}..{rows - 1} are not "
                       "the zero padding")
            rows, origin = n, ["bias"]
        elif bias is None and rows % align == 0:
            zero = 0
            while zero < min(align, rows) and not row(rows - 1 - zero).strip(b"\0"):
                zero += 1
            if 0 < zero < align and zero < rows:
                rows, origin = rows - zero, ["zero padding"]
        if cols % align == 0:
            tail = _zero_tail(row, rows, row_bytes, fmt, align)
            if tail:
                cols, origin = cols - tail, origin + ["zero padding"]
    return rows, cols, " + ".join(dict.fromkeys(origin)) or "stored"


def _zero_tail(row, rows: int, row_bytes: int, fmt: str, align: int) -> int:
    """Trailing columns whose codes are +0 in every row, if fewer than ``align`` (else 0)."""
    width = align // 2 if fmt == "nvfp4" else align     # bytes holding the last align codes
    start = row_bytes - width
    tail = align
    for r in range(rows):
        data = row(r, start)
        if fmt == "nvfp4":   # high nibble first: the byte's low nibble is the later column
            codes = [n for b in data for n in (b >> 4, b & 0x0F)]
        else:
            codes = list(data)
        zeros = 0
        for code in reversed(codes):
            if code:
                break
            zeros += 1
        tail = min(tail, zeros)
        if tail == 0:
            return 0
    return 0 if tail >= align else tail


# --- decode -----------------------------------------------------------------------------------

def decode(weight: DeclaredWeight, arrays) -> "np.ndarray":
    import numpy as np
    fmt = weight.params["format"]
    rows, cols = weight.shape
    stored = arrays["weight"]
    if fmt in FP8:
        from ..codecs import table
        values = table("e4m3" if fmt == "float8_e4m3fn" else "e5m2")[
            np.asarray(stored).view(np.uint8)]
        return values * _scale(weight, arrays, "weight_scale", rows)
    if fmt == "int8_tensorwise":
        values = np.asarray(stored).view(np.int8).astype(np.float32)
        return values * _scale(weight, arrays, "weight_scale", rows)
    if fmt == "int8_blockwise":
        b = weight.params["group_size"]
        values = np.asarray(stored).view(np.int8).astype(np.float32)
        grid = _float(weight, arrays, "weight_scale")
        _finite(weight, grid, "weight_scale")
        return (values.reshape(rows // b, b, cols // b, b) * grid[:, None, :, None]
                ).reshape(rows, cols)
    return _blocked(weight, arrays, np)


def _blocked(weight, arrays, np):
    """NVFP4 / MXFP8: element codes times their unswizzled block scales, cropped."""
    fmt = weight.params["format"]
    rows, cols = weight.shape
    srows, scols = weight.params["stored"]
    block = weight.params["block"]
    packed = np.asarray(arrays["weight"]).view(np.uint8)[:rows]
    nb = -(-cols // block)                     # blocks that hold logical columns
    tile = np.asarray(arrays["weight_scale"]).view(np.uint8)
    grid = unswizzle(tile, rows, nb)
    if fmt == "nvfp4":
        from ..codecs import table
        nbytes = nb * block // 2
        codes = np.empty((rows, nbytes * 2), dtype=np.uint8)
        codes[:, 0::2] = packed[:, :nbytes] >> 4           # high nibble: the even column
        codes[:, 1::2] = packed[:, :nbytes] & 0x0F
        values = table("e2m1")[codes]
        g = _float(weight, arrays, "weight_scale_2").reshape(())
        block_scales = table("e4m3")[grid]
        _finite(weight, block_scales, "weight_scale")
        _finite(weight, g, "weight_scale_2")
        scales = g * block_scales                          # float32, as comfy-kitchen
    else:
        from ..codecs import table
        if (grid == 255).any():
            raise Refusal(f"layer {weight.name!r} mxfp8: an E8M0 block scale is 255 (comfy-"
                          "kitchen reads infinity); nothing done", file=weight.weight.file,
                          tensor=weight.scale.name)
        values = table("e4m3")[packed[:, :nb * block]]
        scales = (grid.astype(np.uint32) << 23).view(np.float32)   # 0 -> 0.0, as comfy-kitchen
    out = (values.reshape(rows, nb, block) * scales[:, :, None]).reshape(rows, nb * block)
    return out[:, :cols]


def unswizzle(tile, rows: int, cols: int):
    """The ``[rows, cols]`` block scales held in a cuBLAS 128x4 tiled ``tile``."""
    import numpy as np
    cols4 = tile.shape[1] // 4
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    offset = ((r // 128) * cols4 + c // 4) * 512 + (r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4
    return tile.reshape(-1)[offset]


def _float(weight, arrays, role):
    import numpy as np
    info = weight.sides[role]
    value = np.asarray(arrays[role])
    if info.dtype == "BF16":
        from ..codecs import bf16_to_f32
        return bf16_to_f32(value.view(np.uint16))
    return value.astype(np.float32, copy=False)


def _scale(weight, arrays, role, rows):
    values = _float(weight, arrays, role)
    _finite(weight, values, role)
    return values.reshape(rows, 1) if weight.params.get("per_row") else values.reshape(())


def _finite(weight, values, role) -> None:
    import numpy as np
    if not np.isfinite(values).all():
        raise Refusal(f"layer {weight.name!r} {weight.params['format']}: {role} holds NaN or "
                      "infinity; nothing done", file=weight.weight.file,
                      tensor=weight.sides[role].name)


def validate(weight) -> None:
    """Sizes were checked against the declared format when the layer was claimed."""


def mlx_form(weight) -> None:
    """Exact BF16 in MLX: no native form is proven for these layouts (MLX's nvfp4 / mxfp8
    read row-major scales and the low nibble first)."""
    return None


def display(weight) -> str:
    return f"comfy-{weight.params['format']}"
