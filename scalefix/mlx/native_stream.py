"""A native module's stored parts as ``rewrite`` jobs, straight from the source bytes: what
makes ``rewrite --to mlx`` run at the speed of the disk.

- codes already in MLX's bitstream (compressed-tensors dense packing, MXFP4, FP8 codes) are
  copied in chunks; INT8 flips each byte's top bit (``q + 128``); GPTQ and AWQ, which pack
  across output rows, are repacked one tensor at a time (the steps of
  ``lazy_native.lazy_codes_words``, which the load-time hook runs on MLX arrays, written for
  numpy's speed: a banded transpose, AWQ's nibbles paired while still in words);
- scales and biases are computed from the small side tensors, once per module
  (``native_forms.affine_side`` / ``mxfp8_scales``), MXFP4's E8M0 and NVFP4's E4M3 bytes
  copied, NVFP4's global scale converted (``native_plan.mlx_global_scale``, as at load time);
- anything else (older per-word 3/5/6-bit packing, ``--bf16-biases``, which reports an SQNR)
  builds the module's whole ``NativeForm`` once (``native_plan.build``) and copies its parts.

The bytes equal ``native_plan.build``'s, part for part (tests/mlx/test_rewrite_to_mlx.py and
benchmarks/mlx_bytes.py hold them to it).
"""

from __future__ import annotations

import threading
from functools import partial

import numpy as np

from ..errors import ScalefixError
from ..formats.int_weights import AWQ_ORDER
from ..rewrite.target import Job, copy_jobs


class _Numpy:
    """The few MLX names ``lazy_codes_words`` uses, for numpy arrays."""

    uint8 = np.uint8
    uint32 = np.dtype("<u4")
    contiguous = staticmethod(np.ascontiguousarray)

    @staticmethod
    def stack(arrays, axis):  # C order, as MLX's: the reshape and view that follow need it
        return np.ascontiguousarray(np.stack(arrays, axis=axis))
    array = staticmethod(np.array)


def _as_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1)


def _xor_top_bit(raw: np.ndarray, out: np.ndarray) -> None:
    np.bitwise_xor(raw, np.uint8(0x80), out=out)


def _positive_e4m3(raw: np.ndarray, out: np.ndarray) -> None:
    """NVFP4 block scale bytes, copied; the plan proved the global scale exact for the
    finite positive ones (0x00 .. 0x7E) only."""
    if raw.size and int(raw.max()) >= 0x7F:
        raise ScalefixError("an NVFP4 block scale is negative or NaN: its exactness in MLX's "
                            "nvfp4 was not proven (nothing written)")
    np.copyto(out, raw)


_LOW, _HIGH = np.uint32(0x0F0F0F0F), np.uint32(0xF0F0F0F0)
_BAND = 16  # rows a band: 64 output bytes a row stay in one cache line while the band is made


def _transposed(words: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A 2-D array transposed into ``out`` (a new C-order array when None), a band of
    ``_BAND`` source rows at a time: numpy's own copy of a transposed view walks the source in
    the output's order and misses the cache on every element; in bands it runs 1.5-3.5x
    faster on GPTQ / AWQ shapes (2026-12-04, this 2-core VM: 0.9 ms against 3.2 ms for
    256 x 5632 words)."""
    rows, cols = words.shape
    out = np.empty((cols, rows), words.dtype) if out is None else out
    for start in range(0, rows, _BAND):
        out[:, start:start + _BAND] = words[start:start + _BAND].T
    return out


def _gptq_words(stored: np.ndarray, dest: np.ndarray) -> None:
    """GPTQ ``[in*b/32, out]`` words -> MLX's ``[out, in*b/32]`` bitstream, written into the
    bytes ``dest``: each word holds 32/b consecutive inputs of one output, low bits first, so
    the transpose is all there is (``lazy_codes_words``' GPTQ step, in numpy)."""
    rows, cols = stored.shape
    _transposed(stored.view(np.uint32), dest.view(np.uint32).reshape(cols, rows))


def _awq_words(stored: np.ndarray, dest: np.ndarray) -> None:
    """AWQ GEMM ``[in, out/8]`` words -> MLX's ``[out, in/8]`` bitstream, written into the
    bytes ``dest``, in numpy: the words
    are transposed first (4-byte elements: cheap), then inputs 2i and 2i+1 are paired into
    one byte per output while still packed, 4 outputs per word (byte j of the low-nibble
    word is output ``AWQ_ORDER[2j]``, of the high-nibble word ``AWQ_ORDER[2j+1]``), and each
    byte is put in its output row (about 3x ``lazy_codes_words``' per-phase steps)."""
    cols, blocks = stored.shape
    words = _transposed(stored.view(np.uint32))                         # [out/8, in]
    even, odd = words[:, 0::2], words[:, 1::2]
    low = ((even & _LOW) | ((odd & _LOW) << 4)).view(np.uint8).reshape(blocks, cols // 2, 4)
    high = (((even >> 4) & _LOW) | (odd & _HIGH)).view(np.uint8).reshape(blocks, cols // 2, 4)
    out = dest.reshape(blocks, 8, cols // 2)                            # [out, in/2]
    out[:, AWQ_ORDER[0::2], :] = low.transpose(0, 2, 1)
    out[:, AWQ_ORDER[1::2], :] = high.transpose(0, 2, 1)


class _Once:
    """A value computed on first use by whichever worker asks first."""

    def __init__(self, make):
        self._make, self._value, self._lock = make, None, threading.Lock()

    def get(self):
        with self._lock:
            if self._make is not None:
                self._value, self._make = self._make(), None
            return self._value


def _computed(out_len: int, value: _Once, pick) -> Job:
    """One job with nothing to read: ``pick(value.get())`` is the part's bytes."""
    def fill(_raw, out):
        data = pick(value.get())
        if data.nbytes != out.nbytes:
            raise ScalefixError(f"internal: a part has {data.nbytes} bytes, planned "
                                f"{out.nbytes}")
        np.copyto(out, data)
    return Job(None, 0, 0, out_len, fill)


class NativeModules:
    """The jobs of every native part; side values computed once per module, on demand."""

    def __init__(self, bf16_biases: bool, sqnr: dict, sqnr_lock: threading.Lock):
        self._bf16_biases, self._sqnr, self._sqnr_lock = bf16_biases, sqnr, sqnr_lock
        self._side: dict[str, _Once] = {}
        self._forms: dict[str, _Once] = {}

    def jobs(self, source, out_len: int) -> list[Job]:
        """Jobs for ``source`` (a native part: ``source.part`` of ``source.qw`` in
        ``source.choice``), ``out_len`` bytes planned."""
        from .lazy_native import supported

        qw, form, part = source.qw, source.choice, source.part
        if form.mode == "affine" and not self._bf16_biases and supported(qw):
            if part == "weight":
                return self._int_codes(qw, out_len)
            side = self._side.setdefault(qw.name, _Once(lambda: self._affine_side(qw, form)))
            return [_computed(out_len, side, lambda v: v[0 if part == "scales" else 1])]
        if form.mode == "nvfp4":
            if part == "weight":
                return list(copy_jobs(qw.weight))
            if part == "scales":
                return list(copy_jobs(qw.scale, _positive_e4m3))
            from .native_plan import mlx_global_scale
            side = self._side.setdefault(qw.name, _Once(lambda: mlx_global_scale(qw)))
            return [_computed(out_len, side, _as_bytes)]
        if form.mode == "mxfp4":
            return list(copy_jobs(qw.weight if part == "weight" else qw.scale))
        if form.mode == "mxfp8" and part == "weight":
            return list(copy_jobs(qw.weight))
        if form.mode == "mxfp8":
            side = self._side.setdefault(qw.name, _Once(lambda: self._mxfp8_scales(qw, form)))
            return [_computed(out_len, side, _as_bytes)]
        whole = self._forms.setdefault(qw.name, _Once(lambda: self._build(source)))
        return [_computed(out_len, whole, lambda f: _as_bytes(getattr(f, part)))]

    def _int_codes(self, qw, out_len: int) -> list[Job]:
        from .lazy_native import lazy_codes_words

        if qw.layout in ("ct-dense", "ct-per-word"):     # MLX's bitstream as stored
            return list(copy_jobs(qw.weight))
        if qw.layout == "int8":
            return list(copy_jobs(qw.weight, _xor_top_bit))
        shape = tuple(qw.weight.shape)                     # GPTQ / AWQ: whole tensor
        into = len(shape) == 2 and {"awq": _awq_words, "gptq": _gptq_words}.get(qw.layout)
        words_of = partial(lazy_codes_words, _Numpy, qw)

        def repack(raw, out):
            stored = raw.view(np.int32).reshape(shape)
            if into:  # straight into the output buffer
                into(stored, out)
            else:
                np.copyto(out, _as_bytes(words_of(stored)))
        return [Job(qw.weight.file, qw.weight.offset, qw.weight.nbytes, out_len, repack)]

    @staticmethod
    def _affine_side(qw, form):
        from ..formats.int_codes import canonical_side
        from .native_forms import affine_side

        scale, zero = canonical_side(qw)
        try:
            s, b = affine_side(scale, zero, qw.bits, qw.group, form.group_size, qw.shape[-1],
                               form.scale_dtype)
        except ValueError as exc:
            raise ScalefixError(f"internal: planned {form.scale_dtype} scales, but {exc}",
                                tensor=qw.name) from None
        return _as_bytes(s), _as_bytes(b)

    @staticmethod
    def _mxfp8_scales(qw, form):
        from ..formats.dequant import load_scale
        from .native_forms import mxfp8_scales

        scale = load_scale(qw).reshape(qw.geometry.scale_shape)
        *_, out, cols = form.shape
        scales = mxfp8_scales(scale, out, cols, qw.geometry.block)
        if not isinstance(scales, np.ndarray):
            raise ScalefixError(f"internal: planned mxfp8, but {scales.reason}", tensor=qw.name)
        return scales

    def _build(self, source):
        from .native_plan import build

        form = build(source.qw, source.choice, self._bf16_biases)
        if form.sqnr_db is not None:
            with self._sqnr_lock:
                self._sqnr[source.name[: -len(f".{source.part}")]] = form.sqnr_db
        return form
