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

Upstream: not fixed. Off: ``SCALEFIX_DISABLE_PATCHES=mlx_lm_config``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .wrapping import unwrap, wrap

TARGET = "mlx_lm.utils"
DISTRIBUTION = "mlx-lm"
AFFECTED = ">=0.20"
ATTRIBUTES = ("load_config",)  # what apply() replaces: restored by the guard if apply fails


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
    from .load_policy import dequantized_by_hooks, native_by_hooks
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
    return new


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


def revert(module) -> None:
    unwrap(module, "load_config")
