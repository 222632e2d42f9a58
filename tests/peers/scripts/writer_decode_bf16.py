"""The writers' own decoders, computing in float32 and rounded to BF16 once, written as a
BF16 bundle: the oracle for checkpoints whose writer has no BF16 dequantizer of its own.

usage: python writer_decode_bf16.py SRC DST MODE [SRC DST MODE ...]
MODE gptq:     auto-round's GPTQ QuantLinear (auto_round_extension.torch.qlinear_torch_zp,
               the module its auto_gptq export packs with): the weight its forward builds,
               scales upcast to float32 (its own forward computes in the F16 scale dtype).
               Its g_idx branch is only used where out <= in (it slices the scales by in).
MODE awq:      compressed-tensors' AutoAWQConverter (AutoAWQ GEMM -> pack-quantized), then
               PackedQuantizationCompressor.decompress with float32 scales.
MODE modelopt: compressed-tensors' ModelOptNvfp4Converter (weight_scale_2 -> 1/x), then
               NVFP4PackedCompressor.decompress (its own float32 effective scale).
MODE ct-nvfp4: NVFP4PackedCompressor.decompress per module, input_global_scale dropped:
               compressed-tensors 0.19's CompressedTensorsDequantizer refuses its own NVFP4
               (W4A4) checkpoints ("residual quantization param(s) ... input_global_scale":
               the static activation scale is not among the compressor's parameters when
               input_activations.dynamic is "local")."""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

tensors: dict = {}   # the checkpoint being decoded, its quantization config, the output
qc: dict = {}
out: dict = {}


def gptq():
    from auto_round_extension.torch.qlinear_torch_zp import QuantLinear
    for name in [k for k in tensors if k.endswith(".qweight")]:
        p = name[: -len(".qweight")]
        qweight, qzeros = tensors.pop(name), tensors.pop(p + ".qzeros")
        scales, g_idx = tensors.pop(p + ".scales"), tensors.pop(p + ".g_idx", None)
        bits, group = qc["bits"], qc["group_size"]
        inn, outf = qweight.shape[0] * 32 // bits, qweight.shape[1]
        trivial = g_idx is None or torch.equal(g_idx.long(), torch.arange(inn) // group)
        if not trivial and outf > inn:
            raise SystemExit(f"{p}: act-order g_idx with out > in: auto-round cannot decode")
        layer = QuantLinear(bits, group, inn, outf, False, g_idx=not trivial)
        layer.qweight, layer.qzeros, layer.scales = qweight, qzeros, scales.to(torch.float32)
        if not trivial:
            layer.g_idx = g_idx
        out[p + ".weight"] = _weights_of(layer, inn).T.contiguous().to(torch.bfloat16)


def _weights_of(layer, inn):
    """The float32 [in, out] weight the layer's forward builds and hands to torch.matmul
    (taken there: a product with an identity matrix would turn -0.0 into +0.0)."""
    seen, matmul = [], torch.matmul

    def grab(x, w, *args, **kwargs):
        seen.append(w)
        return matmul(x, w, *args, **kwargs)
    torch.matmul = grab
    try:
        with torch.no_grad():
            layer(torch.zeros(1, inn, dtype=torch.float32))
    finally:
        torch.matmul = matmul
    (w,) = seen
    assert w.dtype == torch.float32 and w.shape[0] == inn
    return w


def awq():
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.entrypoints.convert.converters.autoawq import AutoAWQConverter
    conv = AutoAWQConverter.from_autoawq_config(qc)
    scheme = conv._build_quant_config().config_groups["config_group_0"]
    names = [k[: -len(".qweight")] for k in tensors if k.endswith(".qweight")]
    converted = dict(conv.process(tensors))  # process pops from its argument
    for p in names:
        state = {k: converted.pop(f"{p}.{k}") for k in
                 ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")
                 if f"{p}.{k}" in converted}
        state["weight_scale"] = state["weight_scale"].to(torch.float32)
        w = PackedQuantizationCompressor.decompress(state, scheme)["weight"]
        assert w.dtype == torch.float32
        out[p + ".weight"] = w.to(torch.bfloat16)
    tensors.clear()
    tensors.update(converted)


def modelopt():
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4 import (
        ModelOptNvfp4Converter)
    names = [k[: -len(".weight_scale_2")] for k in tensors if k.endswith(".weight_scale_2")]
    conv = ModelOptNvfp4Converter(targets=[f"re:^{p}$" for p in names])
    scheme = conv._build_quant_config().config_groups["config_group_0"]
    converted = dict(conv.process(tensors))  # process pops from its argument
    for p in names:
        state = {k: converted.pop(f"{p}.{k}") for k in
                 ("weight_packed", "weight_scale", "weight_global_scale")}
        converted.pop(p + ".input_global_scale", None)
        w = NVFP4PackedCompressor.decompress(state, scheme)["weight"]
        out[p + ".weight"] = w.to(torch.bfloat16)
    tensors.clear()
    tensors.update(converted)


def ct_nvfp4():
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationScheme
    (group,) = qc["config_groups"].values()
    scheme = QuantizationScheme.model_validate(group)
    for p in [k[: -len(".weight_packed")] for k in tensors if k.endswith(".weight_packed")]:
        state = {k: tensors.pop(f"{p}.{k}") for k in
                 ("weight_packed", "weight_scale", "weight_global_scale")}
        tensors.pop(p + ".input_global_scale", None)
        out[p + ".weight"] = NVFP4PackedCompressor.decompress(state, scheme)["weight"].to(
            torch.bfloat16)


def run(src: Path, dst: Path, mode: str) -> None:
    global tensors, qc, out
    tensors, out = {}, {}
    for f in sorted(src.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            tensors.update({k: fh.get_tensor(k) for k in fh.keys()})
    config = json.loads((src / "config.json").read_text())
    qc = config.pop("quantization_config", None) or {}
    {"gptq": gptq, "awq": awq, "modelopt": modelopt, "ct-nvfp4": ct_nvfp4}[mode]()
    out.update(tensors)  # everything else unchanged
    dst.mkdir(parents=True)
    save_file(out, str(dst / "model.safetensors"))
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in (
                "config.json", "model.safetensors.index.json", "hf_quant_config.json",
                "quantization_config.json"):
            shutil.copy(f, dst / f.name)


for i in range(1, len(sys.argv), 3):  # one process for many checkpoints: imports cost seconds
    run(Path(sys.argv[i]), Path(sys.argv[i + 1]), sys.argv[i + 2])
