"""llmcompressor model_free_ptq (data-free) with compressed-tensors' own compressors: the
integer and NVFP4 schemes, presets where one exists, else a QuantizationScheme.

usage: python write_ct_int.py SRC DST NAME
NAME: w4a16 | w4a16-g32 | w4a16-asym | w8a16 | w8a16-channel | w4a16-channel | w8a8 | w3a16
      | nvfp4a16"""

import shutil
import sys
from pathlib import Path

from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from llmcompressor import model_free_ptq


def custom(bits, strategy, group=None):
    return QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(
        num_bits=bits, type="int", symmetric=True, strategy=strategy, group_size=group,
        dynamic=False))


SCHEMES = {"w4a16": "W4A16", "w4a16-asym": "W4A16_ASYM", "w8a16": "W8A16", "w8a8": "W8A8",
           "w3a16": "W3A16", "nvfp4a16": "NVFP4A16",
           "w4a16-g32": custom(4, "group", 32), "w8a16-channel": custom(8, "channel"),
           "w4a16-channel": custom(4, "channel")}

src, dst, name = sys.argv[1:4]
model_free_ptq(model_stub=src, save_directory=dst, scheme=SCHEMES[name],
               ignore=["lm_head", "re:.*embed_tokens"], max_workers=1, device="cpu")
for fname in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if (Path(src) / fname).exists() and not (Path(dst) / fname).exists():
        shutil.copy(Path(src) / fname, Path(dst) / fname)
