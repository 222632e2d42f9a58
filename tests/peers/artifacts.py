"""Checkpoints written by the real tools (llmcompressor, transformers, compressed-tensors),
built once in the peer venv and cached; keyed by the scripts' and requirements' hash so a
change rebuilds them. Built in a temporary sibling and renamed: never half an artifact."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .venvs import PEERS, _digest, cache_root, locked, peer_python

SCRIPTS = Path(__file__).parent / "scripts"

# kind pattern -> (script, base kind or None, extra args)
RECIPES = [
    (r"tiny-(llama|qwen3)-bf16", lambda m: ("make_tiny.py", None, [m[1]])),
    (r"tiny-dsv3-bf16", lambda m: ("make_tiny.py", None, ["deepseek_v3"])),
    (r"(llama|qwen3)-mfp-fp8-(block|dynamic)",
     lambda m: ("write_model_free_ptq.py", f"tiny-{m[1]}-bf16", [f"FP8_{m[2].upper()}"])),
    (r"(llama|qwen3)-hf-fp8", lambda m: ("write_hf_fp8.py", f"tiny-{m[1]}-bf16", [])),
    (r"(llama|qwen3)-hf-fp8-hf-bf16", lambda m: ("hf_dequantize_bf16.py", f"{m[1]}-hf-fp8", [])),
    (r"(llama|qwen3)-mfp-fp8-(block|dynamic)-ct-bf16",
     lambda m: ("ct_dequantize_bf16.py", f"{m[1]}-mfp-fp8-{m[2]}", [])),
]


def _recipe(kind: str):
    for pattern, make in RECIPES:
        match = re.fullmatch(pattern, kind)
        if match:
            return make(match)
    raise KeyError(f"unknown artifact kind {kind!r}")


def _key(kind: str) -> str:
    script, base, args = _recipe(kind)
    parts = [kind, (SCRIPTS / script).read_text(), *args, *PEERS["writers"]]
    if base:
        parts.append(_key(base))
    return _digest(*parts)


def real_writer_artifact(kind: str) -> Path:
    script, base, args = _recipe(kind)
    root = cache_root() / "artifacts"
    path = root / f"{kind}-{_key(kind)}"
    if path.is_dir():
        return path
    base_path = real_writer_artifact(base) if base else None
    python = peer_python("writers")
    with locked(root / f".{path.name}.lock"):
        if path.is_dir():
            return path
        tmp = root / f".{path.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [str(python), str(SCRIPTS / script)]
        cmd += [str(base_path), str(tmp)] if base_path else [str(tmp)]
        proc = subprocess.run(cmd + args, capture_output=True, text=True)
        if proc.returncode != 0 or not tmp.is_dir():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
            raise RuntimeError(f"{script} failed for {kind}:\n" + "\n".join(tail))
        tmp.rename(path)
    return path
