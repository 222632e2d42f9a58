"""bitsandbytes as transformers saves it: ``from_pretrained(BASE, quantization_config=
BitsAndBytesConfig(...), device_map="cpu")`` then ``save_pretrained`` (bitsandbytes' CPU
backend quantizes on load); or, MODE ``ref``, bitsandbytes' own dequantizers over the saved
tensors (the oracle): ``QuantState.from_dict`` + ``functional.dequantize_4bit`` with the
state's dtype set to float32, and ``int8_vectorwise_dequant`` for 8-bit.

usage: python write_bnb.py BASE OUT nf4|fp4|nf4-dq|fp4-dq|int8
       python write_bnb.py CHECKPOINT OUT ref     (OUT/dequantized.safetensors, float32)
No hub access: HF_HUB_OFFLINE=1, BASE is a local tiny model."""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402

src, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


def write():
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    if mode == "int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=mode[:3],
                                    bnb_4bit_use_double_quant=mode.endswith("-dq"),
                                    bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(src, quantization_config=config,
                                                 device_map="cpu", dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def ref():
    import bitsandbytes.functional as F
    from checkpoint_tensors import checkpoint_tensors
    from safetensors.torch import save_file
    tensors = checkpoint_tensors(src)
    result = {}
    for key in [k for k in tensors if ".quant_state.bitsandbytes__" in k]:
        prefix = key.split(".quant_state.")[0]                      # <module>.weight
        parts = {k[len(prefix) + 1:]: v for k, v in tensors.items()
                 if k.startswith(prefix + ".")}
        state = F.QuantState.from_dict(parts, device=torch.device("cpu"))
        state.dtype = torch.float32                                 # the float32 product
        result[prefix] = F.dequantize_4bit(tensors[prefix], state).contiguous()
    for key in [k for k in tensors if k.endswith(".SCB")]:
        prefix = key[: -len(".SCB")]
        result[prefix + ".weight"] = F.int8_vectorwise_dequant(
            tensors[prefix + ".weight"], tensors[key]).float().contiguous()
    out.mkdir(parents=True)
    save_file(result, str(out / "dequantized.safetensors"))


ref() if mode == "ref" else write()
