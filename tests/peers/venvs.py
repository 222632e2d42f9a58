"""Cached virtual environments for real peer tools whose pins conflict with ours (and with
each other). Built on first use, reused after: ``$SCALEFIX_PEER_CACHE`` or
``~/.cache/scalefix/peers``; a venv counts only once its ``.complete`` marker is written, so
an interrupted build is thrown away and rebuilt."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

# torch pinned in the same pip call: an unpinned torch pulls a multi-GB CUDA build.
PEERS: dict[str, tuple[str, ...]] = {
    # llmcompressor model_free_ptq / oneshot and transformers FineGrainedFP8Config
    "writers": ("torch==2.13.0", "llmcompressor==0.14.0.1", "accelerate"),
    # vLLM's own code on CPU (pins torch 2.13.0 and compressed-tensors 0.17); wrapt and
    # packaging so scalefix runs there from the source tree (PYTHONPATH)
    "vllm": ("vllm==0.27.0", "wrapt", "packaging"),
    # the other releases the Marlin diff claims: 0.26.0 pins torch 2.11.0, which exists here
    # only as PyPI's CUDA build (several GB more than the CPU one; runs on CPU all the same)
    "vllm-0.26": ("vllm==0.26.0", "wrapt", "packaging"),
    "vllm-0.28": ("vllm==0.28.0", "wrapt", "packaging"),
    # the mx.load hook on older MLX (scalefix from the source tree, PYTHONPATH): the oldest
    # release with a Linux wheel (refuses F8_E4M3), and one that upcasts F8_E4M3 to BF16
    "mlx-0.21": ("mlx==0.21.1", "numpy", "wrapt", "packaging", "importlib-metadata"),
    "mlx-0.29": ("mlx[cpu]==0.29.4", "numpy", "wrapt", "packaging", "importlib-metadata"),
    # released mlx-lm WITHOUT scalefix: the upstream diffs in patches/ are proven on a copy of
    # its site-packages mlx_lm (PYTHONPATH), and patch-install on an app tree that bundles it
    "mlx-lm-0.32.2": ("mlx[cpu]==0.32.4", "mlx-lm==0.32.2"),
    # compressed-tensors as it wrote pack-quantized before 2025-04-24 (0.9.4): 32 // bits
    # codes per int32 word, unpacked int8 zero points, weight_g_idx (actorder "group")
    "ct-0.9": ("torch==2.13.0", "compressed-tensors==0.9.3", "transformers==4.51.3"),
    # AMD Quark's own exporter (MXFP4 weights-only, w_mxfp4_a_mxfp4, mxfp4_fp8) and importer
    "quark": ("torch==2.13.0", "amd-quark==0.13", "transformers>5,<5.17", "accelerate"),
    # NVIDIA ModelOpt's mtq.quantize + export_hf_checkpoint (the wheel imports requests
    # without declaring it)
    "modelopt": ("torch==2.13.0", "nvidia-modelopt==0.47.0", "transformers>=4.57,<5.15",
                 "requests", "accelerate"),
    # bitsandbytes 4-bit as transformers saves it (load_in_4bit, CPU backend)
    "bnb": ("torch==2.13.0", "bitsandbytes==0.50.2", "transformers>=4.57,<5.17", "accelerate"),
    # ComfyUI's own quantized layouts (comfy-kitchen: FP8, NVFP4, MXFP8, INT8, ConvRot W4A4,
    # asym W4A8) quantize and dequantize on CPU; the package imports packaging undeclared
    "comfy-kitchen": ("torch==2.13.0", "comfy-kitchen==0.2.40", "packaging", "safetensors",
                      "numpy"),
}
# pip commands run after the install (vLLM's torchvision/torchaudio/torchcodec fail to
# import beside the CPU torch, and vLLM imports them when present)
AFTER_INSTALL: dict[str, tuple[tuple[str, ...], ...]] = {
    "vllm": (("uninstall", "-y", "torchvision", "torchaudio", "torchcodec"),),
    "vllm-0.26": (("uninstall", "-y", "torchvision", "torchaudio", "torchcodec"),),
    "vllm-0.28": (("uninstall", "-y", "torchvision", "torchaudio", "torchcodec"),),
}


def cache_root() -> Path:
    return Path(os.environ.get("SCALEFIX_PEER_CACHE") or
                Path.home() / ".cache" / "scalefix" / "peers")


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


# Set by tests/conftest.py while a test runs: "peers", or the node id of a default-tier test
TIER_ENV = "SCALEFIX_TEST_TIER"


def peer_python(name: str) -> Path:
    tier = os.environ.get(TIER_ENV)
    if tier not in (None, "peers"):
        raise RuntimeError(f"{tier} uses the peer venv {name!r} but is not in the peer tier: "
                           "mark it @pytest.mark.peers")
    requirements = PEERS[name]
    after = AFTER_INSTALL.get(name, ())
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    env_dir = cache_root() / f"{name}-{_digest(version, *requirements, *map(' '.join, after))}"
    python = env_dir / "bin" / "python"
    with locked(cache_root() / f".{env_dir.name}.lock"):
        if (env_dir / ".complete").is_file():
            return python
        shutil.rmtree(env_dir, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
        proc = subprocess.run([str(python), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", *requirements],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise RuntimeError(f"building peer venv {name!r} failed:\n" + "\n".join(tail))
        for step in after:
            subprocess.run([str(python), "-m", "pip", "-q", "--disable-pip-version-check",
                            *step], capture_output=True, text=True, check=True)
        (env_dir / ".complete").write_text("\n".join(requirements) + "\n")
    return python
