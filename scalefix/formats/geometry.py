"""How a scale tensor tiles its weight: the block rule of docs/formats.md §3.

Scale shape is ``[*lead, ceil(out/bo), ceil(in/bi)]`` for a weight ``[*lead, out, in]``.
The block comes from config ``weight_block_size`` when it fits, else from the shapes (the
power of two that gives the same ceil-divided count). Never floor division, never a
hard-coded 128: ``kv_a_proj_with_mqa`` is [576, 7168] with scale [5, 56].
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class GeometryError(ValueError):
    """The scale does not tile the weight; the caller names the file and tensor."""


@dataclass(frozen=True)
class Geometry:
    shape: tuple[int, ...]        # logical (dequantized) weight shape
    scale_shape: tuple[int, ...]  # scale viewed with as many dims as ``shape`` (>= 2)
    block: tuple[int, int]        # rows x cols of the weight one scale value covers

    @property
    def rows(self) -> int:        # the weight viewed as [rows, cols]
        return math.prod(self.shape[:-1]) if len(self.shape) > 1 else 1

    @property
    def cols(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def out_dim(self) -> int:
        return self.shape[-2] if len(self.shape) > 1 else 1

    @property
    def granularity(self) -> str:
        bo, bi = self.block
        if bo >= self.out_dim and bi >= self.cols:
            return "tensor"
        if bo == 1 and bi >= self.cols:
            return "channel"
        if bo == 1:
            return "group"
        return "block"


def tile(shape: tuple[int, ...], scale_shape: tuple[int, ...],
         preferred: tuple[int, int] | None = None) -> Geometry:
    """Geometry of ``scale_shape`` over a weight of logical ``shape``, or GeometryError."""
    shape = tuple(shape) if len(shape) >= 2 else (1,) * (2 - len(shape)) + tuple(shape)
    if math.prod(scale_shape) == 1:  # per-tensor: [], [1], [1, 1], also over stacked experts
        return Geometry(shape, (1,) * len(shape), (shape[-2], shape[-1]))
    if len(scale_shape) == len(shape):
        view = tuple(scale_shape)
    elif len(scale_shape) == len(shape) - 1 and tuple(scale_shape) == shape[:-1]:
        view = tuple(scale_shape) + (1,)  # per-channel stored as [out] (Mistral qscale_weight)
    else:
        raise GeometryError(f"scale shape {list(scale_shape)} does not tile weight {list(shape)}")
    if view[:-2] != shape[:-2]:
        raise GeometryError(
            f"scale shape {list(scale_shape)}: leading dims differ from weight {list(shape)}")
    bo = _block(shape[-2], view[-2], preferred[0] if preferred else None)
    bi = _block(shape[-1], view[-1], preferred[1] if preferred else None)
    if bo is None or bi is None:
        hint = f" (config weight_block_size {list(preferred)})" if preferred else ""
        raise GeometryError(
            f"scale shape {list(scale_shape)} does not tile weight {list(shape)}{hint}")
    return Geometry(shape, view, (bo, bi))


def _block(dim: int, count: int, preferred: int | None) -> int | None:
    """Block length b with ceil(dim / b) == count, preferring config, then powers of two."""
    if count <= 0:
        return None if dim else 1
    if dim == 0:
        return preferred or 1
    if preferred and -(-dim // preferred) == count:
        return preferred
    if count == 1:
        return dim
    b = 1
    while b <= dim:
        if -(-dim // b) == count:
            return b
        b *= 2
    if dim % count == 0:
        return dim // count
    return None
