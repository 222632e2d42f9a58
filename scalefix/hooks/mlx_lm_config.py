"""mlx_lm_config: a stale FP8 ``quantization_config`` must not make mlx-lm reject or
mis-handle a checkpoint whose weights the ``mlx_load`` hook dequantizes.

mlx-lm raises ``unsupported compressed-tensors format 'float-quantized'`` for llmcompressor
FP8 checkpoints before loading a single weight. When ``mlx_load`` is applied and will
dequantize the checkpoint's weights, ``mlx_lm.utils.load_config`` returns the config without
its ``quantization_config`` (also under ``text_config``): the model loads as the BF16 model
its weights now are. The MX family (left packed by default) keeps its config: mlx-lm runs it.

Where the weights go native (integer codes as MLX affine, Quark MXFP4 as ``mxfp4``) the
config gets per-module ``quantization`` entries instead. A ModelOpt export also ships
``hf_quant_config.json``, which mlx-lm 0.32.2 reads whenever ``quantization_config`` is
absent (``KeyError: 'quant_method'``: that file nests the settings, or "Unsupported modelopt
quant_algo" for FP8): once the hooks decode the checkpoint, the config keeps an empty
``quantization_config`` so mlx-lm does not read the file in its place.

NVFP4 routed experts go native as ``nvfp4`` + ``global_scale`` (``mlx_load``), and per-expert
integer experts as affine, per expert under the source's names; mlx-lm's sanitize stacks only
``<m>.weight``. For such a model ``load_model``'s ``get_model_classes`` hands back a
constructor whose model's ``sanitize`` places each part (codes, scales, biases or global
scale) the way the weight is placed, with the ``--to mlx`` planner's own ``sanitize_parts``.

Upstream: not fixed. Off: ``SCALEFIX_DISABLE_PATCHES=mlx_lm_config``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .wrapping import unwrap, wrap

TARGET = "mlx_lm.utils"
DISTRIBUTION = "mlx-lm"
AFFECTED = ">=0.20"
# what apply() replaces: restored by the guard if apply fails
ATTRIBUTES = ("load_config", "load_model")


def bug_present(module) -> str | None:
    return None if callable(getattr(module, "load_config", None)) else \
        "mlx_lm.utils has no load_config()"


def _mlx_load_applied() -> bool:
    from .registry import status_table
    return any(s["name"] == "mlx_load" and s["state"] == "applied" for s in status_table())


HF_QUANT_CONFIG = "hf_quant_config.json"


def _hf_quant_config(model_path: Path) -> dict | None:
    from ..formats.jsonio import read_json
    path = model_path / HF_QUANT_CONFIG
    if not path.is_file():
        return None
    found = read_json(path, "config")
    return found if isinstance(found, dict) else None


def fixed_config(config: dict, model_path) -> dict:
    from ..formats.config import read_quant_config, without_quantization_config
    from .load_policy import dequantized_by_hooks, native_by_hooks, part_sources_by_hooks
    model_path = Path(model_path)
    hf = _hf_quant_config(model_path)
    qc = read_quant_config(config, hf)
    declared_here = qc.where is not None and (
        qc.where.startswith("config.json:") or qc.where == HF_QUANT_CONFIG)
    if not declared_here or qc.mlx_native or not _mlx_load_applied():
        return config
    native = native_by_hooks(model_path)
    if not native and not dequantized_by_hooks(model_path):
        return config
    new = without_quantization_config(config)
    if hf is not None:  # present but empty: mlx-lm does not read hf_quant_config.json
        new["quantization_config"] = {}
    if native:  # weights arrive as MLX quantized parts: mlx-lm quantizes those modules
        first = next(iter(native.values()))
        new["quantization"] = {**first, **{m: dict(p) for m, p in sorted(native.items())}}
        sources = part_sources_by_hooks(model_path)
        if sources:  # the model built from this config sanitizes the parts too
            _PARTS.clear()  # one load at a time: a config never built is forgotten
            _PARTS[id(new)] = (new, sources)
    return new


_PARTS: dict[int, tuple[dict, tuple]] = {}  # id(config) -> (config, native part sources)


def _parts_model(model_class, sources):
    """``model_class`` whose instances' ``sanitize`` runs ``sanitize_parts`` over theirs."""
    from ..mlx.bundle_plan import sanitize_parts
    from ..mlx.layout import Layout

    def build(args):
        model = model_class(args)
        own = getattr(model, "sanitize", None) or dict
        model.sanitize = lambda weights: sanitize_parts(
            Layout("mlx-lm", own), weights, list(sources))
        return model
    return build


def apply(module) -> None:
    def make_wrapper(original):
        def load_config(model_path, *args, **kwargs):
            config = original(model_path, *args, **kwargs)
            try:
                return fixed_config(config, model_path)
            except Exception as exc:
                print(f"scalefix: mlx_lm_config: config left as is ({type(exc).__name__}: "
                      f"{exc})", file=sys.stderr)
                return config
        return load_config

    wrap(module, "load_config", make_wrapper)
    if _takes_classes(module):
        wrap(module, "load_model", _load_model_wrapper)


def _takes_classes(module) -> bool:
    import inspect
    found = getattr(module, "load_model", None)
    return callable(found) and "get_model_classes" in inspect.signature(found).parameters


def _load_model_wrapper(original):
    import inspect
    signature = inspect.signature(original)

    def load_model(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        given = bound.arguments.get("get_model_classes",
                                    signature.parameters["get_model_classes"].default)
        bound.arguments["get_model_classes"] = _classes_wrapper(given)
        return original(*bound.args, **bound.kwargs)
    return load_model


def _classes_wrapper(original):
    def get_model_classes(*args, **kwargs):
        model_class, args_class = original(*args, **kwargs)
        config = kwargs.get("config", args[0] if args else None)
        held = _PARTS.get(id(config))
        if held is None or held[0] is not config:
            return model_class, args_class
        del _PARTS[id(config)]
        return _parts_model(model_class, held[1]), args_class
    return get_model_classes


def revert(module) -> None:
    unwrap(module, "load_config")
    unwrap(module, "load_model")
