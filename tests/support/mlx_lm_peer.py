"""Released mlx-lm 0.32.2, without scalefix, for the upstream diffs in ``patches/``.

The peer venv ``mlx-lm-0.32.2`` (tests/peers/venvs.py) holds the wheel; its ``mlx_lm/`` is
never modified: every check copies it, patches the copy (``git apply``) and runs the peer's
Python with ``PYTHONPATH`` at the copy only. The scripts assert that scalefix is not
importable there and that ``mlx_lm`` comes from the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .mlx_logits import TOKENS

REPO = Path(__file__).resolve().parents[2]
PATCHES = REPO / "patches"
PEER = "mlx-lm-0.32.2"
VERSION = "0.32.2"
DIFFS = {
    "weight-scale-name": "mlx_lm-0.32.2-fp8-weight-scale-name.diff",
    "load-fp8": "mlx_lm-0.32.2-load-fp8-any-model.diff",
    "convert": "mlx_lm-0.32.2-convert-drop-fp8-quantization-config.diff",
}

LOGITS = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("scalefix") is None, "scalefix is importable here"
import numpy as np
import mlx.core as mx
import mlx_lm
assert mlx_lm.__file__.startswith(sys.argv[1]), mlx_lm.__file__
from mlx_lm import load
result = {}
for name, path, out in json.loads(sys.argv[2]):
    try:
        model, _ = load(path)
        y = model(mx.array(%r))
        mx.eval(y)
        np.save(out, np.array(y.astype(mx.float32)))
        result[name] = None
    except Exception as exc:
        result[name] = f"{type(exc).__name__}: {exc}"
print("RESULT " + json.dumps(result))
""" % (TOKENS,)


def available(get):
    """``get()``, or skip (fail on CI) when the peer cannot be built here."""
    try:
        return get()
    except Exception as exc:  # pip or the network failed
        if os.environ.get("CI"):
            pytest.fail(f"peer {PEER} unavailable: {exc}")
        pytest.skip(f"peer {PEER} unavailable: {str(exc).splitlines()[0]}")


def peer() -> tuple[Path, Path]:
    """(the peer's python, its site-packages ``mlx_lm/``)."""
    from ..peers.venvs import peer_python

    python = available(lambda: peer_python(PEER))
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    return python, Path(site.stdout.strip()) / "mlx_lm"


def env(pythonpath: Path) -> dict[str, str]:
    """The peer's environment: nothing of ours on its path (run it with a cwd outside the
    repository too: ``-c`` and ``-m`` put the cwd first on sys.path)."""
    keep = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    return {**keep, "PYTHONPATH": str(pythonpath), "PYTHONNOUSERSITE": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}


def copy_package(package: Path, root: Path) -> Path:
    """``root/mlx_lm``: a copy of ``package`` without byte-code."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(package, root / "mlx_lm", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def git_apply(tree: Path, diff: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "apply", *options, str(PATCHES / diff)], cwd=tree,
                          capture_output=True, text=True)


def patched_copy(package: Path, root: Path, *diffs: str) -> Path:
    """A copy of the wheel's mlx_lm with ``diffs`` applied (their mlx_lm/ part)."""
    copy_package(package, root)
    for diff in diffs:
        proc = git_apply(root, diff, "--include=mlx_lm/*")
        assert proc.returncode == 0, proc.stderr
    return root


def logits(python: Path, pythonpath: Path, checkpoints: dict[str, Path], out: Path):
    """name -> float32 logits, or the error line mlx_lm.load raised, in one interpreter."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, str(path), str(out / f"{name}.npy")) for name, path in checkpoints.items()]
    proc = subprocess.run([str(python), "-c", LOGITS, str(pythonpath), json.dumps(jobs)],
                          capture_output=True, text=True, env=env(pythonpath), cwd=out)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    errors = json.loads(lines[-1][len("RESULT "):])
    return {name: np.load(out / f"{name}.npy") if errors[name] is None else errors[name]
            for name in checkpoints}


def same_bits(a, b) -> bool:
    return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape \
        and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def rename_scales(src: Path, dst: Path, to: str, quantization_config: dict | None = None):
    """Copy of checkpoint ``src`` whose FP8 scales are named ``to`` (``weight_scale`` or
    ``weight_scale_inv``), optionally with another ``quantization_config``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    frm = "weight_scale_inv" if to == "weight_scale" else "weight_scale"
    shutil.copytree(src, dst)
    renamed = 0
    for shard in sorted(dst.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as fh:
            metadata = fh.metadata()
            tensors = {}
            for key in fh.keys():
                new = key[: -len(frm)] + to if key.endswith("." + frm) else key
                renamed += new != key
                tensors[new] = fh.get_tensor(key)
        save_file(tensors, str(shard), metadata=metadata)
    assert renamed, f"no {frm} in {src}"
    index = dst / "model.safetensors.index.json"
    if index.is_file():
        doc = json.loads(index.read_text())
        doc["weight_map"] = {(k[: -len(frm)] + to if k.endswith("." + frm) else k): v
                             for k, v in doc["weight_map"].items()}
        index.write_text(json.dumps(doc))
    if quantization_config is not None:
        with_config(dst, quantization_config)
    return dst


def with_config(path: Path, quantization_config: dict) -> Path:
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (path / "config.json").write_text(json.dumps(config))
    return path


def ct_config(strategy: str = "block") -> dict:
    """A compressed-tensors FP8 config as llmcompressor writes it (FP8_BLOCK / FP8_DYNAMIC)."""
    weights = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False,
               "strategy": strategy, "block_structure": [128, 128] if strategy == "block"
               else None}
    activations = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": True,
                   "strategy": "group" if strategy == "block" else "token",
                   "group_size": 128 if strategy == "block" else None}
    return {"quant_method": "compressed-tensors", "format": "float-quantized",
            "quantization_status": "compressed", "ignore": ["lm_head"],
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": activations}}}


def scalefix_rewrite(src: Path, dst: Path) -> Path:
    """The BF16 reference: ``python -m scalefix rewrite`` in this (main) venv."""
    proc = subprocess.run([sys.executable, "-m", "scalefix", "rewrite", str(src), "--out",
                           str(dst), "--quiet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return dst
