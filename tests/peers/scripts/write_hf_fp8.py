"""transformers FineGrainedFP8Config (128x128 blocks): weight_scale_inv F32 + quant_method fp8.

usage: python write_hf_fp8.py SRC DST
Its validate_environment refuses a machine without an FP8-capable GPU; on CPU the
quantization itself works, so that check alone is bypassed."""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, FineGrainedFP8Config
from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

FineGrainedFP8HfQuantizer.validate_environment = lambda self, *a, **k: None
src, dst = sys.argv[1:3]
config = FineGrainedFP8Config(weight_block_size=(128, 128), modules_to_not_convert=["lm_head"])
model = AutoModelForCausalLM.from_pretrained(src, quantization_config=config,
                                             dtype=torch.bfloat16)
model.save_pretrained(dst)
AutoTokenizer.from_pretrained(src).save_pretrained(dst)
