"""Small FP8 Llamas for ``jang convert``, each with its jang-native twin: the same codes and
the same scale values stored as jang 2.5.50 finds them (``<weight>_scale_inv``, F32, in the
weight's own shard). Plain ``jang convert`` of the twin is the oracle: it is what jang
computes when it does find the scale (its float32 product), so a fixed conversion of the
variant must match it in every tensor and every byte.

Variants (``VARIANTS``; the first three are traps for plain jang, the rest controls):

- ``ct-block``: compressed-tensors ``weight_scale``, BF16 blocks 128x128, plus a static
  ``input_scale`` per layer (llmcompressor FP8_BLOCK with static activations);
- ``ct-channel``: compressed-tensors ``weight_scale`` BF16 ``[out, 1]``;
- ``inv-cross``: ``weight_scale_inv`` F32 128x128, every scale in the other shard;
- ``inv-128``: ``weight_scale_inv`` F32 128x128, one shard (jang reads it right);
- ``inv-64-ragged``: ``weight_scale_inv`` F32 64x64 over an intermediate size of 319, whose
  last block is 63 wide: ragged, and still one that jang's ``ceil(n / scale_n)`` block finds.

``ragged_misread`` is a jang-native checkpoint jang itself misreads (192 = 128 + 64 rows:
jang stretches the blocks to 96): its oracle is a float32 twin (the exact products, stored
as F32 weights, which jang converts without decoding anything).

Written with torch and ``safetensors.torch`` (the real writer), codes over the whole finite
E4M3 range; the scales are small (1e-5 .. 1e-3), so raw codes (max 448) are a loud trap.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .checkpoint import save_checkpoint, shard_names
from .fixtures import fp8_codes
from .tiny_llama import write_tokenizer

VARIANTS = ("ct-block", "ct-channel", "inv-cross", "inv-128", "inv-64-ragged")
TRAPS = ("ct-block", "ct-channel", "inv-cross")
HIDDEN, HEADS, KV_HEADS, VOCAB, LAYERS = 256, 4, 2, 512, 2


def _config(intermediate: int, quantization: dict) -> dict:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": VOCAB,
            "hidden_size": HIDDEN, "intermediate_size": intermediate,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "quantization_config": quantization}


def _fp8_config(block) -> dict:
    return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
            "weight_block_size": list(block)}


def _ct_config(strategy: str, static_inputs: bool) -> dict:
    weights = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False,
               "strategy": strategy}
    if strategy == "block":
        weights["block_structure"] = [128, 128]
    group = {"targets": ["Linear"], "weights": weights}
    if static_inputs:
        group["input_activations"] = {"num_bits": 8, "type": "float", "symmetric": True,
                                      "dynamic": False, "strategy": "tensor"}
    return {"quant_method": "compressed-tensors", "format": "float-quantized",
            "config_groups": {"group_0": group}, "ignore": ["lm_head"]}


def _linears(intermediate: int):
    hd = HIDDEN // HEADS
    kv = KV_HEADS * hd
    for n in range(LAYERS):
        p = f"model.layers.{n}"
        yield from ((f"{p}.self_attn.q_proj.weight", HIDDEN, HIDDEN),
                    (f"{p}.self_attn.k_proj.weight", kv, HIDDEN),
                    (f"{p}.self_attn.v_proj.weight", kv, HIDDEN),
                    (f"{p}.self_attn.o_proj.weight", HIDDEN, HIDDEN),
                    (f"{p}.mlp.gate_proj.weight", intermediate, HIDDEN),
                    (f"{p}.mlp.up_proj.weight", intermediate, HIDDEN),
                    (f"{p}.mlp.down_proj.weight", HIDDEN, intermediate))


def _plain(gen: torch.Generator) -> dict[str, torch.Tensor]:
    t = {"model.embed_tokens.weight": (torch.randn(VOCAB, HIDDEN, generator=gen) * 0.05)
         .to(torch.bfloat16),
         "lm_head.weight": (torch.randn(VOCAB, HIDDEN, generator=gen) * 0.05).to(torch.bfloat16),
         "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16)}
    for n in range(LAYERS):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            t[f"model.layers.{n}.{norm}.weight"] = (1 + 0.1 * torch.randn(
                HIDDEN, generator=gen)).to(torch.bfloat16)
    return t


def _save(root: Path, shards: list[dict], config: dict) -> Path:
    save_checkpoint(root, dict(zip(shard_names(len(shards)), shards)), config)
    write_tokenizer(root)
    return root


def build(variant: str, root: Path) -> tuple[Path, Path]:
    """(the variant, its jang-native twin) under ``root``."""
    gen = torch.Generator().manual_seed(17 + VARIANTS.index(variant))
    intermediate = 319 if variant == "inv-64-ragged" else 384
    block = (64, 64) if variant == "inv-64-ragged" else (128, 128)
    weights, scales, twin, extra = {}, {}, {}, {}
    for name, out, inn in _linears(intermediate):
        q = fp8_codes((out, inn), gen=gen)
        if variant == "ct-channel":
            shape = (out, 1)
        else:
            shape = (math.ceil(out / block[0]), math.ceil(inn / block[1]))
        scale = torch.rand(shape, generator=gen) * 1e-3 + 1e-5
        if variant.startswith("ct-"):
            scale = scale.to(torch.bfloat16)
            scales[name + "_scale"] = scale
            if variant == "ct-block":
                extra[name[: -len("weight")] + "input_scale"] = torch.tensor(
                    [0.02], dtype=torch.bfloat16)
        else:
            scales[name + "_scale_inv"] = scale
        weights[name] = q
        twin[name] = q
        twin[name + "_scale_inv"] = scale.to(torch.float32)  # exact: BF16 -> F32
    plain = _plain(gen)
    if variant.startswith("ct-"):
        config = _config(intermediate, _ct_config(variant.removeprefix("ct-"),
                                                  variant == "ct-block"))
    else:
        config = _config(intermediate, _fp8_config(block))
    if variant == "inv-cross":
        shards = [{**weights, **plain}, scales]
    else:
        shards = [{**weights, **scales, **extra, **plain}]
    source = _save(root / variant, shards, config)
    native = _save(root / f"{variant}-twin", [{**twin, **plain}], config)
    return source, native


def ragged_misread(root: Path) -> tuple[Path, Path]:
    """(a jang-native checkpoint whose 192-row weights jang's block guess misplaces, its
    float32 twin holding the exact products with jang's +0.0 for the code 0x80)."""
    gen = torch.Generator().manual_seed(5)
    tensors, exact = {}, {}
    for name, out, inn in (("model.layers.0.mlp.gate_proj.weight", 192, 256),
                           ("model.layers.0.mlp.up_proj.weight", 192, 256),
                           ("model.layers.0.mlp.down_proj.weight", 256, 192)):
        q = fp8_codes((out, inn), gen=gen)
        scale = torch.rand((math.ceil(out / 128), math.ceil(inn / 128)), generator=gen) * 1e-3
        tensors[name], tensors[name + "_scale_inv"] = q, scale
        full = scale.repeat_interleave(128, 0).repeat_interleave(128, 1)[:out, :inn]
        exact[name] = q.to(torch.float32) * full + 0.0  # + 0.0: -0.0 -> +0.0
    plain = _plain(gen)
    config = _config(192, _fp8_config((128, 128)))
    config["num_hidden_layers"] = 1
    plain = {k: v for k, v in plain.items() if "layers.1." not in k}
    return (_save(root / "ragged", [{**tensors, **plain}], config),
            _save(root / "ragged-f32", [{**exact, **plain}], config))


def tensor_bytes(folder: Path) -> dict[str, tuple[str, tuple, bytes]]:
    """Every tensor of every ``.safetensors`` below ``folder``: dtype, shape, raw bytes (read
    from the file format itself, so any dtype compares)."""
    found = {}
    for path in sorted(folder.glob("*.safetensors")):
        data = path.read_bytes()
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size])
        header.pop("__metadata__", None)
        for name, info in header.items():
            start, end = info["data_offsets"]
            found[name] = (info["dtype"], tuple(info["shape"]),
                           data[8 + size + start: 8 + size + end])
    return found


def differences(got: dict, want: dict) -> list[str]:
    """What differs between two ``tensor_bytes`` results (empty: bit-identical)."""
    out = [f"missing {n}" for n in sorted(set(want) - set(got))]
    out += [f"extra {n}" for n in sorted(set(got) - set(want))]
    out += [f"differs {n}" for n in sorted(set(got) & set(want)) if got[n] != want[n]]
    return out


def venv_site() -> Path:
    """The site-packages of this venv (jang 2.5.50 as released, mlx, numpy, safetensors)."""
    import sysconfig
    return Path(sysconfig.get_paths()["purelib"])


def without_scalefix(site: Path) -> tuple[list[str], dict]:
    """argv prefix and environment of a Python that imports ``jang_tools`` from ``site`` first
    and the rest from this venv, and cannot import scalefix: ``-S`` skips site-packages'
    ``.pth`` files (scalefix's editable install) and any sitecustomize; run it outside the
    checkout (the working directory is on ``sys.path``)."""
    import os
    import sys
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SCALEFIX"))}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(venv_site())])
    return [sys.executable, "-S"], env


JANG_MAIN = ("import sys, importlib.util\n"
             "assert importlib.util.find_spec('scalefix') is None, 'scalefix is importable'\n"
             "import jang_tools\n"
             "assert jang_tools.__file__.startswith(sys.argv[1]), jang_tools.__file__\n"
             "sys.argv = ['jang'] + sys.argv[2:]\n"
             "from jang_tools.__main__ import main\nmain()\n")


def convert_without_scalefix(site: Path, src: Path, out: Path, cwd: Path) -> dict:
    """``jang convert SRC -o OUT -p 8 -m rtn`` by the jang_tools below ``site``, no scalefix."""
    import subprocess
    prefix, env = without_scalefix(site)
    proc = subprocess.run([*prefix, "-c", JANG_MAIN, str(site), "convert", str(src), "-o",
                           str(out), "-p", "8", "-m", "rtn"], capture_output=True, text=True,
                          env=env, cwd=cwd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return tensor_bytes(out)
