"""wrapt post-import hooks, with wrapt itself imported only when a target module is.

scalefix applies its runtime fixes with ``wrapt.register_post_import_hook`` (docs/runtime.md §2):
wrapt's finder wraps the target's loader and calls the hook once the module has executed,
and fires at once for a module already imported. But importing wrapt is not cheap: 2.2 and
later import ``asyncio`` (``wrapt.caching`` -> ``wrapt.synchronization``), about 60 ms;
2.0 and 2.1 pull in ``importlib.metadata``; 1.17 still imports ``inspect`` and ``typing``,
20-35 ms. Every interpreter with the shim installed (sitecustomize, ``.pth``) would pay that,
mostly processes that never import MLX. Pinning an old wrapt would not reach the 25 ms
budget and would fight every other package that wants wrapt 2. So wrapt stays the
mechanism and is imported late:

- ``when_imported(target, hook)`` records the hook and puts one small stdlib finder at the
  front of ``sys.meta_path``. For any other module it answers ``None`` after one set lookup,
  so other finders, namespace packages and ``importlib.reload`` behave as before.
- When a target is about to be imported, the finder asks the finders behind it for the
  spec (what the import system would have used without it) and wraps the spec's loader.
  Creating the module hands over: wrapt is imported, every recorded hook is registered
  with ``wrapt.register_post_import_hook`` (wrapt installs its own finder for the targets
  still to come), and this finder leaves ``sys.meta_path``. Once the module has executed,
  ``wrapt.notify_module_loaded`` runs its hooks: what wrapt's own loader does. The hand-over
  happens in ``create_module``, not in ``find_spec``, because finders run under the
  interpreter's global import lock, where importing wrapt (and asyncio) could deadlock
  with another thread's import.
- If a target is already imported when a hook is recorded, the hand-over happens at once
  (wrapt then fires the hook immediately).

After the hand-over wrapt alone does the work. Before it, the cost is this file: it imports
nothing beyond ``sys`` and ``_thread``.
"""

from __future__ import annotations

import _thread
import sys

_LOCK = _thread.RLock()
_pending: list[tuple[str, object]] = []   # (target, hook) not yet given to wrapt
_targets: set[str] = set()                # the module names that trigger the hand-over
_handed_over = False
failure: str | None = None  # why wrapt could not take the hooks (then none runs)


class ImportWatch:
    """A meta-path finder that finds nothing itself and notices a target's import."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _targets:
            return None
        spec = _spec_behind(self, fullname, path, target)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # not found, a namespace package, a legacy loader: nothing to run
        spec.loader = _HandOverLoader(loader)
        return spec

    def __repr__(self) -> str:
        return f"<scalefix ImportWatch for {sorted(_targets)}>"


def _spec_behind(finder, fullname, path, target):
    """The spec the finders after ``finder`` in sys.meta_path give, as the import system
    would have found it without us."""
    meta_path = list(sys.meta_path)
    start = meta_path.index(finder) + 1 if finder in meta_path else 0
    for other in meta_path[start:]:
        find = getattr(other, "find_spec", None)
        if find is not None and other is not finder:
            spec = find(fullname, path, target)
            if spec is not None:
                return spec
    return None


class _HandOverLoader:
    """The target's own loader, plus the hand-over to wrapt around it."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_code, is_package, get_resource_reader, ...
        return getattr(self._loader, name)

    def create_module(self, spec):
        _hand_over()  # before the module exists: wrapt records the hooks, fires none
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module):
        if getattr(module, "__loader__", None) is self:  # the module keeps its real loader
            module.__loader__ = self._loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
        self._loader.exec_module(module)
        wrapt = sys.modules.get("wrapt")
        if wrapt is not None and failure is None:
            wrapt.notify_module_loaded(module)


_FINDER = ImportWatch()


def when_imported(target: str, hook) -> None:
    """Call ``hook(module)`` once ``target`` is imported (now, if it already is), by wrapt."""
    with _LOCK:
        if not _handed_over:
            _pending.append((target, hook))
            _targets.add(target)
            if target not in sys.modules:
                if _FINDER not in sys.meta_path:
                    sys.meta_path.insert(0, _FINDER)
                return
    if not _hand_over() and failure is None:  # handed over before: straight to wrapt
        import wrapt
        wrapt.register_post_import_hook(hook, target)


def watching() -> bool:
    """Whether the finder still waits (wrapt not imported on scalefix's account yet)."""
    return _FINDER in sys.meta_path


def _hand_over() -> bool:
    """Give every recorded hook to wrapt and leave sys.meta_path, atomically (another
    thread's target waits until every hook is with wrapt); False if done before. If wrapt
    cannot be imported, no hook runs, the host's import goes on, and ``failure`` says why
    (``scalefix status`` shows it): never an exception in the host's ``import``."""
    global _handed_over, failure
    with _LOCK:
        if _handed_over:
            return False
        _handed_over = True
        try:
            sys.meta_path.remove(_FINDER)
        except ValueError:
            pass
        pending = list(_pending)
        _pending.clear()
        _targets.clear()
        try:
            import wrapt
        except Exception as exc:
            failure = f"cannot import wrapt ({type(exc).__name__}: {exc})"
            print(f"scalefix: {failure}: runtime fixes not applied", file=sys.stderr)
            return True
        for target, hook in pending:  # fires at once for a target already imported
            wrapt.register_post_import_hook(hook, target)
    return True
