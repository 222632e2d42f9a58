"""Classify every tensor of a bundle: which weights are quantized, their scale companion
(any shard, any naming), the scheme and geometry; what else is a scale, an activation scale,
a marker, an orphan. A weight is quantized iff it has a sibling scale whose dtypes fit: never
by element size alone (that misfires on int8/uint8 tensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from ..errors import ScalefixError
from . import conventions, declared, int_weights
from .bundle import Bundle
from .config import QuantConfig, ignored_by, read_quant_config
from .dtypes import FLOAT_PLAIN, FP8_WEIGHT, PACKED_FP4, SCALE_DTYPES
from .geometry import Geometry, GeometryError, tile
from .header import TensorInfo

WEIGHT_CODECS = {"F8_E4M3": "e4m3", "F8_E5M2": "e5m2", "I8": "e2m1", "U8": "e2m1", "F4": "e2m1"}
SCALE_CODECS = {"F32": "f32", "BF16": "bf16", "F16": "f16", "F8_E8M0": "e8m0", "U8": "e8m0",
                "F8_E4M3": "e4m3"}
MX_BLOCK = 32   # OCP MX: one E8M0 scale per 32 elements, whatever the element type

ROLES = ("plain", "quantized", "scale", "quant_param", "activation_scale", "marker",
         "orphan_scale", "fp8_without_scale", "unsupported")


@dataclass(frozen=True)
class QuantizedWeight:
    """A quantized weight, its scale, and everything needed to decode it (docs/formats.md §1)."""

    weight: TensorInfo
    scale: TensorInfo
    naming: str               # scale naming convention, e.g. "weight_scale_inv"
    codec: str                # "e4m3" | "e5m2" | "e2m1"
    scale_codec: str          # "f32" | "bf16" | "f16" | "e8m0" | "e4m3"
    shape: tuple[int, ...]    # logical, dequantized shape
    geometry: Geometry
    packing: str | None = None  # "low-first" | "high-first" for two FP4 codes per byte
    output_name: str = ""
    # NVFP4's second-level scale: ModelOpt ``weight_scale_2`` multiplies the block scales,
    # compressed-tensors ``weight_global_scale`` divides them (docs/formats.md §8)
    global_scale: TensorInfo | None = None
    global_op: str = ""       # "multiply" | "divide"

    @property
    def side_tensors(self) -> tuple[TensorInfo, ...]:
        """Every tensor besides the weight that decoding reads (dropped once applied)."""
        return (self.scale,) if self.global_scale is None else (self.scale, self.global_scale)

    @property
    def name(self) -> str:
        return self.weight.name

    @cached_property  # asked once per weight by every report row: computed once
    def scheme(self) -> str:
        """The name reports show, as the family's scheme module gives it."""
        from .schemes import family_of
        return family_of(self).display(self)

    @property
    def cross_shard(self) -> bool:  # a shard's tensors share one Path: identity first
        return self.weight.file is not self.scale.file and self.weight.file != self.scale.file


@dataclass
class Finding:
    severity: str   # "problem" | "warning" | "info"
    code: str
    message: str


@dataclass
class Classification:
    bundle: Bundle
    quant_config: QuantConfig
    quantized: dict[str, QuantizedWeight] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)   # orphan / unsupported: why
    findings: list[Finding] = field(default_factory=list)
    declared: dict = field(default_factory=dict)   # layer -> its per-layer Declaration
    checkpoint_declaration: object = None          # quant_method & co., once claimed

    def named(self, role: str) -> list[str]:
        return [n for n, r in self.roles.items() if r == role]


def classify(bundle: Bundle, *, nibble_order: str = "low-first") -> Classification:
    """Roles of every tensor; one pass per step, each tensor looked at a constant number of
    times (DeepSeek-V3 has ~90k tensors). The declaration decides (``declared``): layers
    their files declare are claimed first, by their scheme; the name rules fill in the rest;
    the checkpoint-wide declaration's scheme then checks and completes the result."""
    qc = read_quant_config(bundle.config, bundle.hf_quant_config)
    result = Classification(bundle, qc)
    tensors, roles = bundle.tensors, result.roles
    for name in tensors:
        roles[name] = ("marker" if conventions.marker(name) else
                       "activation_scale" if conventions.activation_scale(name) else "plain")
    declared.claim_layers(result)
    int_found, int_bad = int_weights.claim(tensors, roles, qc)
    result.quantized.update(int_found)
    for name, why in int_bad.items():
        _mark(result, name, "unsupported", why)
    scale_like = conventions.SCALE_SUFFIXES  # a name no rule can match is not a scale
    for name, info in tensors.items():
        if roles[name] == "plain" and name.endswith(scale_like):
            _pair_scale(result, name, info, nibble_order)
    for name, info in tensors.items():
        if roles[name] == "plain" and info.dtype in FP8_WEIGHT:
            roles[name] = "fp8_without_scale"
    declared.claim_checkpoint(result)
    _refuse_other_mx(result)
    _cross_check(result)
    return result


def _pair_scale(result: Classification, name: str, scale: TensorInfo, nibble_order: str) -> None:
    tensors = result.bundle.tensors
    for rule, weight_key in conventions.scale_candidates(name):
        weight = tensors.get(weight_key)
        if weight is None or weight_key == name:
            continue
        if result.roles.get(weight_key) == "quantized":
            other = result.quantized[weight_key].scale.name
            raise ScalefixError(f"two scale companions ({other!r} and {name!r})",
                                file=weight.file, tensor=weight_key)
        looks_quantized = weight.dtype in FP8_WEIGHT or weight.dtype in PACKED_FP4
        if not rule.strict and not (looks_quantized and scale.dtype in SCALE_DTYPES):
            return  # e.g. a plain "<m>.scale" parameter beside a float weight
        if weight.dtype in FLOAT_PLAIN:
            _mark(result, name, "orphan_scale",
                  f"beside unquantized {weight.dtype} weight {weight_key!r}")
            return
        if scale.dtype not in SCALE_DTYPES or not looks_quantized:
            _unsupported(result, weight, scale, f"{weight.dtype} weight with {scale.dtype} scale")
            return
        qw = _quantized(result, rule.naming, weight, scale, nibble_order)
        if qw is None:
            return
        result.quantized[weight_key] = qw
        result.roles[weight_key] = "quantized"
        for side in qw.side_tensors:
            result.roles[side.name] = "scale"
        return
    candidates = list(conventions.scale_candidates(name))
    if candidates and (any(rule.strict for rule, _ in candidates) or scale.dtype == "F8_E8M0"):
        _mark(result, name, "orphan_scale", f"no weight {candidates[0][1]!r} in the bundle")


def _mark(result: Classification, name: str, role: str, why: str) -> None:
    result.roles[name] = role
    result.reasons[name] = why


def _unsupported(result: Classification, weight: TensorInfo, scale: TensorInfo, why: str) -> None:
    """A quantized pair scalefix cannot decode: both tensors flagged, never treated as plain."""
    _mark(result, weight.name, "unsupported", f"{why} (scale {scale.name!r})")
    _mark(result, scale.name, "unsupported", f"scale of {weight.name!r}: {why}")


def _quantized(result: Classification, naming: str, weight: TensorInfo, scale: TensorInfo,
               nibble_order: str) -> QuantizedWeight | None:
    codec = WEIGHT_CODECS[weight.dtype]
    scale_codec = SCALE_CODECS[scale.dtype]
    packing = None
    preferred = result.quant_config.block_size
    if naming == "_blocks/_scales":
        if weight.dtype != "U8" or scale.dtype not in ("U8", "F8_E8M0") or len(weight.shape) < 2 \
                or weight.shape[-1] != 16 or tuple(weight.shape[:-1]) != tuple(scale.shape):
            raise ScalefixError(
                f"MXFP4 blocks {list(weight.shape)} {weight.dtype} do not match scales "
                f"{list(scale.shape)} {scale.dtype} (want [..., G, 16] U8 and [..., G])",
                file=weight.file, tensor=weight.name)
        shape = tuple(weight.shape[:-2]) + (weight.shape[-2] * 32,)
        scale_view = tuple(scale.shape[:-1]) + (scale.shape[-1],)
        packing, preferred = nibble_order, None
    elif codec == "e2m1":
        if scale_codec not in ("e8m0", "e4m3"):
            _unsupported(result, weight, scale, f"{weight.dtype} weight with {scale.dtype} scale")
            return None
        shape = tuple(weight.shape) if weight.dtype == "F4" else \
            tuple(weight.shape[:-1]) + (weight.shape[-1] * 2,)
        scale_view = tuple(scale.shape)
        packing, preferred = nibble_order, None
    else:
        shape = tuple(weight.shape)
        scale_view = tuple(scale.shape)
    if scale_codec == "e4m3" and codec != "e2m1":
        raise ScalefixError(f"FP8 scale {scale.name!r} on an FP8 weight is not a known format",
                            file=weight.file, tensor=weight.name)
    try:
        geometry = _tile(shape, scale_view, preferred)
    except GeometryError as exc:
        where = weight.file if weight.file == scale.file else f"{weight.file} + {scale.file.name}"
        raise ScalefixError(f"{exc} (scale {scale.name!r})", file=where,
                            tensor=weight.name) from None
    if codec == "e2m1" and (geometry.block[0] != 1 or geometry.shape[-1] % geometry.block[1]):
        raise ScalefixError(
            f"FP4 scale {list(scale.shape)} must hold one value per row and group of columns "
            f"of weight {list(shape)}", file=weight.file, tensor=weight.name)
    global_scale, global_op = None, ""
    if scale_codec == "e4m3":  # NVFP4: the block scales mean nothing without the global one
        found = _nvfp4_global_scale(result, weight, shape)
        if found is None:
            return None
        global_scale, global_op = found
    return QuantizedWeight(weight, scale, naming, codec, scale_codec, shape, geometry, packing,
                           conventions.dequantized_name(weight.name), global_scale, global_op)


def _nvfp4_global_scale(result: Classification, weight: TensorInfo, shape: tuple[int, ...]):
    """(tensor, "multiply" | "divide") for an NVFP4 weight, or None once flagged unsupported.
    One float per tensor, or one per stacked expert."""
    stem = conventions.module_of(weight.name)
    tensors = result.bundle.tensors
    found = [(tensors[stem + suffix], op) for suffix, op in conventions.NVFP4_GLOBAL_SCALES
             if stem + suffix in tensors]
    if not found:
        names = " or ".join(repr(stem + s) for s, _ in conventions.NVFP4_GLOBAL_SCALES)
        _mark(result, weight.name, "unsupported",
              f"NVFP4 block scales (F8_E4M3) without the global scale {names}")
        return None
    if len(found) > 1:
        raise ScalefixError(f"two NVFP4 global scales ({found[0][0].name!r} and "
                            f"{found[1][0].name!r})", file=weight.file, tensor=weight.name)
    info, op = found[0]
    lead = tuple(shape[:-2])
    if info.dtype not in ("F32", "BF16", "F16") or (
            info.numel != 1 and tuple(d for d in info.shape if d != 1) != lead):
        raise ScalefixError(f"NVFP4 global scale {info.name!r} is {info.dtype} "
                            f"{list(info.shape)}: want one float per tensor"
                            + (f" or per expert {list(lead)}" if lead else ""),
                            file=info.file, tensor=weight.name)
    return info, op


# A checkpoint repeats a handful of (weight, scale) shapes thousands of times; Geometry is
# immutable, so one per distinct shape pair is shared.
_tile = lru_cache(maxsize=4096)(tile)


def _refuse_other_mx(result: Classification) -> None:
    """Names alone pair bytes with E8M0 scales as FP4. Only the group width tells MXFP4 (32
    codes a scale) from MXFP6, or MXFP8 stored as U8, which would decode as FP4 in groups of
    48 or 64: wrong values with no error. Runs after the declaration's scheme has judged (its
    refusal names the declared format), on what the name rules alone decided."""
    for q in result.quantized.values():
        if isinstance(q, QuantizedWeight) and q.codec == "e2m1" and q.scale_codec == "e8m0" \
                and q.geometry.block[1] != MX_BLOCK:
            raise ScalefixError(
                f"{q.weight.dtype} codes with E8M0 scale {list(q.scale.shape)} read as FP4 "
                f"give groups of {q.geometry.block[1]} values, but MXFP4 has {MX_BLOCK}: "
                "another MX type (MXFP6? MXFP8 stored as bytes?) that scalefix does not "
                "decode; nothing done", file=q.weight.file, tensor=q.weight.name)


def _cross_check(result: Classification) -> None:
    qc, findings = result.quant_config, result.findings
    quantized = result.quantized.values()
    if result.checkpoint_declaration is not None and not result.quantized:
        findings.append(Finding(
            "problem", "stale-quantization-config",
            f"{qc.where} announces quant_method {qc.method!r} but no tensor has a scale: a "
            "converted checkpoint whose config was left behind, or scales that were dropped"))
    if result.quantized and qc.where is None and any(
            q.naming not in ("weight_scale", "scale_weight") for q in quantized):
        findings.append(Finding("info", "no-quantization-config",
                                "quantized tensors found but no quantization_config in config"))
    if qc.block_size:
        odd = sorted({q.geometry.block for q in quantized if q.geometry.granularity == "block"
                      and q.geometry.block != qc.block_size})
        if odd:
            findings.append(Finding(
                "warning", "block-size-mismatch",
                f"config weight_block_size {list(qc.block_size)}, but scales tile blocks "
                f"{', '.join(str(list(b)) for b in odd)}: the shapes win"))
    if qc.ignore:
        listed = [q.name for q in quantized
                  if ignored_by(q.name.rsplit(".", 1)[0], qc.ignore)]
        if listed:
            findings.append(Finding(
                "warning", "ignored-but-scaled",
                f"{len(listed)} weight(s) named by the config's ignore list carry scales and are "
                f"treated as quantized (sibling scales win), e.g. {listed[0]!r}"))
    if result.bundle.unindexed_shards:
        findings.append(Finding(
            "warning", "unindexed-shards",
            f"shard(s) beside the index that it does not name (loaders ignore them): "
            f"{', '.join(result.bundle.unindexed_shards[:3])}"))
    if result.bundle.unindexed:
        findings.append(Finding(
            "warning", "unindexed-tensors",
            f"{len(result.bundle.unindexed)} tensor(s) in shards but not in the index (loaders "
            f"ignore them), e.g. {result.bundle.unindexed[0]!r}"))
