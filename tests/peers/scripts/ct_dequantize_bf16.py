"""compressed-tensors' own dequantizer (convert_checkpoint + CompressedTensorsDequantizer) on
an llmcompressor artifact: the independent BF16 oracle for ``scalefix rewrite``.

usage: python ct_dequantize_bf16.py SRC DST"""

import json
import shutil
import sys
from pathlib import Path

from compressed_tensors.entrypoints.convert import (CompressedTensorsDequantizer,
                                                    convert_checkpoint)

src, dst = sys.argv[1:3]
convert_checkpoint(src, dst, converter=CompressedTensorsDequantizer(src, ignore=["re:.*norm$"]),
                   device="cpu")
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if (Path(src) / name).exists() and not (Path(dst) / name).exists():
        shutil.copy(Path(src) / name, Path(dst) / name)
config_path = Path(dst) / "config.json"
config = json.loads(config_path.read_text())
config.pop("quantization_config", None)
config_path.write_text(json.dumps(config, indent=2))
