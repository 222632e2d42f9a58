"""Drop-in ``sitecustomize``: arms scalefix's runtime fixes in every Python process started
with this folder on PYTHONPATH, then runs the ``sitecustomize`` it shadows (if any).

``scalefix run -- COMMAND`` puts this folder first on PYTHONPATH; ``sitecustomize_example/``
in the source tree is the same file, for setting PYTHONPATH by hand.

Never raises: an interpreter must start even if scalefix is broken or uninstalled. Under
``scalefix run`` a Python that cannot import scalefix says so on stderr (a silent "fixed"
run that was not fixed is the one outcome scalefix exists to prevent); first it tries the
directories ``scalefix run`` recorded in ``SCALEFIX_RUN_PATH`` (where the launcher found
scalefix, wrapt and packaging), appended after this interpreter's own paths so its own
packages still win, and only when its Python version is the launcher's.

The shadowed ``sitecustomize`` is the one Python would have imported without this folder:
the first ``sitecustomize.py`` on ``sys.path`` after this folder's entry. Every file run is
remembered, so two drop-ins on one path (this one and the example) never run each other in
a loop.
"""

import importlib.util
import os
import sys

_CHAINED = "_scalefix_sitecustomize_chain"  # attribute of sys: the files already run


def _say(message):
    if os.environ.get("SCALEFIX_DEBUG"):
        print(f"scalefix sitecustomize: {message}", file=sys.stderr)


def _launcher_paths():
    """The launcher's directories for scalefix and its runtime dependencies, or []."""
    wanted = os.environ.get("SCALEFIX_RUN_PYTHON", "")
    if wanted != "%d.%d" % sys.version_info[:2]:
        return []
    return [p for p in os.environ.get("SCALEFIX_RUN_PATH", "").split(os.pathsep)
            if p and p not in sys.path]


def _arm():
    try:
        import scalefix.auto  # noqa: F401
        return
    except ModuleNotFoundError as exc:
        if exc.name != "scalefix":
            raise
        missing = exc
    extra = _launcher_paths() if os.environ.get("SCALEFIX_RUN") else []
    if extra:
        sys.path.extend(extra)
        try:
            import scalefix.auto  # noqa: F401
            _say(f"scalefix imported from the launcher's {extra}")
            return
        except Exception as exc:
            missing = exc
    if os.environ.get("SCALEFIX_RUN"):
        print(f"scalefix run: {sys.executable} cannot import scalefix ({missing}): no runtime "
              "fixes in this process; install scalefix into this Python, or use "
              "`scalefix patch-install`", file=sys.stderr)
    else:
        _say(f"scalefix not armed ({type(missing).__name__}: {missing})")


def _chain_shadowed_sitecustomize():
    mine = os.path.abspath(__file__)  # a linked copy (the example) is a file of its own
    here = os.path.realpath(os.path.dirname(mine))
    done = getattr(sys, _CHAINED, set())
    done.add(mine)
    setattr(sys, _CHAINED, done)
    folders = [os.path.realpath(entry or os.getcwd()) for entry in sys.path]
    start = folders.index(here) + 1 if here in folders else 0
    for folder in folders[start:]:
        candidate = os.path.join(folder, "sitecustomize.py")
        if folder == here or not os.path.isfile(candidate):
            continue
        if candidate in done:
            return
        done.add(candidate)
        spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", candidate)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _say(f"chained {candidate}")
        return


try:
    _arm()
except Exception as exc:  # scalefix broken: start anyway, and say so under scalefix run
    if os.environ.get("SCALEFIX_RUN"):
        print(f"scalefix run: scalefix not armed in {sys.executable} "
              f"({type(exc).__name__}: {exc})", file=sys.stderr)
    _say(f"scalefix not armed ({type(exc).__name__}: {exc})")

try:
    _chain_shadowed_sitecustomize()
except Exception as exc:
    print(f"scalefix sitecustomize: the shadowed sitecustomize failed: {exc}", file=sys.stderr)
