"""The non-tensor files of a rewritten bundle: config.json without the stale quantization
config and with the new dtype, hf_quant_config.json (and GPTQ/auto-round quantize_config.json /
quantization_config.json) dropped, everything else copied."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

from ..errors import ScalefixError
from ..formats.bundle import Bundle
from ..formats.config import without_quantization_config

TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
# quantization side files: ModelOpt's, AutoGPTQ's and auto-round's (they describe codes the
# output no longer has)
NOT_COPIED = {"config.json", "hf_quant_config.json", "quantize_config.json",
              "quantization_config.json"}


def rewritten_config(config: dict, out_dtype: str) -> dict:
    new = copy.deepcopy(without_quantization_config(config))
    for holder in (new, new.get("text_config")):
        if not isinstance(holder, dict):
            continue
        for key in ("torch_dtype", "dtype"):
            if key in holder or (key == "torch_dtype" and holder is new):
                holder[key] = TORCH_DTYPE_NAMES[out_dtype]
    return new


def write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def files_to_copy(bundle: Bundle, keep_quant_files: bool = False) -> list[Path]:
    """Every file and folder beside the checkpoint that is not a weight shard, the index, a
    hidden file or a config scalefix rewrites (also what the space preflight counts)."""
    skip = set(bundle.headers)
    if bundle.index_path is not None:
        skip.add(bundle.index_path)
    return [item for item in sorted(bundle.root.iterdir())
            if not (item.name == "config.json" or item in skip or item.name.startswith(".")
                    or (item.name in NOT_COPIED and not keep_quant_files))]


def copy_other_files(bundle: Bundle, staging: Path, keep_quant_files: bool = False) -> list[str]:
    """Copy :func:`files_to_copy` into ``staging``. Returns what was copied."""
    copied = []
    for item in files_to_copy(bundle, keep_quant_files):
        target = staging / item.name
        # links are followed: the output holds real files, never links into an HF cache blob
        if item.is_dir():
            shutil.copytree(item, target, symlinks=False)
        else:
            shutil.copy2(item, target, follow_symlinks=True)
        copied.append(item.name)
    return copied


REGEX_ONLY = set("*+?[](){}|\\^$")


def _module_names(entries: list[str]) -> tuple[list[str], list[str]]:
    """Ignore-list entries as plain module names (``re:.*lm_head`` -> ``lm_head``), and the
    regex entries that have no plain form."""
    plain, lost = [], []
    for entry in entries:
        body = entry[3:].removeprefix(".*") if entry.startswith("re:") else entry
        if body and not REGEX_ONLY & set(body):
            plain.append(body)
        else:
            lost.append(entry)
    return plain, lost


def config_for_scale_naming(config: dict | None, result, target: str):
    """The quantization_config a loader expects beside scales named ``target``.

    weight_scale_inv is what transformers / vLLM read for ``quant_method: fp8`` (block);
    weight_scale is what compressed-tensors reads. Returns (new config or None, changes)."""
    if not config:
        return None, []
    new = copy.deepcopy(config)
    holder = new if "quantization_config" in new else new.get("text_config")
    if not isinstance(holder, dict) or "quantization_config" not in holder:
        return None, []
    qc_old = holder["quantization_config"]
    quantized = list(result.quantized.values())
    fmt = "e5m2" if any(q.codec == "e5m2" for q in quantized) else "e4m3"
    plain, lost = _module_names(result.quant_config.ignore)
    changes = []
    if target == "weight_scale_inv" and qc_old.get("quant_method") != "fp8":
        blocks = {q.geometry.block for q in quantized}
        if len(blocks) != 1:
            raise ScalefixError(f"scales tile several block sizes {sorted(blocks)}: no single "
                                "weight_block_size describes them")
        (block,) = blocks
        holder["quantization_config"] = {
            "quant_method": "fp8", "fmt": fmt, "activation_scheme": "dynamic",
            "weight_block_size": list(block), "modules_to_not_convert": plain}
        changes.append(f"quantization_config: {qc_old.get('quant_method')} -> fp8 "
                       f"(weight_block_size {list(block)})")
    elif target == "weight_scale" and qc_old.get("quant_method") == "fp8":
        block = list(qc_old.get("weight_block_size") or [128, 128])
        holder["quantization_config"] = {
            "quant_method": "compressed-tensors", "format": "float-quantized",
            "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {
                "num_bits": 8, "type": "float", "symmetric": True, "dynamic": False,
                "strategy": "block", "block_structure": block}, "input_activations": {
                "num_bits": 8, "type": "float", "symmetric": True, "dynamic": True,
                "strategy": "group", "group_size": block[1]}}},
            "ignore": plain}
        changes.append("quantization_config: fp8 -> compressed-tensors (float-quantized, block "
                       f"{block})")
    if lost:
        changes.append(f"ignore entries without a plain module form dropped: {lost}")
    return (new if changes else None), changes
