"""jang_fp8: ``jang convert`` (``jang_tools.convert.convert_model``) reads FP8 weights without
their scales unless the scale is named exactly ``<weight>_scale_inv`` in the weight's shard.

jang 2.5.50 reads FP8 with its own header reader (``jang_tools.fp8.load_fp8_tensor``), not
through ``mx.load``, and looks the scale up as ``f"{tensor_name}_scale_inv"`` in the weight's
own shard only; with no such key it gets ``None`` and the unscaled E4M3 values (max |w| 448
where the weights peak near 0.2). Only names containing ``_scale_inv`` are kept out of the
weights it quantizes, so a compressed-tensors ``weight_scale`` is quantized and written as if
it were a weight. Its E4M3 decoder also turns the NaN codes 0x7F / 0xFF into +-480, and its
block size comes from ``ceil(rows / scale_rows)``, which misplaces the scales of ragged
weights whose last block is short (DeepSeek-V3's ``kv_a_proj_with_mqa``, [576, 7168] with
[5, 56] scales: blocks of 116 rows instead of 128).

The fix, applied when ``jang_tools.convert`` is imported:

- ``jang_tools.fp8.load_fp8_tensor``: every FP8 weight scalefix's classification of the whole
  bundle pairs with a scale (any naming, any shard, any block, channel or tensor scale, E5M2)
  is decoded by scalefix: the float32 product of the decoded code and its float32 scale,
  exactly what jang computes when it finds ``<weight>_scale_inv`` itself, so the output is
  bit-identical to ``jang convert`` of the same codes and scales stored the jang way. The
  negative-zero code decodes to +0.0, as jang's decoder has it (the product's sign then
  matches jang's); NaN codes decode as NaN. Anything else (BF16 weights jang probes this way,
  FP8 without a scale) gets the original function.
- ``jang_tools.fp8.fp8_e4m3_to_float32``: NaN codes become NaN (for what jang decodes itself).
- ``jang_tools.convert.safe_open``: in a bundle with weights the patch decodes, the handle
  lists no scales, activation scales or markers, so jang neither quantizes nor copies them.

A checkpoint jang already reads right (``_scale_inv`` in the weight's shard, blocks that
``ceil`` finds) gives the same values, hence the same bytes. A weight that cannot be fixed is
said on stderr, once per file (``SCALEFIX_STRICT=1`` raises instead); never a silent misread.

Upstream: not fixed in 2.5.50 (``patches/jang-2.5.50-fp8-scale-any-name.diff``,
``patches/jang-2.5.50-fp8-e4m3-nan.diff``). Off: ``SCALEFIX_DISABLE_PATCHES=jang_fp8``.
Permanent fix of an installed app: ``scalefix patch-install APP`` (``install/jang_fp8.py``).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
from pathlib import Path

from .load_report import LoadReport, UnfixedCheckpointError
from .wrapping import MARK, unwrap, wrap

TARGET = "jang_tools.convert"
DISTRIBUTION = "jang"
AFFECTED = ">=0"   # every release whose convert_model has the lookup; the probe decides
ATTRIBUTES = ("safe_open",)   # on TARGET; jang_tools.fp8's two functions: revert() restores
FP8_MODULE = "jang_tools.fp8"
LOOKUP = 'f"{tensor_name}_scale_inv"'   # the only scale name convert_model asks for
FP8_CODECS = ("e4m3", "e5m2")
SIDE_ROLES = ("activation_scale", "marker")   # hidden with the scales of decoded weights
NEGATIVE_ZERO = 0x80  # E4M3 and E5M2 alike
CALLER_GETS = "jang reads it as it would without scalefix (FP8 values without their scales)"


def bug_present(module) -> str | None:
    convert = getattr(module, "convert_model", None)
    if convert is None or not callable(getattr(module, "safe_open", None)):
        return "jang_tools.convert has no convert_model / safe_open: not the reader this fixes"
    try:
        source = inspect.getsource(convert)
    except (OSError, TypeError):
        return None  # no source to read: the version range decides
    if LOOKUP not in source or "load_fp8_tensor" not in source:
        return ("convert_model no longer looks FP8 scales up as <weight>_scale_inv only "
                "(fixed upstream, or patched on disk by scalefix patch-install)")
    return None


class _Bundle:
    """One source directory, classified once: the FP8 weights this patch decodes and, per
    shard, the tensors jang must not see."""

    def __init__(self, root: Path):
        from ..formats import classify, open_bundle
        from ..formats.classify import QuantizedWeight

        self.result = classify(open_bundle(root))
        self.stats = {os.path.abspath(shard): _stat(shard) for shard in self.result.bundle.shards}
        self.decode = {name: qw for name, qw in self.result.quantized.items()
                       if isinstance(qw, QuantizedWeight) and qw.codec in FP8_CODECS}
        self.hidden: set[str] = set()
        if self.decode:
            for qw in self.decode.values():
                self.hidden.update(side.name for side in qw.side_tensors)
            self.hidden.update(n for n, role in self.result.roles.items()
                               if role in SIDE_ROLES)
        self.unscaled = {n: self.result.reasons.get(n, "no scale found in the bundle")
                         for n, role in self.result.roles.items()
                         if role in ("fp8_without_scale", "unsupported")
                         and self.result.bundle.tensors[n].dtype.startswith("F8_")}

    def unchanged(self, path: str) -> bool:
        return path not in self.stats or self.stats[path] == _stat(path)


def _stat(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class _State:
    """Per process: classified bundles (by directory), and the report of what was done."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bundles: dict[Path, _Bundle | None] = {}
        self.report = LoadReport(patch="jang_fp8", caller_gets=CALLER_GETS)

    def bundle(self, file) -> _Bundle | None:
        """The classified bundle of ``file``'s directory; classified again when that shard
        changed since (the key is its stat, checked per call: jang opens a shard per tensor)."""
        path = os.path.abspath(file)
        root = Path(path).parent
        with self.lock:
            cached = self.bundles.get(root)
        if root in self.bundles and (cached is None or cached.unchanged(path)):
            return cached
        try:
            found = _Bundle(root)
        except Exception as exc:  # an unreadable bundle: jang's own reading, said once
            found = None
            if _has_fp8(file):
                self.unfixed(file, _reason(exc))
        with self.lock:
            self.bundles[root] = found
        return found

    def unfixed(self, file, reason: str) -> None:
        """Said once per file; under SCALEFIX_STRICT=1 said and raised (jang's reader catches
        exceptions and retries as BF16, which then fails on its own: the line says why)."""
        try:
            self.report.cannot_fix(file, reason)
        except UnfixedCheckpointError as exc:
            print(f"scalefix: jang_fp8: error: {exc}", file=sys.stderr)
            raise


STATE = _State()


def _reason(exc: Exception) -> str:
    from ..errors import ScalefixError
    return str(exc) if isinstance(exc, ScalefixError) else f"{type(exc).__name__}: {exc}"


def _has_fp8(file) -> bool:
    try:
        from ..formats import read_header
        return any(t.dtype.startswith("F8_") for t in read_header(Path(file)).tensors.values())
    except Exception:
        return False


def decode(qw, shape) -> "np.ndarray":  # noqa: F821 - numpy is imported by the caller's jang
    """float32 values of an FP8 weight, as jang's own product computes them."""
    import numpy as np

    from ..formats.dequant import dequantize_rows, load_scale
    from ..formats.tensor_data import read_raw

    raw = read_raw(qw.weight)
    # jang's decoder gives the code 0x80 +0.0; scalefix's table -0.0. Same value, but the sign
    # of a zero survives into the product and into jang's min/max: match jang bit for bit.
    raw = np.where(raw == NEGATIVE_ZERO, np.uint8(0), raw)
    values = dequantize_rows(qw, raw, load_scale(qw), 0)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(tuple(shape))


def _loader(original):
    def load_fp8_tensor(sf_path, tensor_name, shape, scale_inv=None, *args, **kwargs):
        bundle = STATE.bundle(sf_path)
        qw = bundle.decode.get(tensor_name) if bundle is not None else None
        if qw is not None and os.path.abspath(qw.weight.file) == os.path.abspath(sf_path):
            try:
                values = decode(qw, shape)
            except Exception as exc:
                STATE.unfixed(sf_path, f"{tensor_name!r}: {_reason(exc)}")
            else:
                STATE.report.record(sf_path, "fixed")
                return values
        elif bundle is not None and tensor_name in bundle.unscaled:
            STATE.unfixed(sf_path, f"{tensor_name!r}: {bundle.unscaled[tensor_name]}")
        elif str(sf_path) not in STATE.report.fixed:  # a BF16 weight jang probes this way
            STATE.report.record(sf_path, "passed")
        return original(sf_path, tensor_name, shape, scale_inv, *args, **kwargs)
    return load_fp8_tensor


def _nan_decoder(original):
    def fp8_e4m3_to_float32(x, *args, **kwargs):
        import numpy as np
        result = original(x, *args, **kwargs)
        codes = np.asarray(x)
        if codes.dtype == np.uint8 and result.shape == codes.shape:
            result[(codes & 0x7F) == 0x7F] = np.float32("nan")
        return result
    return fp8_e4m3_to_float32


class _Listing:
    """A safetensors handle whose ``keys()`` leaves out the bundle's side tensors."""

    def __init__(self, handle, hidden: set[str]):
        self._handle, self._hidden = handle, hidden

    def keys(self):
        return [k for k in self._handle.keys() if k not in self._hidden]

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._handle, name)


def _opener(original):
    def safe_open(filename, *args, **kwargs):
        handle = original(filename, *args, **kwargs)
        bundle = STATE.bundle(filename)
        return _Listing(handle, bundle.hidden) if bundle is not None and bundle.hidden \
            else handle
    setattr(safe_open, MARK, True)
    safe_open.__wrapped__ = original
    return safe_open


def nan_decode_missing(fp8) -> bool:
    """jang's E4M3 decoder has no NaN case (2.5.50 gives 0x7F +480)."""
    try:
        return "nan" not in inspect.getsource(fp8.fp8_e4m3_to_float32).lower()
    except (OSError, TypeError, AttributeError):
        return False


def apply(module) -> None:
    fp8 = importlib.import_module(FP8_MODULE)
    wrap(fp8, "load_fp8_tensor", _loader)
    if nan_decode_missing(fp8):
        wrap(fp8, "fp8_e4m3_to_float32", _nan_decoder)
    if not getattr(module.safe_open, MARK, False):
        module.safe_open = _opener(module.safe_open)


def revert(module) -> None:
    unwrap(module, "safe_open")
    fp8 = sys.modules.get(FP8_MODULE)
    if fp8 is not None:
        unwrap(fp8, "load_fp8_tensor")
        unwrap(fp8, "fp8_e4m3_to_float32")


def files_report() -> dict:
    """Shards whose FP8 weights were decoded with their scales, read as jang reads them
    (nothing to fix: BF16 weights jang probes this way), or left unfixed (with why)."""
    return STATE.report.summary()
