"""jang_quant_config: ``jang_tools.load_jangtq._patch_quant_config_inplace(model_path,
model_config)`` overwrote a correct config.

It rebuilt the per-module quantization overrides from raw safetensors keys (DeepSeek-V4 disk
names such as ``model.layers.N.ffn.experts.E.w1``) and replaced the user's overrides, which
mlx-lm looks up by post-sanitize module path (``model.layers.N.mlp.switch_mlp.gate_proj``).
mlx-lm then found no override, used the top-level bits, and silently loaded zero-initialised
experts. The guard: a config that already has per-module overrides is left untouched, and
the function returns a stats dict saying so; any other config gets the original behaviour.

Upstream: later ``jang`` releases no longer define the function (status says "not present").
Off: ``SCALEFIX_DISABLE_PATCHES=jang_quant_config``. Permanent fix of an installed app:
``scalefix patch-install``.
"""

from __future__ import annotations

from .wrapping import unwrap, wrap

TARGET = "jang_tools.load_jangtq"
DISTRIBUTION = "jang"
AFFECTED = ">=0"   # every release that defines the function; the probe below decides
FUNCTION = "_patch_quant_config_inplace"
ATTRIBUTES = (FUNCTION,)
QUANT_KEYS = ("quantization", "quantization_config")


def bug_present(module) -> str | None:
    if callable(getattr(module, FUNCTION, None)):
        return None
    from .registry import installed_version
    return (f"{FUNCTION} not present in {DISTRIBUTION} "
            f"{installed_version(DISTRIBUTION) or '(unknown version)'}: nothing to patch")


def per_module_overrides(model_config) -> dict[str, int]:
    """How many per-module entries (dict values) each quantization section holds."""
    counts = {}
    if isinstance(model_config, dict):
        for key in QUANT_KEYS:
            section = model_config.get(key)
            if isinstance(section, dict):
                n = sum(isinstance(v, dict) for v in section.values())
                if n:
                    counts[key] = n
    return counts


def apply(module) -> None:
    def make_wrapper(original):
        def guarded(model_path, model_config, *args, **kwargs):
            overrides = per_module_overrides(model_config)
            if overrides:
                return {"patched": False, "skipped_by": "scalefix",
                        "reason": "config already has per-module quantization overrides; "
                                  "left untouched", "per_module_overrides": overrides}
            return original(model_path, model_config, *args, **kwargs)
        return guarded

    wrap(module, FUNCTION, make_wrapper)


def revert(module) -> None:
    unwrap(module, FUNCTION)
