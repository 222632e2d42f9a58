"""AMD Quark (``quant_method: quark``), as ``export_safetensors(custom_mode="quark",
weight_format="real_quantized")`` writes it (amd-quark 0.13; AMD's own MXFP4 releases:
Kimi-K2.5, GLM-5, Qwen3.5, MiniMax-M2.5).

The config declares each layer: ``exclude`` (fnmatch patterns), then ``layer_quant_config``
(pattern -> spec), then ``layer_type_quant_config`` (module type -> spec), then
``global_quant_config``; a spec's ``weight`` entry says what the weight holds:

- **MXFP4** (``dtype: fp4``, ``qscheme: per_group``, ``group_size: 32``, ``scale_format:
  e8m0``; older exports ``dtype: mx`` + ``mx_element_dtype: fp4``): ``weight`` U8 ``[out,
  in/2]``, low nibble = even column; ``weight_scale`` U8 ``[out, in/32]``, E8M0 biased
  (2^(byte-127)). The scale is stored as U8, not F8_E8M0: only this declaration says what it
  is. MLX's ``mxfp4`` is the same bits (``mlx_form``), so ``--to mlx`` copies the bytes and
  the load-time hook hands them to mlx-lm as native ``mxfp4`` layers.
- **FP8** (``dtype: fp8_e4m3`` / ``fp8_e5m2``, per tensor or channel): ``weight`` F8 +
  ``weight_scale``; exact BF16.

The shared name rules pair these tensors (``weight_scale``); this module checks that what
they found is what the declaration says, layer by layer. ``input_scale`` (BF16, FP8
activations) and other activation / KV-cache scales are dropped. Any other weight spec
(MXFP6, MX6/MX9, BFP16, INT4/INT8/UINT4 per channel or group, AMD FP4, NVFP4, two-level
specs) is refused in one line naming the layer and the spec.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from . import Refusal, kind_of

NAME = "quark"
DECLARATIONS = (("quant_method", "quark"),)

# quantized-tensor names besides weight / weight_scale that decoding never reads
ACTIVATION_SUFFIXES = (".input_scale", ".input_zero_point", ".output_scale",
                       ".output_zero_point", ".k_scale", ".v_scale", ".q_scale", ".prob_scale")
LOOKS_QUANTIZED = ("U8", "I8", "F8_E4M3", "F8_E5M2", "I32")


def weight_spec(config: dict, module: str):
    """(where, weight spec or None) for ``module`` under Quark's precedence."""
    for pattern in config.get("exclude") or []:
        if fnmatchcase(module, str(pattern)) or module == pattern:
            return f"exclude {pattern!r}", None
    for pattern, spec in (config.get("layer_quant_config") or {}).items():
        if fnmatchcase(module, str(pattern)):
            return f"layer_quant_config[{pattern!r}]", (spec or {}).get("weight")
    return "global_quant_config", (config.get("global_quant_config") or {}).get("weight")


def kind(spec, where: str, module: str) -> str | None:
    """"mxfp4" | "fp8" | None (not quantized); any other spec is refused."""
    if spec is None:
        return None
    if isinstance(spec, list):
        if len(spec) != 1:
            raise Refusal(f"Quark {where} gives layer {module!r} a {len(spec)}-level weight "
                          "spec, which scalefix does not decode; nothing done")
        spec = spec[0]
    if not isinstance(spec, dict):
        raise Refusal(f"Quark {where}: weight spec {spec!r} is not an object; nothing done")
    dtype = str(spec.get("dtype"))
    element = spec.get("mx_element_dtype")
    qscheme, group = spec.get("qscheme"), spec.get("group_size")
    if (dtype == "fp4" and qscheme == "per_group" and group == 32
            and spec.get("scale_format") in ("e8m0", None)) or \
            (dtype == "mx" and element == "fp4" and group in (32, None)):
        return "mxfp4"
    if dtype in ("fp8_e4m3", "fp8_e5m2") and qscheme in ("per_tensor", "per_channel"):
        return "fp8"
    what = ", ".join(f"{k} {v}" for k, v in (("dtype", dtype), ("mx_element_dtype", element),
                                             ("qscheme", qscheme), ("group_size", group),
                                             ("scale_format", spec.get("scale_format")))
                     if v is not None)
    layer = f" for layer {module!r}" if module else ""
    raise Refusal(f"Quark {where} declares weight {what}{layer}, which scalefix does not "
                  "decode (MXFP4, FP8); nothing done")


def claim_bundle(result, declaration) -> None:
    config = declaration.params
    types = config.get("layer_type_quant_config") or {}
    if any((spec or {}).get("weight") is not None for spec in types.values()):
        raise Refusal(f"{declaration.where}: Quark layer_type_quant_config "
                      f"({', '.join(map(str, types))}) is not resolved by scalefix; nothing done")
    tensors, roles = result.bundle.tensors, result.roles
    for name, info in tensors.items():
        if not name.endswith(".weight") or len(info.shape) < 2:
            continue
        qw = result.quantized.get(name)
        if qw is None and info.dtype not in LOOKS_QUANTIZED and roles.get(name) == "plain":
            continue  # a float weight (embeddings, norms, excluded layers): Quark left it
        module = name[: -len(".weight")]
        where, spec = weight_spec(config, module)
        declared = kind(spec, where, module)
        if qw is None:
            raise Refusal(f"Quark {where} declares layer {module!r} "
                          f"{declared or 'not quantized'}, but its {info.dtype} "
                          f"{list(info.shape)} weight has no weight_scale; nothing done",
                          file=info.file, tensor=name)
        _check(qw, declared, where, module)
    kind((config.get("global_quant_config") or {}).get("weight"), "global_quant_config", "")
    for pattern, spec in (config.get("layer_quant_config") or {}).items():
        kind((spec or {}).get("weight"), f"layer_quant_config[{pattern!r}]", "")
    for name, info in tensors.items():
        if roles[name] == "plain" and name.endswith(ACTIVATION_SUFFIXES):
            roles[name] = "activation_scale"
    for name, qw in result.quantized.items():
        if name.endswith(".weight") or kind_of(qw) == "int":
            continue
        raise Refusal(f"Quark checkpoint: quantized tensor {name!r} is not a layer weight "
                      "scalefix can match to the config; nothing done",
                      file=qw.weight.file, tensor=name)


def _check(qw, declared: str | None, where: str, module: str) -> None:
    found = kind_of(qw)
    ok = (declared == "mxfp4" and found == "fp4" and qw.geometry.block == (1, 32)
          and (qw.packing or "low-first") == "low-first") or \
        (declared == "fp8" and found == "fp8")
    if not ok:
        said = "not quantized" if declared is None else declared
        raise Refusal(f"Quark {where} declares layer {module!r} {said}, but it holds "
                      f"{found} codes ({qw.weight.dtype} {list(qw.weight.shape)}, scale "
                      f"{qw.scale.dtype} {list(qw.scale.shape)}); nothing done",
                      file=qw.weight.file, tensor=qw.name)


def mlx_form(weight) -> str | None:
    """MXFP4 is MLX's ``mxfp4`` bit for bit; FP8 with float scales has no lossless form."""
    return "mxfp4" if kind_of(weight) == "fp4" and weight.geometry.block == (1, 32) else None


def display(weight) -> str:
    return "quark-mxfp4" if mlx_form(weight) else f"quark-fp8-{weight.geometry.granularity}"
