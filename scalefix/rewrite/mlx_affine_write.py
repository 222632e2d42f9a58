"""Writing ``rewrite --to mlx-affine``'s plan: per unit (layer) decode, mlx-lm sanitize,
``mx.quantize``; outputs appended to the planned shards in order; the same staging, fsync,
``.done`` markers and final rename as the BF16 rewrite. MLX is imported on first use."""

from __future__ import annotations

import math
import os
import threading
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import ScalefixError
from ..formats.classify import WEIGHT_CODECS
from ..formats.codecs import bf16_to_f32, decode, f32_to_bf16
from ..formats.dequant import dequantize
from ..formats.tensor_data import read_raw
from . import staging as stage
from .config_edit import copy_other_files, write_json
from .mlx_affine import (AffinePlan, AffineSpec, Source, Unit, mlx_config, output_dtype,
                         output_shape, sanitize_parts)


def _decoded(source: Source):
    """What sanitize gets for ``source``, as numpy (runs in the pool: numpy frees the GIL):
    BF16 bits, bit for bit ``rewrite``'s, for what is decoded; None for raw tensors."""
    if source.kind in ("requantize", "dequant"):
        return dequantize(source.qw, "bf16")
    if source.kind == "cast":
        values = decode(read_raw(source.info), WEIGHT_CODECS[source.info.dtype])
        return f32_to_bf16(values).reshape(source.info.shape)
    return None


def _unit_sources(plan: AffinePlan, unit: Unit, pool, sqnr: dict) -> dict:
    """The unit's sources as MLX arrays, decoded (or encoded to native forms) in the pool;
    a native form stored inexactly on request (``--bf16-biases``) reports its SQNR."""
    import mlx.core as mx

    from ..mlx.arrays import bf16_array, read_array
    from ..mlx.native_plan import build

    plain = [s for s in unit.sources if s.kind != "native"]
    native = {s.qw.name: s for s in unit.sources if s.kind == "native" and s.part == "weight"}
    decoded = pool.map(_decoded, plain)
    forms = dict(zip(native, pool.map(
        lambda s: build(s.qw, s.choice, plan.spec.bf16_biases), native.values())))
    out = {s.name: read_array(s.info) if bits is None else bf16_array(bits)
           for s, bits in zip(plain, decoded)}
    for s in native.values():
        if forms[s.qw.name].sqnr_db is not None:
            sqnr[s.name[: -len(".weight")]] = forms[s.qw.name].sqnr_db
    for s in unit.sources:
        if s.kind == "native":
            stored = getattr(forms[s.qw.name], s.part)
            out[s.name] = bf16_array(stored) if s.choice.parts[s.part][0] == "BF16" \
                else mx.array(stored)
    return out


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


QUANTIZE_ELEMENTS = 1 << 20  # elements per block: temporaries stay under glibc's mmap threshold


def unit_arrays(plan: AffinePlan, unit: Unit, stand_ins: dict, sqnr: dict, pool):
    """Yield ``(output name, evaluated MLX array)`` for every output of ``unit``, one module
    at a time so only the unit's decoded sources and one sanitized tensor are alive at once;
    the SQNR of each re-quantized module goes into ``sqnr``."""
    import mlx.core as mx

    arrays = dict(stand_ins)
    arrays.update(_unit_sources(plan, unit, pool, sqnr))
    sanitized = sanitize_parts(plan.layout, arrays, plan.sources)
    del arrays  # sources now live only in sanitize's graph: freed once their output is
    for o in unit.outputs:
        if o.part in ("scales", "biases"):
            continue  # yielded with their weight
        array = sanitized.pop(o.tensor)
        mx.eval(array)
        if mx.issubdtype(array.dtype, mx.floating) and mx.any(mx.isnan(array)).item():
            raise ScalefixError(f"holds NaN after {plan.layout.name}'s sanitize: the source "
                                "has NaN there, or the layout mixes tensors of several layers "
                                "(not supported: nothing written)", tensor=o.tensor)
        if o.part == "plain":
            yield o.entry.name, array
            continue
        if array.dtype != mx.bfloat16:
            raise ScalefixError(f"internal: {o.tensor} is {array.dtype} after sanitize, "
                                "expected bfloat16")
        q, scales, biases, (signal, noise) = quantize_rows(mx, array, plan.spec, pool)
        del array
        module = o.tensor[: -len(".weight")]
        sqnr[module] = math.inf if noise == 0 else (
            10 * math.log10(signal / noise) if signal > 0 else -math.inf)
        yield o.tensor, q
        yield f"{module}.scales", scales
        yield f"{module}.biases", biases


def quantize_rows(mx, w, spec: AffineSpec, pool):
    """``mx.quantize(w)`` a block of rows at a time (affine groups run along the last axis,
    so the result is the same bits as one call), with the (signal, noise) energies of the
    result against ``w`` by MLX's own ``mx.dequantize``: what the user gives up by going to
    affine. Blocks bound the float32 temporaries whatever the tensor's size; on the CPU they
    run in the pool, as MLX evaluates a graph on one core (measured: 2 threads, 2.2x)."""
    rows = math.prod(w.shape[:-1])
    step = max(1, QUANTIZE_ELEMENTS // w.shape[-1])
    blocks = [(start, min(start + step, rows)) for start in range(0, rows, step)]
    work = partial(_quantize_block, mx, spec, w)
    parts = list(pool.map(work, blocks) if mx.default_device() == mx.cpu else map(work, blocks))
    lead = tuple(w.shape[:-1])
    q, scales, biases = (mx.concatenate([p[i] for p in parts]).reshape(lead + (-1,))
                         for i in range(3))
    mx.eval(q, scales, biases)
    return q, scales, biases, (sum(p[3] for p in parts), sum(p[4] for p in parts))


_thread = threading.local()


def _quantize_block(mx, spec: AffineSpec, w, block: tuple[int, int]):
    """Rows ``block`` of ``w`` (evaluated), on this thread's own stream (MLX streams belong to
    a thread, so even the slicing happens here): (q, scales, biases, signal, noise)."""
    if getattr(_thread, "stream", None) is None:
        _thread.stream = mx.new_stream(mx.default_device())
    with mx.stream(_thread.stream):
        rows = w.reshape(-1, w.shape[-1])[block[0]: block[1]]
        q, scales, biases = mx.quantize(rows, group_size=spec.group_size, bits=spec.bits,
                                        mode="affine")
        back = mx.dequantize(q, scales, biases, group_size=spec.group_size, bits=spec.bits,
                             mode="affine")
        mx.eval(q, scales, biases, back, rows)
    signal, noise = _energies(*(bf16_to_f32(np.array(a.view(mx.uint16))) for a in (rows, back)))
    return q, scales, biases, signal, noise


def _energies(exact: np.ndarray, back: np.ndarray) -> tuple[float, float]:
    """(sum exact^2, sum (exact - back)^2): per-row float32 sums (short, exact enough) added
    up in float64, as one float32 sum over a whole expert stack loses whole percents. numpy,
    not MLX: measured 1.6x faster on the CPU."""
    diff = exact - back
    return (float(np.einsum("ij,ij->i", exact, exact).sum(dtype=np.float64)),
            float(np.einsum("ij,ij->i", diff, diff).sum(dtype=np.float64)))


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
        self._next = {i: iter([o.entry.name for o in s.tensors])
                      for i, s in enumerate(plan.shards)}
        self._open: tuple[int, object] | None = None

    def wanted(self, unit: Unit) -> bool:
        return any(self._plan.shards[self._shard_of[o.entry.name]].filename not in self._reused
                   for o in unit.outputs)

    def write(self, name: str, array) -> None:
        from ..mlx.arrays import array_bytes, safetensors_dtype
        index = self._shard_of[name]
        shard = self._plan.shards[index]
        if shard.filename in self._reused:
            return
        if self._open is None or self._open[0] != index:
            self._close()
            fh = open(self._staging / f".{shard.filename}.tmp", "wb")
            fh.write(shard.header())
            self._open = (index, fh)
        entry, expected = self._entries[name], next(self._next[index], None)
        if name != expected:  # the header's offsets assume the plan's order
            raise ScalefixError(f"internal: got {name}, the plan has {expected} next",
                                file=shard.filename)
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
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        self._open = None  # only now: a failed flush (disk full) is left to abort()
        if self._left[index]:
            raise ScalefixError("internal: shard closed before all its tensors were written",
                                file=self._plan.shards[index].filename)
        shard = self._plan.shards[index]
        self._commit(shard.filename, self._plan.shard_fingerprint(shard))

    def abort(self) -> None:
        """Close and remove the shard being written: it is incomplete, and on a full disk
        its space is what the user needs back."""
        if self._open is not None:
            index, fh = self._open
            self._open = None
            try:
                fh.close()
            except OSError:
                pass  # flushing what the disk refused fails again; the file is closed anyway
            (self._staging / f".{self._plan.shards[index].filename}.tmp").unlink(missing_ok=True)


def write_affine_bundle(plan: AffinePlan, dst: Path, resume: bool, reused: set[str], progress,
                        note, summary, pool) -> int:
    """Units (layers) in order: decode, mlx-lm sanitize, mx.quantize, append to the shards.
    ``reused``: the finished shards of an interrupted run (``staging.reusable_shards``)."""
    bundle = plan.classification.bundle
    staging = stage.prepare(dst, resume, note, reused)
    if reused:
        note(f"resuming: {len(reused)} finished shard(s) checked and reused")
    shards = ShardSequence(plan, staging, reused,
                           lambda name, fp: stage.commit_shard(staging, name, fp))
    sqnr: dict[str, float] = {}
    stand_ins = standins(plan)
    try:
        for unit in plan.units:
            if shards.wanted(unit):
                for name, array in unit_arrays(plan, unit, stand_ins, sqnr, pool):
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
