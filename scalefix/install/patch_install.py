"""``scalefix patch-install TARGET``: fix an installed app's copy of jang_tools on disk.

Safe by construction: the original is kept next to the file (same permissions), the new
source must compile before it replaces the file (atomic rename), files outside TARGET are
never touched, a second run says "already patched", and ``--revert`` restores the original
byte for byte, refusing when the file changed since scalefix patched it.
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
from . import jang_guard

RELATIVE = Path("jang_tools") / "load_jangtq.py"
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


def find_files(root: Path) -> list[Path]:
    """Every jang_tools/load_jangtq.py below ``root``, without leaving it through links."""
    found = []
    real_root = root.resolve()
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
        if here.name == "jang_tools" and "load_jangtq.py" in files:
            path = here / "load_jangtq.py"
            if not path.is_symlink() and real_root in path.resolve().parents:
                found.append(path)
    return sorted(found)


def _writable(path: Path) -> None:
    mode = path.stat().st_mode
    if not (mode & stat.S_IWUSR) or not os.access(path, os.W_OK) or \
            not os.access(path.parent, os.W_OK):
        raise ScalefixError("read-only install: cannot write here (run as the owner of the "
                            "app, or with sudo, or make it writable first)", file=path)


def _diff(path: Path, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        f"a/{RELATIVE}", f"b/{RELATIVE}"))


def patch_file(path: Path, dry_run: bool) -> Outcome:
    original = path.read_bytes()
    source = original.decode("utf-8")
    try:
        verdict = jang_guard.examine(source)
    except jang_guard.Unrecognised as exc:
        raise ScalefixError(f"{exc}: left alone", file=path) from None
    except SyntaxError as exc:
        raise ScalefixError(f"does not parse ({exc.msg}): left alone", file=path) from None
    if verdict.state == "absent":
        return Outcome(path, "nothing to patch",
                       f"function {jang_guard.FUNCTION} not present: nothing to patch")
    if verdict.state == "patched":
        return Outcome(path, "already patched")
    diff = _diff(path, source, verdict.new_source)
    if dry_run:
        return Outcome(path, "would patch", diff=diff)
    _writable(path)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    record = path.with_name(path.name + RECORD_SUFFIX)
    tmp = path.with_name(f".{path.name}.scalefix-tmp")
    new_bytes = verdict.new_source.encode("utf-8")
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
    return Outcome(path, "patched", f"original kept as {backup.name}", diff)


def _write_like(path: Path, data: bytes, like: Path) -> None:
    """Write ``data`` to ``path`` with ``like``'s permission bits, fsynced."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, stat.S_IMODE(like.stat().st_mode))


def revert_file(path: Path) -> Outcome:
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    record = path.with_name(path.name + RECORD_SUFFIX)
    if not backup.is_file() or not record.is_file():
        return Outcome(path, "not patched by scalefix", "nothing to revert")
    doc = read_json(record, "patch record")
    expected = doc.get("patched_sha256") if isinstance(doc, dict) else None
    if not isinstance(expected, str):
        raise ScalefixError("patch record has no patched_sha256: not written by scalefix?",
                            file=record)
    if _sha(path.read_bytes()) != expected:
        raise ScalefixError(f"modified since scalefix patched it: revert would clobber those "
                            f"changes (the original is in {backup.name})", file=path)
    _writable(path)
    os.replace(backup, path)
    record.unlink()
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
                  hook: bool = False) -> tuple[list[Outcome], list[str]]:
    root, python = search_root(Path(target))
    files = find_files(root)
    outcomes = [revert_file(f) if revert else patch_file(f, dry_run) for f in files]
    notes = [] if files else [f"no {RELATIVE} below {root}: nothing to patch"]
    if hook and not dry_run and not revert:
        notes.append(install_hook(python, sorted({f.parent.parent for f in files})))
    return outcomes, notes
