"""GPTQ (``quant_method: gptq``, also auto-round's ``auto_gptq`` packing): ``qweight`` I32
``[in*b/32, out]`` packed along the input, ``qzeros`` holding ``z - 1`` (``gptq_v2``: ``z``),
``scales`` ``[G, out]``, ``g_idx`` ``[in]`` (act-order when not ``i // group``).

``int_weights`` finds the tensors and their geometry, ``int_codes`` decodes them; the
config only breaks ties there (bits, group size, checkpoint format). Here: which
declarations mean GPTQ, and that the tensors they describe are integer codes.
"""

from __future__ import annotations

from . import Refusal, refuse_kinds

NAME = "gptq"
DECLARATIONS = (("quant_method", "gptq"), ("quant_method", "auto-round"))
FORMATS = ("gptq", "gptq_v2")


def claim_bundle(result, declaration) -> None:
    params = declaration.params
    if declaration.value == "auto-round":
        packing = str(params.get("packing_format") or params.get("backend") or "auto_gptq")
        if "gptq" not in packing and "awq" not in packing and packing != "auto_round":
            raise Refusal(f"{declaration.where} declares auto-round packing {packing!r}, "
                          "which scalefix does not decode; nothing done")
    fmt = params.get("checkpoint_format") or "gptq"
    if declaration.value == "gptq" and fmt not in FORMATS:
        raise Refusal(f"{declaration.where} declares GPTQ checkpoint_format {fmt!r}, which "
                      "scalefix does not decode (gptq, gptq_v2); nothing done")
    refuse_kinds(result, {"int"}, f"{declaration.where} declares {declaration.value}")


def display(weight) -> str:
    return (f"gptq-int{weight.bits}-group{weight.group}"
            + ("" if weight.trivial_g_idx else "-actorder"))
