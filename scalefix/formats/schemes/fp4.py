"""FP4 (E2M1) weights, two codes a byte, with block scales: the element layout shared by

- MXFP4: E8M0 scales, one per 32 elements. gpt-oss stores ``<param>_blocks`` U8
  ``[..., G, 16]`` with ``<param>_scales`` ``[..., G]`` and declares ``quant_method:
  mxfp4``; DeepSeek-V4's routed experts store ``weight`` I8 ``[out, in/2]`` with an E8M0
  ``.scale`` under an ``fp8`` config (named ``fp4-group`` in reports);
- NVFP4: E4M3 scales, one per 16 elements, times a second-level global scale (ModelOpt
  ``weight_scale_2`` multiplies, compressed-tensors ``weight_global_scale`` divides); declared
  by the ModelOpt and compressed-tensors schemes, decoded here.

The low nibble is the even element (ComfyUI's high-nibble-first NVFP4 is the ``comfy``
scheme's). The name rules pair these tensors; ``codecs`` holds the E2M1 table.
"""

from __future__ import annotations

NAME = "fp4"
DECLARATIONS = (("quant_method", "mxfp4"),)


def claim_bundle(result, declaration) -> None:
    """The pairs are found by name; nothing else is declared per layer."""


def display(weight) -> str:
    if weight.naming == "_blocks/_scales":
        return "mxfp4"
    if weight.scale_codec == "e4m3":
        return "nvfp4"
    return f"fp4-{weight.geometry.granularity}"
