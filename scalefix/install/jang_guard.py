"""The source-level twin of the ``jang_quant_config`` runtime patch: a guard inserted at the
start of ``jang_tools/load_jangtq.py::_patch_quant_config_inplace`` so that a config that
already has per-module quantization overrides is returned untouched, with the same stats
dict the runtime patch returns. Located by parsing the source (never by line numbers);
a function whose shape is not recognised is left alone."""

from __future__ import annotations

import ast
from dataclasses import dataclass

FUNCTION = "_patch_quant_config_inplace"
BEGIN = "# --- scalefix guard: begin (scalefix patch-install; revert: scalefix patch-install --revert) ---"
END = "# --- scalefix guard: end ---"
GUARD = """\
{begin}
_scalefix_overrides = {{
    _key: sum(isinstance(_value, dict) for _value in {config}[_key].values())
    for _key in ("quantization", "quantization_config")
    if isinstance({config}, dict) and isinstance({config}.get(_key), dict)
    and any(isinstance(_value, dict) for _value in {config}[_key].values())
}}
if _scalefix_overrides:
    return {{"patched": False, "skipped_by": "scalefix",
            "reason": "config already has per-module quantization overrides; left untouched",
            "per_module_overrides": _scalefix_overrides}}
{end}
"""


class Unrecognised(ValueError):
    """The function is there but not in a shape the guard knows how to enter."""


@dataclass(frozen=True)
class Verdict:
    state: str            # "absent" | "patched" | "unpatched"
    new_source: str | None = None


def examine(source: str) -> Verdict:
    """Parse ``source`` and say whether the guard is needed; if so, the patched source."""
    if BEGIN in source:
        return Verdict("patched")
    tree = ast.parse(source)
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef)
                     and node.name == FUNCTION), None)
    if function is None:
        return Verdict("absent")
    args = function.args
    positional = args.posonlyargs + args.args
    if len(positional) < 2 or args.vararg or not function.body:
        raise Unrecognised(f"{FUNCTION} does not take (model_path, model_config, ...)")
    config_name = positional[1].arg
    body = function.body
    first = body[0]
    has_docstring = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None),
                                                               ast.Constant) \
        and isinstance(first.value.value, str)
    anchor = body[1] if has_docstring and len(body) > 1 else (None if has_docstring else first)
    lines = source.splitlines(keepends=True)
    if anchor is None:  # docstring only: insert after it
        insert_at, indent = first.end_lineno, " " * first.col_offset
    else:
        if anchor.lineno == function.lineno:
            raise Unrecognised(f"{FUNCTION} has its body on the def line")
        insert_at, indent = anchor.lineno - 1, " " * anchor.col_offset
        if lines[insert_at][:anchor.col_offset].strip():
            raise Unrecognised(f"{FUNCTION}: unexpected layout at line {anchor.lineno}")
    guard = GUARD.format(begin=BEGIN, end=END, config=config_name)
    guard_lines = [(indent + line if line.strip() else line) + "\n"
                   for line in guard.splitlines()]
    new_source = "".join(lines[:insert_at] + guard_lines + lines[insert_at:])
    compile(new_source, "load_jangtq.py", "exec")  # never hand back code that does not compile
    return Verdict("unpatched", new_source)
