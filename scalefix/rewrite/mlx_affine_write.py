"""Writing ``rewrite --to mlx-affine``'s plan: per unit (layer) decode, mlx-lm sanitize,
``mx.quantize``; outputs appended to the planned shards in order; the same staging, fsync,
``.done`` markers and final rename as the BF16 rewrite. MLX is imported on first use."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import ScalefixError
from ..formats.codecs import decode, f32_to_bf16
from ..formats.dequant import dequantize
from ..formats.tensor_data import read_raw
from . import staging as stage
from .config_edit import copy_other_files, write_json
from .mlx_affine import (AffinePlan, AffineSpec, Source, Unit, mlx_config, output_dtype,
                         output_shape)


def _array(source: Source):
    """The tensor handed to sanitize: decoded to BF16 (bit for bit ``rewrite``'s) or raw."""
    from ..mlx_arrays import bf16_array, read_array
    if source.kind in ("requantize", "dequant"):
        return bf16_array(dequantize(source.qw, "bf16"))
    if source.kind == "cast":
        codec = "e4m3" if source.info.dtype == "F8_E4M3" else "e5m2"
        bits = f32_to_bf16(decode(read_raw(source.info), codec))
        return bf16_array(bits.reshape(source.info.shape))
    return read_array(source.info)


def standins(plan: AffinePlan) -> dict:
    """Every source as a lazy array of its shape and dtype, never evaluated: sanitizers look
    at the whole checkpoint (mixtral checks layer 0's experts before stacking any layer), so
    each layer is sanitized beside stand-ins for all the others. Float stand-ins are NaN, so
    an output that mixed in another layer's data would be caught, not written."""
    import mlx.core as mx

    out = {}
    for source in plan.sources:
        dtype = output_dtype(mx, source)
        fill = math.nan if mx.issubdtype(dtype, mx.floating) else 0
        out[source.name] = mx.full(output_shape(source), fill, dtype=dtype)
    return out


def unit_arrays(plan: AffinePlan, unit: Unit, stand_ins: dict, sqnr: dict) -> dict:
    """Every output array of ``unit``, by output name, in MLX (evaluated); the SQNR of each
    re-quantized module goes into ``sqnr``."""
    import mlx.core as mx

    spec = plan.spec
    arrays = dict(stand_ins)
    arrays.update({s.name: _array(s) for s in unit.sources})
    sanitized = plan.layout.sanitize(arrays)
    out, nan_checks, errors = {}, {}, {}
    for o in unit.outputs:
        array = sanitized[o.tensor]
        if mx.issubdtype(array.dtype, mx.floating):
            nan_checks[o.tensor] = mx.any(mx.isnan(array))
        if o.part == "plain":
            out[o.entry.name] = array
        elif o.part == "weight":
            if array.dtype != mx.bfloat16:
                raise ScalefixError(f"internal: {o.tensor} is {array.dtype} after sanitize, "
                                    "expected bfloat16")
            q, scales, biases = mx.quantize(array, group_size=spec.group_size, bits=spec.bits,
                                            mode="affine")
            module = o.tensor[: -len(".weight")]
            out.update({o.tensor: q, f"{module}.scales": scales, f"{module}.biases": biases})
            errors[module] = requantization_error(mx, array, q, scales, biases, spec)
    mx.eval(list(out.values()) + list(nan_checks.values()) + list(errors.values()))
    for name, has_nan in nan_checks.items():
        if has_nan.item():
            raise ScalefixError(f"holds NaN after {plan.layout.name}'s sanitize: the source "
                                "has NaN there, or the layout mixes tensors of several layers "
                                "(not supported: nothing written)", tensor=name)
    for module, (signal, noise) in errors.items():
        signal, noise = signal.item(), noise.item()
        sqnr[module] = math.inf if noise == 0 else (
            10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return out


def requantization_error(mx, w, q, scales, biases, spec: AffineSpec):
    """(signal, noise) energies of the affine result against the exact decoded weight, by
    MLX's own ``mx.dequantize``: what the user gives up by going to affine (lazy)."""
    back = mx.dequantize(q, scales, biases, group_size=spec.group_size, bits=spec.bits,
                         mode="affine").astype(mx.float32)
    exact = w.astype(mx.float32)
    return mx.sum(exact * exact), mx.sum((exact - back) ** 2)


def sqnr_summary(sqnr: dict[str, float]) -> dict | None:
    if not sqnr:
        return None
    ordered = sorted(sqnr.items(), key=lambda kv: kv[1])
    return {"min_db": round(ordered[0][1], 2), "worst": ordered[0][0],
            "median_db": round(ordered[len(ordered) // 2][1], 2), "modules": len(ordered)}


class ShardSequence:
    """The planned shards, written one after another as units produce their tensors: each
    shard's header comes from the plan, its tensors are appended in plan order, and it is
    fsynced and committed once complete. Shards reused by ``--resume`` are skipped."""

    def __init__(self, plan: AffinePlan, staging: Path, reused: set[str], commit):
        self._plan, self._staging, self._reused, self._commit = plan, staging, reused, commit
        self._shard_of = {o.entry.name: i for i, s in enumerate(plan.shards) for o in s.tensors}
        self._entries = {o.entry.name: o.entry for s in plan.shards for o in s.tensors}
        self._left = [len(s.tensors) for s in plan.shards]
        self._open: tuple[int, object] | None = None

    def wanted(self, unit: Unit) -> bool:
        return any(self._plan.shards[self._shard_of[o.entry.name]].filename not in self._reused
                   for o in unit.outputs)

    def write(self, name: str, array) -> None:
        from ..mlx_arrays import array_bytes, safetensors_dtype
        index = self._shard_of[name]
        shard = self._plan.shards[index]
        if shard.filename in self._reused:
            return
        if self._open is None or self._open[0] != index:
            self._close()
            fh = open(self._staging / f".{shard.filename}.tmp", "wb")
            fh.write(shard.header())
            self._open = (index, fh)
        entry = self._entries[name]
        if (safetensors_dtype(array), tuple(array.shape)) != (entry.dtype, entry.shape):
            raise ScalefixError(f"internal: got {safetensors_dtype(array)} "
                                f"{list(array.shape)}, planned {entry.dtype} "
                                f"{list(entry.shape)}", tensor=name)
        self._open[1].write(array_bytes(array))
        self._left[index] -= 1
        if self._left[index] == 0:
            self._close()

    def _close(self) -> None:
        if self._open is None:
            return
        index, fh = self._open
        self._open = None
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        if self._left[index]:
            raise ScalefixError("internal: shard closed before all its tensors were written",
                                file=self._plan.shards[index].filename)
        shard = self._plan.shards[index]
        self._commit(shard.filename, self._plan.shard_fingerprint(shard))

    def abort(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None


def write_affine_bundle(plan: AffinePlan, dst: Path, resume: bool, progress, note,
                        summary) -> int:
    """Units (layers) in order: decode, mlx-lm sanitize, mx.quantize, append to the shards."""
    bundle = plan.classification.bundle
    staging = stage.prepare(dst, resume, note)
    reused = set()
    if resume:
        for shard in plan.shards:
            header = shard.header()
            if stage.shard_reusable(staging, shard.filename, plan.shard_fingerprint(shard),
                                    header, len(header) + shard.nbytes):
                reused.add(shard.filename)
        if reused:
            note(f"resuming: {len(reused)} finished shard(s) checked and reused")
    shards = ShardSequence(plan, staging, reused,
                           lambda name, fp: stage.commit_shard(staging, name, fp))
    sqnr: dict[str, float] = {}
    stand_ins = standins(plan)
    try:
        for unit in plan.units:
            if shards.wanted(unit):
                for name, array in unit_arrays(plan, unit, stand_ins, sqnr).items():
                    shards.write(name, array)
            progress.advance(sum(s.info.nbytes for s in unit.sources))
    finally:
        shards.abort()
    summary.requantization_sqnr = sqnr_summary(sqnr)
    summary.copied_files = copy_other_files(bundle, staging)
    write_json(staging / "config.json", mlx_config(bundle.config or {}, plan))
    stage.write_index(staging, plan.shards)
    stage.finish(staging, dst)
    return len(reused)
