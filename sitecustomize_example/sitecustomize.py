"""Drop-in ``sitecustomize``: arms scalefix's runtime fixes in every Python process started
with this folder on PYTHONPATH, then runs the ``sitecustomize`` it shadows (if any).

Never raises: an interpreter must start even if scalefix is broken or uninstalled.
"""

import importlib.util
import os
import sys


def _say(message):
    if os.environ.get("SCALEFIX_DEBUG"):
        print(f"scalefix sitecustomize: {message}", file=sys.stderr)


def _chain_shadowed_sitecustomize():
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or os.getcwd())
        candidate = os.path.join(folder, "sitecustomize.py")
        if folder == here or not os.path.isfile(candidate):
            continue
        spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", candidate)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _say(f"chained {candidate}")
        return


try:
    import scalefix.auto  # noqa: F401
except Exception as exc:  # scalefix missing or broken: start anyway
    _say(f"scalefix not armed ({type(exc).__name__}: {exc})")

try:
    _chain_shadowed_sitecustomize()
except Exception as exc:
    print(f"scalefix sitecustomize: the shadowed sitecustomize failed: {exc}", file=sys.stderr)
