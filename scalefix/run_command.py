"""``scalefix run -- COMMAND [ARGS...]``: run a command with the runtime fixes armed in it and
in every Python process it starts (``ddtrace-run`` / ``opentelemetry-instrument`` style).

What users run are command-line tools (``jang convert``, ``mlx_lm.convert``,
``mlx_lm.server``), not a Python session they can prepend ``import scalefix.auto`` to. The
wrapper puts the bundled ``run_boot/`` folder first on ``PYTHONPATH``; its
``sitecustomize.py`` imports ``scalefix.auto`` at interpreter start-up, then runs the
``sitecustomize`` it shadows, so an environment's own one keeps working.

Then it *becomes* the command (``exec``): no parent process stays between the user and the
command, so signals, stdin / stdout / stderr, the terminal and the exit status (death by a
signal included) are the command's own, with nothing to forward. Python ignores SIGPIPE and
SIGXFSZ for itself; they are put back to the default first, as a shell would start the
command. A command that cannot be found or run exits 127 / 126, as in a shell.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from .errors import ScalefixError

USAGE = "usage: scalefix run -- COMMAND [ARGS...]"
BOOT_DIR = Path(__file__).resolve().parent / "run_boot"
# what the launcher's scalefix needs in a Python that lacks it (see run_boot/sitecustomize.py)
RUNTIME_PACKAGES = ("scalefix", "wrapt", "packaging")


class CannotRun(ScalefixError):
    """The command was not found (127) or cannot be executed (126)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _package_roots() -> list[str]:
    """The sys.path directories this Python finds scalefix and its runtime needs in."""
    import importlib.util
    roots = []
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None) if spec else None
        if origin:
            root = str(Path(origin).resolve().parents[1])
            if root not in roots:
                roots.append(root)
    return roots


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` with the boot folder first on PYTHONPATH (once) and the launcher's
    whereabouts for a Python that cannot import scalefix itself."""
    env = dict(os.environ if environ is None else environ)
    boot = str(BOOT_DIR)
    entries = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e and e != boot]
    env["PYTHONPATH"] = os.pathsep.join([boot, *entries])
    env["SCALEFIX_RUN"] = "1"
    env["SCALEFIX_RUN_PATH"] = os.pathsep.join(_package_roots())
    env["SCALEFIX_RUN_PYTHON"] = "%d.%d" % sys.version_info[:2]
    return env


def run(command: list[str]) -> int:
    """Replace this process by ``command``; returns only when it could not be started."""
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print(USAGE, file=sys.stderr)
        return 2
    env = child_environment()
    for each in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, each):
            signal.signal(getattr(signal, each), signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        raise CannotRun(f"{command[0]}: command not found", 127) from None
    except PermissionError:
        raise CannotRun(f"{command[0]}: permission denied", 126) from None
    except OSError as exc:
        raise CannotRun(f"{command[0]}: cannot run it ({exc.strerror})", 126) from None
    return 0  # not reached: exec does not return
