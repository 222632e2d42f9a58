"""bitsandbytes (``quant_method: bitsandbytes``), as transformers' ``save_pretrained`` writes a
model loaded with ``BitsAndBytesConfig`` (bitsandbytes 0.50.2, ``QuantState.as_dict(packed=
True)``):

- **4-bit** (``load_in_4bit``, ``bnb_4bit_quant_type`` nf4 / fp4): ``<m>.weight`` U8
  ``[ceil(n/2), 1]`` is the flattened weight, two codes a byte, **high nibble first**
  (another ``bnb_4bit_quant_storage`` dtype holds the same bytes); ``weight.quant_map`` F32
  [16] is the codebook; ``weight.absmax`` F32 ``[ceil(n/blocksize)]``, or with double quant
  (``bnb_4bit_use_double_quant``) U8 codes decoded as ``nested_quant_map[u8] *
  nested_absmax[i // nested_blocksize] + nested_offset``; ``weight.quant_state.
  bitsandbytes__nf4`` (``__fp4``) is U8 JSON: ``blocksize``, ``shape``, ``dtype``,
  ``nested_blocksize``, ``nested_offset``. Decode: ``quant_map[code] * absmax[j //
  blocksize]`` in float32, as bitsandbytes' own ``dequantize_4bit`` computes it.
- **8-bit** (``load_in_8bit``, LLM.int8): ``<m>.weight`` I8 ``[out, in]``, ``<m>.SCB`` F32
  ``[out]`` (row absmax), ``<m>.weight_format`` U8 (``0``: row). Decode, as
  ``int8_vectorwise_dequant``: ``(float32(q) * SCB[row]) * float32(1/127)``.

Rounding: the float32 product is rounded once to the output dtype (BF16 by default). The
checkpoint's own ``dtype`` (the model's compute dtype, often BF16) is only reported: a model
saved from F16 decodes to RNE(float32 -> BF16), not to RNE(float32 -> F16 -> BF16); write
``--dtype f16`` there to get bitsandbytes' own F16 values. A codebook has no MLX affine form
(``mlx_form`` None): ``--to mlx`` and the load-time hook give exact BF16.
"""

from __future__ import annotations

import json
import sys

from . import DeclaredWeight, Refusal

NAME = "bitsandbytes"
DECLARATIONS = (("quant_method", "bitsandbytes"),)

STATE = ".quant_state.bitsandbytes__"
QUANT_TYPES = ("nf4", "fp4")
FOUR_BIT_SIDES = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")
INT8_RECIPROCAL = 7.874015718698502e-3      # bitsandbytes multiplies by this, not / 127
DTYPES = ("bfloat16", "float16", "float32")


def claim_bundle(result, declaration) -> None:
    """Every 4-bit weight (found by its ``quant_state``) and every 8-bit one (by its ``SCB``)
    becomes a ``DeclaredWeight``; a bitsandbytes tensor without its layer, or a layer whose
    tensors disagree with its quant state, is refused."""
    from ..declared import record
    tensors, roles = result.bundle.tensors, result.roles
    claimed: set[str] = set()
    for name, info in tensors.items():
        if STATE in name:
            weight = _four_bit(tensors, name, info, declaration)
        elif name.endswith(".SCB"):
            weight = _eight_bit(tensors, name, info, declaration)
        else:
            continue
        record(result, weight)
        claimed.update(t.name for t in (weight.weight, *weight.side_tensors))
    _refuse_strays(tensors, roles, claimed, declaration)
    if not claimed:
        raise Refusal(f"{declaration.where} declares bitsandbytes, but no layer carries a "
                      "quant_state or SCB tensor (weights stored without their state, or a "
                      "stale config); nothing done")


def _four_bit(tensors, name, info, declaration) -> DeclaredWeight:
    prefix, _, quant_type = name.partition(STATE)
    weight = tensors.get(prefix)
    where = f"bitsandbytes layer {prefix!r}"
    if quant_type not in QUANT_TYPES:
        raise Refusal(f"{where}: quant type {quant_type!r} is not nf4 / fp4; nothing done",
                      file=info.file, tensor=prefix)
    if weight is None:
        raise Refusal(f"{where}: quant_state without the packed weight; nothing done",
                      file=info.file, tensor=name)
    state = _state(info, prefix)
    nested = "nested_blocksize" in state or f"{prefix}.nested_absmax" in tensors
    roles = ("absmax", "quant_map") + (("nested_absmax", "nested_quant_map") if nested else ())
    missing = [r for r in roles if f"{prefix}.{r}" not in tensors]
    if missing:
        raise Refusal(f"{where}: {', '.join(missing)} missing beside quant_state; nothing "
                      "done", file=info.file, tensor=prefix)
    sides = {r: tensors[f"{prefix}.{r}"] for r in roles}
    sides["quant_state"] = info
    shape, params = _geometry(state, weight, sides, nested, where)
    params["quant_type"] = quant_type
    return DeclaredWeight(weight, sides, shape, _module(), declaration, prefix, params)


def _state(info, prefix: str) -> dict:
    from ..tensor_data import read_raw
    if info.dtype != "U8" or len(info.shape) != 1 or info.numel > 65536:
        raise Refusal(f"bitsandbytes layer {prefix!r}: quant_state is {info.dtype} "
                      f"{list(info.shape)}, not U8 JSON; nothing done", file=info.file,
                      tensor=info.name)
    try:
        state = json.loads(bytes(read_raw(info)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(f"bitsandbytes layer {prefix!r}: quant_state is not JSON ({exc}); "
                      "nothing done", file=info.file, tensor=info.name) from None
    if not isinstance(state, dict):
        raise Refusal(f"bitsandbytes layer {prefix!r}: quant_state is not a JSON object; "
                      "nothing done", file=info.file, tensor=info.name)
    return state


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _geometry(state: dict, weight, sides: dict, nested: bool, where: str):
    """(logical shape, params) from the quant state, every stored size checked against it."""
    shape, block = state.get("shape"), state.get("blocksize")
    bad = None
    if not isinstance(shape, list) or not shape or not all(_positive_int(d) for d in shape):
        bad = f"quant_state shape {shape!r} is not a list of sizes"
    elif not _positive_int(block):
        bad = f"quant_state blocksize {block!r} is not a positive integer"
    elif state.get("dtype") not in DTYPES:
        bad = f"quant_state dtype {state.get('dtype')!r} is not one of {', '.join(DTYPES)}"
    if bad:
        raise Refusal(f"{where}: {bad}; nothing done", file=weight.file, tensor=weight.name)
    n = 1
    for d in shape:
        n *= d
    blocks = -(-n // block)
    want = {"weight": (weight, -(-n // 2), None), "quant_map": (sides["quant_map"], 16, "F32")}
    params = {"blocksize": block, "dtype": state["dtype"], "nested": nested}
    if nested:
        nb = state.get("nested_blocksize")
        offset = state.get("nested_offset")
        if not _positive_int(nb) or not isinstance(offset, (int, float)) or \
                isinstance(offset, bool):
            raise Refusal(f"{where}: double quant without a nested_blocksize / nested_offset "
                          "in quant_state; nothing done", file=weight.file, tensor=weight.name)
        want["absmax"] = (sides["absmax"], blocks, "U8")
        want["nested_absmax"] = (sides["nested_absmax"], -(-blocks // nb), "F32")
        want["nested_quant_map"] = (sides["nested_quant_map"], 256, "F32")
        params.update(nested_blocksize=nb, nested_offset=float(offset))
    else:
        want["absmax"] = (sides["absmax"], blocks, "F32")
    for role, (info, count, dtype) in want.items():
        got = info.nbytes if role == "weight" else info.numel
        if (dtype is not None and info.dtype != dtype) or got != count:
            what = f"{count} bytes" if role == "weight" else f"{dtype} [{count}]"
            raise Refusal(f"{where}: {role} is {info.dtype} {list(info.shape)}, the quant_state "
                          f"(shape {shape}, blocksize {block}) wants {what}; nothing done",
                          file=info.file, tensor=weight.name)
    return tuple(shape), params


def _eight_bit(tensors, name, info, declaration) -> DeclaredWeight:
    module = name[: -len(".SCB")]
    weight = tensors.get(module + ".weight")
    where = f"bitsandbytes 8-bit layer {module!r}"
    if weight is None:
        raise Refusal(f"{where}: SCB without the int8 weight; nothing done", file=info.file,
                      tensor=name)
    if weight.dtype != "I8" or len(weight.shape) != 2 or info.dtype != "F32" or \
            tuple(info.shape) != (weight.shape[0],):
        raise Refusal(f"{where}: weight {weight.dtype} {list(weight.shape)} with SCB "
                      f"{info.dtype} {list(info.shape)} (want I8 [out, in] and F32 [out]); "
                      "nothing done", file=info.file, tensor=weight.name)
    fmt = tensors.get(module + ".weight_format")
    dropped = ()
    if fmt is not None:
        from ..tensor_data import read_raw
        if fmt.numel != 1 or fmt.dtype != "U8" or int(read_raw(fmt)[0]) != 0:
            raise Refusal(f"{where}: weight_format is not 0 (row): a tiled int8 layout "
                          "scalefix does not decode; nothing done", file=fmt.file,
                          tensor=weight.name)
        dropped = (fmt,)
    return DeclaredWeight(weight, {"SCB": info}, tuple(weight.shape), _module(), declaration,
                          weight.name, {"int8": True}, dropped)


def _refuse_strays(tensors, roles, claimed: set[str], declaration) -> None:
    """A bitsandbytes side tensor that belongs to no claimed layer, or a weight stored packed
    (U8 ``[k, 1]``) without its quant state: the declaration and the files disagree."""
    sides = tuple(f".{r}" for r in FOUR_BIT_SIDES)
    for name, info in tensors.items():
        if name in claimed:
            continue
        if name.endswith(sides) or name.endswith(".weight_format"):
            weight = name.rsplit(".", 1)[0]
            what = "a weight_format without SCB" if name.endswith(".weight_format") else \
                f"{name.rsplit('.', 1)[1]} but no quant_state"
            raise Refusal(f"{declaration.where} declares bitsandbytes: {weight!r} has {what} "
                          "(its layout is unknown); nothing done", file=info.file, tensor=name)
        if name.endswith(".weight") and info.dtype == "U8" and len(info.shape) == 2 \
                and info.shape[1] == 1:
            raise Refusal(f"{declaration.where} declares bitsandbytes: {name!r} is packed as "
                          f"U8 {list(info.shape)} without its quant_state; nothing done",
                          file=info.file, tensor=name)


def _module():
    return sys.modules[__name__]


# --- decode ---------------------------------------------------------------------------------

def absmax(weight: DeclaredWeight, arrays) -> "np.ndarray":
    """float32 block scales; double quant decoded as bitsandbytes does (float32 product,
    then the offset added)."""
    import numpy as np
    stored = np.asarray(arrays["absmax"]).reshape(-1)
    if not weight.params["nested"]:
        return stored.astype(np.float32, copy=False)
    nb = weight.params["nested_blocksize"]
    nested = np.asarray(arrays["nested_absmax"], dtype=np.float32).reshape(-1)
    codebook = np.asarray(arrays["nested_quant_map"], dtype=np.float32).reshape(-1)
    values = codebook[stored.astype(np.intp)] * nested[np.arange(stored.size) // nb]
    return values + np.float32(weight.params["nested_offset"])


def decode(weight: DeclaredWeight, arrays) -> "np.ndarray":
    import numpy as np
    if weight.params.get("int8"):
        codes = np.asarray(arrays["weight"]).view(np.int8).astype(np.float32)
        scb = np.asarray(arrays["SCB"], dtype=np.float32).reshape(-1, 1)
        return (codes * scb) * np.float32(INT8_RECIPROCAL)
    n = _count(weight.shape)
    packed = np.ascontiguousarray(arrays["weight"]).reshape(-1).view(np.uint8)
    codes = np.empty(packed.size * 2, dtype=np.uint8)
    codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F          # high nibble first
    codebook = np.asarray(arrays["quant_map"], dtype=np.float32).reshape(-1)
    scales = absmax(weight, arrays)
    block = weight.params["blocksize"]
    values = codebook[codes[:n]]
    return (values * np.repeat(scales, block)[:n]).reshape(weight.shape)


def lazy_decode(mx, weight: DeclaredWeight, arrays):
    """The same decode as an MLX graph on the stored codes (the block scales, small, are
    decoded in numpy exactly as ``decode`` does): ``float32(codebook[code]) * absmax``,
    rounded to BF16 once."""
    import numpy as np
    if weight.params.get("int8"):
        scb = np.array(arrays["SCB"], dtype=np.float32).reshape(-1, 1)
        codes = arrays["weight"].view(mx.int8).astype(mx.float32)
        return ((codes * mx.array(scb)) * mx.array(np.float32(INT8_RECIPROCAL))
                ).astype(mx.bfloat16)
    small = {role: np.array(arrays[role]) for role in weight.sides if role != "quant_state"}
    scales = absmax(weight, small)
    codebook = mx.array(small["quant_map"].astype(np.float32).reshape(-1))
    n, block = _count(weight.shape), weight.params["blocksize"]
    packed = arrays["weight"].reshape(-1).view(mx.uint8)
    codes = mx.stack([packed >> 4, packed & 0x0F], axis=-1).reshape(-1)
    padded = scales.size * block
    if codes.size < padded:
        codes = mx.pad(codes, [(0, padded - codes.size)])
    values = mx.take(codebook, codes[:padded].astype(mx.uint32)).reshape(-1, block)
    product = (values * mx.array(scales).reshape(-1, 1)).astype(mx.bfloat16).reshape(-1)
    return (product if padded == n else product[:n]).reshape(weight.shape)


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def mlx_form(weight) -> None:
    """A codebook (NF4, bitsandbytes' FP4 table) has no lossless MLX affine form."""
    return None


def display(weight) -> str:
    if weight.params.get("int8"):
        return "bnb-int8-rowwise"
    return (f"bnb-{weight.params['quant_type']}-block{weight.params['blocksize']}"
            + ("-dq" if weight.params["nested"] else ""))


def validate(weight) -> None:
    """Sizes were checked against the quant state when the layer was claimed."""
