"""SIGINT and SIGTERM as one exception, so a command stops promptly and says what it leaves.

Python's default SIGTERM kills the process on the spot: no ``finally`` runs, worker threads
die mid-write and the user is told nothing. Under :func:`stop_on_signals` either signal raises
:class:`Interrupted` in the main thread instead. It derives from BaseException, like
KeyboardInterrupt, so no ``except Exception`` swallows it while it unwinds through the
cleanup code that stops the worker threads. A second signal during that cleanup gets the
default action (the process ends at once): the user can always insist.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A SIGINT or SIGTERM arrived. ``exit_code`` is the shell's 128 + signal number;
    ``detail`` is set by the command that knows what it leaves behind."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.detail: str | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}" + (f": {self.detail}" if self.detail else "")


def _raise(signum: int, frame) -> None:
    for each in SIGNALS:  # the next one ends the process, even if cleanup were to hang
        if signal.getsignal(each) is _raise:
            signal.signal(each, signal.SIG_DFL)
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGINT / SIGTERM into :class:`Interrupted` for the duration (main thread only:
    elsewhere Python cannot install handlers, and the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a signal the parent chose to ignore (nohup, `cmd &` in a script) stays ignored
    previous = {each: signal.getsignal(each) for each in SIGNALS
                if signal.getsignal(each) is not signal.SIG_IGN}
    for each in previous:
        signal.signal(each, _raise)
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler if handler is not None else signal.SIG_DFL)
