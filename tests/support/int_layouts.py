"""Single integer-coded modules (``l.*``) in one-file checkpoints, built with the packers of
``packing`` (independent of scalefix's unpacker), and their torch oracle: ``((q - z) * s)``
in float32, rounded to BF16 once."""

import numpy as np
import torch

from scalefix.formats import classify, open_bundle
from scalefix.formats.dequant import dequantize

from .checkpoint import save_checkpoint
from .packing import pack_bits


def oracle(codes, zero, scale, col_group) -> torch.Tensor:
    q = torch.from_numpy(codes.astype(np.int64))
    z = torch.from_numpy(np.asarray(zero, dtype=np.int64))
    z = z[:, col_group] if z.ndim == 2 else z
    s = torch.from_numpy(scale)[:, col_group]
    return ((q - z).to(torch.float32) * s.to(torch.float32)).to(torch.bfloat16)


def save(root, tensors, config=None):
    """One ``model.safetensors`` and its config (a plain llama one by default)."""
    return save_checkpoint(root, {"model.safetensors": tensors},
                           config or {"model_type": "llama"})


def decoded(root, name):
    """(scalefix's QuantizedWeight for ``name``, its BF16 decode as a torch tensor)."""
    result = classify(open_bundle(root))
    qw = result.quantized[name]
    return qw, torch.from_numpy(dequantize(qw, "bf16").view(np.int16)).view(torch.bfloat16)


def bf16_scale(rng, *shape):
    return torch.from_numpy(rng.uniform(1e-3, 3e-2, shape).astype(np.float32)).bfloat16()


def gptq_tensors(rng, out, cols, group, act_order):
    """A GPTQ v1 4-bit module (``l.qweight`` packed along the input, ``l.qzeros`` storing
    z - 1, fp16 ``l.scales``, ``l.g_idx`` shuffled for act-order) and its oracle."""
    codes = rng.integers(0, 16, (out, cols)).astype(np.uint8)
    groups = cols // group
    zero = rng.integers(1, 16, (out, groups)).astype(np.uint8)       # z; stored as z - 1
    scales = rng.uniform(1e-3, 2e-2, (groups, out)).astype(np.float16)
    g_idx = np.arange(cols) // group
    if act_order:
        g_idx = rng.permutation(g_idx)
    qweight = np.ascontiguousarray(pack_bits(codes, 4, True).T)     # [in/8, out]: along the input
    qzeros = pack_bits((zero - 1).T.copy(), 4, True)                  # [G, out/8]
    tensors = {"l.qweight": torch.from_numpy(qweight), "l.qzeros": torch.from_numpy(qzeros),
               "l.scales": torch.from_numpy(scales),
               "l.g_idx": torch.from_numpy(g_idx.astype(np.int32))}
    want = oracle(codes, zero, scales.T.astype(np.float32), g_idx)
    return tensors, want
