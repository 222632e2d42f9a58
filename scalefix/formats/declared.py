"""The declaration decides: what a checkpoint or its files say about their format, handed to
the scheme that claims it (``schemes``), before and after the name rules.

Two kinds of declaration:

- per layer, written into the files by the family itself (ComfyUI ``comfy_quant`` /
  ``_quantization_metadata``): found by each scheme's ``find_declarations`` and claimed
  layer by layer *before* the name rules run, so the names never override them;
- checkpoint-wide (``quant_method`` in config.json, ``hf_quant_config.json``): after the name
  rules have paired what they can, the claimant's ``claim_bundle`` checks that the tensors
  agree and claims what names cannot pair.

A declaration no scheme claims is a :class:`~.schemes.Refusal` (exit 2, one line), never a
pass: an unknown format read as plain is exactly the silent misread scalefix exists to stop.
"""

from __future__ import annotations

from .schemes import Declaration, Refusal, claimant, schemes


def checkpoint_declaration(qc) -> Declaration | None:
    """The checkpoint-wide declaration in the config files, if any (MLX's own
    ``quantization`` block is MLX's native form, not a source format)."""
    if not qc.method or qc.method == "mlx":
        return None
    return Declaration("quant_method", qc.method, qc.where or "config", dict(qc.raw))


def claim_layers(result) -> None:
    """Per-layer declarations: each layer is decoded by the scheme its file names."""
    bundle, roles = result.bundle, result.roles
    found: dict[str, Declaration] = {}
    for scheme in schemes():
        find = getattr(scheme, "find_declarations", None)
        if find is not None:
            found.update(find(bundle))
    for layer, declaration in found.items():
        scheme = claimant(declaration)
        if scheme is None:
            raise Refusal(f"layer {layer!r} declares format {declaration.value!r} "
                          f"({declaration.where}), which scalefix does not decode; "
                          "nothing done", file=_file_of(bundle, layer))
        weight = scheme.claim(layer, bundle.tensors, declaration)
        record(result, weight)
        result.declared[layer] = declaration


def claim_checkpoint(result) -> None:
    """The checkpoint-wide declaration: its scheme checks and completes the classification."""
    declaration = checkpoint_declaration(result.quant_config)
    if declaration is None:
        return
    scheme = claimant(declaration)
    if scheme is None:
        raise Refusal(f"{declaration.where} declares quant_method {declaration.value!r}, "
                      "which scalefix does not decode; nothing done")
    claim = getattr(scheme, "claim_bundle", None)
    if claim is not None:
        claim(result, declaration)
    result.checkpoint_declaration = declaration


def record(result, weight) -> None:
    """A claimed weight (by ``claim_layers`` or a scheme's ``claim_bundle``): it decodes,
    its side tensors are read, the rest of the layer drops."""
    for tensor in (weight.weight, *weight.sides.values(), *weight.dropped):
        if result.roles.get(tensor.name) not in ("plain", "marker", "activation_scale"):
            raise Refusal(f"{tensor.name!r} belongs to two declared layers",
                          file=tensor.file, tensor=weight.name)
    result.quantized[weight.name] = weight
    result.roles[weight.name] = "quantized"
    for side in weight.sides.values():
        result.roles[side.name] = "scale"
    for extra in weight.dropped:
        if result.roles[extra.name] == "plain":
            result.roles[extra.name] = "quant_param"


def _file_of(bundle, layer: str):
    for name, info in bundle.tensors.items():
        if name.startswith(layer + "."):
            return info.file
    return bundle.path
