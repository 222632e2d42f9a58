"""Every naming convention scalefix knows, in one table (docs/formats.md §4).

A scale rule says: a tensor whose key ends with ``suffix`` is the scale of the tensor whose
key is ``key[:-len(suffix)] + weight_suffix``. The rewrite, the runtime hook and ``inspect``
all read this table; add a convention here and every path learns it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleRule:
    naming: str            # label in reports
    suffix: str            # how the scale key ends
    weight_suffixes: tuple[str, ...]  # what replaces it to give the weight key, tried in order
    strict: bool = True    # False: the name is common outside quantization; a scale only when
                           # its dtypes say so, otherwise the tensor stays plain
    source: str = ""


SCALE_RULES: tuple[ScaleRule, ...] = (
    # DeepSeek-V3/R1, Qwen3-FP8, transformers FineGrainedFP8 ("inv": already the multiplier)
    ScaleRule("weight_scale_inv", ".weight_scale_inv", (".weight",), source="DeepSeek-V3"),
    # transformers v5 fused 3-D experts: gate_up_proj_scale_inv / [UNCERTAIN] _scales_inv
    ScaleRule("<param>_scale_inv", "_scale_inv", ("",), source="transformers fused experts"),
    ScaleRule("<param>_scales_inv", "_scales_inv", ("",), source="transformers fused experts"),
    # compressed-tensors / llmcompressor, FLUX.2, ModelOpt
    ScaleRule("weight_scale", ".weight_scale", (".weight", ".weight_packed"),
              source="compressed-tensors, FLUX, ModelOpt"),
    # ComfyUI legacy scaled_fp8
    ScaleRule("scale_weight", ".scale_weight", (".weight",), source="ComfyUI scaled_fp8"),
    # Mistral native FP8
    ScaleRule("qscale_weight", ".qscale_weight", (".weight",), source="Mistral"),
    # DeepSeek-V4: every scale is <module>.scale (E8M0)
    ScaleRule("scale", ".scale", (".weight",), strict=False, source="DeepSeek-V4"),
    # gpt-oss MXFP4: <param>_blocks + <param>_scales
    ScaleRule("_blocks/_scales", "_scales", ("_blocks",), strict=False, source="gpt-oss"),
)

# Every suffix a scale key may end with: one ``str.endswith`` tells most tensors apart from
# possible scales before any rule is tried (classification stays cheap at ~90k tensors).
SCALE_SUFFIXES: tuple[str, ...] = tuple(dict.fromkeys(rule.suffix for rule in SCALE_RULES))

# NVFP4's second-level (global) scale beside ``<module>.weight_scale``: ModelOpt's multiplies
# the E4M3 block scales, compressed-tensors' divides them (docs/formats.md §8).
NVFP4_GLOBAL_SCALES: tuple[tuple[str, str], ...] = (
    (".weight_scale_2", "multiply"),        # NVIDIA ModelOpt
    (".weight_global_scale", "divide"),     # compressed-tensors nvfp4-pack-quantized
)

# Activation (input) scales: meaningless once weights are dequantized; dropped on rewrite.
ACTIVATION_SCALE_SUFFIXES: tuple[str, ...] = (
    ".input_scale", ".scale_input", ".qscale_act", ".activation_scale", ".input_global_scale",
)

# Tensors that only mark a file as quantized (ComfyUI); dropped with the quantization.
MARKER_NAMES: tuple[str, ...] = ("scaled_fp8",)
MARKER_SUFFIXES: tuple[str, ...] = (".scaled_fp8", ".comfy_quant")
COMFY_METADATA_KEY = "_quantization_metadata"

# Key renaming after dequantization (gpt-oss stores the weight as <param>_blocks).
DEQUANTIZED_NAME_SUFFIXES: dict[str, str] = {"_blocks": "", ".weight_packed": ".weight"}


def activation_scale(name: str) -> bool:
    return name.endswith(ACTIVATION_SCALE_SUFFIXES)


def marker(name: str) -> bool:
    return name in MARKER_NAMES or name.endswith(MARKER_SUFFIXES)


def module_of(weight_key: str) -> str:
    """``model.layers.0.mlp.up_proj`` for ``...up_proj.weight`` / ``...up_proj.weight_packed``."""
    for suffix in (".weight_packed", ".weight", ".qweight"):
        if weight_key.endswith(suffix):
            return weight_key[: -len(suffix)]
    return weight_key


def scale_candidates(name: str):
    """Yield (rule, weight_key) for every rule under which ``name`` could be a scale."""
    for rule in SCALE_RULES:
        if name.endswith(rule.suffix) and len(name) > len(rule.suffix):
            stem = name[: -len(rule.suffix)]
            for weight_suffix in rule.weight_suffixes:
                yield rule, stem + weight_suffix


def dequantized_name(weight_key: str) -> str:
    for suffix, replacement in DEQUANTIZED_NAME_SUFFIXES.items():
        if weight_key.endswith(suffix):
            return weight_key[: -len(suffix)] + replacement
    return weight_key
