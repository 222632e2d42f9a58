"""Checkpoints written by the real tools (llmcompressor, transformers, compressed-tensors),
built once in the peer venv and cached; keyed by the scripts' and requirements' hash so a
change rebuilds them. Built in a temporary sibling and renamed: never half an artifact."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .venvs import PEERS, _digest, cache_root, locked, peer_python

SCRIPTS = Path(__file__).parent / "scripts"

# kind pattern -> (script, base kind or None, extra args)
RECIPES = [
    (r"tiny-(llama|qwen3)-bf16", lambda m: ("make_tiny.py", None, [m[1]])),
    (r"tiny-dsv3-bf16", lambda m: ("make_tiny.py", None, ["deepseek_v3"])),
    (r"(llama|qwen3)-mfp-fp8-(block|dynamic)",
     lambda m: ("write_model_free_ptq.py", f"tiny-{m[1]}-bf16", [f"FP8_{m[2].upper()}"])),
    (r"(llama|qwen3)-hf-fp8", lambda m: ("write_hf_fp8.py", f"tiny-{m[1]}-bf16", [])),
    (r"(llama|qwen3)-hf-fp8-hf-bf16", lambda m: ("hf_dequantize_bf16.py", f"{m[1]}-hf-fp8", [])),
    (r"(llama|qwen3)-mfp-fp8-(block|dynamic)-ct-bf16",
     lambda m: ("ct_dequantize_bf16.py", f"{m[1]}-mfp-fp8-{m[2]}", [])),
    # integer and NVFP4 families (REAL in tests/support/int_checks.py, run under
    # tests/families/); a 4th item names the peer venv
    (r"tiny-ragged-bf16", lambda m: ("make_tiny_ragged.py", None, [])),
    (r"(llama|qwen3)-ct-(w4a16|w4a16-g32|w4a16-asym|w8a16|w8a16-channel|w8a8|w3a16|nvfp4a16)",
     lambda m: ("write_ct_int.py", f"tiny-{m[1]}-bf16", [m[2]])),
    (r"ragged-ct-w8a8", lambda m: ("write_ct_int.py", "tiny-ragged-bf16", ["w8a8"])),
    (r"(llama|qwen3)-ct-nvfp4", lambda m: ("write_ct_oneshot.py", f"tiny-{m[1]}-bf16", [])),
    (r"experts3d-ct-(w4a16|w4a16-asym)", lambda m: ("write_ct_experts3d.py", None, [m[1]])),
    # NVFP4 routed experts by compressed-tensors' own compressor (tests/families/nvfp4/test_nvfp4_experts_runtime.py)
    (r"qwen3moe-ct-nvfp4-(per-expert|stacked)",
     lambda m: ("write_ct_nvfp4_moe.py", None, [m[1]])),
    (r"((?:llama|qwen3|ragged)-ct-[a-z0-9-]+|experts3d-ct-[a-z0-9-]+)-ct-bf16",
     lambda m: ("ct_dequantize_bf16.py", m[1], [])),
    (r"(llama|qwen3)-ar-(gptq|gptq-asym|awq)", lambda m: (
        "write_auto_round.py", f"tiny-{m[1]}-bf16",
        ["auto_awq" if m[2] == "awq" else "auto_gptq",
         "sym" if m[2] == "gptq" else "asym", "64"])),
    (r"((?:llama|qwen3)-ar-(gptq|gptq-asym|awq))-ref-bf16",
     lambda m: ("writer_decode_bf16.py", m[1], ["awq" if m[2] == "awq" else "gptq"])),
    (r"((?:llama|qwen3)-ct-nvfp4)-ref-bf16",
     lambda m: ("writer_decode_bf16.py", m[1], ["ct-nvfp4"])),
    (r"(llama|ragged)-ct09-(w3a16|w5a16|w6a16|w4a16-asym|w4a16-actorder|w4a16-channel|w8a8-naive)",
     lambda m: ("ct09.py", f"tiny-{m[1]}-bf16", [m[2]], "ct-0.9")),
    (r"((?:llama|ragged)-ct09-[a-z0-9-]+)-ref-bf16",
     lambda m: ("ct09.py", m[1], ["decode"], "ct-0.9")),
    # bitsandbytes (transformers load_in_4bit / load_in_8bit on CPU) and its own dequantizers
    (r"llama-bnb-(nf4|fp4|nf4-dq|fp4-dq|int8)",
     lambda m: ("write_bnb.py", "tiny-llama-bf16", [m[1]], "bnb")),
    (r"(llama-bnb-[a-z0-9-]+)-ref", lambda m: ("write_bnb.py", m[1], ["ref"], "bnb")),
    # AMD Quark (LLMTemplate schemes, export_safetensors real_quantized) and its importer
    (r"llama-quark-(mxfp4_weight_only|mxfp4|mxfp4_fp8|fp8|mxfp6_e2m3)",
     lambda m: ("write_quark.py", "tiny-llama-bf16", [m[1]], "quark")),
    (r"(llama-quark-[a-z0-9_]+)-ref", lambda m: ("write_quark.py", m[1], ["ref"], "quark")),
    # NVIDIA ModelOpt (mtq.quantize + export_hf_checkpoint) and its QTensor dequantizers
    (r"llama-modelopt-(fp8|nvfp4|mixed)",
     lambda m: ("write_modelopt.py", "tiny-llama-bf16", [m[1]], "modelopt")),
    (r"(llama-modelopt-[a-z0-9]+)-ref",
     lambda m: ("write_modelopt.py", m[1], ["ref"], "modelopt")),
    # ComfyUI-native files written by comfy-kitchen's layouts, with its dequantize beside
    (r"comfy-kitchen", lambda m: ("write_comfy_kitchen.py", None, [], "comfy-kitchen")),
]


def _recipe(kind: str):
    for pattern, make in RECIPES:
        match = re.fullmatch(pattern, kind)
        if match:
            return make(match)
    raise KeyError(f"unknown artifact kind {kind!r}")


def _recipe_with_peer(kind: str):
    script, base, args, *peer = _recipe(kind)
    return script, base, args, (peer or ["writers"])[0]


def _key(kind: str) -> str:
    script, base, args, peer = _recipe_with_peer(kind)
    parts = [kind, (SCRIPTS / script).read_text(), *args, *PEERS[peer]]
    if base:
        parts.append(_key(base))
    return _digest(*parts)


def real_writer_artifact(kind: str) -> Path:
    script, base, args, peer = _recipe_with_peer(kind)
    root = cache_root() / "artifacts"
    path = root / f"{kind}-{_key(kind)}"
    if path.is_dir():
        return path
    base_path = real_writer_artifact(base) if base else None
    python = peer_python(peer)
    with locked(root / f".{path.name}.lock"):
        if path.is_dir():
            return path
        tmp = root / f".{path.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [str(python), str(SCRIPTS / script)]
        cmd += [str(base_path), str(tmp)] if base_path else [str(tmp)]
        proc = subprocess.run(cmd + args, capture_output=True, text=True)
        if proc.returncode != 0 or not tmp.is_dir():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-20:]
            raise RuntimeError(f"{script} failed for {kind}:\n" + "\n".join(tail))
        tmp.rename(path)
    return path
