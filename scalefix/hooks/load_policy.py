"""What the runtime hooks dequantize at load time, and what they drop: one decision shared
by the ``mx.load`` wrapper and the mlx-lm config fix.

FP8 with floating-point scales (F32/BF16/F16) is always dequantized: no MLX-native mode
covers it. The MX family (E8M0 scales: DeepSeek-V4 ``.scale``, FP4 experts, gpt-oss
``_blocks``/``_scales``, mxfp8) is left exactly as ``mx.load`` returns it, because MLX runs
those natively and mlx-lm's sanitizers repack them, except where the checkpoint's declaring
scheme names a native MLX form for them (``mlx_form``: AMD Quark's MXFP4 ``weight`` /
``weight_scale``, which no mlx-lm sanitizer knows): those are handed over as MLX ``mxfp4``
parts, the bytes as stored. ``SCALEFIX_MLX_MX_FORMATS=dequant`` dequantizes all of them.
Weights a registry scheme decodes (``DeclaredWeight``: bitsandbytes) become exact BF16
through the scheme's ``lazy_decode``.

Cost at scale: a host loads a checkpoint shard by shard (DeepSeek-V3: 163 shards, ~90k
tensors). The bundle a shard belongs to is found from the path the host gave (a Hugging Face
snapshot link, not the blob it points to), classified once per process, and the plan of
every shard is derived in the same pass. The cache key is the stat of the index and of every
shard, so a file edited in between is seen.

A shard that belongs to a quantized checkpoint but cannot be fixed (unreadable index, a
missing or truncated sibling, ...) raises ``Unfixable``; the wrapper reports it (never a
silent fallback).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScalefixError
from ..formats import classify, open_bundle
from ..formats.bundle import INDEX_SUFFIX, read_index
from ..formats.classify import Classification, QuantizedWeight
from ..formats.schemes import DeclaredWeight, claimant
from .load_report import Unfixable

PLAIN_ROLES = frozenset({"plain"})


def dequantize_mx_family() -> bool:
    return os.environ.get("SCALEFIX_MLX_MX_FORMATS", "").lower() == "dequant"


def wanted(qw: QuantizedWeight, mx_family: bool) -> bool:
    """Dequantized to BF16 at load time (integer codes go native or are left as stored)."""
    if qw.codec == "int":
        return False
    if isinstance(qw, DeclaredWeight):  # its scheme's lazy graph, where it has one
        return callable(getattr(qw.family, "lazy_decode", None))
    return qw.scale_codec != "e8m0" or mx_family


def declared_native(result: Classification, qw, mx_family: bool):
    """The MX form (``ModuleForm``) an MX-family weight is handed over in because the
    checkpoint's declaring scheme names one (Quark MXFP4 -> ``mxfp4``), or None."""
    if mx_family or qw.codec == "int" or isinstance(qw, DeclaredWeight) or \
            qw.scale_codec != "e8m0" or result.checkpoint_declaration is None:
        return None
    scheme = claimant(result.checkpoint_declaration)
    form = getattr(scheme, "mlx_form", None)
    if form is None or form(qw) != "mxfp4":
        return None
    from ..mlx.module_form import ModuleForm
    from ..mlx.native_plan import choose
    choice = choose(qw)
    return choice if isinstance(choice, ModuleForm) and choice.mode == "mxfp4" else None


@dataclass
class FilePlan:
    """For one .safetensors file: weights to dequantize (name -> weight) and keys to drop."""

    dequantize: dict[str, QuantizedWeight] = field(default_factory=dict)
    drop: set[str] = field(default_factory=set)
    left: dict[str, str] = field(default_factory=dict)  # not decoded at load time: scheme
    native: dict[str, tuple] = field(default_factory=dict)  # weight -> (qw, ModuleForm)

    @property
    def left_reason(self) -> str | None:
        if not self.left:
            return None
        schemes = ", ".join(sorted(set(self.left.values())))
        return (f"{len(self.left)} weight(s) ({schemes}) are not decoded at load time yet; "
                "`scalefix rewrite` writes them as exact BF16")

    @property
    def nothing(self) -> bool:
        return not self.dequantize and not self.drop and not self.native


NOTHING = FilePlan()


@dataclass
class BundlePlans:
    """One classified bundle and the plan of each of its files (lexical absolute paths)."""

    classification: Classification
    files: dict[Path, FilePlan]
    mx_family: bool
    native_modules: dict[str, dict] = field(default_factory=dict)  # module -> its entry
    part_sources: tuple = ()  # native parts mlx-lm's sanitize must stack (experts)

    @property
    def dequantizes(self) -> bool:
        return any(plan.dequantize for plan in self.files.values())


def absolute(path: str | os.PathLike) -> Path:
    """Absolute without resolving links: a snapshot link keeps its snapshot directory."""
    return Path(os.path.abspath(path))


def plans_for_classification(result: Classification, mx_family: bool) -> BundlePlans:
    """Every file's plan in one pass over the tensors (linear in the tensor count)."""
    by_file: dict[Path, FilePlan] = {p: FilePlan() for p in result.bundle.headers}

    def plan_of(info) -> FilePlan:  # keyed by the header's own Path: no new Path per tensor
        plan = by_file.get(info.file)
        if plan is None:
            plan = by_file[info.file] = FilePlan()
        return plan

    used, native_modules = [], {}
    planned = _runtime_planned(result, mx_family)
    for qw in result.quantized.values():
        if qw.name in planned.weights:  # NVFP4 / integer experts, as `--to mlx` plans them
            plan_of(qw.weight).native[qw.name] = (qw, planned.weights[qw.name])
            for side in qw.side_tensors:
                plan_of(side).drop.add(side.name)
            continue
        if qw.codec != "int":
            choice = declared_native(result, qw, mx_family)
            if choice is None:
                if wanted(qw, mx_family):
                    used.append(qw)
                elif isinstance(qw, DeclaredWeight):
                    plan_of(qw.weight).left[qw.name] = qw.scheme
                continue
        else:
            choice = _runtime_native(qw)
        if choice is None:
            plan_of(qw.weight).left[qw.name] = qw.scheme
            continue
        plan_of(qw.weight).native[qw.name] = (qw, choice)
        for side in qw.side_tensors:
            plan_of(side).drop.add(side.name)
        native_modules[qw.output_name[: -len(".weight")]] = choice.entry
    native_modules.update((m, form.entry) for m, form in planned.modules.items())
    for qw in used:
        plan_of(qw.weight).dequantize[qw.name] = qw
        for side in qw.side_tensors:
            plan_of(side).drop.add(side.name)
    tensors = result.bundle.tensors
    for name in result.named("orphan_scale"):
        plan_of(tensors[name]).drop.add(name)
    if used or native_modules:
        for role in ("activation_scale", "marker"):
            for name in result.named(role):
                plan_of(tensors[name]).drop.add(name)
    return BundlePlans(result, {absolute(p): plan for p, plan in by_file.items()}, mx_family,
                       native_modules, planned.sources)


def _runtime_planned(result: Classification, mx_family: bool):
    """The weights handed over natively as the ``--to mlx`` plan makes them
    (``mlx.bundle_plan.runtime_native``): NVFP4 routed experts as ``nvfp4`` +
    ``global_scale``, integer experts that mlx-lm's sanitize stacks. Needs mlx-lm's model for
    the layout; without one none: NVFP4 then stays exact BF16 and integer weights go native
    one by one (``_runtime_native``). ``SCALEFIX_MLX_MX_FORMATS=dequant`` keeps NVFP4 BF16."""
    from ..mlx.bundle_plan import RuntimeNative, runtime_native
    try:
        return runtime_native(result, nvfp4_native=not mx_family)
    except ScalefixError:  # no MLX plan for this bundle
        return RuntimeNative()


def _runtime_native(qw):
    """The affine form an integer weight is handed to mlx-lm in at load time, or None (it is
    then left as stored, and said so)."""
    from ..mlx.lazy_native import supported
    from ..mlx.module_form import ModuleForm
    from ..mlx.native_plan import choose
    choice = choose(qw)
    return choice if isinstance(choice, ModuleForm) and supported(qw) else None


# --- the per-process cache ------------------------------------------------------------------

_LOCK = threading.Lock()
_CACHE: dict[tuple[Path, bool], tuple[tuple, BundlePlans]] = {}


def _stat_key(paths) -> tuple:
    """What says the files are unchanged: (size, mtime, inode) through links; None for a
    file that is not there."""
    key = []
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            key.append(None)
            continue
        key.append((st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(key)


def _key_paths(bundle) -> list:
    """Everything the classification read: the index, every shard, the configs (the block
    size and the format come from them)."""
    return ([bundle.index_path] if bundle.index_path else []) + list(bundle.headers) + [
        bundle.root / "config.json", bundle.root / "hf_quant_config.json"]


def _bundle_plans(anchor: Path, mx_family: bool) -> BundlePlans:
    """Classified once per process for ``anchor`` (an index, a directory or a file)."""
    with _LOCK:
        cached = _CACHE.get((anchor, mx_family))
        if cached is not None:
            key, plans = cached
            try:
                if _stat_key(_key_paths(plans.classification.bundle)) == key:
                    return plans
            except OSError:
                pass
        bundle = open_bundle(anchor)
        key = _stat_key(_key_paths(bundle))
        plans = plans_for_classification(classify(bundle), mx_family)
        _CACHE[(anchor, mx_family)] = (key, plans)
        return plans


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
        _NAMES.clear()


# --- from a shard path to its bundle -------------------------------------------------------

def _index_naming(path: Path) -> tuple[Path | None, str | None]:
    """The index beside ``path`` that names it (``model.safetensors.index.json`` first), and
    why none could be read when one might: (index, None) | (None, None) | (None, reason)."""
    indexes = sorted(path.parent.glob("*" + INDEX_SUFFIX),
                     key=lambda p: (p.name != "model" + INDEX_SUFFIX, p.name))
    problems = []
    for index in indexes:
        try:
            names = _shard_names(index)
        except (ScalefixError, OSError) as exc:
            problems.append(str(exc))
            continue
        if path.name in names:
            return index, None
    return None, (problems[0] if problems else None)


_NAMES: dict[Path, tuple[tuple, frozenset]] = {}


def _shard_names(index: Path) -> frozenset:
    """The files an index names, parsed once per version of the index."""
    key = _stat_key([index])
    cached = _NAMES.get(index)
    if cached is None or cached[0] != key:
        cached = (key, frozenset(read_index(index)[1].values()))
        _NAMES[index] = cached
    return cached[1]


def _looks_quantized(path: Path) -> bool:
    """Whether the file alone shows quantization: scales, FP8 codes, markers."""
    try:
        alone = classify(open_bundle(path))
    except ScalefixError:
        return True
    return any(role not in PLAIN_ROLES for role in alone.roles.values())


def plan_for_file(path: str | os.PathLike) -> FilePlan:
    """The plan for one file as the host named it; ``Unfixable`` when it belongs to a
    quantized checkpoint whose bundle cannot be read."""
    path = absolute(path)
    mx_family = dequantize_mx_family()
    index, problem = _index_naming(path)
    if problem is not None and _looks_quantized(path):
        raise Unfixable(f"cannot read the index beside it ({problem})")
    anchor = index if index is not None else _single_file_checkpoint(path) or path
    try:
        plans = _bundle_plans(anchor, mx_family)
    except ScalefixError as exc:
        if index is not None or _looks_quantized(path):
            raise Unfixable(str(exc)) from None
        raise
    return plans.files.get(path, NOTHING)


def _single_file_checkpoint(path: Path) -> Path | None:
    """The directory of a checkpoint held in one file beside its config (no index): read as
    a directory, so what the config declares (``quant_method``: bitsandbytes, Quark) counts
    for the file as it does for ``inspect`` and ``rewrite``."""
    folder = path.parent
    if any(folder.glob("*" + INDEX_SUFFIX)) or \
            any(p.name != path.name for p in folder.glob("*.safetensors")):
        return None
    configs = (folder / "config.json", folder / "hf_quant_config.json")
    return folder if any(c.is_file() for c in configs) else None


def _model_plans(model_dir: str | os.PathLike) -> BundlePlans:
    model_dir = absolute(model_dir)
    indexes = sorted(model_dir.glob("*" + INDEX_SUFFIX),
                     key=lambda p: (p.name != "model" + INDEX_SUFFIX, p.name))
    anchor = indexes[0] if indexes else model_dir
    return _bundle_plans(anchor, dequantize_mx_family())


def dequantized_by_hooks(model_dir: str | os.PathLike) -> bool:
    """Whether loading ``model_dir`` through the mx.load hook dequantizes something."""
    return _model_plans(model_dir).dequantizes


def native_by_hooks(model_dir: str | os.PathLike) -> dict[str, dict]:
    """Module -> quantization entry of the weights the mx.load hook hands over natively
    (integer codes as affine, NVFP4 routed experts as nvfp4 + global_scale)."""
    return _model_plans(model_dir).native_modules


def part_sources_by_hooks(model_dir: str | os.PathLike) -> tuple:
    """The native parts of ``model_dir`` that mlx-lm's sanitize must place like their
    weights (``mlx.bundle_plan.sanitize_parts``): NVFP4 and integer experts it stacks."""
    return _model_plans(model_dir).part_sources
