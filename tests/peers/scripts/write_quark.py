"""AMD Quark 0.13 as its documentation quantizes an LLM: ``LLMTemplate.get("llama")
.get_config(scheme)`` -> ``ModelQuantizer.quantize_model`` (a small calibration set of token
ids) -> ``freeze`` -> ``export_safetensors(custom_mode="quark", weight_format=
"real_quantized")``; or, MODE ``ref``, Quark's own importer as the oracle:
``import_model_from_safetensors`` into a float32 copy of the model, then each imported
``QParamsLinear``'s weight through its own real quantizer (``_get_qweight``: unpack, then
``quark.torch.kernel.dequantize``), in float32 (OUT/dequantized.safetensors).

usage: python write_quark.py BASE OUT mxfp4_weight_only|mxfp4|mxfp4_fp8|fp8|mxfp6_e2m3
       python write_quark.py CHECKPOINT OUT ref"""

import shutil
import sys
from pathlib import Path

import torch

src, out, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
CPU = torch.device("cpu")


def write():
    from quark.torch import LLMTemplate, ModelQuantizer, export_safetensors
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    config = LLMTemplate.get("llama").get_config(scheme=mode, exclude_layers=["lm_head"])
    gen = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, 1000, (1, 32), generator=gen) for _ in range(4)]
    quantizer = ModelQuantizer(config)
    model = quantizer.quantize_model(model, torch.utils.data.DataLoader(calib, batch_size=None))
    model = quantizer.freeze(model)
    export_safetensors(model, str(out), custom_mode="quark", weight_format="real_quantized")
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def ref():
    from quark.torch import import_model_from_safetensors
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM
    config = AutoConfig.from_pretrained(src)
    config.quantization_config = None
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model = import_model_from_safetensors(model, src)
    result = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "QParamsLinear" and module.weight_quantizer is not None:
            with torch.no_grad():
                weight = module._get_qweight(module.weight)
            result[name + ".weight"] = weight.float().contiguous()
    if not result:
        raise SystemExit("Quark imported no quantized layer")
    out.mkdir(parents=True)
    save_file(result, str(out / "dequantized.safetensors"))


ref() if mode == "ref" else write()
