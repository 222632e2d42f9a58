"""Decide, from headers alone, every output tensor, its shard and what is dropped.

The plan is computed before a byte is written: output headers come from it, ``--dry-run``
prints it, and ``--resume`` compares a finished shard against it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

from ..errors import ScalefixError
from ..formats.classify import Classification, QuantizedWeight
from ..formats.conventions import COMFY_METADATA_KEY
from ..formats.dequant import OUT_DTYPES
from ..formats.header import TensorInfo
from ..formats.writer import Entry
from .target import DROP_REASONS, OutShard, TargetPlan, pack_shards  # noqa: F401


@dataclass(frozen=True)
class OutTensor:
    entry: Entry
    action: str                      # "copy" | "dequant" | "cast" (FP8 without scale)
                                     # | "rename" (copied byte for byte under a new name)
    source: TensorInfo
    qw: QuantizedWeight | None = None


@dataclass
class Plan(TargetPlan):
    """The BF16 (or F16 / F32) rewrite, and ``--rename-scales`` (``out_dtype`` "keep")."""

    classification: Classification
    out_dtype: str
    shards: list[OutShard] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)   # tensor -> why
    config_changes: list[str] = field(default_factory=list)

    new_config: dict | None = None     # config.json to write (None: copy as is)

    @property
    def tensors(self):
        return [t for shard in self.shards for t in shard.tensors]

    @property
    def source_bytes(self) -> int:
        """Source bytes the rewrite reads (what its progress bar counts)."""
        return sum(t.source.nbytes for t in self.tensors)

    @property
    def nothing_to_do(self) -> bool:
        return not self.dropped and not self.config_changes and all(
            t.action == "copy" for t in self.tensors)

    def counts(self) -> dict:
        dequant = Counter(t.qw.scheme for t in self.tensors if t.action == "dequant")
        return {"dequantized": dict(dequant),
                "renamed": sum(t.action == "rename" for t in self.tensors),
                "cast_without_scale": sum(t.action == "cast" for t in self.tensors),
                "copied": sum(t.action == "copy" for t in self.tensors),
                "dropped": dict(Counter(self.dropped.values()))}

    def shard_fingerprint(self, shard: OutShard) -> str:
        """What a finished shard must match to be reused by --resume."""
        sources = [(t.source.file.name, t.source.offset, t.source.nbytes,
                    t.source.file.stat().st_mtime_ns, t.action) for t in shard.tensors]
        doc = json.dumps([shard.filename, self.out_dtype, sources], sort_keys=True)
        return hashlib.sha256(shard.header() + doc.encode()).hexdigest()

    def shard_source_bytes(self, shard: OutShard) -> int:
        return sum(t.source.nbytes for t in shard.tensors)

    @property
    def keeps_quantization_files(self) -> bool:
        return self.out_dtype == "keep"

    def validate(self) -> None:
        from ..formats.dequant import validate
        for tensor in self.tensors:
            if tensor.qw is not None:
                validate(tensor.qw)

    def jobs(self, tensor):
        from .shard_writer import tensor_jobs
        return tensor_jobs(tensor, self.out_dtype)

    def output_config(self) -> dict | None:
        from .config_edit import rewritten_config
        config = self.classification.bundle.config
        if config is None:
            return None
        if self.keeps_quantization_files:
            return self.new_config or config
        return rewritten_config(config, self.out_dtype)


def build_plan(result: Classification, out_dtype: str, max_shard_bytes: int,
               base: str, single_file: bool) -> Plan:
    if out_dtype not in OUT_DTYPES:
        raise ScalefixError(f"unknown --dtype {out_dtype!r} (bf16, f16, f32)")
    unsupported = result.named("unsupported")
    if unsupported:
        name = unsupported[0]
        raise ScalefixError(f"cannot dequantize: {result.reasons[name]}; nothing written",
                            file=result.bundle.tensors[name].file, tensor=name)
    plan = Plan(result, out_dtype)
    bundle, st_dtype = result.bundle, OUT_DTYPES[out_dtype]
    order = {path: i for i, path in enumerate(bundle.headers)}
    outputs: list[OutTensor] = []
    for name, info in sorted(bundle.tensors.items(),
                             key=lambda kv: (order[kv[1].file], kv[1].offset)):
        role = result.roles[name]
        if role in DROP_REASONS:
            plan.dropped[name] = DROP_REASONS[role]
        elif role == "quantized":
            qw = result.quantized[name]
            outputs.append(OutTensor(Entry(qw.output_name, st_dtype, qw.shape), "dequant",
                                     info, qw))
        elif role == "fp8_without_scale":
            outputs.append(OutTensor(Entry(name, st_dtype, info.shape), "cast", info))
        else:
            outputs.append(OutTensor(Entry(name, info.dtype, info.shape), "copy", info))
    seen: set[str] = set()
    for out in outputs:
        if out.entry.name in seen:
            raise ScalefixError("two output tensors would get this name", tensor=out.entry.name)
        seen.add(out.entry.name)
    metadata = {k: v for k, v in bundle.metadata.items() if k != COMFY_METADATA_KEY}
    metadata.setdefault("format", "pt")
    if COMFY_METADATA_KEY in bundle.metadata:
        plan.config_changes.append(f"__metadata__.{COMFY_METADATA_KEY} removed")
    plan.shards = pack_shards(outputs, max_shard_bytes, base, single_file, metadata)
    _plan_config_changes(plan)
    return plan


def _plan_config_changes(plan: Plan) -> None:
    result = plan.classification
    config = result.bundle.config or {}
    for where, holder in (("config.json", config), ("config.json:text_config",
                                                    config.get("text_config"))):
        if isinstance(holder, dict) and "quantization_config" in holder:
            plan.config_changes.append(f"{where}: quantization_config removed")
    if result.bundle.hf_quant_config is not None:
        plan.config_changes.append("hf_quant_config.json dropped")


RENAMABLE = {"weight_scale_inv": ".weight_scale_inv", "weight_scale": ".weight_scale"}


def build_rename_plan(result: Classification, target: str, max_shard_bytes: int, base: str,
                      single_file: bool) -> Plan:
    """Keep FP8 as it is; give block/channel/tensor scales the ``target`` name (the
    permanent fix for loaders that insist on one spelling, e.g. vLLM < 0.29 Marlin)."""
    if target not in RENAMABLE:
        raise ScalefixError(f"--rename-scales takes {' or '.join(RENAMABLE)}, not {target!r}")
    plan = Plan(result, "keep")
    bundle = result.bundle
    renames: dict[str, str] = {}
    for qw in result.quantized.values():
        if qw.naming not in RENAMABLE or not qw.name.endswith(".weight"):
            continue
        if target == "weight_scale_inv" and qw.geometry.granularity != "block":
            raise ScalefixError(
                f"--rename-scales weight_scale_inv is for block-scaled FP8, but this weight is "
                f"{qw.scheme}: loaders read weight_scale_inv as a block scale",
                file=qw.weight.file, tensor=qw.name)
        new = qw.name[: -len(".weight")] + RENAMABLE[target]
        if new != qw.scale.name:
            renames[qw.scale.name] = new
    order = {path: i for i, path in enumerate(bundle.headers)}
    outputs = []
    for name, info in sorted(bundle.tensors.items(),
                             key=lambda kv: (order[kv[1].file], kv[1].offset)):
        new = renames.get(name, name)
        outputs.append(OutTensor(Entry(new, info.dtype, info.shape),
                                 "rename" if new != name else "copy", info))
    clash = {renames[k] for k in renames} & (set(bundle.tensors) - set(renames))
    if clash:
        raise ScalefixError("renaming would overwrite an existing tensor", tensor=sorted(clash)[0])
    plan.shards = pack_shards(outputs, max_shard_bytes, base, single_file,
                              dict(bundle.metadata) or {"format": "pt"})
    if renames:
        from .config_edit import config_for_scale_naming
        plan.new_config, changes = config_for_scale_naming(bundle.config, result, target)
        plan.config_changes += changes
    return plan
