"""``scalefix patch-install TARGET``: fix an installed app's copy of jang_tools (default) or
of mlx_lm (``--mlx-lm``) on disk; what each target changes lives in ``targets``.

Safe by construction: every file is planned before any is written (one that does not match
refuses the whole run), the original is kept next to the file (same permissions), the new
source must compile before it replaces the file (atomic rename), a failure puts back the
files already patched in that run, files outside TARGET are never touched, a second run says
"already patched", and ``--revert`` restores the originals byte for byte, refusing when a
file changed since scalefix patched it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import py_compile
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ScalefixError
from ..formats.jsonio import read_json
from .targets import TARGETS, Plan

BACKUP_SUFFIX = ".scalefix-orig"
RECORD_SUFFIX = ".scalefix.json"
PTH_NAME = "scalefix.pth"
PTH_LINE = ('import sys; exec("try:\\n import scalefix.auto\\nexcept Exception:\\n pass\\n")'
            "  # added by scalefix patch-install --hook\n")


@dataclass
class Outcome:
    path: Path
    state: str        # patched | would patch | already patched | nothing to patch | reverted
    detail: str = ""  # | not patched by scalefix
    diff: str = ""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def python_site_packages(python: Path) -> Path:
    proc = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ScalefixError(f"cannot run it: {proc.stderr.strip().splitlines()[-1:]}",
                            file=python)
    return Path(proc.stdout.strip())


def search_root(target: Path) -> tuple[Path, Path | None]:
    """(directory to search, interpreter if TARGET was one)."""
    if not target.exists():
        raise ScalefixError("no such file or directory", file=target)
    if target.is_dir():
        return target, None
    if os.access(target, os.X_OK):
        return python_site_packages(target), target
    raise ScalefixError("not an app bundle, a site-packages directory or a Python "
                        "executable", file=target)


def _writable(path: Path) -> None:
    mode = path.stat().st_mode
    if not (mode & stat.S_IWUSR) or not os.access(path, os.W_OK) or \
            not os.access(path.parent, os.W_OK):
        raise ScalefixError("read-only install: cannot write here (run as the owner of the "
                            "app, or with sudo, or make it writable first)", file=path)


def _diff(label: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        f"a/{label}", f"b/{label}"))


def _plan(target, path: Path, label: str) -> tuple[bytes, Plan]:
    if not path.is_file():
        raise ScalefixError(f"missing: the {target.name} files scalefix patches are not all "
                            "here (another version?): left alone", file=path)
    original = path.read_bytes()
    try:
        source = original.decode("utf-8")
    except UnicodeDecodeError:
        raise ScalefixError("not UTF-8 text: left alone", file=path) from None
    return original, target.plan(path, label, source)


def _outcome(path: Path, label: str, original: bytes, plan: Plan, dry_run: bool) -> Outcome:
    if plan.state == "absent":
        return Outcome(path, "nothing to patch", plan.detail)
    if plan.state == "patched":
        return Outcome(path, "already patched")
    return Outcome(path, "would patch" if dry_run else "patched", plan.detail,
                   _diff(label, original.decode("utf-8"), plan.new_source))


def patch_file(path: Path, original: bytes, new_source: str) -> str:
    """Replace ``path`` by ``new_source``, keeping the original; the backup's name."""
    _writable(path)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    record = path.with_name(path.name + RECORD_SUFFIX)
    tmp = path.with_name(f".{path.name}.scalefix-tmp")
    new_bytes = new_source.encode("utf-8")
    try:
        _write_like(backup, original, path)
        _write_like(tmp, new_bytes, path)
        py_compile.compile(str(tmp), cfile=str(tmp) + "c", doraise=True)
        os.replace(tmp, path)
        record.write_text(json.dumps({"original_sha256": _sha(original),
                                      "patched_sha256": _sha(new_bytes)}) + "\n")
    except Exception as exc:
        if path.read_bytes() != original:
            _write_like(path, original, backup)
        for leftover in (tmp, Path(str(tmp) + "c"), record, backup):
            leftover.unlink(missing_ok=True)
        if isinstance(exc, ScalefixError):
            raise
        raise ScalefixError(f"could not patch ({exc}); the original is back in place",
                            file=path) from None
    finally:
        Path(str(tmp) + "c").unlink(missing_ok=True)
    return backup.name


def _write_like(path: Path, data: bytes, like: Path) -> None:
    """Write ``data`` to ``path`` with ``like``'s permission bits, fsynced."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, stat.S_IMODE(like.stat().st_mode))


def _revert_check(path: Path) -> bool:
    """True when ``path`` carries scalefix's patch and may be reverted; refuses an edit."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    record = path.with_name(path.name + RECORD_SUFFIX)
    if not backup.is_file() or not record.is_file():
        return False
    doc = read_json(record, "patch record")
    expected = doc.get("patched_sha256") if isinstance(doc, dict) else None
    if not isinstance(expected, str):
        raise ScalefixError("patch record has no patched_sha256: not written by scalefix?",
                            file=record)
    if not path.is_file() or _sha(path.read_bytes()) != expected:
        raise ScalefixError(f"modified since scalefix patched it: revert would clobber those "
                            f"changes (the original is in {backup.name})", file=path)
    _writable(path)
    return True


def revert_file(path: Path) -> Outcome:
    if not _revert_check(path):
        return Outcome(path, "not patched by scalefix", "nothing to revert")
    os.replace(path.with_name(path.name + BACKUP_SUFFIX), path)
    path.with_name(path.name + RECORD_SUFFIX).unlink()
    return Outcome(path, "reverted", "original restored byte for byte")


def install_hook(python: Path | None, roots: list[Path]) -> str:
    """Add scalefix.pth to the interpreter's site-packages so it imports scalefix.auto."""
    if python is None:
        candidates = [r / ".." / ".." / ".." / "bin" / "python" for r in roots]
        python = next((c.resolve() for c in candidates if c.exists()), None)
    if python is None:
        raise ScalefixError("--hook needs the app's Python: pass its executable as TARGET")
    probe = subprocess.run([str(python), "-c", "import scalefix"], capture_output=True)
    if probe.returncode != 0:
        raise ScalefixError("scalefix is not importable by this interpreter: install it there "
                            "first", file=python)
    site = python_site_packages(python)
    pth = site / PTH_NAME
    if pth.is_file() and pth.read_text() == PTH_LINE:
        return f"{pth}: already there"
    if not os.access(site, os.W_OK):
        raise ScalefixError("read-only: cannot add scalefix.pth", file=site)
    pth.write_text(PTH_LINE)
    return f"{pth}: scalefix.auto will be imported at start-up (harmless if scalefix is removed)"


def patch_install(target: str | os.PathLike, *, dry_run: bool = False, revert: bool = False,
                  hook: bool = False, package: str = "jang") -> tuple[list[Outcome], list[str]]:
    """Patch (or revert) ``package``'s files (a key of ``targets.TARGETS``) below TARGET."""
    spec = TARGETS[package]
    root, python = search_root(Path(target))
    found = spec.find(root)
    if revert:
        outcomes = _revert_all([path for path, _ in found])
    else:
        planned = [(path, label, *_plan(spec, path, label)) for path, label in found]
        outcomes = [_outcome(path, label, original, plan, dry_run)
                    for path, label, original, plan in planned]
        if not dry_run:
            _write_all([(path, original, plan) for path, _, original, plan in planned
                        if plan.state == "unpatched"], outcomes)
    notes = [] if found else [spec.none_found(root)]
    if hook and not dry_run and not revert:
        sites = {path.parents[len(Path(label).parts) - 1] for path, label in found}
        notes.append(install_hook(python, sorted(sites)))
    return outcomes, notes


def _write_all(writes: list[tuple[Path, bytes, Plan]], outcomes: list[Outcome]) -> None:
    """Patch every file or none: a failure puts back the ones this run already patched."""
    done: list[Path] = []
    by_path = {outcome.path: outcome for outcome in outcomes}
    for path, _, _ in writes:
        _writable(path)
    try:
        for path, original, plan in writes:
            backup = patch_file(path, original, plan.new_source)
            done.append(path)
            outcome = by_path[path]
            outcome.detail = f"original kept as {backup}" + (
                f"; {outcome.detail}" if outcome.detail else "")
    except ScalefixError:
        for path in reversed(done):
            revert_file(path)
        raise


def _revert_all(paths: list[Path]) -> list[Outcome]:
    """Check every file before restoring any, so a refusal leaves all of them patched."""
    for path in paths:
        _revert_check(path)
    return [revert_file(path) for path in paths]
