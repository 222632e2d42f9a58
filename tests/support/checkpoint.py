"""The one checkpoint writer of the tests: safetensors shards (written by
``safetensors.torch.save_file``, the real writer, independent of scalefix's), the
``model.safetensors.index.json`` when there is more than one shard, ``config.json`` and any
other JSON file beside them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def save_checkpoint(root: Path, shards: dict[str, dict[str, torch.Tensor]],
                    config: dict | None = None, *, indent: int | None = None,
                    extra_files: dict[str, dict] | None = None,
                    metadata: dict[str, str] | None = None, index: bool | None = None) -> Path:
    """Write ``shards`` (file name -> tensors) under ``root``; an index when there are several;
    ``config.json`` unless ``config`` is None; ``extra_files`` (name -> JSON); ``metadata``:
    each shard's safetensors header metadata; ``index``: write the index (default: when more
    than one shard). Returns root."""
    root.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for fname, tensors in shards.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(root / fname),
                  metadata=metadata)
        weight_map.update({k: fname for k in tensors})
    if len(shards) > 1 if index is None else index:
        (root / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=indent))
    if config is not None:
        (root / "config.json").write_text(json.dumps(config, indent=indent))
    for fname, content in (extra_files or {}).items():
        (root / fname).write_text(json.dumps(content, indent=indent))
    return root


def shard_names(count: int) -> list[str]:
    """``model.safetensors`` alone, else ``model-0000i-of-0000n.safetensors``."""
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def same_tree(a: Path, b: Path) -> None:
    """The two folders hold the same file names with the same bytes."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
