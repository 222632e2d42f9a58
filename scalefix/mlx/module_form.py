"""What MLX calls a quantized module, in one place: the modes with their bits and group sizes,
and ``ModuleForm``, a module's stored parts plus its ``config['quantization']`` entry.

``rewrite --to mlx`` plans with it (``native_plan.choose``, re-quantized modules), the load-time
hooks hand mlx-lm the same entries (``hooks/load_policy``, ``hooks/mlx_lm_config``), and
``native_forms`` checks its inputs against the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Mode:
    bits: tuple[int, ...]          # what mx.quantize / QuantizedLinear accept
    groups: tuple[int, ...]        # widest first: fewer scales
    scale_dtype: str | None        # the stored scales' safetensors dtype (None: BF16 or F32)
    biases: bool                   # stores <m>.biases


MODES = {
    "affine": Mode((1, 2, 3, 4, 5, 6, 8), (128, 64, 32), None, True),
    "mxfp4": Mode((4,), (32,), "U8", False),
    "mxfp8": Mode((8,), (32,), "U8", False),
    "nvfp4": Mode((4,), (16,), "U8", False),
}
AFFINE_BITS = MODES["affine"].bits
AFFINE_GROUPS = MODES["affine"].groups


def quantization_entry(mode: str, bits: int, group_size: int,
                       global_scale: bool = False) -> dict:
    """The per-module ``config['quantization'][path]`` entry mlx-lm hands ``to_quantized``
    (``global_scale: True``: an nvfp4 module with a per-tensor scale, which mlx-lm 0.32.2's
    switch layers take; a dense ``nn.Linear`` rejects the keyword, loudly)."""
    entry = {"group_size": group_size, "bits": bits, "mode": mode}
    if global_scale:
        entry["global_scale"] = True
    return entry


@dataclass(frozen=True)
class ModuleForm:
    """One module as MLX stores it: ``mode`` / ``bits`` / ``group_size``, its scales' dtype,
    its logical weight shape ``[*lead, out, in]`` and whether it carries a global scale."""

    mode: str                 # affine | mxfp4 | mxfp8 | nvfp4
    bits: int
    group_size: int
    scale_dtype: str          # BF16 | F32 | U8
    shape: tuple[int, ...]    # logical [*lead, out, in]
    global_scale: bool = False

    @property
    def entry(self) -> dict:
        return quantization_entry(self.mode, self.bits, self.group_size, self.global_scale)

    @property
    def parts(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{suffix: (safetensors dtype, shape)}`` of the module's stored tensors."""
        lead, cols = self.shape[:-1], self.shape[-1]
        out = {"weight": ("U32", lead + (cols * self.bits // 32,)),
               "scales": (self.scale_dtype, lead + (cols // self.group_size,))}
        if MODES[self.mode].biases:
            out["biases"] = (self.scale_dtype, lead + (cols // self.group_size,))
        if self.global_scale:
            out["global_scale"] = ("F32", tuple(self.shape[:-2]))
        return out


@lru_cache(maxsize=1)
def mlx_has_nvfp4_global_scale() -> bool:
    """Whether this MLX takes an nvfp4 ``global_scale`` in ``mx.quantize`` and
    ``mx.dequantize`` (0.32.4 does; older releases raise): a probe, not a version number."""
    try:
        import mlx.core as mx
        g = mx.array(1.0, dtype=mx.float32)
        q, s, *_ = mx.quantize(mx.ones((1, 32)), group_size=16, bits=4, mode="nvfp4",
                               global_scale=g)
        mx.eval(mx.dequantize(q, s, group_size=16, bits=4, mode="nvfp4", global_scale=g))
        return True
    except Exception:  # TypeError (no keyword), ValueError (no mode), ImportError
        return False
