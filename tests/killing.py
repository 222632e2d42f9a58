"""Interrupting a rewrite for real: the kill -9 tests of every rewrite mode share this."""

import signal
import subprocess
import time
from pathlib import Path


def kill_after_first_shard(cmd: list[str], staging: Path, timeout: float = 120) -> None:
    """Run ``cmd`` and SIGKILL it as soon as a shard in ``staging`` is marked finished."""
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if staging.is_dir() and any(p.name.endswith(".done") for p in staging.iterdir()):
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
