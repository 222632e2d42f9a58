"""``scalefix verify SRC DST``: per-tensor proof that a converted checkpoint holds its
quantized source's true values.

Each source tensor is dequantized in row blocks (the same code the rewrite uses) and
compared with DST's tensor of the same name: bit-exact (DST bytes equal the reference rounded
to DST's dtype), max abs error, SQNR. DST can come from any tool.

Pass: bit-exact, or SQNR >= MIN_SQNR_DB. Why 40 dB: rounding the exact float32 product to
BF16 once bounds each element's relative error by 2^-9 (SQNR >= ~54 dB); 40 dB leaves room
for tools that round in another order, while a dropped or misapplied scale gives far below
0 dB and a single corrupted block gives well under 40.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..errors import ScalefixError
from ..formats import classify, open_bundle
from ..formats.classify import WEIGHT_CODECS
from ..formats.codecs import bf16_to_f32, decode
from ..formats.dequant import encode, row_reader
from ..formats.header import TensorInfo
from ..formats.tensor_data import read_raw

MIN_SQNR_DB = 40.0
TRAP_RATIO = 30.0          # DST rms / true rms beyond this (either way): a scale was lost
CHUNK_ELEMENTS = 2 << 20
FLOAT_DTYPES = {"BF16": "bf16", "F16": "f16", "F32": "f32"}
_LAYER = re.compile(r"(?:^|\.)(?:layers|blocks|h|double_blocks|single_blocks)\.(\d+)\.")


def _as_f32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return bf16_to_f32(raw.view(np.uint16))
    if dtype == "F16":
        return raw.view(np.float16).astype(np.float32)
    return raw.view(np.float32)


class _Stats:
    def __init__(self):
        self.signal = self.noise = self.dst_energy = 0.0
        self.max_abs = 0.0
        self.bit_exact = True
        self.elements = 0
        self.nonfinite = False

    def add(self, ref: np.ndarray, got: np.ndarray, exact: bool) -> None:
        self.bit_exact &= exact
        ref64, got64 = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
        if not (np.isfinite(ref64).all() and np.isfinite(got64).all()):
            self.nonfinite |= not np.array_equal(np.isnan(ref64), np.isnan(got64)) or \
                not np.array_equal(ref64[~np.isnan(ref64)], got64[~np.isnan(got64)])
            ok = np.isfinite(ref64) & np.isfinite(got64)
            ref64, got64 = ref64[ok], got64[ok]
        err = got64 - ref64
        self.signal += float(np.dot(ref64, ref64))
        self.noise += float(np.dot(err, err))
        self.dst_energy += float(np.dot(got64, got64))
        if err.size:
            self.max_abs = max(self.max_abs, float(np.abs(err).max()))
        self.elements += ref.size

    def result(self) -> dict:
        if self.noise == 0 and not self.nonfinite:
            sqnr = math.inf
        elif self.signal == 0:
            sqnr = -math.inf
        else:
            sqnr = 10 * math.log10(self.signal / self.noise) if self.noise else math.inf
        ratio = math.sqrt(self.dst_energy / self.signal) if self.signal else None
        trap = ratio is not None and (ratio > TRAP_RATIO or ratio < 1 / TRAP_RATIO)
        ok = self.bit_exact or (sqnr >= MIN_SQNR_DB and not self.nonfinite and not trap)
        return {"bit_exact": self.bit_exact, "max_abs_error": self.max_abs,
                "sqnr_db": None if math.isinf(sqnr) else round(sqnr, 2),
                "rms_ratio": ratio, "trap": trap, "ok": ok}


def _compare(ref_rows, dst: TensorInfo, rows: int, cols: int) -> dict:
    """``ref_rows(start, n)`` -> float32 [n, cols] reference; DST read in the same rows."""
    stats = _Stats()
    dst_codec = FLOAT_DTYPES[dst.dtype]
    item = dst.nbytes // max(dst.numel, 1)
    step = max(1, CHUNK_ELEMENTS // max(cols, 1))
    for start in range(0, rows, step):
        n = min(step, rows - start)
        ref = ref_rows(start, n)
        raw = read_raw(dst, start * cols * item, n * cols * item)
        got = _as_f32(raw, dst.dtype).reshape(n, cols)
        exact = np.array_equal(np.ascontiguousarray(encode(ref, dst_codec)).view(np.uint8)
                               .ravel(), raw)
        stats.add(ref, got, exact)
    return stats.result()


def _reference(src_result, name: str):
    """(rows, cols, ref_rows) for one expected DST tensor."""
    role = src_result.roles[name]
    info = src_result.bundle.tensors[name]
    if role == "quantized":
        qw = src_result.quantized[name]
        return qw.geometry.rows, qw.geometry.cols, row_reader(qw)
    cols = info.shape[-1] if info.shape else 1
    rows = info.numel // cols if cols else 0
    if role == "fp8_without_scale":
        codec = WEIGHT_CODECS[info.dtype]
        return rows, cols, lambda s, n: decode(read_raw(info, s * cols, n * cols),
                                               codec).reshape(n, cols)
    item = info.nbytes // max(info.numel, 1)
    return rows, cols, lambda s, n: _as_f32(read_raw(info, s * cols * item, n * cols * item),
                                            info.dtype).reshape(n, cols)


def verify(src, dst) -> dict:
    src_result = classify(open_bundle(src))
    dst_bundle = open_bundle(dst)
    mlx_quantization = (dst_bundle.config or {}).get("quantization")
    if isinstance(mlx_quantization, dict) and src_result.quantized:
        raise ScalefixError("is an MLX-quantized bundle (config.json 'quantization'): verify "
                            "compares dequantized checkpoints; `rewrite --to mlx` checks each "
                            "native form against the exact decode as it writes it, and reports "
                            "the SQNR of anything re-quantized (--requantize, --to mlx-affine)",
                            file=dst)
    expected: dict[str, str] = {}        # DST name -> source tensor name
    dropped: set[str] = set()
    for name, role in src_result.roles.items():
        if role == "quantized":
            expected[src_result.quantized[name].output_name] = name
        elif role in ("plain", "fp8_without_scale"):
            expected[name] = name
        else:
            dropped.add(name)
    tensors, missing = [], []
    for out_name, src_name in expected.items():
        got = dst_bundle.tensors.get(out_name)
        if got is None:
            missing.append(out_name)
            continue
        entry = {"tensor": out_name, "source": src_name, "role": src_result.roles[src_name],
                 "dst_dtype": got.dtype, "layer": _layer(out_name)}
        src_info = src_result.bundle.tensors[src_name]
        if src_result.roles[src_name] == "plain" and got.dtype == src_info.dtype:
            entry.update(_compare_bytes(src_info, got))
        elif got.dtype not in FLOAT_DTYPES or (
                src_result.roles[src_name] == "plain" and src_info.dtype not in FLOAT_DTYPES):
            entry.update(ok=False, problem=f"DST dtype {got.dtype} is not a dequantized float "
                                           f"(source {src_info.dtype})")
        else:
            rows, cols, ref = _reference(src_result, src_name)
            shape = (src_result.quantized[src_name].shape
                     if src_name in src_result.quantized else src_info.shape)
            if tuple(got.shape) != tuple(shape):
                entry.update(ok=False, problem=f"shape {list(got.shape)}, expected {list(shape)}")
            else:
                entry.update(_compare(ref, got, rows, cols))
                if entry["trap"]:
                    entry["problem"] = (f"values off by x{entry['rms_ratio']:.3g}: raw FP8 values "
                                        "without their scale?")
                elif not entry["ok"]:
                    entry["problem"] = f"SQNR {entry['sqnr_db']} dB < {MIN_SQNR_DB} dB"
        tensors.append(entry)
    extra = sorted(n for n in dst_bundle.tensors if n not in expected)
    failed = [t for t in tensors if not t["ok"]]
    return {"src": str(src), "dst": str(dst), "compared": len(tensors),
            "bit_exact": sum(bool(t.get("bit_exact")) for t in tensors),
            "failed": [t["tensor"] for t in failed], "missing": sorted(missing),
            "extra": [{"tensor": n, "why": "a scale or activation scale of the source"
                       if n in dropped else "not in the source"} for n in extra],
            "min_sqnr_db": MIN_SQNR_DB, "tensors": tensors,
            "ok": not failed and not missing and not extra}


def _compare_bytes(a: TensorInfo, b: TensorInfo) -> dict:
    if a.shape != b.shape:
        return {"ok": False, "bit_exact": False,
                "problem": f"shape {list(b.shape)}, expected {list(a.shape)}"}
    same = True
    step = 16 << 20
    for start in range(0, a.nbytes, step):
        n = min(step, a.nbytes - start)
        if not np.array_equal(read_raw(a, start, n), read_raw(b, start, n)):
            same = False
            break
    return {"ok": same, "bit_exact": same, "max_abs_error": None, "sqnr_db": None,
            "trap": False, **({} if same else {"problem": "bytes differ from the source"})}


def _layer(name: str) -> int | None:
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def render_verify(report: dict) -> str:
    lines = [f"verify {report['dst']} against {report['src']}: {report['compared']} tensors "
             f"compared, {report['bit_exact']} bit-exact"]
    worst = [t for t in report["tensors"] if t.get("sqnr_db") is not None]
    if worst:
        low = min(worst, key=lambda t: t["sqnr_db"])
        why = ("; bit-exact: that is only the one rounding to the output dtype"
               if low.get("bit_exact") else
               f"; pass needs bit-exact or >= {report['min_sqnr_db']} dB")
        lines.append(f"  lowest SQNR against the exact float32 values: {low['sqnr_db']} dB "
                     f"({low['tensor']}){why}")
    for t in [t for t in report["tensors"] if not t["ok"]][:20]:
        lines.append(f"  FAIL {t['tensor']}: {t.get('problem', 'mismatch')}")
    if len(report["failed"]) > 20:
        lines.append(f"  ... and {len(report['failed']) - 20} more failures (--json lists all)")
    for name in report["missing"][:20]:
        lines.append(f"  MISSING {name}")
    for item in report["extra"][:20]:
        lines.append(f"  EXTRA {item['tensor']} ({item['why']})")
    traps = sum(bool(t.get("trap")) for t in report["tensors"])
    if traps:
        lines.append(f"  {traps} tensor(s) carry the trap signature: converted without scales")
    lines.append("verdict: " + ("PASS" if report["ok"] else
                                f"FAIL ({len(report['failed'])} failed, "
                                f"{len(report['missing'])} missing, {len(report['extra'])} extra)"))
    return "\n".join(lines)
