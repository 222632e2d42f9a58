"""FP8 weights with separate scales (E4M3 / E5M2; tensor, channel or block scales).

Declared by ``quant_method: fp8`` (DeepSeek-V3, Qwen3-FP8, transformers FineGrainedFP8) or
``fbgemm_fp8``; most FP8 files declare nothing (FLUX, Mistral, ComfyUI ``scaled_fp8``) and
are found by the scale naming rules in ``conventions``. Those rules pair every weight with
its scale in any shard; the declaration adds the block size ``config`` reads. The element
codecs live in ``codecs`` (shared with FP4 and the E8M0 / E4M3 scale codecs).

The same declaration covers DeepSeek-V4, whose routed experts are MXFP4 under an ``fp8``
config: the names and dtypes decide those, so nothing here restricts the kinds found.
"""

from __future__ import annotations

NAME = "fp8"
DECLARATIONS = (("quant_method", "fp8"), ("quant_method", "fbgemm_fp8"))


def claim_bundle(result, declaration) -> None:
    """Nothing to add: the name rules found every scaled weight; a declared FP8 checkpoint
    without scales is reported by ``classify`` as a stale config."""


def display(weight) -> str:
    return f"fp8-{weight.geometry.granularity}"
