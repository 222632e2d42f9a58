"""Check every scale value of a checkpoint, one read per shard.

``inspect`` decodes all scales (they are small) so that an invalid one (E8M0 code 255, NaN,
infinity) is bad input when inspecting, not a surprise at load time. One tensor at a time,
that is a file open and a few numpy calls per scale: on DeepSeek-V3 (44,800 scales in 160
shards) it was a third of inspect. Here each shard's scales are read together
(``tensor_data.read_raw_many``) and decoded by one ``decode_scale`` call per codec.

A valid checkpoint never takes another path. When a shard's batch fails, every weight is
checked again one by one, in classification order, with ``dequant.load_scale``: the error is
exactly the one a per-tensor check raises, naming the first bad tensor.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..errors import ScalefixError
from ..formats.classify import QuantizedWeight
from ..formats.codecs import decode_scale
from ..formats.dequant import load_scale
from ..formats.tensor_data import read_raw_many


def check_scales(quantized: list[QuantizedWeight]) -> None:
    """Raise ScalefixError (naming file and tensor) if any scale holds an invalid value."""
    by_file: dict = defaultdict(list)
    for qw in quantized:
        if qw.scale_codec == "declared":  # a registry scheme's sides: its decode checks them
            continue
        by_file[qw.scale.file].append(qw)
    if not all(_shard_ok(group) for group in by_file.values()):
        for group in by_file.values():
            for qw in group:
                load_scale(qw)


def _shard_ok(group: list[QuantizedWeight]) -> bool:
    if any(qw.scale.nbytes == 0 for qw in group):  # load_scale's own handling decides these
        return False
    try:
        raw = read_raw_many(qw.scale for qw in group)
        by_codec: dict = defaultdict(list)
        for qw in group:
            by_codec[qw.scale_codec].append(raw[qw.scale.name])
        for codec, chunks in by_codec.items():
            decode_scale(np.concatenate(chunks), codec)
    except ScalefixError:
        return False
    return True
