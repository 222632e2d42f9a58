"""Bounded JSON reading for every JSON document scalefix takes as input (safetensors headers,
indexes, config.json, hf_quant_config.json, patch records).

A checkpoint is untrusted input, and Python's JSON parser recurses once per nesting level:
5,000 nested ``[`` end in ``RecursionError``, and a document just under the interpreter's
limit parses but breaks whatever walks it next (``copy.deepcopy``, ``json.dumps``). So depth
and size are bounded here, and a document past either bound is bad input: a ScalefixError
naming the file, exit 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ScalefixError

# The safetensors library refuses headers over 100 MB; an index or a config lists at most one
# entry per tensor or module, and DeepSeek-V3's index (the largest open checkpoint, ~91k
# tensors) is about 9 MB: the same 100 MB bound leaves 10x headroom for any of them while
# keeping the parse of a hostile file to a few hundred MB of Python objects.
MAX_JSON_BYTES = 100_000_000

# The deepest legitimate document in a checkpoint is a compressed-tensors config
# (config > quantization_config > config_groups > group > weights > block_structure): under
# 10 levels. 64 leaves room for anything real and stays far below the interpreter's recursion
# limit (1000), which both the parser and every later walk over the document need.
MAX_DEPTH = 64


def parse_json(text: str, where: str | os.PathLike, what: str = "JSON") -> object:
    """Parse ``text`` (from ``where``, described as ``what`` in messages) within MAX_DEPTH."""
    try:
        doc = json.loads(text)
    except RecursionError:
        raise _too_deep(where, what) from None
    except ValueError as exc:  # JSONDecodeError
        raise ScalefixError(f"{what} is not valid JSON ({exc})", file=where) from None
    if _depth_exceeds(doc, MAX_DEPTH):
        raise _too_deep(where, what)
    return doc


def read_json(path: str | os.PathLike, what: str = "JSON",
              limit: int = MAX_JSON_BYTES) -> object:
    """Read and parse the JSON file ``path``, refusing one over ``limit`` bytes unread."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ScalefixError(f"cannot read {what}: {exc.strerror or exc}", file=path) from None
    if len(data) > limit:
        raise ScalefixError(f"{what} is larger than the {limit // 1_000_000} MB limit for a "
                            "JSON file (not a checkpoint file?)", file=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScalefixError(f"{what} is not valid UTF-8 ({exc})", file=path) from None
    return parse_json(text, path, what)


def _too_deep(where, what: str) -> ScalefixError:
    return ScalefixError(f"{what} is nested deeper than {MAX_DEPTH} levels (not a checkpoint "
                         "file?)", file=where)


def _depth_exceeds(doc: object, limit: int) -> bool:
    """Whether ``doc`` nests containers more than ``limit`` deep (iterative: no recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node \
            if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False
