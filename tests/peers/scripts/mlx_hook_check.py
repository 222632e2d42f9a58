"""The ``mx.load`` hook in an older MLX: ``import scalefix.auto`` as a user does, then every
file of a manifest loaded through ``mx.load`` (also with ``return_metadata=True``, with MLX's
compile on and off), each dequantized weight compared bit for bit with the BF16 bits the
main test venv computed. Prints one JSON line.

usage: python mlx_hook_check.py MANIFEST.json EXPECTED.npz
manifest: {"groups": {group: {"files": [path, ...], "dropped": [name, ...]}}, "lazy_file": path};
EXPECTED.npz: "group/output name" -> BF16 bits (uint16)
"""

import json
import sys

import scalefix.auto  # noqa: F401  (arms the hooks before MLX is imported)

import mlx.core as mx
import numpy as np

from scalefix.hooks.registry import status_table

manifest = json.load(open(sys.argv[1]))
expected = dict(np.load(sys.argv[2]))
report = {"mlx": mx.__version__,
          "patch": next(r["state"] for r in status_table() if r["name"] == "mlx_load"),
          "checked": 0, "mismatched": [], "missing": [], "not_dropped": [], "lazy": None}

for fused in (True, False):
    (mx.enable_compile if fused else mx.disable_compile)()
    for return_metadata in (False, True):
        for group, spec in manifest["groups"].items():
            got = {}
            for path in spec["files"]:
                out = mx.load(path, return_metadata=return_metadata)
                got.update(out[0] if return_metadata else out)
            for key, want in expected.items():
                if not key.startswith(group + "/"):
                    continue
                name = key[len(group) + 1:]
                array = got.get(name)
                report["checked"] += 1
                if array is None or array.dtype != mx.bfloat16:
                    report["missing"].append(f"{key} ({None if array is None else array.dtype})")
                elif not np.array_equal(np.array(array.view(mx.uint16)), want):
                    report["mismatched"].append(f"{key} (compile {'on' if fused else 'off'})")
            kept = sorted(set(spec["dropped"]) & set(got))
            report["not_dropped"] += [f"{group}/{name}" for name in kept]

if hasattr(mx, "get_active_memory") and manifest.get("lazy_file"):
    before = mx.get_active_memory()
    weight = mx.load(manifest["lazy_file"])["w.weight"]
    loaded = mx.get_active_memory() - before
    mx.eval(weight)
    report["lazy"] = {"after_load": loaded, "after_eval": mx.get_active_memory() - before,
                      "nbytes": weight.nbytes}
print(json.dumps(report))
