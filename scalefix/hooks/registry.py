"""Arm, apply, revert and report the runtime patches.

Arming records a wrapt post-import hook per patch (``import_watch``: wrapt itself is imported
only when a target is): nothing heavy is imported until the application imports the target.
Arming reads only ``TARGETS`` below, never the patch modules (they import pathlib, inspect,
...), and this module imports nothing beyond ``os``/``sys``: ``import scalefix.auto`` sits in
every interpreter. Every hook runs inside a guard: a failure is recorded in the status table
and the target keeps its original code (wrapt would otherwise let our exception break the
host's import).
"""

from __future__ import annotations

import _thread
import os
import sys

from . import PATCHES

# patch -> the module its hook waits for: each patch module's TARGET, repeated here so that
# arming imports no patch module (a test holds the two together).
TARGETS: dict[str, str] = {
    "mlx_load": "mlx.core",
    "mlx_lm_config": "mlx_lm.utils",
    "jang_quant_config": "jang_tools.load_jangtq",
    "jang_fp8": "jang_tools.convert",
    "vllm_marlin": "vllm.model_executor.kernels.linear.scaled_mm.marlin",
}

_LOCK = _thread.RLock()
FIELDS = ("name", "target", "distribution", "affected", "state", "reason", "version")


class PatchStatus:
    """One row of ``scalefix status`` (a plain class: dataclasses costs ~10 ms to import).
    ``distribution`` and ``affected`` come from the patch module, read when first needed."""

    __slots__ = FIELDS

    def __init__(self, name: str, target: str):
        self.name, self.target = name, target
        self.distribution: str | None = None
        self.affected: str | None = None
        # not armed | armed | applied | skipped | failed | disabled | reverted
        self.state = "not armed"
        self.reason = ""
        self.version: str | None = None

    def describe(self) -> None:
        if self.distribution is None:
            patch = patch_module(self.name)
            self.distribution, self.affected = patch.DISTRIBUTION, patch.AFFECTED

    def as_dict(self) -> dict:
        self.describe()
        return {f: getattr(self, f) for f in FIELDS}


_STATUS: dict[str, PatchStatus] = {}
_ARMED: set[str] = set()


def debug(message: str) -> None:
    if os.environ.get("SCALEFIX_DEBUG"):
        print(f"scalefix: {message}", file=sys.stderr)


def patch_module(name: str):
    import importlib
    return importlib.import_module(f"{__package__}.{name}")


def _status(name: str) -> PatchStatus:
    if name not in _STATUS:
        _STATUS[name] = PatchStatus(name, TARGETS[name])
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
            status.describe()
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
    """Record every patch's post-import hook; one whose target is already imported applies at
    once. ``SCALEFIX_DISABLE`` arms nothing (no finder, no wrapt)."""
    if os.environ.get("SCALEFIX_DISABLE"):
        for name in PATCHES:
            s = _status(name)
            s.state, s.reason = "disabled", "SCALEFIX_DISABLE is set"
        return
    from .import_watch import when_imported
    off = disabled_patches()
    arming = []
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
            arming.append(name)
    # outside _LOCK: a hook may fire from here (target already imported) or, in another
    # thread, from import_watch holding its own lock; on_import takes _LOCK after it.
    for name in arming:
        when_imported(TARGETS[name], lambda module, _n=name: on_import(_n, module))


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
    from . import import_watch
    rows = []
    for name in PATCHES:
        status = _status(name)
        if status.state == "armed" and import_watch.failure:  # wrapt never took the hook
            status.state, status.reason = "failed", import_watch.failure
        status.describe()
        if status.version is None:
            status.version = installed_version(status.distribution)
        row = status.as_dict()
        files = getattr(patch_module(name), "files_report", None)  # what it did, per file
        if files is not None:
            row["files"] = files()
        rows.append(row)
    return rows
