"""Old-upstream behaviour, reproduced for tests (not jang's code)."""

import json
import re
from pathlib import Path

EXPERT = re.compile(r"^(?:model\.)?(layers\.\d+\.ffn\.experts\.\d+\.w[123])\.scales$")


def _disk_module_overrides(model_path):
    index = Path(model_path) / "model.safetensors.index.json"
    keys = json.loads(index.read_text())["weight_map"] if index.exists() else {}
    return sorted({f"model.{m.group(1)}" for k in keys if (m := EXPERT.match(k))})


def _patch_quant_config_inplace(model_path, model_config):
    modules = _disk_module_overrides(model_path)
    quant = model_config.setdefault("quantization", {"group_size": 64, "bits": 8})
    top = {k: v for k, v in quant.items() if not isinstance(v, dict)}
    model_config["quantization"] = {**top, **{m: {"group_size": 32, "bits": 4} for m in modules}}
    return {"patched": True, "overrides": len(modules)}
