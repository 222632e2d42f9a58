"""CPU port of the logic of DeepSeek-V3's ``inference/fp8_cast_bf16.py``.

    python benchmarks/deepseek_cpu_port.py SRC DST

Written for this benchmark (not copied). DeepSeek's script runs on CUDA with a
Triton ``weight_dequant`` kernel; this does the same thing on CPU in torch:

* read ``model.safetensors.index.json``; walk the ``*.safetensors`` shards in
  sorted order, loading each whole with ``safetensors.torch.load_file``;
* for every 1-byte tensor that has a ``<name>_scale_inv`` sibling (looked up
  through the index, so it may sit in another shard), dequantize:
  ``bf16(float32(weight) * scale[i//128, j//128])``, i.e. the Triton kernel's
  ``x.to(float32) * s`` stored into a bfloat16 output; a 1-byte tensor with no
  scale is kept as is (with a warning), like the original;
* drop the ``*_scale_inv`` tensors, save the shard under the same file name,
  keep at most the two most recently loaded shards in memory (the original's
  cache policy);
* write a new index without the scales (``metadata`` left empty, as the
  original does).

Like the original it does not touch ``config.json`` or copy any other file: the
output directory holds only the safetensors shards and the index.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

BLOCK = 128


def dequant(weight: torch.Tensor, scale_inv: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """bfloat16(float32(weight) * scale_inv broadcast over block x block tiles)."""
    m, n = weight.shape
    sm, sn = scale_inv.shape
    w = weight.to(torch.float32)
    pm, pn = sm * block - m, sn * block - n
    if pm or pn:
        w = torch.nn.functional.pad(w, (0, pn, 0, pm))
    w = w.view(sm, block, sn, block)
    w.mul_(scale_inv.to(torch.float32).view(sm, 1, sn, 1))
    w = w.view(sm * block, sn * block)[:m, :n]
    return w.to(torch.bfloat16)


def convert(src: Path, dst: Path) -> None:
    torch.set_default_dtype(torch.bfloat16)
    dst.mkdir(parents=True, exist_ok=True)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    weight_map: dict[str, str] = index["weight_map"]
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def tensor(name: str) -> torch.Tensor:
        fname = weight_map[name]  # KeyError when there is no such tensor
        if fname not in cache:
            cache[fname] = load_file(str(src / fname), device="cpu")
        return cache[fname][name]

    converted: list[str] = []
    for path in sorted(src.glob("*.safetensors")):
        state = load_file(str(path), device="cpu")
        cache[path.name] = state
        out: dict[str, torch.Tensor] = {}
        for name, t in state.items():
            if name.endswith("_scale_inv"):
                continue
            if t.element_size() == 1:
                try:
                    s = tensor(f"{name}_scale_inv")
                except KeyError:
                    print(f"warning: no scale_inv for {name}, kept as is", file=sys.stderr)
                    out[name] = t
                    continue
                out[name] = dequant(t, s)
                converted.append(name)
            else:
                out[name] = t
        save_file(out, str(dst / path.name))
        del out
        while len(cache) > 2:  # keep the two most recently loaded shards
            cache.pop(next(iter(cache)))
    for name in converted:
        weight_map.pop(f"{name}_scale_inv", None)
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    convert(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
