"""Every tensor of a safetensors checkpoint directory, as torch tensors (for the oracle
modes of the writer scripts, which run in their own peer venvs)."""

from pathlib import Path


def checkpoint_tensors(src) -> dict:
    from safetensors import safe_open
    tensors = {}
    for path in sorted(Path(src).glob("*.safetensors")):
        with safe_open(str(path), "pt") as fh:
            tensors.update({k: fh.get_tensor(k) for k in fh.keys()})
    return tensors
