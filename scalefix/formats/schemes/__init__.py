"""The scheme registry: one module per quantization family, listed in ``SCHEMES``.

Why: format knowledge spread over many modules made every new family touch a dozen files and
let a declared-but-unknown format pass as clean. A scheme owns, for its family:

- how it is **declared**: ``DECLARATIONS``, a tuple of ``(source, value)`` pairs it claims,
  with ``source`` one of ``"comfy"`` (ComfyUI ``<layer>.comfy_quant`` / header
  ``_quantization_metadata`` ``format``), ``"quant_method"`` (config.json /
  hf_quant_config.json), ``"ct_format"`` (compressed-tensors ``config_groups[*].format``),
  ``"quant_algo"`` (ModelOpt) or ``"quark"`` (Quark weight dtype / qscheme);
- which tensors form one weight and their roles: ``claim(layer, tensors, declaration)``
  returns a :class:`DeclaredWeight` (or raises :class:`Refusal` naming what is missing or
  contradicts the declaration);
- the geometry: the ``shape`` it puts on the weight (the logical, dequantized shape);
- the exact decode: ``decode(weight, arrays) -> float32 ndarray`` of ``weight.shape``, where
  ``arrays`` maps each role to the stored tensor as a numpy array of its stored dtype
  (BF16 as uint16 bits, F8 as uint8 codes); float32 product, rounded once by the caller;
- its MLX native form, if any: ``mlx_form(weight)`` -> ``None`` (exact BF16 in MLX) or a
  form name the MLX room knows;
- the name ``inspect`` shows: ``display(weight) -> str``.

Optional, as the family needs:

- ``find_declarations(bundle) -> dict[str, Declaration]``: per-layer declarations the family
  writes into the files themselves (ComfyUI), keyed by layer (module) name;
- ``claim_bundle(classification, declaration) -> None``: for a checkpoint-wide declaration
  (``quant_method`` ...): check that the tensors agree with it (raise :class:`Refusal`
  otherwise) and claim the weights the name rules cannot pair (put each in
  ``classification.quantized`` and set the roles of it and its side tensors);
- ``lazy_decode(mx, weight, arrays) -> mx.array``: the same decode as a lazy MLX graph
  (``arrays``: role -> mx.array of the stored bits), bit-identical to ``decode`` once rounded
  to BF16, for the load-time hook.

``NAME`` is the family's name in reports. Adding a family is one module here plus its entry
in ``SCHEMES`` and its tests (docs/architecture.md walks through it).

Schemes are imported lazily by :func:`schemes` (numpy only where data is decoded), so
``import scalefix.formats`` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cached_property

from ...errors import ScalefixError
from ..geometry import Geometry
from ..header import TensorInfo

# The families, in the order a declaration is offered to them. Each entry is a module
# name in this package.
SCHEMES: tuple[str, ...] = (
    "comfy",               # ComfyUI / comfy-kitchen: declared per layer, claimed first
    "fp8",
    "fp4",
    "compressed_tensors",
    "gptq",
    "awq",
    "bitsandbytes",
    "quark",
    "modelopt",
)


class Refusal(ScalefixError):
    """A declared format scalefix does not know, or tensors that contradict the declaration:
    exit 2 and one line naming the layer, never a guess."""


@dataclass(frozen=True)
class Declaration:
    """What a file or config says about one layer (or the whole checkpoint)."""

    source: str                 # "comfy" | "quant_method" | "ct_format" | "quant_algo" | ...
    value: str                  # e.g. "nvfp4", "bitsandbytes", "pack-quantized"
    where: str                  # where it was read: "<layer>.comfy_quant", "config.json", ...
    params: dict = field(default_factory=dict)   # the rest of the declaration


@dataclass(frozen=True, eq=False)
class DeclaredWeight:
    """One weight decoded by a registry scheme: the stored weight tensor, its side tensors
    by role, and the logical shape. The whole tensor decodes at once (``row_major`` False):
    these layouts pack or tile across rows."""

    weight: TensorInfo
    sides: dict                 # role -> TensorInfo (everything decoding reads besides weight)
    shape: tuple[int, ...]      # logical, dequantized
    family: object              # the scheme module
    declaration: Declaration
    output_name: str            # key of the dequantized weight
    params: dict = field(default_factory=dict)   # scheme-private (geometry, codebook, ...)
    dropped: tuple = ()         # tensors that belong to the layer but decoding does not read
    codec = "declared"          # never an element codec: FP / int-only paths skip it
    packing = None
    global_scale = None
    row_major = False
    trivial_g_idx = True

    @property
    def name(self) -> str:
        return self.weight.name

    @property
    def naming(self) -> str:
        return f"{self.declaration.source}:{self.declaration.value}"

    @property
    def side_tensors(self) -> tuple[TensorInfo, ...]:
        return tuple(self.sides.values()) + tuple(self.dropped)

    @property
    def scale(self) -> TensorInfo:
        """The first side tensor (reports show it as the scale)."""
        return next(iter(self.sides.values()), self.weight)

    @property
    def scale_codec(self) -> str:
        return "declared"

    @cached_property
    def geometry(self) -> Geometry:
        shape = self.shape if len(self.shape) >= 2 else (1,) * (2 - len(self.shape)) + self.shape
        return Geometry(tuple(shape), (1,) * len(shape), (shape[-2], shape[-1]))

    @cached_property
    def scheme(self) -> str:
        return self.family.display(self)

    @property
    def cross_shard(self) -> bool:
        return any(t.file != self.weight.file for t in self.sides.values())


_LOADED: dict[str, object] = {}


def schemes() -> tuple:
    """The scheme modules, imported on first use."""
    if len(_LOADED) != len(SCHEMES):
        for name in SCHEMES:
            _LOADED.setdefault(name, importlib.import_module(f"{__name__}.{name}"))
    return tuple(_LOADED[name] for name in SCHEMES)


def claimant(declaration: Declaration):
    """The scheme that claims ``declaration``, or None."""
    key = (declaration.source, declaration.value)
    for scheme in schemes():
        if key in scheme.DECLARATIONS:
            return scheme
    return None


def family_of(weight):
    """The scheme module that decodes and names a weight found by the shared finders (the
    name rules, the integer-code finder); a registry-claimed weight carries its own."""
    if isinstance(weight, DeclaredWeight):
        return weight.family
    by_name = dict(zip(SCHEMES, schemes()))
    if weight.codec == "int":
        return by_name.get(weight.layout if weight.layout in ("gptq", "awq")
                           else "compressed_tensors")
    return by_name["fp4" if weight.codec == "e2m1" else "fp8"]


def kind_of(weight) -> str:
    """What a claimed weight holds, for a declaration to check against: ``int`` (integer
    codes), ``fp8``, ``nvfp4``, ``fp4`` (E2M1 with E8M0 scales), or a registry family name."""
    if isinstance(weight, DeclaredWeight):
        return weight.family.NAME
    if weight.codec == "int":
        return "int"
    if weight.codec == "e2m1":
        return "nvfp4" if weight.scale_codec == "e4m3" else "fp4"
    return "fp8"


def refuse_kinds(result, allowed: set[str], declared: str) -> None:
    """A weight whose kind the declaration does not allow contradicts it: refused."""
    for weight in result.quantized.values():
        kind = kind_of(weight)
        if kind not in allowed:
            raise Refusal(f"{declared}, but this layer holds {kind} codes "
                          f"({weight.weight.dtype} {list(weight.weight.shape)}); nothing done",
                          file=weight.weight.file, tensor=weight.name)
