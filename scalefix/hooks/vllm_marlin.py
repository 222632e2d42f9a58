"""vllm_marlin: vLLM's FP8 Marlin kernel requires the block scale to be named
``weight_scale_inv``.

``MarlinFP8ScaledMMLinearKernel.process_weights_after_loading`` reads
``layer.weight_scale_inv`` for block-quantized layers, but compressed-tensors (llmcompressor)
FP8_BLOCK checkpoints create layers whose block scale is ``weight_scale`` (identical math:
both multiply). On GPUs without native FP8 the load crashes with ``AttributeError: ...
no attribute 'weight_scale_inv'``. The fix hands the layer's ``weight_scale`` to the kernel
under the name it reads (the same parameter, renamed), so the rest of the kernel, including
``apply_weights``, sees what it expects. ``prepare_fp8_layer_for_marlin`` in these versions
already accepts either name.

Upstream: fixed in vLLM 0.29 (``_block_scale_name``). Off:
``SCALEFIX_DISABLE_PATCHES=vllm_marlin``. Permanent alternative for a checkpoint:
``scalefix rewrite SRC --rename-scales weight_scale_inv``.
"""

from __future__ import annotations

import inspect

from .wrapping import unwrap, wrap

TARGET = "vllm.model_executor.kernels.linear.scaled_mm.marlin"
DISTRIBUTION = "vllm"
AFFECTED = ">=0.26,<0.29"
FIXED_IN = "0.29"
CLASS = "MarlinFP8ScaledMMLinearKernel"
ATTRIBUTES = ()      # a method of CLASS is replaced; revert() restores it


def bug_present(module) -> str | None:
    cls = getattr(module, CLASS, None)
    if cls is None:
        return f"{CLASS} not found in {TARGET}"
    if hasattr(cls, "_block_scale_name"):
        return f"fixed upstream ({CLASS}._block_scale_name)"
    try:
        source = inspect.getsource(cls.process_weights_after_loading)
    except (OSError, TypeError):
        return None  # cannot read the source: trust the version range
    if "layer.weight_scale_inv" not in source:
        return "process_weights_after_loading no longer reads layer.weight_scale_inv"
    return None


def _rename_block_scale(layer) -> None:
    scale = layer._parameters.pop("weight_scale")
    layer.register_parameter("weight_scale_inv", scale)


def apply(module) -> None:
    def make_wrapper(original):
        def process_weights_after_loading(self, layer):
            if (getattr(self, "block_quant", False) and not hasattr(layer, "weight_scale_inv")
                    and "weight_scale" in getattr(layer, "_parameters", {})):
                _rename_block_scale(layer)
            return original(self, layer)
        return process_weights_after_loading

    wrap(getattr(module, CLASS), "process_weights_after_loading", make_wrapper)


def revert(module) -> None:
    cls = getattr(module, CLASS, None)
    if cls is not None:
        unwrap(cls, "process_weights_after_loading")
