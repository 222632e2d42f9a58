"""ComfyUI-native quantized files written by comfy-kitchen 0.2.40's own layouts, saved the way
ComfyUI saves a quantized model (``comfy/ops.py`` ``_quantized_weight_state_dict``): per layer
``QuantizedTensor.state_dict("<layer>.weight")`` (the layout's ``state_dict_tensors``: weight,
``weight_scale``, ``weight_scale_2``, ``weight_s_rel`` ...), ``<layer>.comfy_quant`` (U8 UTF-8
JSON ``{"format": ...}`` plus the layout's parameters), ``input_scale`` where the layer has one,
the bias and every unquantized tensor as they are; or the same declarations in the header's
``_quantization_metadata`` instead of ``comfy_quant`` tensors. Files: ``mixed`` (FP8 E4M3 /
E5M2, NVFP4, MXFP8, INT8 per tensor and per row, plain BF16 tensors), ``metadata_only`` (the
same, declared in the header), ``padded`` (NVFP4 / MXFP8 whose weights or scale tiles are
padded), ``rotated`` (the Hadamard-rotated layouts: INT8 + convrot, ConvRot W4A4, W4A8).

The oracle is comfy-kitchen's ``dequantize`` of what was read back from the file, with the
true shape ComfyUI takes from the model (``Linear(in, out)``) and ``orig_dtype`` float32
(``<file>.oracle.safetensors``) or bfloat16 (``<file>.oracle_bf16.safetensors``, ComfyUI's
runtime with a BF16 compute dtype). For the rotated file the float32 dequantize is run again
under ``MKL_CBWR=COMPATIBLE`` (MKL's reproducibility code path;
``<file>.oracle_mkl_compatible.safetensors``): the rotation is a float32 matmul whose bits
depend on the BLAS kernel.

usage: python write_comfy_kitchen.py OUT
       python write_comfy_kitchen.py OUT dequantize FILE ORACLE LAYERS   (internal: an oracle)
"""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from comfy_kitchen.tensor import QuantizedTensor, get_layout_class

P = "model.diffusion_model."

# layer -> (comfy format, layout, quantize kwargs, comfy_quant extras, shape, bias, input_scale)
MIXED = {
    "blocks.0.attn.qkv": ("float8_e4m3fn", "TensorCoreFP8Layout", {}, {}, (96, 64), True, True),
    "blocks.0.attn.proj": ("float8_e5m2", "TensorCoreFP8Layout",
                           {"dtype": torch.float8_e5m2}, {}, (64, 64), True, False),
    "blocks.0.mlp.fc1": ("nvfp4", "TensorCoreNVFP4Layout", {}, {}, (256, 512), True, True),
    "blocks.0.mlp.fc2": ("mxfp8", "TensorCoreMXFP8Layout", {}, {}, (256, 512), True, False),
    "blocks.1.attn.qkv": ("int8_tensorwise", "TensorWiseINT8Layout", {}, {}, (96, 64), True,
                          False),
    "blocks.1.attn.proj": ("int8_tensorwise", "TensorWiseINT8Layout", {"per_channel": True},
                           {}, (64, 64), False, False),
}
# stored Hadamard-rotated (refused by scalefix)
ROTATED_LAYERS = {
    "blocks.1.mlp.fc1": ("int8_tensorwise", "TensorWiseINT8Layout",
                         {"per_channel": True, "convrot": True, "convrot_groupsize": 256},
                         {"convrot": True, "convrot_groupsize": 256}, (64, 512), True, False),
    "blocks.1.mlp.fc2": ("convrot_w4a4", "TensorCoreConvRotW4A4Layout", {},
                         {"convrot_groupsize": 256}, (128, 512), True, False),
    "blocks.2.mlp.fc1": ("asym_w4a8_int8", "AsymW4A8Int8Layout", {},
                         {"group_size": 16, "convrot_groupsize": 256}, (64, 512), True, False),
}
# NVFP4 pads weights to 16 x 16 and MXFP8 to 32 x 32; both tile their scales 128 x 4
PADDED = {
    "blocks.0.attn.qkv": ("nvfp4", "TensorCoreNVFP4Layout", {}, {}, (48, 80), True, False),
    "blocks.0.attn.proj": ("nvfp4", "TensorCoreNVFP4Layout", {}, {}, (100, 72), True, True),
    "blocks.0.mlp.fc1": ("nvfp4", "TensorCoreNVFP4Layout", {}, {}, (200, 96), True, False),
    "blocks.0.mlp.fc2": ("nvfp4", "TensorCoreNVFP4Layout", {}, {}, (40, 64), False, False),
    "blocks.1.attn.qkv": ("mxfp8", "TensorCoreMXFP8Layout", {}, {}, (64, 96), True, False),
    "blocks.1.attn.proj": ("mxfp8", "TensorCoreMXFP8Layout", {}, {}, (70, 100), True, False),
    "blocks.1.mlp.fc1": ("mxfp8", "TensorCoreMXFP8Layout", {}, {}, (150, 64), True, False),
}


def plain(gen) -> dict:
    """Unquantized tensors ComfyUI keeps in BF16 (norms, embeddings)."""
    return {P + "blocks.0.norm1.weight": torch.randn(64, generator=gen).to(torch.bfloat16),
            P + "final_layer.linear.weight": (torch.randn(16, 64, generator=gen) * 0.02
                                              ).to(torch.bfloat16),
            P + "final_layer.linear.bias": torch.zeros(16, dtype=torch.bfloat16)}


def build(layers: dict, seed: int, in_header: bool):
    gen = torch.Generator().manual_seed(seed)
    sd, declared, shapes = plain(gen), {}, {}
    for name, (fmt, layout, kwargs, extra, shape, bias, input_scale) in layers.items():
        w = (torch.randn(*shape, generator=gen) * 0.02).to(torch.bfloat16)
        qt = QuantizedTensor.from_float(w, layout, **kwargs)
        assert tuple(qt.shape) == shape
        sd.update({k: v.contiguous() for k, v in qt.state_dict(P + name + ".weight").items()})
        conf = {"format": fmt, **extra}
        declared[P + name] = conf
        if not in_header:
            sd[P + name + ".comfy_quant"] = torch.tensor(list(json.dumps(conf).encode()),
                                                         dtype=torch.uint8)
        if bias:
            sd[P + name + ".bias"] = (torch.randn(shape[0], generator=gen) * 0.1
                                      ).to(torch.bfloat16)
        if input_scale:
            sd[P + name + ".input_scale"] = torch.tensor(0.05, dtype=torch.float32)
        shapes[P + name] = (fmt, layout, conf, shape)
    metadata = {"_quantization_metadata": json.dumps(
        {"format_version": "1.0", "layers": declared})} if in_header else None
    return sd, metadata, shapes


def dequantize(path: Path, out: Path, shapes: dict, dtype) -> None:
    """comfy-kitchen's dequantize of each quantized layer as read back from ``path``."""
    result = {}
    with safe_open(str(path), "pt") as f:
        for layer, (fmt, layout, conf, shape) in shapes.items():
            t = {k[len(layer) + 1:]: f.get_tensor(k) for k in f.keys()
                 if k.startswith(layer + ".")}
            cls = get_layout_class(layout)
            if fmt in ("float8_e4m3fn", "float8_e5m2"):
                params = cls.Params(scale=t["weight_scale"], orig_dtype=dtype, orig_shape=shape)
            elif fmt == "nvfp4":
                params = cls.Params(scale=t["weight_scale_2"], block_scale=t["weight_scale"],
                                    orig_dtype=dtype, orig_shape=shape)
            elif fmt == "mxfp8":
                params = cls.Params(scale=t["weight_scale"], orig_dtype=dtype, orig_shape=shape)
            elif fmt == "int8_tensorwise":
                params = cls.Params(scale=t["weight_scale"], orig_dtype=dtype, orig_shape=shape,
                                    convrot=conf.get("convrot", False),
                                    convrot_groupsize=conf.get("convrot_groupsize", 256))
            elif fmt == "convrot_w4a4":
                params = cls.Params(scale=t["weight_scale"], orig_dtype=dtype, orig_shape=shape,
                                    convrot_groupsize=conf["convrot_groupsize"])
            else:
                params = cls.Params(scale=t["weight_s_rel"], s_channel=t["weight_s_channel"],
                                    codebook=t.get("weight_codebook"),
                                    correction=t.get("weight_correction"),
                                    orig_dtype=dtype, orig_shape=shape,
                                    group_size=conf["group_size"],
                                    convrot_groupsize=conf["convrot_groupsize"])
            value = QuantizedTensor(t["weight"], layout, replace(params, orig_dtype=dtype))
            result[layer + ".weight"] = value.dequantize().contiguous()
            assert result[layer + ".weight"].dtype == dtype
    save_file(result, str(out))


def main():
    out = Path(sys.argv[1])
    if len(sys.argv) > 2 and sys.argv[2] == "dequantize":
        shapes = json.loads(Path(sys.argv[5]).read_text())
        shapes = {k: (v[0], v[1], v[2], tuple(v[3])) for k, v in shapes.items()}
        dequantize(Path(sys.argv[3]), Path(sys.argv[4]), shapes, torch.float32)
        return
    out.mkdir(parents=True)
    files = {"mixed": (MIXED, 1, False), "metadata_only": (MIXED, 1, True),
             "padded": (PADDED, 2, False), "rotated": (ROTATED_LAYERS, 3, False)}
    for stem, (layers, seed, in_header) in files.items():
        sd, metadata, shapes = build(layers, seed, in_header)
        path = out / f"{stem}.safetensors"
        save_file(sd, str(path), metadata=metadata)
        (out / f"{stem}.layers.json").write_text(json.dumps(shapes, indent=1))
        dequantize(path, out / f"{stem}.oracle.safetensors", shapes, torch.float32)
        dequantize(path, out / f"{stem}.oracle_bf16.safetensors", shapes, torch.bfloat16)
        if stem == "rotated":
            env = dict(os.environ, MKL_CBWR="COMPATIBLE")
            subprocess.run([sys.executable, __file__, str(out), "dequantize", str(path),
                            str(out / f"{stem}.oracle_mkl_compatible.safetensors"),
                            str(out / f"{stem}.layers.json")], env=env, check=True)


if __name__ == "__main__":
    main()
