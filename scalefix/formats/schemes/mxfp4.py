"""gpt-oss MXFP4: ``<param>_blocks`` U8 ``[..., G, 16]`` (two E2M1 codes a byte, low nibble
first) with ``<param>_scales`` E8M0 ``[..., G]``, one scale per 32 elements; declared by
``quant_method: mxfp4``. The ``_blocks/_scales`` naming rule pairs them; the weight's key
loses its ``_blocks`` suffix once decoded."""

from __future__ import annotations

NAME = "mxfp4"
DECLARATIONS = (("quant_method", "mxfp4"),)


def claim_bundle(result, declaration) -> None:
    """The pairs are found by name; nothing else is declared per layer."""


def display(weight) -> str:
    return weight.scheme
