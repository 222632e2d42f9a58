"""transformers' own dequantization of a FineGrainedFP8 checkpoint (``Fp8Dequantize`` run by
``FineGrainedFP8Config(dequantize=True)`` at load), saved as BF16: the independent oracle for
``scalefix rewrite`` on transformers artifacts.

usage: python hf_dequantize_bf16.py SRC DST
``save_pretrained`` would re-quantize on save (transformers round-trips dequantize=True
models back to FP8, and then also quantizes lm_head and the embeddings), so the in-memory
state dict is saved with safetensors directly."""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, FineGrainedFP8Config
from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

FineGrainedFP8HfQuantizer.validate_environment = lambda self, *a, **k: None
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(
    src, quantization_config=FineGrainedFP8Config(dequantize=True), dtype=torch.bfloat16)
state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
dtypes = {str(v.dtype) for v in state.values()}
assert dtypes == {"torch.bfloat16"}, dtypes
dst.mkdir(parents=True)
save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
config = json.loads((src / "config.json").read_text())
config.pop("quantization_config", None)  # the weights are BF16 now
(dst / "config.json").write_text(json.dumps(config, indent=2))
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "generation_config.json"):
    if (src / name).exists():
        shutil.copy(src / name, dst / name)
