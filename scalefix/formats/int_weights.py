"""Integer-coded weights with group scales: which tensors form one, and its geometry
(docs/formats.md §9-§12). Decoding lives in ``int_codes``.

Families, each found by its own tensor names and dtypes (the config only breaks ties):

- compressed-tensors ``pack-quantized``: ``weight_packed`` I32 holding ``q + 2^(b-1)``
  low bits first (dense across words since compressed-tensors #715; ``32 // b`` codes per
  word before it), ``weight_scale``, ``weight_shape``, optional ``weight_zero_point``
  (packed along dim 0, or unpacked int) and ``weight_g_idx``.
- compressed-tensors ``int-quantized`` / ``naive-quantized``: ``weight`` I8 + float scale.
- GPTQ v1: ``qweight`` I32 [in*b/32, out] packed along the input, ``qzeros`` storing
  ``z - 1`` (``gptq_v2``: ``z``), ``scales`` [G, out], ``g_idx`` [in].
- AWQ GEMM: ``qweight`` I32 [in, out/8] packed along the output in the order
  0,2,4,6,1,3,5,7, ``qzeros`` likewise, ``scales`` [G, out].

Every one decodes as ``(q - z) * s``: integer subtraction, then one float32 product.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

from ..errors import ScalefixError
from .geometry import Geometry, GeometryError, tile
from .header import TensorInfo

# numpy and the tensor reader are imported where data is read: ``import scalefix.formats``
# stays light (test_cli), and most bundles hold no integer weights.

FLOAT_SCALES = {"F32": "f32", "BF16": "bf16", "F16": "f16"}
# (family, weight suffix, scale suffix, zero suffix, g_idx suffix, shape suffix)
CT_PACKED = (".weight_packed", ".weight_scale", ".weight_zero_point", ".weight_g_idx",
             ".weight_shape")
CT_INT8 = (".weight", ".weight_scale", ".weight_zero_point", ".weight_g_idx", None)
GPTQ_AWQ = (".qweight", ".scales", ".qzeros", ".g_idx", None)
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)   # nibble i of an AWQ word holds element AWQ_ORDER[i]


@dataclass(frozen=True)
class IntWeight:
    """An integer-coded weight and everything that decodes it."""

    weight: TensorInfo
    scale: TensorInfo
    zero: TensorInfo | None
    g_idx: TensorInfo | None
    shape_tensor: TensorInfo | None
    layout: str               # "ct-dense" | "ct-per-word" | "int8" | "gptq" | "awq"
    bits: int
    group: int                # input columns per scale (== in for channel / tensor)
    shape: tuple[int, ...]    # logical [*lead, out, in]
    geometry: Geometry        # scale [*lead, out, G] over ``shape``, block (1, group)
    zero_offset: int = 0      # added to stored zeros (GPTQ v1 stores z - 1)
    output_name: str = ""
    naming: str = ""
    trivial_g_idx: bool = True
    codec = "int"             # never an FP element codec: FP-only paths skip it
    packing = None
    global_scale = None

    @property
    def name(self) -> str:
        return self.weight.name

    @property
    def scale_codec(self) -> str:
        return FLOAT_SCALES[self.scale.dtype]

    @property
    def side_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(t for t in (self.scale, self.zero, self.g_idx, self.shape_tensor) if t)

    @property
    def row_major(self) -> bool:
        """Stored rows are output rows (streamable by row ranges); GPTQ / AWQ are not."""
        return self.layout not in ("gptq", "awq")

    @cached_property
    def scheme(self) -> str:
        """The name reports show, as the family's scheme module gives it."""
        from .schemes import family_of
        return family_of(self).display(self)

    @property
    def cross_shard(self) -> bool:
        return any(t.file != self.weight.file for t in self.side_tensors)


class NotThisFamily(Exception):
    """The tensors do not form this family after all: the caller reports why."""


def claim(tensors: dict[str, TensorInfo], roles: dict[str, str], qconfig) -> tuple[
        dict[str, IntWeight], dict[str, str]]:
    """Integer weights of a bundle: (weights by name, unsupported weight -> reason).
    Marks roles: the weight "quantized", its scale "scale", the rest "quant_param"."""
    prefs = _config_prefs(qconfig)
    found: dict[str, IntWeight] = {}
    bad: dict[str, str] = {}
    shape_tensors = [tensors[n] for n in tensors if n.endswith(".weight_shape")
                     and tensors[n].dtype in ("I64", "I32") and tensors[n].numel <= 8]
    shapes = _read_ints(shape_tensors) if shape_tensors else {}
    for name, info in tensors.items():
        if roles.get(name) != "plain":
            continue  # claimed by a declaration (or a marker)
        if info.dtype == "I32" and name.endswith(".weight_packed"):
            suffixes = CT_PACKED
        elif info.dtype == "I8" and name.endswith(".weight"):
            suffixes = CT_INT8
        elif info.dtype == "I32" and name.endswith(".qweight"):
            suffixes = GPTQ_AWQ
        else:
            continue
        stem = name[: -len(suffixes[0])]
        sides = [tensors.get(stem + s) if s else None for s in suffixes[1:]]
        scale = sides[0]
        if scale is None or scale.dtype not in FLOAT_SCALES:
            if suffixes is CT_INT8:
                continue  # an int8 tensor with no float scale: plain (or an FP4 layout)
            bad[name] = (f"{info.dtype} codes without a float scale {stem + suffixes[1]!r}"
                         if scale is None else
                         f"{info.dtype} codes with a {scale.dtype} scale {scale.name!r}")
            continue
        try:
            if suffixes is GPTQ_AWQ:
                weight = _gptq_awq(info, *sides[:3], prefs)
            else:
                weight = _compressed_tensors(info, *sides, shapes, prefs,
                                             "ct" if suffixes is CT_PACKED else "int8")
        except NotThisFamily as exc:
            bad[name] = str(exc)
            continue
        found[name] = weight
        roles[name] = "quantized"
        roles[scale.name] = "scale"
        for side in weight.side_tensors[1:]:
            roles[side.name] = "quant_param"
    _read_g_idx(found)
    return found, bad


def _read_g_idx(found: dict[str, IntWeight]) -> None:
    """Whether each g_idx is the trivial ``i // group`` (act-order is data, not a header)."""
    with_g = [w for w in found.values() if w.g_idx is not None]
    values = _read_ints([w.g_idx for w in with_g], as_tuple=False) if with_g else {}
    for w in with_g:
        found[w.name] = replace(w, trivial_g_idx=validate_g_idx(w, values[w.g_idx.name]))


def _read_ints(infos, as_tuple: bool = True) -> dict:
    """name -> the values of small integer tensors (one open per file)."""
    import numpy as np

    from .tensor_data import read_raw_many

    dtypes = {i.name: {"I64": np.int64, "I32": np.int32}[i.dtype] for i in infos}
    out = {}
    for name, raw in read_raw_many(infos).items():
        values = raw.view(dtypes[name])
        out[name] = tuple(int(v) for v in values) if as_tuple else values
    return out


def _config_prefs(qconfig) -> dict:
    """What the config says about integer codes, when it says one thing for all of them."""
    summary = qconfig.summary if qconfig else {}
    prefs = {"method": qconfig.method if qconfig else None}
    for key in ("bits", "w_bit"):
        if isinstance(summary.get(key), int):
            prefs["bits"] = summary[key]
    for key in ("group_size", "q_group_size"):
        if isinstance(summary.get(key), int):
            prefs["group"] = summary[key]
    ints = [g for g in summary.get("config_groups", []) if g.get("type") == "int"]
    if len({g.get("num_bits") for g in ints}) == 1 and isinstance(ints[0].get("num_bits"), int):
        prefs["bits"] = ints[0]["num_bits"]
    if len({g.get("group_size") for g in ints}) == 1 and isinstance(ints[0].get("group_size"),
                                                                     int):
        prefs["group"] = ints[0]["group_size"]
    prefs["gptq_v2"] = summary.get("checkpoint_format") == "gptq_v2"
    return prefs


def _compressed_tensors(weight, scale, zero, g_idx, shape_tensor, shapes, prefs, kind):
    lead_out = tuple(weight.shape[:-1])
    if kind == "int8":
        bits, shape, layout = 8, tuple(weight.shape), "int8"
    else:
        if shape_tensor is None or shape_tensor.name not in shapes:
            raise NotThisFamily(f"packed codes without their weight_shape "
                                f"{weight.name[:-len('_packed')] + '_shape'!r}")
        shape = shapes[shape_tensor.name]
        if len(shape) != len(weight.shape) or tuple(shape[:-1]) != lead_out:
            raise NotThisFamily(f"weight_shape {list(shape)} does not match packed "
                                f"{list(weight.shape)}")
        bits, layout = _packing(shape[-1], weight.shape[-1], prefs.get("bits"))
    geometry = _geometry(weight, shape, scale, prefs.get("group"))
    if zero is not None:
        _check_zero(zero, kind, layout, bits, shape, scale)
    if g_idx is not None:
        if g_idx.dtype not in ("I32", "I64") or g_idx.shape != (shape[-1],):
            raise NotThisFamily(f"g_idx {g_idx.name!r} is {g_idx.dtype} {list(g_idx.shape)}: "
                                f"want one int per input column ({shape[-1]})")
    return IntWeight(weight, scale, zero, g_idx, shape_tensor, layout, bits,
                     geometry.block[1], shape, geometry, 0,
                     _output_name(weight.name), "compressed-tensors")


def _packing(cols: int, words: int, bits_hint: int | None) -> tuple[int, str]:
    """(bits, "ct-dense" | "ct-per-word") that give ``words`` int32 per row of ``cols``."""
    options = []
    for b in range(1, 9):
        if -(-cols * b // 32) == words:
            options.append((b, "ct-dense"))
        elif 32 % b and -(-cols // (32 // b)) == words:
            options.append((b, "ct-per-word"))
    if bits_hint is not None:
        options = [o for o in options if o[0] == bits_hint] or options
    if not options:
        raise NotThisFamily(f"{words} int32 words per row do not hold {cols} codes of 1-8 bits")
    return options[0]


def _geometry(weight, shape, scale, group_hint) -> Geometry:
    scale_shape = tuple(scale.shape)
    try:
        geo = tile(tuple(shape), scale_shape,
                   (1, group_hint) if group_hint and group_hint > 0 else None)
    except GeometryError as exc:
        raise NotThisFamily(f"{exc} (scale {scale.name!r})") from None
    if geo.block[0] != 1 and geo.granularity != "tensor":
        raise NotThisFamily(f"scale {list(scale.shape)} is not one value per row and group "
                            f"of columns of weight {list(shape)}")
    return geo


def _check_zero(zero, kind, layout, bits, shape, scale) -> None:
    lead, out = tuple(shape[:-2]), shape[-2]
    groups = scale.shape[-1] if scale.shape else 1
    per_word = {"ct-dense": -(-out * bits // 32), "ct-per-word": -(-out // (32 // bits)),
                "int8": out}[layout]
    packed_rows = lead + (per_word, groups)
    unpacked = lead + (out, groups)
    if zero.dtype == "I32" and tuple(zero.shape) == packed_rows and kind == "ct":
        return
    if zero.dtype in ("I8", "I32") and tuple(zero.shape) in (unpacked, tuple(scale.shape)):
        return
    raise NotThisFamily(f"zero point {zero.name!r} is {zero.dtype} {list(zero.shape)}: want "
                        f"I32 {list(packed_rows)} (packed) or int {list(unpacked)}")


def _gptq_awq(qweight, scales, qzeros, g_idx, prefs) -> IntWeight:
    method = prefs.get("method")
    if len(qweight.shape) != 2 or len(scales.shape) != 2:
        raise NotThisFamily(f"qweight {list(qweight.shape)} / scales {list(scales.shape)}: "
                            "want 2-D")
    rows, cols = qweight.shape
    groups, out = scales.shape
    looks_gptq = cols == out
    if method in ("gptq", "awq"):
        family = method
    else:
        family = "gptq" if looks_gptq else "awq"
    if family == "gptq":
        if not looks_gptq:
            raise NotThisFamily(f"GPTQ qweight {list(qweight.shape)} does not match scales "
                                f"{list(scales.shape)} (want [in*bits/32, out] and [G, out])")
        bits = prefs.get("bits") or (32 * rows // g_idx.shape[0] if g_idx is not None else 4)
        if bits not in (2, 4, 8):
            raise NotThisFamily(f"GPTQ {bits}-bit packing is not supported (2, 4 or 8 bits)")
        in_dim = rows * 32 // bits
    else:
        if out % cols or 32 * cols // out != 4:
            raise NotThisFamily(f"AWQ qweight {list(qweight.shape)} does not match scales "
                                f"{list(scales.shape)} (want [in, out/8] and [G, out], 4 bits)")
        bits, in_dim = 4, rows
    if qzeros is not None:
        want = (groups, out * bits // 32)
        if qzeros.dtype != "I32" or tuple(qzeros.shape) != want:
            raise NotThisFamily(f"qzeros {qzeros.name!r} is {qzeros.dtype} "
                                f"{list(qzeros.shape)}: want I32 {list(want)}")
    shape = (out, in_dim)
    hint = prefs.get("group")
    hint = in_dim if hint is not None and hint < 0 else hint  # GPTQ's -1: one group
    try:
        geometry = tile(shape, (out, groups), (1, hint) if hint else None)
    except GeometryError:
        raise NotThisFamily(f"{groups} scale rows for {in_dim} inputs do not fit group size "
                            f"{hint}") from None
    group = geometry.block[1]
    if g_idx is not None and (g_idx.dtype not in ("I32", "I64") or g_idx.shape != (in_dim,)):
        raise NotThisFamily(f"g_idx {g_idx.name!r} is {g_idx.dtype} {list(g_idx.shape)}: want "
                            f"one int per input ({in_dim})")
    offset = 1 if family == "gptq" and not prefs.get("gptq_v2") else 0
    return IntWeight(qweight, scales, qzeros, g_idx, None, family, bits, group, shape,
                     geometry, offset, _output_name(qweight.name), family)


def _output_name(weight_key: str) -> str:
    for suffix in (".weight_packed", ".qweight"):
        if weight_key.endswith(suffix):
            return weight_key[: -len(suffix)] + ".weight"
    return weight_key


def validate_g_idx(w: IntWeight, g_idx) -> bool:
    """True when ``g_idx`` is the trivial ``i // group`` (the codes are in input order);
    raises for an index outside the scale's groups."""
    groups = w.geometry.scale_shape[-1]
    if g_idx.size and (g_idx.min() < 0 or g_idx.max() >= groups):
        raise ScalefixError(f"g_idx holds group {int(g_idx.max())} (or a negative one); the "
                            f"scale has {groups} groups", file=w.g_idx.file, tensor=w.g_idx.name)
    import numpy as np
    return bool(np.array_equal(g_idx, np.arange(g_idx.size) // w.group))
