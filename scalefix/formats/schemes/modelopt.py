"""NVIDIA ModelOpt (``quant_method: modelopt``), as ``export_hf_checkpoint`` writes it
(nvidia-modelopt 0.47.0): ``hf_quant_config.json`` ``{"quantization": {"quant_algo": ...}}``
and, in recent exports, the same settings as config.json's ``quantization_config``; a
checkpoint may be declared by ``hf_quant_config.json`` alone (older exports).

``quant_algo`` and what each layer holds:

- ``FP8``: ``weight`` F8_E4M3 with a per-tensor ``weight_scale`` F32 0-d;
- ``NVFP4``: ``weight`` U8 ``[out, in/2]`` (E2M1, low nibble first), ``weight_scale``
  F8_E4M3 ``[out, in/16]``, ``weight_scale_2`` F32 0-d that multiplies the block scales;
- ``MIXED_PRECISION``: ``quantized_layers: {module: {quant_algo: FP8 | NVFP4}}`` says which
  (config.json carries one ``config_groups`` entry per format).

``input_scale`` (static activation scales) and KV-cache ``k_scale`` / ``v_scale`` are dropped.
ModelOpt calibrates q/k/v (and gate/up) to one amax so they can be fused: each module still
stores its own ``weight_scale_2`` / ``input_scale`` (equal values), so every layer decodes on
its own tensors. The shared name rules pair the tensors and the FP8 / FP4 codecs decode them;
this module checks that they are what the declaration says, layer by layer.

Zeros: ModelOpt's E2M1 table decodes code 8 (sign bit alone) to +0; scalefix decodes it to
-0, the OCP E2M1 value MLX's own ``mxfp4`` / ``nvfp4`` dequantize also gives, so the BF16
rewrite, ``--to mlx`` and the load-time hook agree with each other bit for bit and with
ModelOpt's ``NVFP4QTensor.dequantize`` numerically (only the sign of those zeros differs).

Any other ``quant_algo`` (FP8_PB_WO, FP8_PER_CHANNEL_PER_TOKEN, W4A16_AWQ, W4A8_AWQ,
NVFP4_AWQ, MXFP8, W4A8_MXFP4_FP8, ...) is refused in one line.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from . import Refusal, kind_of

NAME = "modelopt"
DECLARATIONS = (("quant_method", "modelopt"),)
ALGOS = {"FP8": "fp8", "NVFP4": "nvfp4"}
DROPPED_SUFFIXES = (".k_scale", ".v_scale", ".input_scale", ".output_scale")


def settings(result, declaration) -> dict:
    """The declared settings; config.json and hf_quant_config.json must not disagree."""
    params = dict(declaration.params)
    params = params.get("quantization", params) if "quant_method" not in params else params
    hf = result.bundle.hf_quant_config
    hf = (hf or {}).get("quantization") if isinstance(hf, dict) else None
    if isinstance(hf, dict) and declaration.where != "hf_quant_config.json":
        for key in ("quant_algo", "quantized_layers"):
            if key in hf and key in params and hf[key] != params[key]:
                raise Refusal(f"{declaration.where} and hf_quant_config.json disagree on "
                              f"ModelOpt {key}; nothing done")
        params = {**hf, **params}
    return params


def claim_bundle(result, declaration) -> None:
    params = settings(result, declaration)
    algo = params.get("quant_algo")
    where = declaration.where
    layers = params.get("quantized_layers") if algo == "MIXED_PRECISION" else None
    if algo == "MIXED_PRECISION":
        if not isinstance(layers, dict) or not layers:
            raise Refusal(f"{where} declares ModelOpt MIXED_PRECISION without "
                          "quantized_layers; nothing done")
        for module, entry in layers.items():
            _kind(str((entry or {}).get("quant_algo")), f"{where} quantized_layers[{module!r}]")
    else:
        _kind(str(algo), where)
    excluded = [str(x) for x in (params.get("exclude_modules") or params.get("ignore") or [])]
    tensors, roles = result.bundle.tensors, result.roles
    for name, qw in result.quantized.items():
        module = name.rsplit(".", 1)[0]
        if layers is not None:
            entry = layers.get(module)
            if entry is None:
                raise Refusal(f"{where}: layer {module!r} holds {kind_of(qw)} codes but is not "
                              "in ModelOpt's quantized_layers; nothing done",
                              file=qw.weight.file, tensor=name)
            want = ALGOS[entry["quant_algo"]]
        else:
            want = ALGOS[algo]
        if any(fnmatchcase(module, p) or module == p for p in excluded):
            raise Refusal(f"{where} excludes layer {module!r} from quantization, but it holds "
                          f"{kind_of(qw)} codes; nothing done", file=qw.weight.file, tensor=name)
        _check(qw, want, where, module)
    for module in layers or {}:
        if module + ".weight" not in result.quantized:
            info = tensors.get(module + ".weight")
            what = (f"its {info.dtype} {list(info.shape)} weight has no usable scale"
                    if info is not None else "the checkpoint has no such weight")
            raise Refusal(f"{where} declares layer {module!r} {layers[module]['quant_algo']}, "
                          f"but {what}; nothing done",
                          file=info.file if info else None, tensor=module + ".weight")
    for name, info in tensors.items():
        role = roles[name]
        if role in ("fp8_without_scale", "unsupported") or (
                role == "plain" and name.endswith(".weight") and info.dtype == "U8"):
            why = result.reasons.get(name) or f"{info.dtype} {list(info.shape)} without a scale"
            raise Refusal(f"{where} declares ModelOpt {algo}, but {name!r} is {why}; nothing "
                          "done", file=info.file, tensor=name)
        if role == "plain" and name.endswith(DROPPED_SUFFIXES):
            roles[name] = "activation_scale"


def _kind(algo: str, where: str) -> None:
    if algo not in ALGOS:
        raise Refusal(f"{where} declares ModelOpt quant_algo {algo!r}, which scalefix does not "
                      "decode (FP8, NVFP4, MIXED_PRECISION); nothing done")


def _check(qw, want: str, where: str, module: str) -> None:
    found = kind_of(qw)
    ok = found == want and (
        (want == "fp8" and qw.geometry.granularity == "tensor") or
        (want == "nvfp4" and qw.global_op == "multiply" and qw.geometry.block == (1, 16)
         and (qw.packing or "low-first") == "low-first"))
    if not ok:
        shape = f"{qw.weight.dtype} {list(qw.weight.shape)}, scale {qw.scale.dtype} " \
                f"{list(qw.scale.shape)}"
        extra = "" if want != "nvfp4" or qw.global_op == "multiply" else \
            ", global scale not weight_scale_2"
        raise Refusal(f"{where} declares layer {module!r} {want.upper()}, but it holds "
                      f"{found} codes ({shape}{extra}); nothing done",
                      file=qw.weight.file, tensor=qw.name)


def mlx_form(weight) -> None:
    """FP8 with a float scale and NVFP4 with its global scale have no lossless form an mlx-lm
    dense layer runs: exact BF16."""
    return None


def display(weight) -> str:
    return "modelopt-nvfp4" if kind_of(weight) == "nvfp4" else "modelopt-fp8-tensor"
