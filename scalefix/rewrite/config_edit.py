"""The non-tensor files of a rewritten bundle: config.json without the stale quantization
config and with the new dtype, hf_quant_config.json dropped, everything else copied."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from ..formats.bundle import Bundle

TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
NOT_COPIED = {"config.json", "hf_quant_config.json"}


def rewritten_config(config: dict, out_dtype: str) -> dict:
    new = copy.deepcopy(config)
    for holder in (new, new.get("text_config")):
        if not isinstance(holder, dict):
            continue
        holder.pop("quantization_config", None)
        for key in ("torch_dtype", "dtype"):
            if key in holder or (key == "torch_dtype" and holder is new):
                holder[key] = TORCH_DTYPE_NAMES[out_dtype]
    return new


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def copy_other_files(bundle: Bundle, staging: Path) -> list[str]:
    """Copy every file and folder beside the checkpoint that is not a weight shard, the index
    or a config scalefix rewrites. Returns what was copied."""
    skip = {p.resolve() for p in bundle.headers}
    if bundle.index_path is not None:
        skip.add(bundle.index_path.resolve())
    copied = []
    for item in sorted(bundle.root.iterdir()):
        if item.name in NOT_COPIED or item.resolve() in skip or item.name.startswith("."):
            continue
        target = staging / item.name
        if item.is_dir():
            shutil.copytree(item, target, symlinks=True)
        else:
            shutil.copy2(item, target)
        copied.append(item.name)
    return copied
