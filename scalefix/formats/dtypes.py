"""safetensors dtype names and their storage size (huggingface/safetensors ``tensor.rs::Dtype``)."""

from __future__ import annotations

# dtype name -> bits per element as stored on disk
BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

FP8_WEIGHT = frozenset({"F8_E4M3", "F8_E5M2"})
FLOAT_PLAIN = frozenset({"F16", "BF16", "F32", "F64"})
# dtypes a scale companion may have on disk (E8M0 also arrives as U8 in gpt-oss/compressed-tensors)
SCALE_DTYPES = frozenset({"F32", "BF16", "F16", "F8_E8M0", "U8", "F8_E4M3"})
PACKED_FP4 = frozenset({"I8", "U8", "F4"})


def nbytes(dtype: str, numel: int) -> int:
    """Bytes a tensor occupies; sub-byte dtypes pack, rounding up to a whole byte."""
    return (BITS[dtype] * numel + 7) // 8
