"""3-D stacked experts ([E, out, in] ``<module>.weight``, the layout compressed-tensors'
expert pruner names) compressed by compressed-tensors' own PackedQuantizationCompressor
(pack_to_int32 packs each expert's 2-D slice). No writer entry point makes these:
llmcompressor's model_free_ptq unfuses a 3-D ``experts.gate_up_proj.weight`` into per-expert
2-D ``experts.{e}.gate_proj``/``up_proj`` Linear weights. Scales by compressed-tensors'
``calculate_qparams`` on per-group min/max; BF16 random weights, a fixed seed.

usage: python write_ct_experts3d.py DST SCHEME   (w4a16 | w4a16-asym)"""

import json
import sys
from pathlib import Path

import torch
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig,
                                             QuantizationScheme, QuantizationStatus)
from compressed_tensors.quantization.utils import calculate_qparams
from safetensors.torch import save_file

dst, name = Path(sys.argv[1]), sys.argv[2]
args = QuantizationArgs(num_bits=4, type="int", symmetric=name == "w4a16", strategy="group",
                        group_size=128, dynamic=False)
scheme = QuantizationScheme(targets=["Linear"], weights=args, format="pack-quantized")
gen = torch.Generator().manual_seed(3)
experts, hidden, inter = 4, 256, 256  # in = 256: two groups of 128 everywhere
tensors = {}
for proj, (out, inn) in (("gate_up_proj", (2 * inter, hidden)), ("down_proj", (hidden, inter))):
    w = (torch.randn(experts, out, inn, generator=gen) * 0.02).to(torch.bfloat16)
    grouped = w.to(torch.float32).unflatten(-1, (inn // 128, 128))
    scale, zp = calculate_qparams(grouped.amin(-1), grouped.amax(-1), args)
    state = {"weight": w, "weight_scale": scale.to(torch.bfloat16), "weight_zero_point": zp}
    for k, v in PackedQuantizationCompressor.compress(state, scheme).items():
        tensors[f"model.layers.0.mlp.experts.{proj}.{k}"] = v.contiguous()
tensors["model.layers.0.mlp.gate.weight"] = (torch.randn(experts, hidden, generator=gen)
                                             * 0.02).to(torch.bfloat16)
dst.mkdir(parents=True)
save_file(tensors, str(dst / "model.safetensors"))
qconfig = QuantizationConfig(config_groups={"group_0": scheme}, format="pack-quantized",
                             quantization_status=QuantizationStatus.COMPRESSED,
                             ignore=["re:.*mlp.gate$"])
(dst / "config.json").write_text(json.dumps(
    {"model_type": "qwen3_moe", "torch_dtype": "bfloat16",
     "quantization_config": qconfig.model_dump(mode="json") | {
         "quant_method": "compressed-tensors"}}, indent=2))
