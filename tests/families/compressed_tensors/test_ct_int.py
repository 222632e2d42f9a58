"""compressed-tensors pack-, int- and naive-quantized, every release's layout (issue 11).

Fixtures come from the real writers where they run on CPU (llmcompressor / compressed-tensors
0.19 and 0.9.3 compressors: tests/peers/artifacts.py), each with its writer's own decoder as
the BF16 oracle; the layouts no CPU writer produces are built from their formulas
(tests/support/int_families.py) and cross-checked against old releases' decompressors. The
tables and checks are shared with the other integer families (tests/support/int_checks.py:
GPTQ, AWQ, NVFP4 and ModelOpt run them in their own folders).

Every fixture must be named by ``inspect``, rewritten to BF16 bit-exactly against its oracle
with every quantization side tensor and config dropped, and pass ``verify``.
"""

import pytest
import torch

from tests.support import int_families as fam
from tests.support.int_checks import family_tests
from tests.support.packing import awq_pack, pack_bits


# ---------------------------------------------------------------- the packers and unpackers

def test_bit_packing_worked_by_hand():
    """Dense: code i at bit 3i across words; per word: 10 three-bit codes, 2 bits unused;
    AWQ: nibble k of a word holds column 0,2,4,6,1,3,5,7[k]."""
    codes = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 5]])
    low = sum(int(c) << (3 * i) for i, c in enumerate(codes[0, :10].tolist()))
    dense = [(low | (5 & 0b11) << 30), 5 >> 2]
    per_word = [low, 5]
    to_i32 = lambda ws: torch.tensor([[w - (1 << 32) if w >= 1 << 31 else w for w in ws]],
                                     dtype=torch.int32)
    assert torch.equal(pack_bits(codes, 3, dense=True), to_i32(dense))
    assert torch.equal(pack_bits(codes, 3, dense=False), to_i32(per_word))
    assert torch.equal(fam.unpack_bits(to_i32(dense), 3, 11, dense=True), codes)
    assert torch.equal(fam.unpack_bits(to_i32(per_word), 3, 11, dense=False), codes)
    row = torch.arange(8).unsqueeze(0)
    word = sum(c << (4 * k) for k, c in enumerate((0, 2, 4, 6, 1, 3, 5, 7)))
    assert torch.equal(awq_pack(row), torch.tensor([[word]], dtype=torch.int32))
    assert torch.equal(fam.awq_unpack(awq_pack(row)), row)


@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_bit_packing_round_trips(bits, dense):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 1 << bits, (5, 203), generator=gen)
    words = pack_bits(codes, bits, dense)
    per = 32 // bits
    assert words.shape[-1] == (-(-203 * bits // 32) if dense else -(-203 // per))
    assert torch.equal(fam.unpack_bits(words, bits, 203, dense), codes)


# ---------------------------------------------------------------- formula builder, real writers

# the checks every integer / NVFP4 family runs, on this family's kinds (int_checks.family_tests)
globals().update(family_tests("compressed_tensors", "formula", "cross", "real", "cross_shard"))
