"""Making the MLX bundle's tensors (``bundle_plan.MlxPlan``) as ``rewrite`` jobs: streamed
from the source bytes where sanitize only renamed them, else per unit (layer): decode, mlx-lm
sanitize, ``mx.quantize``. rewrite's writer puts them in the planned shards, with its staging,
fsync, ``.done`` markers, ``--resume`` and final rename. MLX is imported on first use."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from functools import partial

import numpy as np

from ..errors import ScalefixError
from ..formats.classify import WEIGHT_CODECS
from ..formats.codecs import bf16_to_f32, decode, f32_to_bf16
from ..formats.dequant import dequantize
from ..formats.tensor_data import read_raw
from ..rewrite.target import Job
from .bundle_plan import (MlxPlan, MlxSpec, Output, Source, Unit, output_dtype, output_shape,
                          sanitize_parts)


def _decoded(source: Source):
    """What sanitize gets for ``source``, as numpy (runs in the pool: numpy frees the GIL):
    BF16 bits, bit for bit ``rewrite``'s, for what is decoded; None for raw tensors."""
    if source.kind in ("requantize", "dequant"):
        return dequantize(source.qw, "bf16")
    if source.kind == "cast":
        values = decode(read_raw(source.info), WEIGHT_CODECS[source.info.dtype])
        return f32_to_bf16(values).reshape(source.info.shape)
    return None


def _unit_sources(plan: MlxPlan, unit: Unit, pool, sqnr: dict) -> dict:
    """The unit's sources as MLX arrays, decoded (or encoded to native forms) in the pool;
    a native form stored inexactly on request (``--bf16-biases``) reports its SQNR."""
    import mlx.core as mx

    from .arrays import bf16_array, read_array
    from .native_plan import build

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


def standins(plan: MlxPlan) -> dict:
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


def unit_arrays(plan: MlxPlan, unit: Unit, stand_ins: dict, sqnr: dict, pool):
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


def quantize_rows(mx, w, spec: MlxSpec, pool):
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


def _quantize_block(mx, spec: MlxSpec, w, block: tuple[int, int]):
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


class BundleWriter:
    """The jobs of every planned output (``MlxPlan.jobs``). A unit whose outputs all pass a
    source through (``Output.source``) streams from the source bytes (``native_stream``, or
    the BF16 rewrite's own decode jobs); any other unit is made by MLX, one unit at a time,
    on the writing thread (``Job.prepare``: it uses the workers itself), each output then
    copied into the shard in chunks by the workers."""

    def __init__(self, plan: MlxPlan, pool):
        from .native_stream import NativeModules

        self.plan, self.pool = plan, pool
        self.sqnr: dict[str, float] = {}
        self._sqnr_lock = threading.Lock()
        self._native = NativeModules(plan.spec.bf16_biases, self.sqnr, self._sqnr_lock)
        self._unit_of = {o.entry.name: unit for unit in plan.units for o in unit.outputs}
        self._streams = {id(unit): all(o.source is not None for o in unit.outputs)
                         for unit in plan.units}
        self._stand_ins = None
        self._made: tuple[Unit, object] | None = None   # the unit MLX is making, its outputs

    def jobs(self, out: Output) -> list[Job]:
        unit = self._unit_of[out.entry.name]
        jobs = self._streamed(out) if self._streams[id(unit)] else self._computed(out, unit)
        jobs = [replace(job, counts_for=0) for job in jobs] or [
            Job(None, 0, 0, 0, _nothing, counts_for=0)]
        jobs[-1] = replace(jobs[-1], counts_for=out.counts_for)
        return jobs

    def _streamed(self, out: Output) -> list[Job]:
        from ..rewrite.target import bf16_jobs, copy_jobs

        source = out.source
        if source.kind == "native":
            return self._native.jobs(source, out.entry.nbytes)
        if source.kind == "copy":
            return list(copy_jobs(source.info))
        return list(bf16_jobs(out.entry, source.info, source.qw))  # dequant / cast

    def _computed(self, out: Output, unit: Unit) -> list[Job]:
        held = _Held()
        size = out.entry.nbytes
        starts = list(range(0, size, OUTPUT_CHUNK)) or [0]
        held.left = len(starts)
        return [Job(None, 0, 0, min(OUTPUT_CHUNK, size - start), partial(_copy_out, held, start),
                    partial(self._make, out, unit, held) if i == 0 else None)
                for i, start in enumerate(starts)]

    def _make(self, out: Output, unit: Unit, held: _Held) -> None:
        """Writing thread: MLX makes ``unit``'s outputs in order up to ``out`` (outputs of a
        shard reused by ``--resume`` are made and dropped)."""
        from .arrays import array_bytes, safetensors_dtype

        if self._made is None or self._made[0] is not unit:
            if self._stand_ins is None:
                self._stand_ins = standins(self.plan)
            self._made = (unit, unit_arrays(self.plan, unit, self._stand_ins, self.sqnr,
                                            self.pool))
        for name, array in self._made[1]:
            if name != out.entry.name:
                continue
            entry = out.entry
            if (safetensors_dtype(array), tuple(array.shape)) != (entry.dtype, entry.shape):
                raise ScalefixError(f"internal: got {safetensors_dtype(array)} "
                                    f"{list(array.shape)}, planned {entry.dtype} "
                                    f"{list(entry.shape)}", tensor=name)
            held.data = np.frombuffer(array_bytes(array), dtype=np.uint8)
            return
        raise ScalefixError(f"internal: {unit.key} made no {out.entry.name}")


OUTPUT_CHUNK = 8 << 20  # bytes of an MLX-made output per job


class _Held:
    """An MLX-made output's bytes until its last chunk is copied."""

    def __init__(self):
        self.data, self.left, self.lock = None, 0, threading.Lock()


def _copy_out(held: _Held, start: int, _raw, out: np.ndarray) -> None:
    np.copyto(out, held.data[start: start + len(out)])
    with held.lock:
        held.left -= 1
        if held.left == 0:
            held.data = None


def _nothing(_raw, _out) -> None:
    pass
