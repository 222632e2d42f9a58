"""compressed-tensors' own dequantizer (convert_checkpoint + CompressedTensorsDequantizer)
for whichever release the peer venv holds (0.17 in the vllm peer: per-word packing, packed
zero points; 0.19 in writers: dense packing). Like ct_dequantize_bf16.py, but without the
``device`` argument that 0.17's convert_checkpoint does not take.

usage: python ct_dequantize_any.py SRC DST [SRC DST ...]"""

import inspect
import json
import sys
from pathlib import Path

from compressed_tensors.entrypoints.convert import (CompressedTensorsDequantizer,
                                                    convert_checkpoint)

extra = {"device": "cpu"} if "device" in inspect.signature(convert_checkpoint).parameters else {}
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):  # one process, many checkpoints
    convert_checkpoint(src, dst, converter=CompressedTensorsDequantizer(src), **extra)
    config_path = Path(dst) / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2))
