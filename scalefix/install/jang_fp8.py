"""The source-level twin of the ``jang_fp8`` runtime patch, for an app that bundles its own
jang_tools and Python (vMLX): a marked block appended to ``jang_tools/fp8.py`` and one to
``jang_tools/convert.py``, so that the app's ``jang convert`` finds every FP8 weight's scale
under any name and in any shard, skips scales and activation scales as weights, and decodes
the NaN codes as NaN, with no scalefix at run time.

Why appended blocks, not edits inside the 1,600-line ``convert_model``: the block rebinds
module globals that jang looks up at call time (``load_fp8_tensor`` and
``fp8_e4m3_to_float32`` in fp8.py, ``safe_open`` in convert.py), so nothing inside jang's
functions moves, and a release that reshuffles them still gets the fix. What the block relies
on is checked by parsing each file (the functions, their parameters, the imports, the
``<weight>_scale_inv`` lookup): a file of another shape is reported and left alone. A file
already fixed upstream (or by ``git apply`` of the shipped diffs) is "nothing to patch".

The scale index itself (names, shards, side tensors, scale dtypes) is not written twice: it is
the block of functions ``patches/jang-2.5.50-fp8-scale-any-name.diff`` adds to fp8.py, read
from the shipped diff, so the permanent fix and the upstream one are the same code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from . import unified_diff
from .shipped import diff_text

ANY_NAME_DIFF = "jang-2.5.50-fp8-scale-any-name.diff"
NAN_DIFF = "jang-2.5.50-fp8-e4m3-nan.diff"
BEGIN = ("# --- scalefix fp8 fix: begin (scalefix patch-install; revert: scalefix patch-install "
         "--revert) ---")
END = "# --- scalefix fp8 fix: end ---"
LOOKUP_SUFFIX = "_scale_inv"

SCALES = """\
_scalefix_load_fp8_tensor = load_fp8_tensor


def load_fp8_tensor(sf_path, tensor_name, shape, scale_inv=None, *args, **kwargs):
    \"\"\"jang's reader, given the scale it did not find (any name, any shard).\"\"\"
    if scale_inv is None:
        scale_inv = find_fp8_scale(sf_path, tensor_name)
    return _scalefix_load_fp8_tensor(sf_path, tensor_name, shape, scale_inv, *args, **kwargs)
"""
NAN = """\
_scalefix_fp8_e4m3_to_float32 = fp8_e4m3_to_float32


def fp8_e4m3_to_float32(x, *args, **kwargs):
    \"\"\"jang's decoder, with the NaN codes 0x7F / 0xFF as NaN instead of +-480.\"\"\"
    result = _scalefix_fp8_e4m3_to_float32(x, *args, **kwargs)
    result[(np.asarray(x) & 0x7F) == 0x7F] = np.nan
    return result
"""
LISTING = """\
from .fp8 import is_fp8_side_tensor as _scalefix_is_fp8_side_tensor


class _ScalefixListing:
    \"\"\"A safetensors handle that does not list the scales and activation scales of FP8
    weights: they are applied to their weights, never quantized or copied as weights.\"\"\"

    def __init__(self, handle, filename):
        self._handle, self._filename = handle, filename

    def keys(self):
        return [k for k in self._handle.keys()
                if not _scalefix_is_fp8_side_tensor(self._filename, k)]

    def __enter__(self):
        self._handle.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._handle, name)


_scalefix_safe_open = safe_open


def safe_open(filename, *args, **kwargs):
    return _ScalefixListing(_scalefix_safe_open(filename, *args, **kwargs), filename)
"""


class Unrecognised(ValueError):
    """The file is not in a shape the block can be appended to safely."""


@dataclass(frozen=True)
class Verdict:
    state: str            # "absent" | "patched" | "unpatched"
    new_source: str | None = None
    detail: str = ""


@lru_cache(maxsize=1)
def index_functions() -> str:
    """The lines ``ANY_NAME_DIFF`` adds to fp8.py in its one hunk of new functions."""
    (part,) = [p for p in unified_diff.parse(diff_text(ANY_NAME_DIFF))
               if p.path == "jang_tools/fp8.py"]
    for hunk in part.hunks:
        lead = 0
        while lead < min(len(hunk.old), len(hunk.new)) and hunk.old[lead] == hunk.new[lead]:
            lead += 1
        tail = 0
        while tail < min(len(hunk.old), len(hunk.new)) - lead and \
                hunk.old[-1 - tail] == hunk.new[-1 - tail]:
            tail += 1
        added = hunk.new[lead: len(hunk.new) - tail]
        if len(hunk.old) == lead + tail and any("def find_fp8_scale(" in a for a in added):
            return "".join(added)
    raise Unrecognised(f"{ANY_NAME_DIFF}: no hunk adding find_fp8_scale to jang_tools/fp8.py")


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _params(function: ast.FunctionDef) -> list[str]:
    return [a.arg for a in function.args.posonlyargs + function.args.args]


def _imports(tree: ast.Module) -> set[str]:
    """Names bound at module level by imports (``np`` for ``import numpy as np``)."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _append(source: str, block: str) -> str:
    body = source if source.endswith("\n") else source + "\n"
    return f"{body}\n\n{BEGIN}\n{block.rstrip()}\n{END}\n"


def _finish(name: str, source: str, pieces: list[str], fixed: str) -> Verdict:
    if not pieces:
        return Verdict("absent", detail=f"{fixed}: nothing to patch")
    new_source = _append(source, "\n\n".join(pieces))
    compile(new_source, name, "exec")  # never hand back code that does not compile
    return Verdict("unpatched", new_source)


def examine_fp8(source: str) -> Verdict:
    """fp8.py: the scale index and the scale lookup, and the NaN decode, where missing."""
    if BEGIN in source:
        return Verdict("patched")
    tree = ast.parse(source)
    functions = _functions(tree)
    load, decode = functions.get("load_fp8_tensor"), functions.get("fp8_e4m3_to_float32")
    if load is None or _params(load)[:4] != ["sf_path", "tensor_name", "shape", "scale_inv"]:
        raise Unrecognised("load_fp8_tensor(sf_path, tensor_name, shape, scale_inv) not found")
    if decode is None or len(_params(decode)) != 1:
        raise Unrecognised("fp8_e4m3_to_float32(x) not found")
    missing = {"json", "struct", "Path", "np"} - _imports(tree)
    if missing:
        raise Unrecognised(f"module-level imports {sorted(missing)} not found")
    pieces = []
    if "find_fp8_scale" not in functions:
        pieces += ["from functools import lru_cache\n\n\n" + index_functions(), SCALES]
    if "nan" not in ast.get_source_segment(source, decode).lower():
        pieces.append(NAN)
    return _finish("fp8.py", source, pieces, "scales under any name and NaN decode present")


def _looks_up_scale_inv(function: ast.FunctionDef) -> bool:
    """``f"{tensor_name}_scale_inv"`` somewhere in the function: jang's one scale name."""
    for node in ast.walk(function):
        if isinstance(node, ast.JoinedStr) and len(node.values) == 2:
            value, suffix = node.values
            if isinstance(value, ast.FormattedValue) and isinstance(suffix, ast.Constant) \
                    and suffix.value == LOOKUP_SUFFIX:
                return True
    return False


def examine_convert(source: str) -> Verdict:
    """convert.py: ``safe_open`` that does not list FP8 side tensors, where jang lists them."""
    if BEGIN in source:
        return Verdict("patched")
    tree = ast.parse(source)
    convert = _functions(tree).get("convert_model")
    if convert is None:
        raise Unrecognised("convert_model not found")
    safe_open_import = any(isinstance(n, ast.ImportFrom) and n.module == "safetensors"
                           and any(a.name == "safe_open" and a.asname is None for a in n.names)
                           for n in tree.body)
    if not safe_open_import:
        raise Unrecognised("no module-level `from safetensors import safe_open`")
    fixed = "is_fp8_side_tensor" in ast.get_source_segment(source, convert) or \
        not _looks_up_scale_inv(convert)
    return _finish("convert.py", source, [] if fixed else [LISTING],
                   "convert_model skips FP8 side tensors already")
