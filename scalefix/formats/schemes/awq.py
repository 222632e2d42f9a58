"""AWQ GEMM (``quant_method: awq``, ``version: gemm``): ``qweight`` I32 ``[in, out/8]``
packed along the output in the nibble order 0,2,4,6,1,3,5,7, ``qzeros`` likewise,
``scales`` ``[G, out]``. Found by ``int_weights``, decoded by ``int_codes``. Other AWQ
versions (gemv, marlin, exllama) pack differently and are refused."""

from __future__ import annotations

from . import Refusal, refuse_kinds

NAME = "awq"
DECLARATIONS = (("quant_method", "awq"),)
VERSIONS = ("gemm",)


def claim_bundle(result, declaration) -> None:
    version = str(declaration.params.get("version") or "gemm").lower()
    if version not in VERSIONS:
        raise Refusal(f"{declaration.where} declares AWQ version {version!r}, which scalefix "
                      "does not decode (gemm); nothing done")
    refuse_kinds(result, {"int"}, f"{declaration.where} declares awq")


def display(weight) -> str:
    return f"awq-int{weight.bits}-group{weight.group}"
