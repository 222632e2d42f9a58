"""Interrupting a rewrite for real: the kill -9 and signal tests of every rewrite mode share
this."""

import signal
import subprocess
import time
from pathlib import Path
from typing import Callable


def signal_when(cmd: list[str], ready: Callable[[], bool], sig: int = signal.SIGKILL,
                timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``cmd``, send it ``sig`` as soon as ``ready()`` holds, and return how it ended.
    SIGINT is restored to its default in the child, in case this process ignores it (a
    background job does), as Python then keeps ignoring it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            break
        time.sleep(0.001)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def first_shard_done(staging: Path) -> Callable[[], bool]:
    return lambda: staging.is_dir() and any(p.name.endswith(".done") for p in staging.iterdir())


def kill_after_first_shard(cmd: list[str], staging: Path, timeout: float = 120,
                           sig: int = signal.SIGKILL) -> subprocess.CompletedProcess:
    """Run ``cmd`` and send it ``sig`` (SIGKILL) once a shard in ``staging`` is finished."""
    return signal_when(cmd, first_shard_done(staging), sig, timeout)
