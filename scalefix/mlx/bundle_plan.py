"""The MLX bundle target of ``rewrite`` (``--to mlx``, ``--to mlx-affine``): the plan.

One module on purpose (~540 lines): the output headers, the per-module entries and the
load-time NVFP4 plan all come from the one lazy sanitize pass planned here; split, they would
each need their own copy of it.

``--to mlx``: each quantized module in its lossless native MLX form (``native_plan``), else
exact BF16, else (``--requantize``) ``mx.quantize``. ``--to mlx-affine``: FP4 (optionally FP8)
weights decoded exactly, then re-quantized with MLX's own ``mx.quantize``. Both are a
``rewrite.target.TargetPlan``: rewrite streams the planned shards, this room says how each
planned tensor's bytes are made (``bundle_write``).

Why not copy the FP4 codes and E8M0 exponents across: that is only valid for MLX's ``mxfp4``
mode, and the community shortcut ``scale=(max-min)/15, bias=min`` is not MLX's affine formula
(docs/mlx.md §3). The only exact route is decode -> ``mx.quantize``.

Layout: mlx-lm's own sanitize for the model type (``layout``), run on decoded BF16 tensors
exactly as mlx-lm would run it on a BF16 checkpoint; the tensors that came from a selected
quantized weight are then re-quantized. The output headers are planned first from one lazy,
allocation-free sanitize pass over the whole checkpoint (MLX arrays are lazy), so shards
stream and ``--resume`` works as for the BF16 rewrite. The same pass records which outputs
are a source passed through under a new name (``Output.source``): those stream straight
from the source bytes (a copy, a repack of the codes, the small scales computed per
module), at the speed of the disk. The rest (stacked, split or re-quantized tensors) are
made layer by layer: the layer's tensors are decoded for real, every other tensor is a lazy
stand-in that is never evaluated. Memory: about two layers, decoded.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

from ..errors import ScalefixError
from ..formats.classify import Classification, QuantizedWeight
from ..formats.conventions import COMFY_METADATA_KEY
from ..formats.header import TensorInfo
from ..formats.writer import Entry
from ..rewrite.target import DROP_REASONS, OutShard, TargetPlan, TargetSpec, pack_shards
from .layout import Layout, layout_for, unit_of
from .module_form import AFFINE_BITS, AFFINE_GROUPS, ModuleForm, quantization_entry


@dataclass(frozen=True)
class MlxSpec(TargetSpec):
    """``--to mlx-affine``: re-quantize FP4 (and FP8 with ``include_fp8``). ``--to mlx``
    (``native``): each module's lossless native form, else exact BF16, else (``requantize``)
    ``mx.quantize`` at ``bits`` / ``group_size``."""

    bits: int = 4
    group_size: int = 32
    include_fp8: bool = False
    native: bool = False
    requantize: bool = True
    bf16_biases: bool = False

    single_file_ok = False

    @property
    def suffix(self) -> str:
        if self.native:
            return "mlx" + (f"-rq{self.bits}bit-g{self.group_size}" if self.requantize else "")
        return f"mlx-{self.bits}bit-g{self.group_size}"

    def single_file_refusal(self) -> str:
        return (f"--to {'mlx' if self.native else 'mlx-affine'} writes an MLX bundle and needs "
                "the bundle's config.json: give the directory")

    def build_plan(self, result: Classification, max_shard_bytes: int, base: str,
                   single_file: bool) -> MlxPlan:
        return build_mlx_plan(result, self, layout_for(result.bundle.config), max_shard_bytes,
                              base)

    def kind(self, qw) -> tuple[str, object]:
        """("native" | "requantize" | "dequant", the native form or why there is none)."""
        if not self.native:
            return ("requantize" if self.selects(qw) else "dequant"), None
        from .native_plan import choose
        choice = choose(qw, self.bf16_biases)
        if isinstance(choice, ModuleForm):
            return "native", choice
        return ("requantize" if self.requantize else "dequant"), choice

    def validate(self) -> None:
        if self.bits not in AFFINE_BITS:
            raise ScalefixError(f"--bits must be one of {', '.join(map(str, AFFINE_BITS))} "
                                f"(MLX affine), not {self.bits}")
        if self.group_size not in AFFINE_GROUPS:
            groups = sorted(AFFINE_GROUPS)
            raise ScalefixError(f"--group-size must be one of {', '.join(map(str, groups))}, "
                                f"not {self.group_size}")

    def selects(self, qw: QuantizedWeight) -> bool:
        return qw.codec == "e2m1" or (self.include_fp8 and qw.codec in ("e4m3", "e5m2"))

    @property
    def params(self) -> dict:
        """The quantization entry of a re-quantized module."""
        return quantization_entry("affine", self.bits, self.group_size)


@dataclass(frozen=True)
class Source:
    """One tensor handed to sanitize: under ``name``, made by ``kind``."""

    name: str
    info: TensorInfo
    kind: str                       # "native" | "requantize" | "dequant" | "cast" | "copy"
    qw: QuantizedWeight | None = None
    part: str = ""                  # native: "weight" | "scales" | "biases"
    choice: ModuleForm | None = None  # native: its form


@dataclass(frozen=True)
class Output:
    entry: Entry
    tensor: str                     # the post-sanitize tensor it comes from
    part: str                       # "weight" | "scales" | "biases" | "plain"
    source: Source | None = None    # the source it passes through unchanged (streamed)
    counts_for: int = 0             # source bytes it accounts for on the progress bar


@dataclass
class Unit:
    """One layer (or everything outside the layers): its sources are decoded together, its
    outputs (by output name) written together."""

    key: tuple[int, int]
    sources: list[Source] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)


@dataclass
class MlxPlan(TargetPlan):
    classification: Classification
    spec: MlxSpec
    layout: Layout
    sources: list[Source]
    units: list[Unit]
    shards: list[OutShard]
    modules: list[str]                               # re-quantized MLX module paths
    kept_bf16: list[str] = field(default_factory=list)  # FP8 whose input dim fits no group
    native: dict[str, ModuleForm] = field(default_factory=dict)  # MLX module -> its form
    not_native: dict[str, str] = field(default_factory=dict)  # weight -> why (--to mlx)
    dropped: dict[str, str] = field(default_factory=dict)
    config_changes: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.classification.quantized

    @property
    def source_bytes(self) -> int:
        return sum(s.info.nbytes for s in self.sources)

    def counts(self) -> dict:
        by_kind = defaultdict(Counter)
        for s in self.sources:
            if s.kind != "native" or s.part == "weight":
                by_kind[s.kind][s.qw.scheme if s.qw else ""] += 1
        return {"native": dict(by_kind["native"]),
                "requantized": dict(by_kind["requantize"]),
                "dequantized": dict(by_kind["dequant"]),
                "cast_without_scale": sum(by_kind["cast"].values()),
                "renamed": 0,
                "copied": sum(by_kind["copy"].values()),
                "dropped": dict(Counter(self.dropped.values()))}

    def shard_fingerprint(self, shard: OutShard) -> str:
        files = sorted({s.info.file for s in self.sources})
        doc = json.dumps([shard.filename, self.spec.params, self.spec.native,
                          self.spec.requantize, self.spec.bf16_biases, self.layout.name,
                          [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]])
        return hashlib.sha256(shard.header() + doc.encode()).hexdigest()

    # --- what rewrite's writer asks of a target (rewrite.target.TargetPlan) ---------------

    def shard_source_bytes(self, shard: OutShard) -> int:
        return sum(o.counts_for for o in shard.tensors)

    def validate(self) -> None:
        """Every quantized weight's sides decode, before anything is written: on a thread
        per core (numpy frees the GIL), as this is most of the planning time of a
        GPTQ / AWQ checkpoint (its zero points are unpacked)."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        from ..formats.dequant import validate
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            list(pool.map(validate, self.classification.quantized.values()))

    def begin(self, pool) -> None:
        from .bundle_write import BundleWriter
        self._writer = BundleWriter(self, pool)

    def jobs(self, tensor: Output):
        return self._writer.jobs(tensor)

    def end(self, summary) -> None:
        from .bundle_write import sqnr_summary
        quality = summary.requantization_sqnr = sqnr_summary(self._writer.sqnr)
        if quality:
            summary.quality_notes.append(
                f"  affine error vs the exact decode (mx.dequantize): SQNR min "
                f"{quality['min_db']} dB ({quality['worst']}), median "
                f"{quality['median_db']} dB over {quality['modules']} module(s)"
                + (" written this run (reused shards not re-measured)"
                   if summary.reused_shards else ""))

    def count_lines(self) -> list[str]:
        counts = self.counts()
        return ([f"  native {n:9d}  {scheme} -> its lossless MLX form (codes kept)"
                 for scheme, n in sorted(counts["native"].items())]
                + [f"  re-quantized {n:3d}  {scheme} -> MLX affine (mx.quantize)"
                   for scheme, n in sorted(counts["requantized"].items())])

    def output_config(self) -> dict:
        return mlx_config(self.classification.bundle.config or {}, self)


def module_weight_name(qw: QuantizedWeight) -> str:
    """``<module>.weight``, the name mlx-lm's sanitizers expect for a module's weight."""
    name = qw.output_name
    return name if name.endswith(".weight") else f"{name}.weight"


def _sources(result: Classification, spec: MlxSpec, plan_dropped: dict,
             not_native: dict, dense_nvfp4: frozenset = frozenset()) -> list[Source]:
    bundle = result.bundle
    order = {path: i for i, path in enumerate(bundle.headers)}
    sources = []
    for name, info in sorted(bundle.tensors.items(),
                             key=lambda kv: (order[kv[1].file], kv[1].offset)):
        role = result.roles[name]
        if role in DROP_REASONS:
            plan_dropped[name] = DROP_REASONS[role]
            continue
        if role == "quantized":
            qw = result.quantized[name]
            kind, choice = spec.kind(qw)
            if name in dense_nvfp4:  # lands in a layer mlx-lm gives no global scale
                from .native_plan import NVFP4_DENSE
                kind, choice = ("requantize" if spec.requantize else "dequant"), NVFP4_DENSE
            if kind == "native":
                module = module_weight_name(qw)[: -len(".weight")]
                sources += [Source(f"{module}.{part}", info, kind, qw, part, choice)
                            for part in choice.parts]
                continue
            if isinstance(choice, str):
                not_native[name] = choice
            source = Source(module_weight_name(qw) if kind == "requantize" else qw.output_name,
                            info, kind, qw)
        elif role == "fp8_without_scale":
            source = Source(name, info, "cast")
        else:
            source = Source(name, info, "copy")
        if source.info.dtype == "F64":  # float64 tags the weights to re-quantize (below)
            raise ScalefixError("--to mlx-affine does not handle F64 tensors",
                                file=source.info.file, tensor=source.info.name)
        sources.append(source)
    names = Counter(s.name for s in sources)
    clash = [n for n, c in names.items() if c > 1]
    if clash:
        raise ScalefixError("two tensors would get this name", tensor=clash[0])
    return sources


def output_shape(source: Source) -> tuple[int, ...]:
    if source.kind == "native":
        return source.choice.parts[source.part][1]
    return tuple(source.qw.shape if source.qw else source.info.shape)


def output_dtype(mx, source: Source):
    """The MLX dtype ``source`` is handed to sanitize as (decoded weights: bfloat16)."""
    from .arrays import mx_dtype
    if source.kind == "native":
        return mx_dtype(source.choice.parts[source.part][0])
    return mx.bfloat16 if source.kind != "copy" else mx_dtype(source.info.dtype)


def _tagged_placeholder(mx, source: Source, spec: MlxSpec):
    """A lazy array (nothing allocated) with the source's output shape. Weights to
    re-quantize are tagged by a dtype no checkpoint tensor is handed as: float64 for FP4
    (must be re-quantized), complex64 for FP8 under --include-fp8 (BF16 where the group
    does not fit)."""
    if source.kind == "requantize":
        # --to mlx re-quantizes where it can and keeps BF16 where the group does not fit
        tag = mx.float64 if source.qw.codec == "e2m1" and not spec.native else mx.complex64
        return mx.zeros(output_shape(source), dtype=tag)
    return mx.zeros(output_shape(source), dtype=output_dtype(mx, source))


def _plan_outputs(mx, sources: list[Source], spec: MlxSpec, layout: Layout):
    """The outputs of a lazy sanitize pass over the whole checkpoint, in order; the
    re-quantized modules; the FP8 weights kept BF16 because their input dim fits no group.
    An output that is one of the placeholders themselves (sanitize only renamed it) records
    its source: it can be streamed from the source bytes."""
    from .arrays import safetensors_dtype
    placeholders = {s.name: _tagged_placeholder(mx, s, spec) for s in sources}
    by_id = {id(array): source for source, array in zip(sources, placeholders.values())}
    held = list(placeholders.values())  # alive while ids are compared: no id is reused
    outputs, modules, kept = [], [], []
    for name, array in sanitize_parts(layout, placeholders, sources).items():
        if array.dtype not in (mx.float64, mx.complex64):
            entry = Entry(name, safetensors_dtype(array), tuple(array.shape))
            outputs.append(Output(entry, name, "plain",
                                  _streamable(by_id.get(id(array)), entry)))
            continue
        if not name.endswith(".weight") or array.ndim < 2:
            raise ScalefixError(f"{layout.name} turned a quantized weight into {name!r}, "
                                f"shape {list(array.shape)}: not a module weight")
        cols = array.shape[-1]
        if cols % spec.group_size and array.dtype == mx.float64:
            raise ScalefixError(f"input dim {cols} is not a multiple of --group-size "
                                f"{spec.group_size}: choose another group size", tensor=name)
        if cols % spec.group_size:  # optional FP8: stays BF16, as mlx-lm's own convert does
            kept.append(name)
            outputs.append(Output(Entry(name, "BF16", tuple(array.shape)), name, "plain"))
            continue
        module, lead = name[: -len(".weight")], tuple(array.shape[:-1])
        outputs += [
            Output(Entry(name, "U32", lead + (cols * spec.bits // 32,)), name, "weight"),
            Output(Entry(f"{module}.scales", "BF16", lead + (cols // spec.group_size,)), name,
                   "scales"),
            Output(Entry(f"{module}.biases", "BF16", lead + (cols // spec.group_size,)), name,
                   "biases")]
        modules.append(module)
    del held
    return outputs, modules, kept


def _streamable(source: Source | None, entry: Entry) -> Source | None:
    """``source`` when its output bytes can be made from its own bytes alone: copied as
    stored, decoded to BF16 as the BF16 rewrite decodes it, or a native part."""
    if source is None or source.kind == "requantize":
        return None
    if source.kind == "copy" and source.info.nbytes != entry.nbytes:
        return None  # sub-byte dtypes are handed to MLX flat: not a rename
    return source


def sanitize_parts(layout: Layout, arrays: dict, sources: list[Source]) -> dict:
    """mlx-lm's sanitize for the model type, with native modules' parts: each part (codes,
    scales, biases) goes through its own lazy sanitize pass in the weight's place, so it is
    renamed, split and stacked exactly as the weight would be (sanitizers written for a
    published checkpoint know ``<m>.weight``, not ``<m>.scales``), then renamed back."""
    import mlx.core as mx

    native = [s for s in sources if s.kind == "native" and s.name in arrays]
    if not native:
        return layout.sanitize(arrays)
    by_part: dict[str, dict] = defaultdict(dict)
    for s in native:
        by_part[s.part][module_weight_name(s.qw)] = arrays[s.name]
    names = {s.name for s in native}
    base = {k: v for k, v in arrays.items() if k not in names}
    out = layout.sanitize({**base, **by_part.pop("weight", {})})
    codes = [k for k, v in out.items() if k.endswith(".weight") and v.dtype == mx.uint32]
    for part, holders in by_part.items():
        placed = layout.sanitize({**base, **holders})
        for key in codes:
            if key in placed and placed[key].dtype != mx.uint32:
                out[f"{key[: -len('.weight')]}.{part}"] = placed[key]
    return out


def _native_modules(mx, sources, spec, layout, outputs, requantized) -> dict[str, ModuleForm]:
    """MLX module path -> the ``ModuleForm`` of every native module after sanitize
    (which may rename and stack them): read off the stored shapes against the logical input
    width from a second lazy pass, the way mlx-lm itself infers them."""
    if not any(s.kind == "native" for s in sources):
        return {}
    logical = {}
    for s in sources:
        if s.kind == "native":
            if s.part == "weight":
                logical[s.name] = mx.zeros(s.choice.shape, dtype=mx.bfloat16)
        else:
            logical[s.name] = _tagged_placeholder(mx, s, spec)
    widths = {name: array.shape[-1] for name, array in layout.sanitize(logical).items()}
    entries = {o.entry.name: o.entry for o in outputs}
    done = set(requantized)
    found = {}
    for name, entry in entries.items():
        module = name[: -len(".scales")] if name.endswith(".scales") else None
        weight = entries.get(f"{module}.weight") if module else None
        if module is None or module in done or weight is None or weight.dtype != "U32":
            continue
        cols = widths.get(f"{module}.weight")
        if not cols:
            raise ScalefixError(f"{layout.name}'s sanitize gives native module {module!r} "
                                "no logical weight: not supported", tensor=name)
        bits, group = weight.shape[-1] * 32 // cols, cols // entry.shape[-1]
        mode = "affine" if entry.dtype != "U8" else "nvfp4" if group == 16 else \
            {4: "mxfp4", 8: "mxfp8"}[bits]
        found[module] = ModuleForm(mode, bits, group, entry.dtype,
                                   tuple(weight.shape[:-1]) + (cols,),
                                   f"{module}.global_scale" in entries)
    return found


def _dense_nvfp4(plan: MlxPlan, outputs: list[Output]) -> frozenset:
    """The NVFP4 weights whose MLX module takes no global scale (a dense layer): the
    module's weight output names its source when sanitize only renamed it; otherwise every
    NVFP4 weight of that layer is counted in (exact BF16 either way)."""
    found = set()
    weights = {o.entry.name: o for o in outputs}
    for module, form in plan.native.items():
        if form.mode != "nvfp4" or plan.layout.takes_global_scale(module):
            continue
        out = weights[f"{module}.weight"]
        if out.source is not None:
            found.add(out.source.qw.name)
        else:
            unit = unit_of(out.tensor)
            found |= {s.qw.name for s in plan.sources if s.kind == "native"
                      and s.choice.mode == "nvfp4" and unit_of(s.name) == unit}
    return frozenset(found)


def build_mlx_plan(result: Classification, spec: MlxSpec, layout: Layout,
                   max_shard_bytes: int, base: str) -> MlxPlan:
    import mlx.core as mx

    spec.validate()
    unsupported = result.named("unsupported")
    if unsupported:
        name = unsupported[0]
        raise ScalefixError(f"cannot decode: {result.reasons[name]}; nothing written",
                            file=result.bundle.tensors[name].file, tensor=name)
    dense_nvfp4: frozenset = frozenset()
    while True:  # at most twice: NVFP4 weights that land in dense layers are planned again
        dropped: dict[str, str] = {}
        not_native: dict[str, str] = {}
        sources = _sources(result, spec, dropped, not_native, dense_nvfp4)
        plan = MlxPlan(result, spec, layout, sources, units=[], shards=[], modules=[],
                       dropped=dropped, not_native=not_native)
        if plan.nothing_to_do:
            return plan
        if not spec.native and not any(s.kind == "requantize" for s in sources):
            raise ScalefixError("no FP4 weights to re-quantize; add --include-fp8 to "
                                "re-quantize the FP8 weights too (or drop --to for a plain "
                                "BF16 rewrite)")
        outputs, plan.modules, plan.kept_bf16 = _plan_outputs(mx, sources, spec, layout)
        plan.native = _native_modules(mx, sources, spec, layout, outputs, plan.modules)
        dense = _dense_nvfp4(plan, outputs) - dense_nvfp4
        if not dense:
            break
        dense_nvfp4 |= dense
    units: dict[tuple, Unit] = {}
    for source in sources:
        units.setdefault(unit_of(source.name), Unit(unit_of(source.name))).sources.append(source)
    for out in outputs:
        units.setdefault(unit_of(out.tensor), Unit(unit_of(out.tensor))).outputs.append(out)
    plan.units = [units[key] for key in sorted(units)]
    for unit in plan.units:  # a unit's source bytes are counted once its last output is made
        if unit.outputs:
            unit.outputs[-1] = replace(unit.outputs[-1], counts_for=sum(
                s.info.nbytes for s in unit.sources))
    outputs = [o for u in plan.units for o in u.outputs]  # written unit by unit
    clash = [n for n, c in Counter(o.entry.name for o in outputs).items() if c > 1]
    if clash:
        raise ScalefixError("two output tensors would get this name", tensor=clash[0])
    metadata = {k: v for k, v in result.bundle.metadata.items() if k != COMFY_METADATA_KEY}
    metadata["format"] = "mlx"
    plan.shards = pack_shards(outputs, max_shard_bytes, base, False, metadata)
    plan.config_changes = _config_changes(plan)
    return plan


def _config_changes(plan: MlxPlan) -> list[str]:
    spec, changes = plan.spec, []
    config = plan.classification.bundle.config or {}
    for where, holder in (("config.json", config), ("config.json:text_config",
                                                    config.get("text_config"))):
        if isinstance(holder, dict) and "quantization_config" in holder:
            changes.append(f"{where}: quantization_config replaced by MLX quantization")
    changes.append(f"config.json: quantization {{bits {spec.bits}, group_size "
                   f"{spec.group_size}, mode affine}} + "
                   f"{len(plan.modules) + len(plan.native)} per-module entries")
    if plan.classification.bundle.hf_quant_config is not None:
        changes.append("hf_quant_config.json dropped")
    if plan.not_native:
        first = next(iter(plan.not_native.items()))
        changes.append(f"{len(plan.not_native)} quantized weight(s) have no lossless MLX form "
                       f"and are {'re-quantized (or BF16 where the group does not fit)' if spec.requantize else 'exact BF16'}"
                       f", e.g. {first[0]}: {first[1]}")
    f32 = sorted({s.qw.name for s in plan.sources if s.kind == "native" and s.part == "weight"
                  and s.choice.scale_dtype == "F32"})
    if f32:
        changes.append(f"{len(f32)} native module(s) keep float32 scales and biases (zero "
                       "points, or scales BF16 cannot hold exactly): MLX returns float32 from "
                       "those layers; --bf16-biases trades exactness for BF16")
    if plan.kept_bf16:
        changes.append(f"{len(plan.kept_bf16)} FP8 weight(s) kept BF16: input dim not a "
                       f"multiple of {spec.group_size} (e.g. {plan.kept_bf16[0]})")
    if plan.layout.reason:
        changes.append(f"tensor names kept as in the source: {plan.layout.reason}")
    else:
        changes.append(f"tensor names: {plan.layout.name} layout (its own sanitize)")
    return changes


def mlx_config(config: dict, plan: MlxPlan) -> dict:
    """config.json for mlx-lm: the source's quantization config gone, MLX's in its place,
    with one entry per re-quantized module (what mlx-lm's class_predicate looks up)."""
    from ..rewrite.target import rewritten_config
    new = rewritten_config(config, "bf16")
    quantization = dict(plan.spec.params)
    quantization.update({m: dict(plan.spec.params) for m in sorted(plan.modules)})
    quantization.update({m: form.entry for m, form in sorted(plan.native.items())})
    new["quantization"] = quantization
    new["quantization_config"] = dict(quantization)
    return new


@dataclass(frozen=True)
class RuntimeNative:
    """The weights the load-time hooks hand mlx-lm natively *as ``rewrite --to mlx`` plans
    them*: NVFP4 routed experts, and integer-coded weights that mlx-lm's sanitize moves
    (per-expert GPTQ / AWQ / compressed-tensors experts it stacks into one switch module).
    ``weights`` source weight name -> its ``ModuleForm``; ``modules`` mlx-lm module path
    (after sanitize) -> its ``ModuleForm`` (the config entries); ``sources`` the native parts
    (``<module>.weight`` / ``.scales`` / ``.biases`` / ``.global_scale`` under source module
    names), which ``sanitize_parts`` stacks and renames as mlx-lm's sanitize does. Integer
    weights sanitize leaves in place keep the per-weight path (``hooks/load_policy``)."""

    weights: dict = field(default_factory=dict)
    modules: dict = field(default_factory=dict)
    sources: tuple = ()


def runtime_native(result: Classification, nvfp4_native: bool = True) -> RuntimeNative:
    """What of ``result`` goes native at load time through the ``--to mlx`` plan (the same
    plan, from the headers): the routed NVFP4 experts it makes ``nvfp4`` + ``global_scale``
    (none where this MLX has no nvfp4 global scale: the probe), and the integer weights whose
    codes ``lazy_native`` repacks and whose module sanitize moves. Nothing where no weight
    could qualify: the plan is not even built. ``nvfp4_native`` False keeps NVFP4 out."""
    from .lazy_native import supported
    from .module_form import mlx_has_nvfp4_global_scale
    quantized = result.quantized.values()
    nvfp4 = nvfp4_native and any(qw.codec == "e2m1" and qw.scale_codec == "e4m3"
                                 and qw.global_scale is not None for qw in quantized) \
        and mlx_has_nvfp4_global_scale()
    integer = any(qw.codec == "int" and supported(qw) for qw in quantized)
    if not nvfp4 and not integer:
        return RuntimeNative()
    spec = MlxSpec(native=True, requantize=False)
    plan = build_mlx_plan(result, spec, layout_for(result.bundle.config), 1 << 62, "model")
    native = [s for s in plan.sources if s.kind == "native"]
    in_place = {s.name[: -len(".weight")] for s in native if s.part == "weight"} & set(plan.native)

    def taken(s: Source) -> bool:
        if s.choice.mode == "nvfp4":
            return nvfp4
        moved = s.name[: -len(f".{s.part}")] not in in_place
        return moved and s.choice.mode == "affine" and s.qw.codec == "int" and supported(s.qw)
    sources = tuple(s for s in native if taken(s))
    return RuntimeNative({s.qw.name: s.choice for s in sources if s.part == "weight"},
                         {m: f for m, f in plan.native.items()
                          if (f.mode == "nvfp4" and nvfp4)
                          or (f.mode == "affine" and m not in in_place)},
                         sources)
