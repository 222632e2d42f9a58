"""vLLM 0.27's own code on CPU: a layer created by ``CompressedTensorsW8A8Fp8.create_weights``
from a real llmcompressor FP8_BLOCK checkpoint, forced onto the FP8 Marlin kernel, then
``process_weights_after_loading``. Prints one JSON line.

usage: python vllm_marlin_layer.py ARTIFACT [armed]
GPU-only pieces are stubbed, and only those: the platform check of the Marlin kernel
(``is_supported``: CUDA only) and the CUDA repack ``prepare_fp8_layer_for_marlin``
(``ops.gptq_marlin_repack``), replaced by a recorder of the scale it is given."""

import functools
import json
import socket
import sys

if len(sys.argv) > 2 and sys.argv[2] == "armed":
    import scalefix.auto  # noqa: F401

import torch
from compressed_tensors.quantization import QuantizationConfig
from safetensors.torch import load_file
from vllm.config import DeviceConfig, ModelConfig, VllmConfig, set_current_vllm_config
from vllm.distributed import init_distributed_environment, initialize_model_parallel
from vllm.model_executor.kernels.linear import init_fp8_linear_kernel
import vllm.model_executor.kernels.linear.scaled_mm.marlin as marlin
import vllm.model_executor.layers.quantization.compressed_tensors.schemes.compressed_tensors_w8a8_fp8 as scheme_module

art = sys.argv[1]
Kernel = marlin.MarlinFP8ScaledMMLinearKernel
Kernel.is_supported = classmethod(lambda cls, compute_capability=None: (True, None))
scheme_module.init_fp8_linear_kernel = functools.partial(init_fp8_linear_kernel,
                                                         force_kernel=Kernel)
seen = []
marlin.prepare_fp8_layer_for_marlin = lambda layer, size_k_first, input_dtype=None: seen.append(
    layer.weight_scale_inv.detach().clone())

config = json.load(open(art + "/config.json"))
weights_args = list(QuantizationConfig.model_validate(
    config["quantization_config"]).config_groups.values())[0].weights
tensors = load_file(art + "/model.safetensors")
prefix = "model.layers.0.mlp.down_proj"
weight, scale = tensors[prefix + ".weight"], tensors[prefix + ".weight_scale"]
result = {"armed": "scalefix.auto" in sys.modules}
vllm_config = VllmConfig(model_config=ModelConfig(model=art, dtype=torch.bfloat16),
                         device_config=DeviceConfig(device="cpu"))
with set_current_vllm_config(vllm_config):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                 distributed_init_method=f"tcp://127.0.0.1:{port}")
    initialize_model_parallel(1, 1)
    scheme = scheme_module.CompressedTensorsW8A8Fp8(weight_quant=weights_args,
                                                    is_static_input_scheme=False)
    n, k = weight.shape
    layer = torch.nn.Module()
    layer.tp_size = 1
    scheme.create_weights(layer, input_size_per_partition=k, output_partition_sizes=[n],
                          input_size=k, output_size=n, params_dtype=torch.bfloat16,
                          weight_loader=lambda p, t: p.data.copy_(t))
    result["kernel"] = type(scheme.fp8_linear).__name__
    result["params_before"] = sorted(n for n, _ in layer.named_parameters())
    layer.weight.data.copy_(weight)
    layer.weight_scale.data.copy_(scale.float())
    try:
        scheme.process_weights_after_loading(layer)
        result["ok"] = True
        result["scale_reached_kernel"] = bool(seen) and torch.equal(seen[-1].float(),
                                                                     scale.float())
        result["params_after"] = sorted(n for n, _ in layer.named_parameters())
    except AttributeError as exc:
        result["ok"], result["error"] = False, f"AttributeError: {exc}"
if result["armed"]:
    import scalefix
    result["status"] = {s["name"]: s["state"] for s in scalefix.status()}
print(json.dumps(result))
