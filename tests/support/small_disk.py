"""A small filesystem for the disk-full tests: a real tmpfs where this machine lets a test mount
one, the fake disk of ``tests/support/fake_disk`` otherwise (see :func:`available_mode`).

A session is a list of steps run against one disk mounted at ``mountpoint``: ``size`` (re)sizes
the disk, ``argv`` runs a command and records its exit code and output, ``copy`` copies a tree
out (a tmpfs in a private mount namespace vanishes with the session), ``list`` records a
folder's names. The steps run in this file's ``__main__``, inside ``unshare`` for a tmpfs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FAKE_DISK = Path(__file__).parent / "fake_disk"
# how each mode runs the session driver: a tmpfs needs a private mount namespace, made by an
# unprivileged user namespace where the kernel allows it, else by root (CAP_SYS_ADMIN)
PREFIX = {"userns-tmpfs": ["unshare", "--user", "--map-root-user", "--mount"],
          "root-tmpfs": ["unshare", "--mount"], "injected": []}
MODES = tuple(PREFIX)


def _can_mount(prefix: list[str]) -> bool:
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as where:
        probe = prefix + ["sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {where} && "
                          f"mount -o remount,size=2m {where}"]
        try:
            return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def available_mode() -> str:
    """The most real small disk this machine allows: a tmpfs in a user namespace, a tmpfs
    as root in a private mount namespace (a plain ``mount`` needs the same capability and
    would leak into the host if a test died), else the fake disk."""
    if _can_mount(PREFIX["userns-tmpfs"]):
        return "userns-tmpfs"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and _can_mount(PREFIX["root-tmpfs"]):
        return "root-tmpfs"
    return "injected"


def run_session(mode: str, mountpoint: Path, steps: list[dict], timeout: float = 600) -> list:
    """Run ``steps`` on a disk at ``mountpoint`` (created, must be empty); one result per
    step: {"rc", "stdout", "stderr"} for a command, a sorted name list for ``list``."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="small-disk-"))
    try:
        (work / "session.json").write_text(json.dumps(
            {"mode": mode, "mountpoint": str(mountpoint), "steps": steps}))
        proc = subprocess.run(PREFIX[mode] + [sys.executable, __file__, str(work)],
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"small-disk session failed ({mode}): {proc.stderr}"
        return json.loads((work / "results.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _session(work: Path) -> None:
    spec = json.loads((work / "session.json").read_text())
    mode, mountpoint = spec["mode"], spec["mountpoint"]
    mounted, size, results = False, None, []
    for step in spec["steps"]:
        if "size" in step:
            size = step["size"]
            if mode != "injected":
                options = ("remount," if mounted else "") + f"size={size}"
                subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", mountpoint],
                               check=True)
                mounted = True
        elif "argv" in step:
            env = dict(os.environ)
            if mode == "injected":
                env["PYTHONPATH"] = os.pathsep.join(
                    [str(FAKE_DISK)] + [p for p in [env.get("PYTHONPATH")] if p])
                env["SCALEFIX_FAKE_DISK"] = f"{mountpoint}:{size}"
            proc = subprocess.run(step["argv"], capture_output=True, text=True, env=env)
            results.append({"rc": proc.returncode, "stdout": proc.stdout,
                            "stderr": proc.stderr})
        elif "copy" in step:
            src, dst = step["copy"]
            if os.path.isdir(src):
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        elif "list" in step:
            folder = Path(step["list"])
            results.append(sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None)
    (work / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    _session(Path(sys.argv[1]))
