"""What a checkpoint's config files say about quantization (read, summarised, never trusted
over the tensors themselves: sibling scales win over ignore lists)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IGNORE_KEYS = ("ignore", "modules_to_not_convert", "ignored_layers")


@dataclass
class QuantConfig:
    """A summary of the quantization signals in config.json / hf_quant_config.json."""

    where: str | None = None             # "config.json:quantization_config", ...
    method: str | None = None
    block_size: tuple[int, int] | None = None
    summary: dict = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)
    mlx_native: bool = False             # config["quantization"]: MLX affine/mx bundle
    raw: dict = field(default_factory=dict)  # the declaring section itself, for the schemes


def read_quant_config(config: dict | None, hf_quant_config: dict | None) -> QuantConfig:
    found = QuantConfig()
    config = config or {}
    candidates = [("config.json:quantization_config", config.get("quantization_config"))]
    text = config.get("text_config")
    if isinstance(text, dict):
        candidates.append(("config.json:text_config.quantization_config",
                           text.get("quantization_config")))
    for where, qc in candidates:
        # MLX bundles repeat "quantization" as quantization_config, without quant_method
        mlx_copy = qc == config.get("quantization") and "quant_method" not in (qc or {})
        if isinstance(qc, dict) and qc and not mlx_copy:
            _fill(found, where, qc)
            break
    else:
        if isinstance(hf_quant_config, dict) and hf_quant_config:
            qc = hf_quant_config.get("quantization", hf_quant_config)
            found.where = "hf_quant_config.json"
            found.method = "modelopt"
            found.raw = qc
            found.summary = {k: v for k, v in qc.items() if not isinstance(v, (dict, list))}
            found.ignore = [str(x) for x in qc.get("exclude_modules", []) or []]
    if isinstance(config.get("quantization"), dict) and "quant_method" not in config["quantization"]:
        found.mlx_native = True
        if found.where is None:
            found.where = "config.json:quantization"
            found.method = "mlx"
            found.summary = {k: v for k, v in config["quantization"].items()
                             if not isinstance(v, (dict, list))}
    return found


def _fill(found: QuantConfig, where: str, qc: dict) -> None:
    found.where = where
    found.raw = qc
    found.method = str(qc.get("quant_method")) if qc.get("quant_method") is not None else None
    summary = {k: qc[k] for k in ("quant_method", "fmt", "format", "activation_scheme",
                                  "scale_fmt", "weight_block_size", "bits", "w_bit",
                                  "group_size", "q_group_size", "desc_act", "sym",
                                  "zero_point", "version", "checkpoint_format") if k in qc}
    block = qc.get("weight_block_size")
    groups = qc.get("config_groups")
    if isinstance(groups, dict):
        schemes = []
        for name, group in groups.items():
            weights = (group or {}).get("weights") or {}
            schemes.append({"group": name, "type": weights.get("type"),
                            "num_bits": weights.get("num_bits"),
                            "strategy": weights.get("strategy"),
                            "block_structure": weights.get("block_structure"),
                            "group_size": weights.get("group_size")})
            if block is None and weights.get("block_structure"):
                block = weights["block_structure"]
        summary["config_groups"] = schemes
    if isinstance(block, (list, tuple)) and len(block) == 2 and all(
            isinstance(b, int) and b > 0 for b in block):
        found.block_size = (block[0], block[1])
    for key in IGNORE_KEYS:
        if isinstance(qc.get(key), list):
            found.ignore.extend(str(x) for x in qc[key])
    found.summary = summary


def ignored_by(module: str, entries: list[str]) -> str | None:
    """The ignore entry that names ``module`` (exact, ``re:`` regex, suffix or substring)."""
    for entry in entries:
        if entry.startswith("re:"):
            try:
                if re.match(entry[3:], module):
                    return entry
            except re.error:
                continue
        elif module == entry or module.endswith("." + entry) or entry in module:
            return entry
    return None


def without_quantization_config(config: dict) -> dict:
    """A copy of ``config`` with ``quantization_config`` removed (also under text_config):
    what a dequantized checkpoint's config must look like."""
    new = dict(config)
    new.pop("quantization_config", None)
    if isinstance(new.get("text_config"), dict):
        new["text_config"] = {k: v for k, v in new["text_config"].items()
                              if k != "quantization_config"}
    return new
