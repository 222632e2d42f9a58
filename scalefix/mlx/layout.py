"""Where tensors go in an MLX bundle: mlx-lm's own ``Model.sanitize`` for the model type.

An MLX-quantized bundle is only loadable if its quantized modules sit under the names mlx-lm
builds its model with (``model.layers.3.mlp.experts.switch_mlp.gate_proj``), not the
checkpoint's (``layers.3.ffn.experts.7.w1``): mlx-lm stacks, splits and renames in
``sanitize`` and quantizes by post-sanitize module path (docs/mlx.md §2). Rather than
keep a second copy of that knowledge, scalefix runs mlx-lm's sanitize itself on decoded
tensors, exactly as mlx-lm would on a BF16 checkpoint (one layer real at a time, the rest
lazy stand-ins: see ``bundle_plan``).

Only the model's own module is imported (``mlx_lm.models.<type>``, 50 ms), never the
``mlx_lm`` package itself, whose ``__init__`` pulls in ``transformers`` through the tokenizer
utilities (3-4 s): the package is stood in for while the model module loads, and every
module of it loaded that way is forgotten afterwards, so a later ``import mlx_lm`` is the
real one. The model type's remapping is read from ``mlx_lm/utils.py``'s own tables.

Without mlx-lm, or for a model type it does not know, names stay as in the source.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
import types
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..errors import ScalefixError

LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Layout:
    """How source names become MLX names: ``sanitize`` applied to one unit at a time."""

    name: str                                  # "mlx-lm <model_type>" | "source names"
    sanitize: Callable[[dict], dict]
    reason: str = ""                           # why source names were kept
    model: object = None                       # mlx-lm's (lazy) model, when there is one

    def takes_global_scale(self, module: str) -> bool:
        """Whether mlx-lm builds ``module`` (a post-sanitize path) with an nvfp4 global scale:
        its ``to_quantized`` takes one (mlx-lm's own test, ``_takes_global_scale``: 0.32.2's
        switch layers do, ``nn.Linear`` does not)."""
        import inspect
        if self.model is None:
            return False
        found = dict(self.model.named_modules()).get(module)
        method = getattr(found, "to_quantized", None)
        return method is not None and "global_scale" in inspect.signature(method).parameters


def unit_of(name: str) -> tuple[int, int]:
    """The unit a tensor is decoded and written with: its decoder layer, everything else
    last. Sanitizers keep layer numbers, so a source and its MLX output share a unit."""
    match = LAYER.search(name)
    return (0, int(match.group(1))) if match else (1, 0)


def _identity(weights: dict) -> dict:
    return dict(weights)


def source_layout(reason: str) -> Layout:
    return Layout("source names", _identity, reason)


def layout_for(config: dict | None) -> Layout:
    """mlx-lm's layout for ``config['model_type']``, or source names when it cannot be had."""
    model_type = (config or {}).get("model_type")
    if not model_type:
        return source_layout("config.json has no model_type")
    if importlib.util.find_spec("mlx_lm") is None:
        return source_layout("mlx-lm is not installed")
    try:
        model_class, args_class = model_classes(dict(config))
    except Exception as exc:  # as mlx-lm: an unknown model type is a ValueError
        return source_layout(f"mlx-lm does not know model_type {model_type!r} ({exc})")
    # MLX modules are lazy: building the model allocates nothing until evaluated; sanitize
    # may read the model's arguments (e.g. the number of experts).
    try:
        model = model_class(args_class.from_dict(dict(config)))
    except (TypeError, KeyError, ValueError) as exc:  # a config mlx-lm cannot build from
        raise ScalefixError(f"mlx-lm cannot build its {model_type!r} model from config.json "
                            f"({exc}): an MLX bundle needs a config mlx-lm loads") from None
    return Layout(f"mlx-lm {model_type}", getattr(model, "sanitize", _identity), model=model)


@lru_cache(maxsize=1)
def _remapping() -> tuple[dict, dict]:
    """mlx-lm's ``MODEL_REMAPPING`` and ``MODEL_ARCHITECTURE_REMAPPING``, read from its
    ``utils.py`` without running it."""
    spec = importlib.util.find_spec("mlx_lm")
    tree = ast.parse(Path(spec.submodule_search_locations[0], "utils.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name) and node.targets[0].id in (
                "MODEL_REMAPPING", "MODEL_ARCHITECTURE_REMAPPING"):
            found[node.targets[0].id] = ast.literal_eval(node.value)
    return found.get("MODEL_REMAPPING", {}), found.get("MODEL_ARCHITECTURE_REMAPPING", {})


def model_classes(config: dict):
    """``(Model, ModelArgs)`` for ``config`` as ``mlx_lm.utils._get_classes`` finds them, from
    the model's own module only (see the module docstring)."""
    remap, arch_remap = _remapping()
    model_type = config["model_type"]
    architectures = config.get("architectures") or ()
    if isinstance(architectures, str):
        architectures = (architectures,)
    for architecture in architectures:
        if (model_type, architecture) in arch_remap:
            model_type = arch_remap[(model_type, architecture)]
            break
    else:
        model_type = remap.get(model_type, model_type)
    name = f"mlx_lm.models.{model_type}"
    if "mlx_lm" in sys.modules:  # the real package is loaded already: use it
        arch = _import(name)
    else:
        spec = importlib.util.find_spec("mlx_lm")
        stub = types.ModuleType("mlx_lm")
        stub.__path__, stub.__spec__ = list(spec.submodule_search_locations), spec
        before = set(sys.modules)
        sys.modules["mlx_lm"] = stub
        try:
            arch = _import(name)
        finally:
            for key in set(sys.modules) - before:
                if key == "mlx_lm" or key.startswith("mlx_lm."):
                    del sys.modules[key]
            if sys.modules.get("mlx_lm") is stub:
                del sys.modules["mlx_lm"]
    return arch.Model, arch.ModelArgs


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ValueError(f"Model type {name.rsplit('.', 1)[1]} not supported.") from exc
