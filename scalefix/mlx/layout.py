"""Where tensors go in an MLX bundle: mlx-lm's own ``Model.sanitize`` for the model type.

An MLX-quantized bundle is only loadable if its quantized modules sit under the names mlx-lm
builds its model with (``model.layers.3.mlp.experts.switch_mlp.gate_proj``), not the
checkpoint's (``layers.3.ffn.experts.7.w1``): mlx-lm stacks, splits and renames in
``sanitize`` and quantizes by post-sanitize module path (formats.md section 3). Rather than
keep a second copy of that knowledge, scalefix runs mlx-lm's sanitize itself on decoded
tensors, exactly as mlx-lm would on a BF16 checkpoint (one layer real at a time, the rest
lazy stand-ins: see ``mlx_affine``).

Without mlx-lm, or for a model type it does not know, names stay as in the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..errors import ScalefixError

LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class Layout:
    """How source names become MLX names: ``sanitize`` applied to one unit at a time."""

    name: str                                  # "mlx-lm <model_type>" | "source names"
    sanitize: Callable[[dict], dict]
    reason: str = ""                           # why source names were kept


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
    try:
        from mlx_lm import utils as mlx_lm_utils
    except ImportError:
        return source_layout("mlx-lm is not installed")
    try:
        model_class, args_class = mlx_lm_utils._get_classes(config=dict(config))
    except Exception as exc:  # mlx-lm raises ValueError for an unknown model type
        return source_layout(f"mlx-lm does not know model_type {model_type!r} ({exc})")
    if not hasattr(model_class, "sanitize"):
        return Layout(f"mlx-lm {model_type}", _identity)
    # MLX modules are lazy: building the model allocates nothing until evaluated; sanitize
    # may read the model's arguments (e.g. the number of experts).
    try:
        model = model_class(args_class.from_dict(dict(config)))
    except (TypeError, KeyError, ValueError) as exc:  # a config mlx-lm cannot build from
        raise ScalefixError(f"mlx-lm cannot build its {model_type!r} model from config.json "
                            f"({exc}): an MLX bundle needs a config mlx-lm loads") from None
    return Layout(f"mlx-lm {model_type}", model.sanitize)
