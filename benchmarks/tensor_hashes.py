"""Tensor digests for the benchmarks that compare outputs bit for bit: safetensors read with
the standard library and numpy only (no scalefix import, so a contender is never judged by
its own code), mlx-lm's split ``kv_b_proj`` put back together, and an independent numpy
oracle for the FP8 block-scaled -> BF16 rewrite (``reference_hashes``)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np


def read_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def iter_tensors(d: Path):
    """Yield (name, dtype, shape, bytes) for every tensor in every *.safetensors of d."""
    for p in sorted(d.glob("*.safetensors")):
        h, base = read_header(p)
        with open(p, "rb") as f:
            for name, m in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
                a, b = m["data_offsets"]
                f.seek(base + a)
                yield name, m["dtype"], m["shape"], f.read(b - a)


def digest(dtype: str, shape, data: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{dtype}{list(shape)}".encode())
    h.update(data)
    return h.hexdigest()


def output_hashes(d: Path, cfg: dict) -> dict[str, str]:
    """Per-tensor digests in DeepSeek-V3 naming. mlx-lm splits each
    ``kv_b_proj`` into ``embed_q`` [H, kv_lora, nope] (transposed) and
    ``unembed_out`` [H, v, kv_lora]; they are put back together here."""
    out: dict[str, str] = {}
    pending: dict[str, dict] = {}
    for name, dtype, shape, data in iter_tensors(d):
        if name.endswith((".embed_q.weight", ".unembed_out.weight")):
            prefix, kind = name.rsplit(".", 2)[0], name.rsplit(".", 2)[1]
            pending.setdefault(prefix, {})[kind] = (dtype, shape, data)
            continue
        out[name] = digest(dtype, shape, data)
    for prefix, parts in pending.items():
        (dq, sq, bq), (dv, sv, bv) = parts["embed_q"], parts["unembed_out"]
        assert dq == dv and dq in ("BF16", "F16"), (prefix, dq, dv)
        wk = np.frombuffer(bq, np.uint16).reshape(sq).swapaxes(-1, -2)  # [H, nope, kv_lora]
        wv = np.frombuffer(bv, np.uint16).reshape(sv)  # [H, v, kv_lora]
        kv = np.concatenate([wk, wv], axis=1)
        kv = np.ascontiguousarray(kv.reshape(-1, kv.shape[-1]))
        out[prefix + ".kv_b_proj.weight"] = digest(dq, kv.shape, kv.tobytes())
    return out


def e4m3_lut() -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for c in range(256):
        s, e, m = c >> 7, (c >> 3) & 0xF, c & 7
        if e == 15 and m == 7:
            v = np.nan
        elif e == 0:
            v = m / 8 * 2.0 ** -6
        else:
            v = (1 + m / 8) * 2.0 ** (e - 7)
        lut[c] = -v if s else v
    return lut


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit pattern (no NaNs expected)."""
    u = x.view(np.uint32)
    return ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)


def reference_hashes(src: Path) -> dict[str, str]:
    """Independent numpy oracle: bf16_rne(float32(e4m3(q)) * scale[i//bo, j//bi]),
    (bo, bi) = config's weight_block_size (never inferred from shapes: 576 rows / 5 != 128)."""
    cfg = json.loads((src / "config.json").read_text())
    bo, bi = cfg["quantization_config"]["weight_block_size"]
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    lut = e4m3_lut()
    headers = {f: read_header(src / f) for f in set(index.values())}

    def load(name):
        h, base = headers[index[name]]
        m = h[name]
        a, b = m["data_offsets"]
        with open(src / index[name], "rb") as f:
            f.seek(base + a)
            return m["dtype"], m["shape"], f.read(b - a)

    out = {}
    for name in index:
        if name.endswith("_scale_inv"):
            continue
        dtype, shape, data = load(name)
        sname = name + "_scale_inv"
        if dtype == "F8_E4M3" and sname in index:
            sd, ss, sb = load(sname)
            assert sd == "F32"
            q = np.frombuffer(data, np.uint8).reshape(shape)
            s = np.frombuffer(sb, np.float32).reshape(ss)
            assert ss == [math.ceil(shape[0] / bo), math.ceil(shape[1] / bi)], (name, shape, ss)
            w = lut[q]
            w *= np.repeat(np.repeat(s, bo, 0), bi, 1)[: shape[0], : shape[1]]
            out[name] = digest("BF16", shape, f32_to_bf16_bits(w).tobytes())
        else:
            out[name] = digest(dtype, shape, data)
    return out
