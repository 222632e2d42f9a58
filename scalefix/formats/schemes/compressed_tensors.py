"""compressed-tensors (llmcompressor's format): ``quant_method: compressed-tensors`` with a
``format`` per checkpoint or per ``config_groups`` entry.

Formats and what their tensors hold:

- ``float-quantized``: FP8 ``weight`` + ``weight_scale`` (tensor / channel / block);
- ``pack-quantized``: integer codes ``weight_packed`` I32 + ``weight_scale`` (+ zero point,
  ``weight_shape``, ``weight_g_idx``), decoded by ``int_weights`` / ``int_codes``;
- ``int-quantized`` / ``naive-quantized``: INT8 ``weight`` + ``weight_scale``;
  (integer weights are displayed by this module, also when no config declares them)
- ``nvfp4-pack-quantized``: ``weight_packed`` U8 (E2M1, low nibble first) + E4M3
  ``weight_scale`` + ``weight_global_scale`` (divides);
- ``mixed-precision``: the groups' own formats decide.

Any other format (sparse-24-bitmask, marlin-24, mxfp4-pack-quantized, ...) is refused, and
so is a layer whose codes are of a kind none of the declared formats writes.
"""

from __future__ import annotations

from . import Refusal, refuse_kinds

NAME = "compressed-tensors"
DECLARATIONS = (("quant_method", "compressed-tensors"),)

KINDS = {
    "float-quantized": {"fp8"},
    "pack-quantized": {"int"},
    "int-quantized": {"int"},
    "naive-quantized": {"int"},
    "nvfp4-pack-quantized": {"nvfp4"},
    "dense": set(),   # stored unquantized: any scale found would contradict it
}


def declared_formats(config: dict) -> list[str]:
    top = config.get("format")
    formats = []
    groups = config.get("config_groups")
    if isinstance(groups, dict):
        for group in groups.values():
            fmt = (group or {}).get("format") if isinstance(group, dict) else None
            if fmt:
                formats.append(str(fmt))
    if top and top != "mixed-precision":
        formats.append(str(top))
    if top == "mixed-precision" and not formats:
        raise Refusal("compressed-tensors format 'mixed-precision' names no group formats; "
                      "nothing done")
    return formats


def claim_bundle(result, declaration) -> None:
    formats = declared_formats(declaration.params)
    if not formats:
        return  # no format written (very old saves): the tensors' names and dtypes decide
    unknown = [f for f in formats if f not in KINDS]
    if unknown:
        raise Refusal(f"{declaration.where} declares compressed-tensors format "
                      f"{unknown[0]!r}, which scalefix does not decode; nothing done")
    allowed = set().union(*(KINDS[f] for f in formats))
    if "dense" in formats and not allowed:
        return  # an uncompressed save: nothing is quantized, nothing to check
    refuse_kinds(result, allowed, f"{declaration.where} declares compressed-tensors "
                                  f"format(s) {sorted(set(formats))}")


def display(weight) -> str:
    """``int4-group128``, ``int8-channel-zp``, ``int4-group32-actorder``: bits, how the scales
    tile the weight, a zero point, act-order."""
    gran = weight.geometry.granularity
    gran = f"group{weight.group}" if gran in ("group", "block") else gran
    return (f"int{weight.bits}-{gran}" + ("-zp" if weight.zero is not None else "")
            + ("" if weight.trivial_g_idx else "-actorder"))
