"""Native MLX parts of an integer-coded weight, built lazily on ``mx.load``'s own arrays: what
the ``mx.load`` hook hands mlx-lm so it builds quantized layers from GPTQ / AWQ /
compressed-tensors checkpoints without a rewrite.

Only the codes are big; they stay a lazy MLX graph (a plain view for compressed-tensors'
dense packing, which is MLX's own bitstream; an unpack-transpose-repack for GPTQ and AWQ,
which pack across output rows). The scales, zero points and biases are small and come from
the formats room in numpy, computed exactly as ``rewrite --to mlx`` computes them
(``native_forms.affine_params``), so a load under ``scalefix.auto`` and a load of the
``--to mlx`` bundle see the same bits.
"""

from __future__ import annotations

import numpy as np

from ..formats.int_codes import canonical_side
from ..formats.int_weights import AWQ_ORDER, IntWeight

RUNTIME_LAYOUTS = ("ct-dense", "int8", "gptq", "awq")


def supported(qw: IntWeight) -> bool:
    """Layouts whose codes this module repacks lazily (older per-word 3/5/6-bit packing is
    left to ``rewrite``; AWQ is 4-bit only)."""
    return qw.layout in RUNTIME_LAYOUTS or (qw.layout == "ct-per-word" and qw.bits in (2, 4, 8))


def lazy_codes_words(mx, qw: IntWeight, stored):
    """The weight in MLX's affine bitstream, lazily: uint32 ``[*lead, out, in*bits/32]``.
    Byte-sized steps only: a temporary never holds more than a byte per code."""
    if qw.layout in ("ct-dense", "ct-per-word"):   # already MLX's bitstream
        return stored.view(mx.uint32)
    if qw.layout == "int8":  # signed codes; the zero point moves with them (+128)
        # int8 q + 128 as a byte is q's two's-complement byte with the top bit flipped
        return (stored.view(mx.uint8) ^ mx.array(0x80, dtype=mx.uint8)).view(mx.uint32)
    out, cols = qw.shape
    if qw.layout == "gptq":
        # [in*b/32, out]: each word holds 32/b consecutive inputs of one output, low bits
        # first: transposed, every row is that output's MLX bitstream as it stands
        return mx.contiguous(stored.T).view(mx.uint32)
    # AWQ [in, out/8]: nibble i of a word is output AWQ_ORDER[i] of its block of 8. MLX's byte
    # j of output o holds inputs 2j (low nibble) and 2j+1 (high): built per output phase
    # straight from the even and odd input rows, so no [in, out] code array ever exists.
    data = stored.view(mx.uint8)                                       # [in, out/2]
    even, odd = data[0::2], data[1::2]                                  # [in/2, out/2]
    phases = []
    for phase in range(8):
        nibble = AWQ_ORDER.index(phase)                                 # where it sits
        column, shift = nibble // 2, 4 * (nibble % 2)
        lo = (even[:, column::4] >> shift) & 15
        hi = (odd[:, column::4] >> shift) & 15
        phases.append((lo | (hi << 4)).T)                               # [out/8, in/2]
    return mx.stack(phases, axis=1).reshape(out, cols // 2).view(mx.uint32)


def native_parts(qw: IntWeight, choice, stored) -> dict:
    """``{"weight", "scales", "biases"}`` MLX arrays for ``qw`` in ``choice``'s affine form."""
    import mlx.core as mx

    from ..formats.codecs import f32_to_bf16
    from .arrays import bf16_array
    from .native_forms import affine_params

    scale, zero = canonical_side(qw)
    scale, bias = affine_params(scale, zero, qw.bits, qw.group, choice.group_size,
                                qw.shape[-1])
    lead_out = tuple(qw.shape[:-1])
    shape = lead_out + (scale.shape[-1],)
    if choice.scale_dtype == "BF16":
        scales = bf16_array(f32_to_bf16(scale).reshape(shape))
        biases = bf16_array(f32_to_bf16(bias).reshape(shape))
    else:
        scales = mx.array(np.ascontiguousarray(scale, np.float32).reshape(shape))
        biases = mx.array(bias.reshape(shape))
    weight = lazy_codes_words(mx, qw, stored)
    return {"weight": weight.reshape(lead_out + (weight.shape[-1],)), "scales": scales,
            "biases": biases}
