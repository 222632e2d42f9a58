"""What the runtime hooks dequantize at load time, and what they drop: one decision shared
by the ``mx.load`` wrapper and the mlx-lm config fix.

FP8 with floating-point scales (F32/BF16/F16) is always dequantized: no MLX-native mode
covers it. The MX family (E8M0 scales: DeepSeek-V4 ``.scale``, FP4 experts, gpt-oss
``_blocks``/``_scales``, mxfp8) is left exactly as ``mx.load`` returns it, because MLX runs
those natively and mlx-lm's sanitizers repack them; ``SCALEFIX_MLX_MX_FORMATS=dequant``
dequantizes those too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..formats import classify, open_bundle
from ..formats.bundle import INDEX_SUFFIX
from ..formats.classify import Classification, QuantizedWeight


def dequantize_mx_family() -> bool:
    return os.environ.get("SCALEFIX_MLX_MX_FORMATS", "").lower() == "dequant"


def wanted(qw: QuantizedWeight, mx_family: bool) -> bool:
    return qw.scale_codec != "e8m0" or mx_family


@dataclass
class FilePlan:
    """For one .safetensors file: weights to dequantize (name -> weight) and keys to drop."""

    dequantize: dict[str, QuantizedWeight] = field(default_factory=dict)
    drop: set[str] = field(default_factory=set)

    @property
    def nothing(self) -> bool:
        return not self.dequantize and not self.drop


def bundle_for_file(path: Path):
    """The bundle a shard belongs to: the index beside it when it names this file (so a scale
    in another shard is found), else the file alone."""
    for index in sorted(path.parent.glob("*" + INDEX_SUFFIX)):
        try:
            bundle = open_bundle(index)
        except Exception:
            continue
        if path.resolve() in {p.resolve() for p in bundle.headers}:
            return bundle
    return open_bundle(path)


def plan_for_classification(result: Classification, path: Path, mx_family: bool) -> FilePlan:
    plan = FilePlan()
    here = path.resolve()
    used = [q for q in result.quantized.values() if wanted(q, mx_family)]
    if not used and not result.named("orphan_scale"):
        return plan
    for qw in used:
        if qw.weight.file.resolve() == here:
            plan.dequantize[qw.name] = qw
        if qw.scale.file.resolve() == here:
            plan.drop.add(qw.scale.name)
    local = set(result.bundle.headers[_header_key(result, here)].tensors)
    for name in result.named("orphan_scale"):
        if name in local:
            plan.drop.add(name)
    if used:
        for role in ("activation_scale", "marker"):
            plan.drop.update(n for n in result.named(role) if n in local)
    return plan


def _header_key(result: Classification, here: Path) -> Path:
    return next(p for p in result.bundle.headers if p.resolve() == here)


@lru_cache(maxsize=64)
def _cached_plan(path: str, mtime_ns: int, size: int, mx_family: bool) -> FilePlan:
    p = Path(path)
    return plan_for_classification(classify(bundle_for_file(p)), p, mx_family)


def plan_for_file(path: Path) -> FilePlan:
    st = path.stat()
    return _cached_plan(str(path.resolve()), st.st_mtime_ns, st.st_size, dequantize_mx_family())


def dequantized_by_hooks(model_dir: Path) -> bool:
    """Whether loading ``model_dir`` through the mx.load hook dequantizes something."""
    bundle = open_bundle(model_dir)
    result = classify(bundle)
    mx_family = dequantize_mx_family()
    return any(wanted(q, mx_family) for q in result.quantized.values())
