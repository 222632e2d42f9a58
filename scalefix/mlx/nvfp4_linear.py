"""A dense nvfp4 ``QuantizedLinear`` that applies NVFP4's global scale (a prototype for
issue 11's runtime question; nothing installs it yet).

mlx-lm 0.32.2 keeps a global scale only on its switch (expert) layers: ``QuantizedSwitchLinear``
holds ``global_scale`` (MLX's convention: G = tensor amax, the block scale is multiplied by
``G/2688``) and hands it to ``gather_qmm``, which applies it on the GPU only. ``nn.Linear``'s
``to_quantized`` takes no ``global_scale`` and ``quantized_matmul`` has none, so a dense
ModelOpt / compressed-tensors NVFP4 layer cannot be carried. This layer holds the same
``global_scale`` parameter and multiplies the unscaled product by ``fl32(G/2688)``, the
factor MLX's own kernels use; on both CPU and GPU.

mlx-lm builds layers through ``module.to_quantized(**config['quantization'][path])``, and
infers ``global_scale: True`` only for modules whose ``to_quantized`` accepts it.
``linear_global_scale()`` makes ``nn.Linear.to_quantized`` accept it (building this class),
so both the per-module entry and mlx-lm's own inference reach it; without it, plain mlx-lm
0.32.2 raises ``TypeError: ... unexpected keyword argument 'global_scale'`` on such an entry
before reading any weight.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn

NVFP4_GLOBAL_UNIT = 448.0 * 6.0          # E4M3 max * E2M1 max


class GlobalScaleQuantizedLinear(nn.QuantizedLinear):
    """nvfp4 ``QuantizedLinear`` with mlx-lm's ``global_scale`` parameter (float32 scalar).

    ``y = quantized_matmul(x, w, scales) * fl32(G/2688)``. The unscaled product is about
    1/ws2 (10^4-10^5) times too large: float16 inputs are therefore multiplied in float32
    (float16 would overflow); BF16 and float32 keep their dtype.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True,
                 group_size: int | None = None, bits: int | None = None,
                 mode: str = "nvfp4"):
        if mode != "nvfp4":
            raise ValueError(f"a global scale needs mode 'nvfp4', got {mode!r}")
        super().__init__(input_dims, output_dims, bias, group_size, bits, mode)
        self.global_scale = mx.array(NVFP4_GLOBAL_UNIT, dtype=mx.float32)   # factor 1
        self.freeze()

    def _extra_repr(self):
        return super()._extra_repr() + ", global_scale=True"

    def __call__(self, x):
        dtype = x.dtype
        if dtype == mx.float16:
            x = x.astype(mx.float32)
        y = mx.quantized_matmul(x, self["weight"], scales=self["scales"], biases=None,
                                transpose=True, group_size=self.group_size, bits=self.bits,
                                mode=self.mode)
        factor = self["global_scale"].astype(mx.float32) / NVFP4_GLOBAL_UNIT
        y = (y * factor).astype(dtype)
        if "bias" in self:
            y = y + self["bias"]
        return y


def _with_global_scale(original):
    @functools.wraps(original)
    def to_quantized(self, group_size: int | None = None, bits: int | None = None,
                     mode: str = "affine", quantize_input: bool = False,
                     global_scale: bool = False):
        if not global_scale:
            return original(self, group_size=group_size, bits=bits, mode=mode,
                            quantize_input=quantize_input)
        if quantize_input:
            raise ValueError("a global-scale nvfp4 layer does not quantize its input")
        return GlobalScaleQuantizedLinear.from_linear(self, group_size, bits, mode)
    to_quantized.__signature__ = inspect.Signature(
        list(inspect.signature(original).parameters.values())
        + [inspect.Parameter("global_scale", inspect.Parameter.KEYWORD_ONLY, default=False)])
    to_quantized.__wrapped_original__ = original
    return to_quantized


@contextmanager
def linear_global_scale():
    """While active, ``nn.Linear.to_quantized(global_scale=True)`` builds a
    ``GlobalScaleQuantizedLinear`` (what ``mlx_lm.utils.load_model`` calls per module)."""
    original = nn.Linear.to_quantized
    nn.Linear.to_quantized = _with_global_scale(original)
    try:
        yield
    finally:
        nn.Linear.to_quantized = original
