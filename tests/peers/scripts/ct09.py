"""compressed-tensors 0.9.3 (its own compressors, before 2025-04-24): pack-quantized with
32 // bits codes per int32 word, unpacked int8 zero points, ``weight_g_idx``; and
naive-quantized INT8. ``write`` quantizes the Linear weights of a BF16 checkpoint (min-max
qparams by its own ``calculate_qparams``; an act-order g_idx is a fixed permutation of the
column groups, as GPTQ actorder="group" leaves it) and saves what ModelCompressor saves;
``decode`` is the BF16 oracle: its own ``decompress_weight`` per module.

usage: python ct09.py SRC DST VARIANT   (w3a16 | w5a16 | w6a16 | w4a16-asym | w4a16-actorder
                                         | w4a16-channel | w8a8-naive)
       python ct09.py SRC DST decode
       (several SRC DST VARIANT|decode triples in one call)"""

import json
import shutil
import sys
from pathlib import Path

import torch
from compressed_tensors.compressors import BaseCompressor
from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig,
                                             QuantizationScheme, QuantizationStatus)
from compressed_tensors.quantization.utils import calculate_qparams
from safetensors import safe_open
from safetensors.torch import save_file

VARIANTS = {  # name -> (format, bits, symmetric, strategy, group, actorder)
    "w3a16": ("pack-quantized", 3, True, "group", 128, False),
    "w5a16": ("pack-quantized", 5, True, "group", 128, False),
    "w6a16": ("pack-quantized", 6, True, "group", 128, False),
    "w4a16-asym": ("pack-quantized", 4, False, "group", 128, False),
    "w4a16-actorder": ("pack-quantized", 4, True, "group", 128, True),
    "w4a16-channel": ("pack-quantized", 4, True, "channel", None, False),
    "w8a8-naive": ("naive-quantized", 8, True, "channel", None, False),
}
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def load(path: Path) -> dict:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})
    return out


def copy_side_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name not in (
                "config.json", "model.safetensors.index.json"):
            shutil.copy(f, dst / f.name)


def qparams(w, args, g_idx):
    w = w.to(torch.float32)
    if args.strategy == "channel":
        lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    else:
        n = int(g_idx.max()) + 1
        lo = torch.stack([w[:, g_idx == k].amin(1) for k in range(n)], 1)
        hi = torch.stack([w[:, g_idx == k].amax(1) for k in range(n)], 1)
    return calculate_qparams(lo, hi, args)


def write(src: Path, dst: Path, variant: str) -> None:
    fmt, bits, sym, strategy, group, actorder = VARIANTS[variant]
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=sym, strategy=strategy,
                            group_size=group, actorder="group" if actorder else None)
    tensors, state, schemes = load(src), {}, {}
    gen = torch.Generator().manual_seed(0)
    for name, w in tensors.items():
        module = name[: -len(".weight")]
        state[name] = w
        if not (name.endswith(".weight") and module.rsplit(".", 1)[-1] in LINEAR):
            continue
        cols = torch.arange(w.shape[1])
        g_idx = cols // group if group else torch.zeros_like(cols)
        if actorder:
            g_idx = g_idx[torch.randperm(len(cols), generator=gen)]
            state[module + ".weight_g_idx"] = g_idx.to(torch.int32)
        scale, zp = qparams(w, args, g_idx)
        state[module + ".weight_scale"] = scale.to(w.dtype)
        state[module + ".weight_zero_point"] = zp
        schemes[module] = args
    compressor = BaseCompressor.load_from_registry(fmt)
    compressed = compressor.compress(state, names_to_scheme=schemes)
    dst.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in compressed.items()}, str(dst / "model.safetensors"))
    qconfig = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=args)},
        format=fmt, quantization_status=QuantizationStatus.COMPRESSED,
        ignore=["lm_head"])
    config = json.loads((src / "config.json").read_text())
    config["quantization_config"] = qconfig.model_dump(exclude_none=False) | {
        "quant_method": "compressed-tensors", "version": "0.9.3"}
    (dst / "config.json").write_text(json.dumps(config, indent=2, default=str))
    copy_side_files(src, dst)


def decode(src: Path, dst: Path) -> None:
    config = json.loads((src / "config.json").read_text())
    qc = config.pop("quantization_config")
    args = QuantizationArgs(**qc["config_groups"]["group_0"]["weights"])
    compressor = BaseCompressor.load_from_registry(qc["format"])
    tensors, out = load(src), {}
    names = compressor.compression_param_names
    root = "weight_packed" if "weight_packed" in names else "weight"
    for name in [k for k in tensors if k.endswith("." + root) and
                 k[: -len(root)] + "weight_scale" in tensors]:
        module = name[: -len(root) - 1]
        data = {p: tensors.pop(f"{module}.{p}") for p in names if f"{module}.{p}" in tensors}
        out[module + ".weight"] = compressor.decompress_weight(data, args).to(torch.bfloat16)
    out.update(tensors)
    dst.mkdir(parents=True)
    save_file(out, str(dst / "model.safetensors"))
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    copy_side_files(src, dst)


for i in range(1, len(sys.argv), 3):  # one process for many checkpoints: imports cost seconds
    src, dst, what = Path(sys.argv[i]), Path(sys.argv[i + 1]), sys.argv[i + 2]
    if what == "decode":
        decode(src, dst)
    else:
        write(src, dst, what)
