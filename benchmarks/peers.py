"""Cached virtual environments for the benchmark peers.

Each peer lives in its own venv under ``~/.cache/scalefix/bench-venvs/<name>``
(override the root with ``SCALEFIX_BENCH_VENVS``) because their pins conflict.
A venv is reused when its ``.scalefix-bench.json`` marker records the same
package list and its import check passes; otherwise it is rebuilt.

    python -m benchmarks.peers            # build / check all peers
    python -m benchmarks.peers mlx ct     # only these
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

# torch is always pinned to 2.13.0 in the same pip command: on this machine
# that resolves to a CPU wheel from local disk, while an unpinned torch pulls
# a multi-GB CUDA build.
TORCH = "torch==2.13.0"

PEERS: dict[str, dict] = {
    "mlx": {
        "packages": ["mlx[cpu]" if sys.platform.startswith("linux") else "mlx", "mlx-lm"],
        "check": "import mlx.core, mlx_lm, mlx_lm.convert; print('mlx', mlx.core.__version__, 'mlx-lm', mlx_lm.__version__)",
    },
    "ct": {
        # 0.19.0 is the version seen working here with convert_checkpoint and
        # FP8BlockDequantizer (the call is in benchmarks/README.md, contender `ct`).
        "packages": [TORCH, os.environ.get("SCALEFIX_BENCH_CT", "compressed-tensors==0.19.0")],
        "check": (
            "import torch, compressed_tensors; "
            "from compressed_tensors.entrypoints.convert import convert_checkpoint, FP8BlockDequantizer; "
            "print('torch', torch.__version__, 'compressed-tensors', compressed_tensors.__version__)"
        ),
    },
    "torch": {
        "packages": [TORCH, "safetensors", "numpy"],
        "check": "import torch, safetensors; print('torch', torch.__version__, 'safetensors', safetensors.__version__)",
    },
}


def venv_root() -> Path:
    env = os.environ.get("SCALEFIX_BENCH_VENVS")
    return Path(env) if env else Path.home() / ".cache" / "scalefix" / "bench-venvs"


def venv_python(name: str) -> Path:
    return venv_root() / name / "bin" / "python"


def _marker(name: str) -> Path:
    return venv_root() / name / ".scalefix-bench.json"


def check(name: str) -> str | None:
    """Run the peer's import check; return its version line or None."""
    py = venv_python(name)
    if not py.exists():
        return None
    r = subprocess.run([str(py), "-c", PEERS[name]["check"]], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure(name: str, verbose: bool = True) -> Path:
    """Return the python of peer ``name``'s venv, building it if needed."""
    spec = PEERS[name]
    marker = _marker(name)
    if marker.exists():
        try:
            recorded = json.loads(marker.read_text())
        except ValueError:
            recorded = {}
        if recorded.get("packages") == spec["packages"]:
            ver = check(name)
            if ver is not None:
                return venv_python(name)
    root = venv_root() / name
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"[peers] building venv {root}: pip install {' '.join(spec['packages'])}", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    py = venv_python(name)
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *spec["packages"]]
    subprocess.run(cmd, check=True)
    ver = check(name)
    if ver is None:
        r = subprocess.run([str(py), "-c", spec["check"]], capture_output=True, text=True)
        raise RuntimeError(f"peer venv {name!r} built but its import check failed:\n{r.stderr[-2000:]}")
    marker.write_text(json.dumps({"packages": spec["packages"], "versions": ver}, indent=1))
    if verbose:
        print(f"[peers] {name}: {ver}", file=sys.stderr, flush=True)
    return py


def versions(name: str) -> str:
    try:
        return json.loads(_marker(name).read_text()).get("versions", "?")
    except (OSError, ValueError):
        return "?"


def main(argv: list[str]) -> int:
    names = argv or list(PEERS)
    rc = 0
    for n in names:
        if n not in PEERS:
            print(f"unknown peer {n!r}; known: {', '.join(PEERS)}", file=sys.stderr)
            return 2
        try:
            py = ensure(n)
            print(f"{n}\t{py}\t{versions(n)}")
        except Exception as e:  # noqa: BLE001 - report and go on with the others
            print(f"{n}\tFAILED\t{type(e).__name__}: {e}", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
