"""Logits of a checkpoint through real ``mlx_lm.load``, in a fresh interpreter (so import
order and ``import scalefix.auto`` are exactly what a user's program would do)."""

import os
import subprocess
import sys

import numpy as np

TOKENS = [[1001, 5, 17, 256, 999, 3, 42, 7]]
SCRIPT = """
import sys, numpy as np
{prelude}
import mlx.core as mx
from mlx_lm import load
model, _ = load(sys.argv[1])
out = model(mx.array({tokens}))
mx.eval(out)
np.save(sys.argv[2], np.array(out.astype(mx.float32)))
"""


def logits(path, out, prelude="", **env):
    """(completed process, float32 logits or None when loading failed)."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(prelude=prelude, tokens=TOKENS),
                           str(path), str(out)], capture_output=True, text=True,
                          env={**os.environ, **env})
    return proc, (np.load(out) if proc.returncode == 0 else None)


def same_bits(a, b) -> bool:
    return a is not None and b is not None and np.array_equal(a.view(np.uint32),
                                                              b.view(np.uint32))
