"""llmcompressor model_free_ptq: safetensors in, compressed-tensors FP8 out (weight_scale).

usage: python write_model_free_ptq.py SRC DST FP8_BLOCK|FP8_DYNAMIC"""

import shutil
import sys
from pathlib import Path

from llmcompressor import model_free_ptq

src, dst, scheme = sys.argv[1:4]
model_free_ptq(model_stub=src, save_directory=dst, scheme=scheme,
               ignore=["lm_head", "re:.*embed_tokens"], max_workers=1, device="cpu")
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if (Path(src) / name).exists() and not (Path(dst) / name).exists():
        shutil.copy(Path(src) / name, Path(dst) / name)
