"""One packer per stored layout, written the simple way (a bit array per row, numpy
``packbits``), independent of scalefix's unpackers. Each takes numpy arrays or torch tensors
and returns the same kind."""

from __future__ import annotations

import numpy as np
import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)   # AutoAWQ: nibble k of a word holds column AWQ_ORDER[k]


def _pack_bits_np(codes: np.ndarray, bits: int, dense: bool) -> np.ndarray:
    n, c = codes.shape
    bitplanes = ((codes[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8)  # [n, c, b]
    if dense:
        stream = bitplanes.reshape(n, c * bits)
    else:  # 32 // b codes per word, the top bits of each word unused
        per = 32 // bits
        words = -(-c // per)
        padded = np.zeros((n, words * per, bits), np.uint8)
        padded[:, :c] = bitplanes
        stream = np.zeros((n, words, 32), np.uint8)
        stream[:, :, : per * bits] = padded.reshape(n, words, per * bits)
        stream = stream.reshape(n, words * 32)
    total = -(-stream.shape[1] // 32) * 32
    stream = np.pad(stream, ((0, 0), (0, total - stream.shape[1])))
    return np.packbits(stream, axis=1, bitorder="little").view("<i4").reshape(n, -1)


def pack_bits(codes, bits: int, dense: bool = True):
    """Unsigned codes [..., c] -> int32 words [..., W], low bits first. ``dense``: one
    bitstream per row (code i at bit i*bits, crossing word boundaries; compressed-tensors >= PR
    #715); otherwise 32 // bits codes per word, the top bits unused (older compressed-tensors,
    GPTQ)."""
    as_torch = isinstance(codes, torch.Tensor)
    a = codes.numpy() if as_torch else np.asarray(codes)
    lead, c = a.shape[:-1], a.shape[-1]
    words = _pack_bits_np(a.astype(np.int64).reshape(-1, c), bits, dense)
    words = np.ascontiguousarray(words.reshape(*lead, words.shape[-1]))
    return torch.from_numpy(words) if as_torch else words


def awq_pack(codes):
    """Unsigned 4-bit [rows, cols] -> AutoAWQ GEMM words [rows, cols/8] (nibble k of a word
    holds column AWQ_ORDER[k] of its eight)."""
    rows, cols = codes.shape
    grouped = codes.reshape(rows, cols // 8, 8)[..., list(AWQ_ORDER)]
    return pack_bits(grouped.reshape(rows, cols), 4)


def pack_low_first(codes: torch.Tensor) -> torch.Tensor:
    """FP4 codes [..., 2n] -> bytes [..., n], the even column in the low nibble."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
