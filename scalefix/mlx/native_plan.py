"""Which native MLX form each quantized weight takes in ``rewrite --to mlx``, decided from
the headers alone (the output is planned before any data is read), and building that form
from the weight's data (``native_forms`` does the encoding and proves exactness).

A module with no lossless form is written as exact BF16 (or re-quantized on request):
FP8 with float block scales (DeepSeek-V3, Qwen3-FP8), act-order GPTQ, input widths MLX's
32/64/128 groups cannot split. NVFP4 (ModelOpt ``weight_scale_2``, compressed-tensors
``weight_global_scale``) goes to MLX ``nvfp4`` with a ``global_scale`` where MLX has one
(probed) and the global scale converts exactly; the planner then keeps it only for modules
mlx-lm builds with a global scale (its switch layers: routed experts), and writes dense
NVFP4 layers as exact BF16: mlx-lm's ``QuantizedLinear`` applies no global scale, and a
folded one would be lossy, a dropped one wrong.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import ScalefixError
from ..formats.int_weights import IntWeight
from .module_form import AFFINE_BITS, AFFINE_GROUPS, ModuleForm


def choose(qw, bf16_biases: bool = False) -> ModuleForm | str:
    """The lossless native form of ``qw``, or why there is none."""
    shape = tuple(qw.shape)
    cols = shape[-1]
    if isinstance(qw, IntWeight):
        if not qw.trivial_g_idx:
            return "act-order g_idx (columns out of group order): no native MLX form"
        if qw.bits not in AFFINE_BITS:
            return f"MLX affine has no {qw.bits}-bit mode"
        target = next((g for g in AFFINE_GROUPS if qw.group % g == 0 and cols % g == 0), None)
        if target is None:
            return (f"group {qw.group} over {cols} inputs does not split into MLX's 32/64/128 "
                    "groups")
        symmetric_bf16 = qw.zero is None and qw.scale.dtype == "BF16"
        dtype = "BF16" if symmetric_bf16 or bf16_biases else "F32"
        return ModuleForm("affine", qw.bits, target, dtype, shape)
    if qw.scale_codec == "e4m3":
        return _nvfp4(qw, shape)
    if qw.scale_codec != "e8m0" or cols % 32:
        return "float block scales: no lossless MLX form (BF16 is exact)"
    if qw.codec == "e2m1" and qw.naming != "_blocks/_scales" and \
            qw.packing in (None, "low-first") and qw.geometry.block == (1, 32):
        return ModuleForm("mxfp4", 4, 32, "U8", shape)
    if qw.codec == "e4m3" and qw.geometry.granularity in ("block", "tensor"):
        bi = qw.geometry.block[1]
        if bi % 32 == 0 or bi >= cols:
            return ModuleForm("mxfp8", 8, 32, "U8", shape)
    return "E8M0 scales in a layout MLX's MX modes do not take"


NVFP4_DENSE = ("NVFP4: mlx-lm's dense layers cannot apply the global scale; exact BF16 "
               "instead of a folded (lossy) or dropped one")


def _nvfp4(qw, shape) -> ModuleForm | str:
    from .module_form import mlx_has_nvfp4_global_scale
    from .native_forms import nvfp4_global_scales

    if qw.codec != "e2m1" or qw.global_scale is None or qw.geometry.block != (1, 16) or \
            qw.packing not in (None, "low-first") or shape[-1] % 16:
        return "E4M3 block scales in a layout MLX's nvfp4 does not take"
    if not mlx_has_nvfp4_global_scale():
        return "NVFP4: this MLX has no nvfp4 global_scale (exact BF16 instead)"
    _, exact = nvfp4_global_scales(global_values(qw), qw.global_op)
    if not exact:
        return ("NVFP4: no MLX global_scale reproduces this global scale's block scales "
                "exactly (exact BF16 instead)")
    return ModuleForm("nvfp4", 4, 16, "U8", shape, global_scale=True)


def global_values(qw) -> np.ndarray:
    """The source's NVFP4 global scale, one float32 per matrix (shape ``[*lead]``)."""
    from ..formats.tensor_data import read_raw
    values = read_raw(qw.global_scale).view(np.float32)
    lead = tuple(qw.shape[:-2])
    if values.size == 1:                 # [], [1] (compressed-tensors) or [1, 1]
        return np.full(lead, values.reshape(-1)[0], np.float32)
    return values.reshape(lead)         # one per expert: [E] or [E, 1]


def mlx_global_scale(qw) -> np.ndarray:
    """MLX's nvfp4 ``global_scale`` for ``qw``, float32 ``[*lead]``: the one conversion of
    the source's global scale, used by ``rewrite --to mlx`` and by the load-time hook."""
    from .native_forms import nvfp4_global_scales
    return nvfp4_global_scales(global_values(qw), qw.global_op)[0]


def build(qw, choice: ModuleForm, bf16_biases: bool = False):
    """The module's ``NativeForm`` from its data, in ``choice``'s dtypes."""
    from ..formats.dequant import load_scale
    from ..formats.int_codes import canonical
    from ..formats.tensor_data import read_raw
    from .native_forms import affine_form, mxfp4_form, mxfp8_form, nvfp4_form

    if choice.mode == "nvfp4":
        lead, cols = choice.shape[:-1], choice.shape[-1]
        values = global_values(qw)
        form = nvfp4_form(read_raw(qw.weight).reshape(lead + (cols // 2,)),
                          read_raw(qw.scale).reshape(lead + (cols // 16,)), values,
                          qw.global_op)
        if form:  # the G the plan chose from the global scales alone (all block scales)
            form = replace(form, global_scale=mlx_global_scale(qw))
    elif choice.mode == "affine":
        codes, scale, zero = canonical(qw)
        form = affine_form(codes, scale, zero, qw.bits, qw.group, bf16_biases=bf16_biases)
    elif choice.mode == "mxfp4":
        lead = choice.shape[:-1]
        form = mxfp4_form(read_raw(qw.weight).reshape(lead + (choice.shape[-1] // 2,)),
                          read_raw(qw.scale).reshape(lead + (choice.shape[-1] // 32,)))
    else:
        scale = load_scale(qw).reshape(qw.geometry.scale_shape)
        form = mxfp8_form(read_raw(qw.weight).reshape(choice.shape), scale, qw.geometry.block)
    if not form:
        raise ScalefixError(f"internal: planned {choice.mode}, but {form.reason}",
                            tensor=qw.name)
    if form.scale_dtype != choice.scale_dtype:
        if (form.scale_dtype, choice.scale_dtype) != ("BF16", "F32"):
            raise ScalefixError(f"internal: planned {choice.scale_dtype} scales, the data "
                                f"need {form.scale_dtype}", tensor=qw.name)
        widen = lambda bits: (bits.astype(np.uint32) << 16).view(np.float32)  # exact
        form = replace(form, scales=widen(form.scales), biases=widen(form.biases),
                       scale_dtype="F32")
    return form
