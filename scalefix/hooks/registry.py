"""Arm, apply, revert and report the runtime patches.

Arming registers a wrapt post-import hook per patch: nothing heavy is imported until the
application imports the target. Every hook runs inside a guard: a failure is recorded in
the status table and the target keeps its original code (wrapt would otherwise let our
exception break the host's import).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from dataclasses import asdict, dataclass

from . import PATCHES

_LOCK = threading.RLock()


@dataclass
class PatchStatus:
    name: str
    target: str
    distribution: str
    affected: str
    state: str = "not armed"   # not armed | armed | applied | skipped | failed | disabled | reverted
    reason: str = ""
    version: str | None = None


_STATUS: dict[str, PatchStatus] = {}
_ARMED: set[str] = set()


def debug(message: str) -> None:
    if os.environ.get("SCALEFIX_DEBUG"):
        print(f"scalefix: {message}", file=sys.stderr)


def patch_module(name: str):
    return importlib.import_module(f"{__package__}.{name}")


def _status(name: str) -> PatchStatus:
    if name not in _STATUS:
        patch = patch_module(name)
        _STATUS[name] = PatchStatus(name, patch.TARGET, patch.DISTRIBUTION, patch.AFFECTED)
    return _STATUS[name]


def disabled_patches() -> set[str]:
    raw = os.environ.get("SCALEFIX_DISABLE_PATCHES", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def installed_version(distribution: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        from importlib_metadata import PackageNotFoundError, version
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _version_reason(patch, version: str | None) -> str | None:
    """Why the installed version is outside AFFECTED, or None when it is affected."""
    if version is None:
        return None  # a source checkout: let the code probe decide
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version
    try:
        if Version(version) in SpecifierSet(patch.AFFECTED, prereleases=True):
            return None
    except InvalidVersion:
        return None
    fixed_in = getattr(patch, "FIXED_IN", None)
    if fixed_in and Version(version) >= Version(fixed_in):
        return f"fixed upstream in {patch.DISTRIBUTION} {fixed_in} (installed {version})"
    return f"{patch.DISTRIBUTION} {version} is outside {patch.AFFECTED}"


def on_import(name: str, module) -> None:
    """The guarded post-import hook: decide, apply, record; never raise into the host."""
    with _LOCK:
        status = _status(name)
        if status.state == "applied":
            return
        saved: dict = {}
        try:
            patch = patch_module(name)
            saved = {a: getattr(module, a) for a in patch.ATTRIBUTES if hasattr(module, a)}
            status.version = installed_version(patch.DISTRIBUTION)
            reason = _version_reason(patch, status.version) or patch.bug_present(module)
            if reason:
                status.state, status.reason = "skipped", reason
            else:
                patch.apply(module)
                status.state, status.reason = "applied", ""
        except Exception as exc:  # contained: the host's import must still work
            status.state, status.reason = "failed", f"{type(exc).__name__}: {exc}"
            for attr, original in saved.items():  # whatever apply() did, undo it
                try:
                    setattr(module, attr, original)
                except Exception:
                    pass
            try:
                patch_module(name).revert(module)
            except Exception:
                pass
        debug(f"{name}: {status.state}{': ' + status.reason if status.reason else ''}")


def arm_all() -> None:
    """Register every patch's post-import hook (applies at once if already imported)."""
    if os.environ.get("SCALEFIX_DISABLE"):
        for name in PATCHES:
            s = _status(name)
            s.state, s.reason = "disabled", "SCALEFIX_DISABLE is set"
        return
    import wrapt
    off = disabled_patches()
    with _LOCK:
        for name in PATCHES:
            status = _status(name)
            if name in off:
                status.state, status.reason = "disabled", "listed in SCALEFIX_DISABLE_PATCHES"
                continue
            if name in _ARMED:
                continue
            _ARMED.add(name)
            if status.state in ("not armed", "reverted"):
                status.state, status.reason = "armed", f"waiting for `import {status.target}`"
            wrapt.register_post_import_hook(lambda module, _n=name: on_import(_n, module),
                                            status.target)


def patch_all() -> list[dict]:
    arm_all()
    for name in PATCHES:
        status = _status(name)
        module = sys.modules.get(status.target)
        if module is not None and status.state in ("armed", "reverted"):
            on_import(name, module)
    return status_table()


def unpatch_all() -> list[dict]:
    with _LOCK:
        for name in PATCHES:
            status = _status(name)
            module = sys.modules.get(status.target)
            if status.state == "applied" and module is not None:
                patch_module(name).revert(module)
                status.state, status.reason = "reverted", "unpatch_all()"
    return status_table()


def status_table() -> list[dict]:
    rows = []
    for name in PATCHES:
        status = _status(name)
        if status.version is None:
            status.version = installed_version(status.distribution)
        rows.append(asdict(status))
    return rows
