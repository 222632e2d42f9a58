"""A checkpoint as one namespace of tensors: one file, a directory of shards, or an index.

Paths named by ``model.safetensors.index.json`` must stay inside the bundle directory,
lexically (no absolute paths, no ``..``): a checkpoint is untrusted input. Links are followed,
as every loader follows them: the Hugging Face cache is links into ``blobs/``.
Pickle checkpoints (``.bin``/``.pt``/...) are refused, never unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ScalefixError
from .header import Header, TensorInfo, read_header
from .jsonio import read_json

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_SUFFIX = ".safetensors.index.json"


@dataclass
class Bundle:
    path: Path            # what the user named
    root: Path            # directory holding the shards and configs
    kind: str             # "file" | "directory" | "index"
    headers: dict[Path, Header]
    tensors: dict[str, TensorInfo]
    index_path: Path | None = None
    index: dict | None = None
    config: dict | None = None
    hf_quant_config: dict | None = None
    unindexed: list[str] = field(default_factory=list)  # in a shard, absent from the index
    unindexed_shards: list[str] = field(default_factory=list)  # .safetensors beside, not named

    @property
    def shards(self) -> list[Path]:
        return list(self.headers)

    @property
    def metadata(self) -> dict[str, str]:
        """Merged ``__metadata__`` of all shards (ComfyUI markers live here)."""
        merged: dict[str, str] = {}
        for header in self.headers.values():
            merged.update(header.metadata)
        return merged

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def open_bundle(path: str | os.PathLike) -> Bundle:
    path = Path(path)
    if not path.exists():
        raise ScalefixError("no such file or directory", file=path)
    if path.is_dir():
        indexes = sorted(path.glob("*" + INDEX_SUFFIX))
        if indexes:
            preferred = path / ("model" + INDEX_SUFFIX)
            return _from_index(path, preferred if preferred in indexes else indexes[0])
        return _from_directory(path)
    if path.name.endswith(INDEX_SUFFIX) or path.suffix == ".json":
        return _from_index(path, path)
    if path.name.endswith(PICKLE_SUFFIXES):
        raise _pickle_refusal(path)
    header = read_header(path)
    root = path.parent
    return Bundle(path, root, "file", {path: header}, dict(header.tensors))


def _pickle_refusal(where: Path) -> ScalefixError:
    return ScalefixError(
        "pickle checkpoints (.bin/.pt/.pth/.ckpt) are refused: loading them runs arbitrary "
        "code; convert to safetensors first", file=where)


def _from_directory(root: Path) -> Bundle:
    files = sorted(p for p in root.glob("*.safetensors") if p.is_file())
    if not files:
        if any(p.name.endswith(PICKLE_SUFFIXES) for p in root.iterdir()):
            raise _pickle_refusal(root)
        raise ScalefixError("no .safetensors files here", file=root)
    headers = {f: read_header(f) for f in files}
    tensors: dict[str, TensorInfo] = {}
    for f, header in headers.items():
        for name, info in header.tensors.items():
            if name in tensors:
                raise ScalefixError(
                    f"defined in two shards ({tensors[name].file.name} and {f.name}) and no "
                    "index says which one counts", file=root, tensor=name)
            tensors[name] = info
    bundle = Bundle(root, root, "directory", headers, tensors)
    _read_configs(bundle)
    return bundle


def read_index(index_path: Path) -> tuple[dict, dict[str, str]]:
    """The index document and its validated ``weight_map`` (tensor -> shard file)."""
    index = read_json(index_path, "index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ScalefixError("index has no weight_map of tensor -> shard file", file=index_path)
    return index, weight_map


def _from_index(named: Path, index_path: Path) -> Bundle:
    root = index_path.parent
    index, weight_map = read_index(index_path)
    shard_paths: dict[str, Path] = {}
    for tensor, rel in weight_map.items():
        if rel not in shard_paths:
            shard_paths[rel] = _shard_inside(root, rel, index_path, tensor)
    headers = {p: read_header(p) for p in dict.fromkeys(shard_paths.values())}
    tensors: dict[str, TensorInfo] = {}
    for tensor, rel in weight_map.items():
        header = headers[shard_paths[rel]]
        if tensor not in header.tensors:
            raise ScalefixError(
                f"the index places it in {rel}, which does not hold it", file=index_path,
                tensor=tensor)
        tensors[tensor] = header.tensors[tensor]
    unindexed = sorted(n for h in headers.values() for n in h.tensors if n not in weight_map)
    named_files = set(headers)
    stray = sorted(p.name for p in root.glob("*.safetensors") if p not in named_files)
    bundle = Bundle(named, root, "index", headers, tensors, index_path, index,
                    unindexed=unindexed, unindexed_shards=stray)
    _read_configs(bundle)
    return bundle


def _shard_inside(root: Path, rel: str, index_path: Path, tensor: str) -> Path:
    """The shard the index names, confined lexically: a relative path without ``..`` that
    exists under the bundle directory. Links are then followed, as every loader follows them
    (a Hugging Face cache snapshot is a directory of links into ``../../blobs``)."""
    pure = Path(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or rel.startswith(("/", "\\")) \
            or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise ScalefixError(f"shard path {rel!r} leaves the bundle directory", file=index_path,
                            tensor=tensor)
    candidate = root / pure
    if not candidate.is_file():
        raise ScalefixError(f"shard {rel!r} named by the index does not exist", file=index_path,
                            tensor=tensor)
    if rel.endswith(PICKLE_SUFFIXES):
        raise _pickle_refusal(candidate)
    return candidate


def _read_configs(bundle: Bundle) -> None:
    for attr, name in (("config", "config.json"), ("hf_quant_config", "hf_quant_config.json")):
        cfg_path = bundle.root / name
        if cfg_path.is_file():
            value = read_json(cfg_path, "config")
            if not isinstance(value, dict):
                raise ScalefixError("expected a JSON object", file=cfg_path)
            setattr(bundle, attr, value)
