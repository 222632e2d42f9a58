"""NVIDIA ModelOpt 0.47.0 as its examples export an LLM: ``mtq.quantize(model, CFG,
forward_loop)`` then ``export_hf_checkpoint`` (config.json's quantization_config plus
hf_quant_config.json); or, MODE ``ref``, ModelOpt's own dequantizers over the exported
tensors (the oracle): ``NVFP4QTensor.dequantize(scale=weight_scale, double_scale=
weight_scale_2)`` and ``FP8QTensor.dequantize(scale=weight_scale)``, float32
(OUT/dequantized.safetensors). ModelOpt's E2M1 table decodes code 8 to +0.

usage: python write_modelopt.py BASE OUT fp8|nvfp4|mixed     (mixed: NVFP4, the MLPs FP8)
       python write_modelopt.py CHECKPOINT OUT ref"""

import copy
import sys
from pathlib import Path

import torch

src, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]


def write():
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    assert model.config.architectures == ["LlamaForCausalLM"]  # export needs it
    if mode == "fp8":
        cfg = mtq.FP8_DEFAULT_CFG
    else:
        cfg = copy.deepcopy(mtq.NVFP4_DEFAULT_CFG)
        if mode == "mixed":
            fp8 = {"num_bits": (4, 3), "axis": None}
            cfg["quant_cfg"] += [{"quantizer_name": "*mlp*weight_quantizer", "cfg": fp8},
                                 {"quantizer_name": "*mlp*input_quantizer", "cfg": fp8}]
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, 1000, (1, 32), generator=gen) for _ in range(4)]

    def forward_loop(m):
        with torch.no_grad():
            for ids in calib:
                m(ids)

    model = mtq.quantize(model, cfg, forward_loop)
    export_hf_checkpoint(model, export_dir=out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def ref():
    from modelopt.torch.quantization.qtensor import FP8QTensor, NVFP4QTensor
    from checkpoint_tensors import checkpoint_tensors
    from safetensors.torch import save_file
    tensors = checkpoint_tensors(src)
    result = {}
    for key in [k for k in tensors if k.endswith(".weight_scale")]:
        module = key[: -len(".weight_scale")]
        weight, scale = tensors[module + ".weight"], tensors[key]
        if weight.dtype == torch.uint8:
            shape = torch.Size([*weight.shape[:-1], weight.shape[-1] * 2])
            q = NVFP4QTensor(shape, torch.bfloat16, weight)
            value = q.dequantize(dtype=torch.float32, scale=scale,
                                 double_scale=tensors[module + ".weight_scale_2"],
                                 block_sizes={-1: 16})
        else:
            q = FP8QTensor(weight.shape, torch.bfloat16, weight)
            value = q.dequantize(dtype=torch.float32, scale=scale)
        result[module + ".weight"] = value.float().contiguous()
    out.mkdir(parents=True)
    save_file(result, str(out / "dequantized.safetensors"))


ref() if mode == "ref" else write()
