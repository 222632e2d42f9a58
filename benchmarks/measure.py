"""How a benchmark times a contender: a fresh process measured from outside (wall time,
CPU time, peak RSS of its whole process tree), the page cache dropped between steps when
root, and the helpers every harness shares to size outputs and report failures."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeRSS(threading.Thread):
    """Poll the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            kids = _children_map()
            todo, total = [self.pid], 0
            while todo:
                p = todo.pop()
                total += _rss_kb(p)
                todo += kids.get(p, [])
            self.peak_kb = max(self.peak_kb, total)
            self.stop.wait(self.interval)


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def dir_bytes(d: Path, pattern: str = "*.safetensors") -> int:
    return sum(p.stat().st_size for p in d.rglob(pattern) if p.is_file())


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def measure(cmd: list[str], log: Path, timeout: float, env=None) -> dict:
    """Run cmd, return wall time, CPU time and peak RSS.

    Peak RSS: the maximum of (a) ``/usr/bin/time -f %M`` (max RSS of the largest
    single process, from its own rusage) when GNU time exists and (b) the summed
    VmRSS of the whole process tree polled every 50 ms. The harness's own
    ``wait4`` rusage is not used for RSS: a child forked from the harness
    inherits the harness's high-water mark across exec."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tfile = log.with_suffix(".maxrss")
    full = ([GNU_TIME, "-f", "%M %e %U %S", "-o", str(tfile)] + cmd) if GNU_TIME else cmd
    with open(log, "wb") as lf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                cwd=str(BENCH.parent))
        mon = TreeRSS(proc.pid)
        mon.start()
        timed_out = False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                timed_out = True
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        mon.stop.set()
        mon.join()
    single_kb = None
    if GNU_TIME and tfile.exists():
        try:
            single_kb = int(tfile.read_text().split()[-4])
        except (ValueError, IndexError):
            pass
    t1 = time.perf_counter()
    os.sync()
    sync_s = time.perf_counter() - t1
    return {
        "cmd": " ".join(shlex.quote(c) for c in cmd),
        "rc": proc.returncode, "timed_out": timed_out,
        "wall_s": wall, "sync_s": sync_s,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "peak_rss_mb": max(single_kb or 0, mon.peak_kb) / 1024,
        "maxrss_single_mb": None if single_kb is None else single_kb / 1024,
        "tree_rss_polled_mb": mon.peak_kb / 1024,
    }


def error_tail(log: Path, n: int = 6) -> str:
    try:
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-n:])
