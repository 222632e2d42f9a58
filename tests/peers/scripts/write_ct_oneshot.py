"""llmcompressor oneshot NVFP4 (W4A4): weights as nvfp4-pack-quantized plus a calibrated
``input_global_scale`` (model_free_ptq refuses static activation scales). Calibration on 8
fixed random token sequences: only the activation scales depend on them.

usage: python write_ct_oneshot.py SRC DST"""

import shutil
import sys
from pathlib import Path

import torch
from datasets import Dataset
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from transformers import AutoModelForCausalLM

src, dst = sys.argv[1:3]
gen = torch.Generator().manual_seed(0)
ids = torch.randint(0, 1000, (8, 32), generator=gen).tolist()
data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * 32] * 8})
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
oneshot(model=model, dataset=data, num_calibration_samples=8, max_seq_length=32,
        recipe=QuantizationModifier(targets="Linear", scheme="NVFP4", ignore=["lm_head"]))
model.save_pretrained(dst, save_compressed=True)
for fname in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if (Path(src) / fname).exists():
        shutil.copy(Path(src) / fname, Path(dst) / fname)
